"""AEAD sealing of the direct data channel: AES-256-GCM, one key per transfer, chunk nonces.

Why: the direct TCP leg leaves Noise for speed (see ``bulk.py``), so without this its
bytes were cleartext and an on-path attacker who flipped one would get the honest *signer*
blamed (the SWRM signature check fails after reassembly) and eventually banned. Sealed,
a flipped, dropped, reordered or injected byte fails the tag of its chunk: the receiver
sees a transport failure (``data_tampered``), answers FAILED, and the sender retries over
the Noise stream. Nobody's reputation is touched.

Key and nonces: the receiver draws a fresh 32-byte key per accepted offer and sends it in
the REPLY, inside the Noise-protected libp2p stream, so only the authenticated sender has
it. The nonce of chunk ``i`` is ``i`` (96-bit big endian): unique per key, and it binds the
chunk's position, so chunks cannot be reordered or replayed within a transfer. The chunk
layout follows from the size announced in the OFFER (every chunk ``CHUNK`` bytes of
plaintext, the last one shorter), so truncation is a short read, not a valid message.
AES-GCM over ChaCha20-Poly1305: measured 2.9 / 2.2 GiB/s encrypt / decrypt per core here
against 1.07 / 0.82 (AES-NI), i.e. faster than loopback TCP.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from swarm_tune.runtime.net.errors import FrameError

CHUNK = 1 << 20  # plaintext bytes per sealed chunk
TAG = 16


class Tampered(FrameError):
    """A sealed chunk failed authentication: the path altered it (or the key is wrong)."""


def chunk_sizes(size: int) -> list[int]:
    """Plaintext length of every chunk of a ``size``-byte transfer."""
    return [min(CHUNK, size - off) for off in range(0, size, CHUNK)]


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal_into(self, index: int, plain: memoryview, out: memoryview) -> None:
        """Write chunk ``index`` sealed (``len(plain) + TAG`` bytes) into ``out``."""
        self._aead.encrypt_into(_nonce(index), plain, None, out)

    def open_into(self, index: int, sealed: memoryview, out: memoryview) -> None:
        """Authenticate and decrypt chunk ``index`` into ``out``; :class:`Tampered` if bad."""
        try:
            self._aead.decrypt_into(_nonce(index), sealed, None, out)
        except InvalidTag:
            raise Tampered(f"chunk {index} failed authentication") from None
