"""encode/decode: round trips, zero copy, corruption, truncation, hostile signed headers."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_helpers import ALICE, BOB, RUN, build_raw, same_tensor, small_envelope

from swarm_tune.runtime.wire import (
    BadMagic,
    BadSignature,
    Envelope,
    Malformed,
    MsgType,
    Oversized,
    Truncated,
    UnsupportedVersion,
    WireError,
    WireLimits,
    WrongRun,
    decode,
    encode,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int8]


@st.composite
def tensor_dicts(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    n = draw(st.integers(0, 6))
    out: dict[str, torch.Tensor] = {}
    for i in range(n):
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(st.lists(st.integers(0, 7), max_size=3))
        seed = draw(st.integers(0, 2**31))
        g = torch.Generator().manual_seed(seed)
        if dtype is torch.int8:
            t = torch.randint(-128, 128, shape, dtype=torch.int8, generator=g)
        else:
            t = (torch.randn(shape, generator=g) * 100).to(dtype)
        if t.dim() == 2 and draw(st.booleans()):
            t = t.t()  # non-contiguous source
        out[f"layer.{i}.weight"] = t
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tensors=tensor_dicts(),
    round=st.integers(0, 2**64 - 1),
    msg_type=st.sampled_from(list(MsgType)),
    meta=st.dictionaries(
        st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**70), 2**70),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=10),
            st.lists(st.one_of(st.integers(), st.text(max_size=4)), max_size=4),
        ),
        max_size=5,
    ),
    as_bytes=st.booleans(),
)
def test_roundtrip_is_identity(
    tensors: dict[str, torch.Tensor],
    round: int,
    msg_type: MsgType,
    meta: dict[str, object],
    as_bytes: bool,
) -> None:
    env = Envelope(msg_type, RUN, round, ALICE.peer_id, meta, tensors)  # type: ignore[arg-type]
    msg = encode(env, ALICE)
    got = decode(bytes(msg) if as_bytes else msg, expected_run_id=RUN)
    assert (got.msg_type, got.run_id, got.round, got.sender) == (
        msg_type,
        RUN,
        round,
        ALICE.peer_id,
    )
    assert dict(got.meta) == meta
    assert list(got.tensors) == list(tensors)
    for name, t in tensors.items():
        assert same_tensor(t, got.tensors[name]), name
    assert len(got.digest) == 32


def test_decode_is_zero_copy_on_bytearray_and_copies_bytes() -> None:
    msg = encode(small_envelope(), ALICE)
    env = decode(msg, expected_run_id=RUN)
    w = env.tensors["w"]
    base = torch.frombuffer(msg, dtype=torch.uint8).data_ptr()
    assert base <= w.data_ptr() < base + len(msg)
    assert w.data_ptr() % 64 == base % 64  # payload offsets are 64-aligned
    frozen = bytes(msg)
    env2 = decode(frozen, expected_run_id=RUN)
    env2.tensors["w"].add_(1.0)  # must not write into the immutable bytes object
    assert frozen == bytes(msg)


def test_encode_is_deterministic_and_sender_checked() -> None:
    env = small_envelope()
    assert encode(env, ALICE) == encode(env, ALICE)
    with pytest.raises(ValueError):
        encode(env, BOB)


def test_every_single_byte_corruption_is_rejected() -> None:
    msg = encode(small_envelope(), ALICE)
    assert decode(msg, expected_run_id=RUN).round == 3
    kinds: dict[str, int] = {}
    for pos in range(len(msg)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(msg)
            bad[pos] ^= mask
            with pytest.raises(WireError) as info:
                decode(bad, expected_run_id=RUN)
            kinds[info.value.reason] = kinds.get(info.value.reason, 0) + 1
    # The interesting failure modes each show up.
    for reason in ("bad_magic", "unsupported_version", "bad_signature", "payload_digest"):
        assert kinds.get(reason, 0) > 0, kinds


def test_every_truncation_and_extension_is_rejected() -> None:
    msg = bytes(encode(small_envelope(), ALICE))
    for n in range(len(msg)):
        with pytest.raises((Truncated, BadMagic)):
            decode(msg[:n], expected_run_id=RUN)
    with pytest.raises(Malformed):
        decode(msg + b"\x00", expected_run_id=RUN)


def test_specific_header_errors() -> None:
    msg = encode(small_envelope(), ALICE)
    with pytest.raises(BadMagic):
        decode(b"XXXX" + msg[4:], expected_run_id=RUN)
    bad = bytearray(msg)
    bad[4] = 2
    with pytest.raises(UnsupportedVersion):
        decode(bad, expected_run_id=RUN)
    with pytest.raises(Oversized):
        decode(msg, expected_run_id=RUN, limits=WireLimits(max_message_bytes=len(msg) - 1))
    with pytest.raises(Oversized):
        decode(msg, expected_run_id=RUN, limits=WireLimits(max_header_bytes=16))


def test_wrong_run_rejected() -> None:
    msg = encode(small_envelope(), ALICE)
    with pytest.raises(WrongRun) as info:
        decode(msg, expected_run_id="other-run")
    assert info.value.reason == "wrong_run"
    assert decode(msg, expected_run_id=None).run_id == RUN


def test_payload_swap_between_messages_is_rejected() -> None:
    a = encode(small_envelope(round=1), ALICE)
    b = encode(
        Envelope(MsgType.CONTRIBUTION, RUN, 1, ALICE.peer_id, {}, {"w": torch.ones(3, 2)}), ALICE
    )
    # Same header shape but another payload: the signed payload digest catches it.
    spliced = bytearray(a)
    pa = len(a) - 64 * 3  # some payload bytes
    spliced[pa:] = bytes(len(a) - pa)
    with pytest.raises(BadSignature):
        decode(spliced, expected_run_id=RUN)
    assert decode(b, expected_run_id=RUN).tensors["w"].sum() == 6


def test_independent_layout_builder_is_accepted() -> None:
    """The documented layout (built without the encoder) decodes: the docstring is the spec."""
    payload = torch.arange(6, dtype=torch.float32).numpy().tobytes()
    raw = build_raw(ALICE, {"t": [["x", "F32", [2, 3], 0, 24]], "m": {"k": 1}}, payload)
    env = decode(raw, expected_run_id=RUN)
    assert env.tensors["x"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert env.meta == {"k": 1}


HOSTILE_HEADERS: list[tuple[object, bytes, str]] = [
    ("not json", b"", "bad_header_json"),
    ("[" * 50_000, b"", "bad_header_json"),  # recursion bomb
    ('{"t":[],"m":{},"t":[]}', b"", "bad_header_json"),  # duplicate keys
    ('{"t":[],"m":{"a":NaN}}', b"", "bad_header_json"),
    ('{"t":[],"m":{"a":1e999}}', b"", "bad_meta_value"),
    ('{"t":[],"m":{"a":' + "9" * 5000 + "}}", b"", "bad_header_json"),
    ({"t": [], "m": {}, "x": 1}, b"", "bad_header_keys"),
    ({"t": {}, "m": {}}, b"", "bad_header_keys"),
    ({"t": [], "m": {"a": {"b": 1}}}, b"", "bad_meta_value"),
    ({"t": [], "m": {"bad key": 1}}, b"", "bad_meta_key"),
    ({"t": [["x", "F32", [1], 0]], "m": {}}, bytes(4), "bad_tensor_entry"),
    ({"t": [["../x y", "F32", [1], 0, 4]], "m": {}}, bytes(4), "bad_tensor_name"),
    (
        {"t": [["x", "F32", [1], 0, 4], ["x", "F32", [1], 64, 68]], "m": {}},
        bytes(68),
        "duplicate_tensor_name",
    ),
    ({"t": [["x", "C64", [1], 0, 8]], "m": {}}, bytes(8), "bad_dtype"),
    ({"t": [["x", "F32", [-1], 0, 4]], "m": {}}, bytes(4), "bad_shape"),
    ({"t": [["x", "F32", [True], 0, 4]], "m": {}}, bytes(4), "bad_shape"),
    ({"t": [["x", "F32", [1.0], 0, 4]], "m": {}}, bytes(4), "bad_shape"),
    ({"t": [["x", "F32", [2**40, 2**40, 0], 0, 0]], "m": {}}, b"", "bad_shape"),
    ({"t": [["x", "F32", [1] * 17, 0, 4]], "m": {}}, bytes(4), "bad_shape"),
    ({"t": [["x", "F32", [2], 0, 4]], "m": {}}, bytes(4), "size_mismatch"),
    ({"t": [["x", "F32", [1], 4, 8]], "m": {}}, bytes(8), "bad_offsets"),  # gap
    (
        {"t": [["x", "F32", [2], 0, 8], ["y", "F32", [1], 4, 8]], "m": {}},
        bytes(8),
        "bad_offsets",
    ),  # overlap
    ({"t": [["x", "F32", [4], 0, 16]], "m": {}}, bytes(8), "out_of_range"),
    ({"t": [["x", "F32", [1], 0, 4]], "m": {}}, bytes(12), "payload_length_mismatch"),
    ({"t": [["x", "BOOL", [2], 0, 2]], "m": {}}, b"\x01\x07", "bad_bool"),
]


@pytest.mark.parametrize(("header", "payload", "reason"), HOSTILE_HEADERS)
def test_authenticated_but_hostile_headers(header: object, payload: bytes, reason: str) -> None:
    raw = build_raw(ALICE, header, payload)
    with pytest.raises(WireError) as info:
        decode(raw, expected_run_id=RUN)
    assert info.value.reason == reason


def test_unknown_msg_type_and_misalignment() -> None:
    with pytest.raises(Malformed) as info:
        decode(build_raw(ALICE, {"t": [], "m": {}}, b"", msg_type=999), expected_run_id=RUN)
    assert info.value.reason == "unknown_msg_type"
    with pytest.raises(Malformed) as info:
        decode(build_raw(ALICE, '{"t":[],"m":{}}', b"", pad=False), expected_run_id=RUN)
    assert info.value.reason == "misaligned"


def test_too_many_tensors_is_bounded_on_both_sides() -> None:
    limits = WireLimits(max_tensors=2)
    env = Envelope(
        MsgType.HEARTBEAT, RUN, 0, ALICE.peer_id, {}, {f"t{i}": torch.ones(1) for i in range(3)}
    )
    with pytest.raises(Oversized):
        encode(env, ALICE, limits=limits)
    msg = encode(env, ALICE)
    with pytest.raises(Oversized):
        decode(msg, expected_run_id=RUN, limits=limits)


def test_encode_rejects_unrepresentable_envelopes() -> None:
    def env(**kw: object) -> Envelope:
        base: dict[str, object] = {
            "msg_type": MsgType.HEARTBEAT, "run_id": RUN, "round": 0,
            "sender": ALICE.peer_id, "meta": {}, "tensors": {},
        }  # fmt: skip
        base.update(kw)
        return Envelope(**base)  # type: ignore[arg-type]

    for bad in (
        env(tensors={"bad name": torch.ones(1)}),
        env(tensors={"c": torch.ones(2, dtype=torch.complex64)}),
        env(tensors={"s": torch.ones(2).to_sparse()}),
        env(meta={"x": float("nan")}),
        env(meta={"x": {"nested": 1}}),
        env(round=-1),
        env(msg_type=77),
    ):
        with pytest.raises(ValueError):
            encode(bad, ALICE)
    with pytest.raises(Oversized):
        encode(env(run_id="r" * 200), ALICE)


def test_bool_int32_int64_uint8_float64_roundtrip() -> None:
    tensors = {
        "b": torch.tensor([True, False, True]),
        "i32": torch.arange(5, dtype=torch.int32),
        "i64": torch.arange(-3, 3, dtype=torch.int64),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "f64": torch.tensor([1e300, -0.0]),
        "scalar": torch.tensor(2.5),
    }
    env = decode(
        encode(Envelope(MsgType.STATE_RESPONSE, RUN, 9, ALICE.peer_id, {}, tensors), ALICE),
        expected_run_id=RUN,
    )
    for k, t in tensors.items():
        assert same_tensor(t, env.tensors[k]), k
    assert json.loads('{"x": 1}') == {"x": 1}


def test_encode_buffer_matches_encode_and_never_leaks_uninitialised_memory() -> None:
    from swarm_tune.runtime.wire import encode_buffer
    from swarm_tune.runtime.wire.codec import _encode

    tensors = {
        "a": torch.ones(3, dtype=torch.int8),  # 61-byte gap after it
        "b": torch.arange(5, dtype=torch.float16),
        "c": torch.zeros(0),  # empty last tensor: trailing gap
    }
    env = Envelope(MsgType.CONTRIBUTION, RUN, 1, ALICE.peer_id, {"k": "v"}, tensors)
    reference = bytes(encode(env, ALICE))
    buf = encode_buffer(env, ALICE)
    assert isinstance(buf, memoryview) and not buf.readonly
    assert bytes(buf) == reference
    dirty = _encode(env, ALICE, WireLimits(), lambda n: memoryview(bytearray(b"\xaa" * n)))
    assert bytes(dirty) == reference  # every byte written: gaps are zeros, not garbage
    got = decode(buf, expected_run_id=RUN)
    base = torch.frombuffer(buf, dtype=torch.uint8).data_ptr()
    assert base <= got.tensors["b"].data_ptr() < base + len(buf)  # zero-copy from it too
    assert same_tensor(got.tensors["b"], tensors["b"])


def test_reused_send_buffers_carry_nothing_of_the_last_message_and_stay_bounded() -> None:
    from swarm_tune.runtime.net.buffers import BufferPool
    from swarm_tune.runtime.wire import encode_buffer

    pool = BufferPool(max_bytes=4096)
    big = Envelope(MsgType.CONTRIBUTION, RUN, 1, ALICE.peer_id, {}, {"x": torch.rand(400)})
    small = Envelope(MsgType.CONTRIBUTION, RUN, 2, ALICE.peer_id, {}, {"x": torch.rand(390)})
    first = encode_buffer(big, ALICE, alloc=pool.take)
    first[:] = b"\xaa" * len(first)  # what a stale buffer may hold
    pool.give(first)
    assert pool.held > 0
    again = encode_buffer(small, ALICE, alloc=pool.take)
    assert pool.reused == 1 and pool.held == 0
    assert bytes(again) == bytes(encode(small, ALICE))  # every byte rewritten
    assert decode(again, expected_run_id=RUN).round == 2
    pool.give(again)
    pool.give(memoryview(bytearray(10)))  # not lent by the pool: ignored
    tiny = pool.take(100)  # far smaller than the free buffer: a new one, the big one kept
    assert pool.reused == 1 and len(tiny) == 100 and pool.held > 0
    pool.give(tiny)
    huge = pool.take(8192)  # beyond max_bytes once given back: dropped, not kept
    pool.give(huge)
    assert pool.held <= 4096
    # Several free buffers of different sizes: the fitting one is found, whatever its place.
    held = pool.held
    pool.give(pool.take(40))  # free now: the first buffer, 100 bytes, 40 bytes
    assert len(pool.take(35)) == 35  # the last one
    assert pool.reused == 2 and pool.held == held
