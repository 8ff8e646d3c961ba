"""Choosing a stream's protocol in one round trip (multistream-select, pipelined).

py-libp2p's ``host.new_stream`` runs multistream-select as two round trips: it writes the
``/multistream/1.0.0`` header and waits for the peer's, then writes the protocol and waits
for the echo. Each round trip needs the event loops of both nodes (the muxer's reader, the
negotiating task, a Noise frame each way). In the N = 8 group benchmark on 2 cores one
such round trip took ~1 s (p50, p90 ~3.5-3.9 s: ``client_handshake`` / ``client_try_select``
in the note of issue 13, part A), so every heartbeat and every bulk offer paid ~2 s before
its first byte.

Here both lines go in one write and both answers are read after it: the listener (any
multistream-select 1.0 listener, py-libp2p's included) reads its input line by line, so
the protocol line simply waits in its buffer while it answers the header. This is the
"lazy" client of go-libp2p; it saves one round trip per stream, and nothing changes for
the listener side (a stranger who opens streams and never negotiates is bounded there as
before). Only for a single protocol: with alternatives a refusal of the first would be
answered after the rest were already sent.

Each answer line is read with a bound (``MAX_LINE``): a peer cannot make us buffer an
announced length of gigabytes, which py-libp2p's own reader would.
"""

from __future__ import annotations

from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import MessageTooLarge
from libp2p.utils.varint import encode_delim, read_varint_prefixed_bytes_limited

from swarm_tune.runtime.net.errors import FrameError

MULTISTREAM = b"/multistream/1.0.0"
NOT_SUPPORTED = b"na"
#: Longest answer line accepted (a protocol id is a short path).
MAX_LINE = 1024


class ProtocolRefused(FrameError):
    """The peer answered ``na``: it does not speak the protocol."""


async def select(stream: INetStream, protocol: TProtocol) -> None:
    """Agree on ``protocol`` for a fresh outbound ``stream`` in one round trip.

    Raises :class:`ProtocolRefused` if the peer does not speak it, :class:`FrameError` for
    any other answer, and whatever the stream raises (reset, EOF) as it is."""
    await stream.write(encode_delim(MULTISTREAM) + encode_delim(protocol.encode()))
    header = await _line(stream)
    if header != MULTISTREAM:
        raise FrameError(f"peer answered {header[:64]!r} to the multistream header")
    answer = await _line(stream)
    if answer == NOT_SUPPORTED:
        raise ProtocolRefused(f"peer does not speak {protocol}")
    if answer != protocol.encode():
        raise FrameError(f"peer answered {answer[:64]!r} to {protocol}")
    stream.set_protocol(protocol)


async def _line(stream: INetStream) -> bytes:
    try:
        data = await read_varint_prefixed_bytes_limited(stream, MAX_LINE)
    except (MessageTooLarge, ParseError) as exc:
        raise FrameError(f"bad multistream line: {exc}") from None
    if not data.endswith(b"\n"):
        raise FrameError("multistream line without its newline")
    return data[:-1]
