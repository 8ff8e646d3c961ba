"""Codecs: round-trip error bounds, names, composition, and refusal of bad input.

Property tests draw real float32 vectors (hypothesis) and check each codec's documented
bound; error feedback is checked for its accounting identity over several rounds.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.runtime.compression import CompressionError, Encoded, ErrorFeedback, parse_codec
from swarm_tune.runtime.compression.codecs import FP16_MAX
from swarm_tune.runtime.compression.update import UpdateCompressor, decode_update
from swarm_tune.runtime.protocol.tensors import ModelSpec

FAST = settings(max_examples=40, deadline=None)


@st.composite
def vectors(draw: st.DrawFn, max_len: int = 600) -> torch.Tensor:
    n = draw(st.integers(1, max_len))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-6, 1e-2, 1.0, 1e3]))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * scale
    if draw(st.booleans()):  # heavy tails: a few large coordinates
        x[torch.randint(0, n, (max(1, n // 50),), generator=g)] *= 100.0
    return x


@FAST
@given(vectors())
def test_fp16_bf16_relative_error(x: torch.Tensor) -> None:
    for name, rel, tiny in (("fp16", 2.0**-11, 2.0**-24), ("bf16", 2.0**-8, 1e-38)):
        c = parse_codec(name)
        enc = c.encode(x)
        assert enc.nbytes == 2 * x.numel()
        dec = c.decode(enc)
        inside = x.abs() <= FP16_MAX if name == "fp16" else torch.ones_like(x, dtype=torch.bool)
        err = (dec - x).abs()[inside]
        assert bool((err <= rel * x.abs()[inside] + tiny).all()), name
        # fp16 saturates instead of overflowing to inf (documented)
        assert torch.equal(dec[~inside], x[~inside].sign() * FP16_MAX)


@FAST
@given(
    vectors(),
    st.sampled_from([1, 7, 64, 256, 4096]),
    st.sampled_from([("int8", 127, 1.0), ("int4", 7, 0.5)]),
)
def test_blockwise_quantization_error_bound(
    x: torch.Tensor, block: int, kind: tuple[str, int, float]
) -> None:
    name, levels, value_bytes = kind
    c = parse_codec(f"{name}:{block}")
    enc = c.encode(x)
    n = x.numel()
    assert enc.nbytes == math.ceil(n * value_bytes) + 4 * math.ceil(n / block)
    err = (c.decode(enc) - x).abs()
    pad = torch.zeros(math.ceil(n / block) * block)
    pad[:n] = x.abs()
    bound = pad.view(-1, block).amax(dim=1).repeat_interleave(block)[:n] / (2 * levels)
    assert bool((err <= bound * (1 + 1e-5) + 1e-30).all())


def test_int4_packs_two_levels_a_byte_in_order() -> None:
    c = parse_codec("int4:4")
    x = torch.tensor([7.0, -7.0, 1.0, 0.0, 3.5])  # block 0 scale 1; block 1 scale 0.5
    enc = c.encode(x)
    # levels +8: 15, 1, 9, 8 | 15 (and a zero pad nibble); low nibble first
    assert enc.parts["q4"].tolist() == [15 | 1 << 4, 9 | 8 << 4, 15]
    assert torch.equal(c.decode(enc), x)


@FAST
@given(vectors(), st.sampled_from([0.01, 0.1, 0.5, 1.0]))
def test_topk_keeps_the_largest_exactly(x: torch.Tensor, frac: float) -> None:
    c = parse_codec(f"topk:{frac}")
    enc = c.encode(x)
    k = max(1, math.ceil(frac * x.numel() - 1e-9))
    assert enc.parts["i"].numel() == k
    dec = c.decode(enc)
    kept = dec != 0
    assert torch.equal(dec[kept], x[kept])  # kept values exact (fp32 value stage)
    if int(kept.sum()) < x.numel():  # nothing dropped is larger than anything kept
        assert float(x[~kept].abs().max()) <= float(x[kept].abs().min())


@FAST
@given(
    vectors(), st.sampled_from(["topk:0.01", "topk:0.05+int8:64", "int8", "int4", "fp16", "bf16"])
)
def test_error_feedback_accounts_for_every_input(x: torch.Tensor, codec: str) -> None:
    ef = ErrorFeedback(parse_codec(codec))
    g = torch.Generator().manual_seed(x.numel())
    inputs = torch.zeros(x.numel(), dtype=torch.float64)
    sent = torch.zeros(x.numel(), dtype=torch.float64)
    for step in range(6):
        u = x * (1 + 0.1 * step) + torch.randn(x.numel(), generator=g) * float(x.abs().mean())
        enc, dec = ef.compress(u)
        assert torch.equal(dec, parse_codec(enc.codec).decode(enc))  # what the wire says
        inputs += u.double()
        sent += dec.double()
    residual = ef.state()
    assert residual is not None
    scale = float(inputs.abs().max()) + 1e-30
    gap = float((sent + residual.double() - inputs).abs().max())
    assert gap <= 1e-5 * scale  # sum(sent) + residual == sum(inputs), float32 rounding only


def test_error_feedback_state_round_trips() -> None:
    a = ErrorFeedback(parse_codec("topk:0.1"))
    x = torch.randn(100, generator=torch.Generator().manual_seed(1))
    a.compress(x)
    b = ErrorFeedback(parse_codec("topk:0.1"))
    b.load_state(a.state())
    y = torch.randn(100, generator=torch.Generator().manual_seed(2))
    ea, da = a.compress(y)
    eb, db = b.compress(y)
    assert torch.equal(da, db) and torch.equal(ea.parts["i"], eb.parts["i"])


def test_composition_and_canonical_names() -> None:
    assert parse_codec("none").name == "fp32"
    assert parse_codec("INT8").name == "int8:256"
    c = parse_codec("topk:0.01+int8:64")
    assert c.name == "topk:0.01+int8:64"
    assert parse_codec(c.name).name == c.name
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(3))
    enc = c.encode(x)
    # 1% of 10,000: 100 int32 indices + 100 int8 values + 2 float32 scales
    assert enc.nbytes == 100 * 4 + 100 + 2 * 4
    assert c.decode(enc).count_nonzero() <= 100


@pytest.mark.parametrize(
    "bad",
    [
        "zstd",
        "",
        "int8:0",
        "int8:70000",
        "int8:x",
        "int4:0",
        "int4:y",
        "topk",
        "topk:0",
        "topk:1.5",
        "topk:nan",
        "fp16:3",
        "fp16+int8",
        "int8+topk:0.1",
        "fp16+topk:0.1",
    ],
)
def test_bad_names_and_parameters_are_refused(bad: str) -> None:
    with pytest.raises(CompressionError):
        parse_codec(bad)


def _tamper(enc: Encoded, part: str, value: torch.Tensor) -> Encoded:
    return Encoded(enc.codec, enc.numel, {**enc.parts, part: value})


def test_payload_disagreeing_with_its_header_is_refused() -> None:
    x = torch.randn(1000, generator=torch.Generator().manual_seed(4))
    spec = ModelSpec.from_tensors({"w": x})
    for name in ("fp16", "int8:100", "int4:32", "topk:0.1+bf16"):
        c = parse_codec(name)
        enc = c.encode(x)
        bad = [
            Encoded(enc.codec, enc.numel + 1, enc.parts),  # header size != parts
            Encoded("fp32", enc.numel, enc.parts),  # header codec != parts
            _tamper(enc, next(iter(enc.parts)), next(iter(enc.parts.values()))[:-1]),
        ]
        for b in bad:
            with pytest.raises(CompressionError):
                parse_codec(b.codec).decode(b)
        with pytest.raises(CompressionError):  # the model has 1000 values, header says 999
            decode_update(spec, Encoded(enc.codec, 999, enc.parts))
    enc = parse_codec("topk:0.1").encode(x)
    idx = enc.parts["i"].clone()
    for broken in (idx.flip(0), torch.where(idx == idx[-1], 5000, idx), idx.clone().fill_(3)):
        with pytest.raises(CompressionError):
            parse_codec(enc.codec).decode(_tamper(enc, "i", broken.to(torch.int32)))


def test_update_compressor_over_named_tensors() -> None:
    g = torch.Generator().manual_seed(5)
    update = {"a.weight": torch.randn(8, 4, generator=g), "b.bias": torch.randn(3, generator=g)}
    spec = ModelSpec.from_tensors(update)
    comp = UpdateCompressor("int8:4", spec)
    decoded, enc = comp.compress(update)
    again = decode_update(spec, enc)
    assert set(again) == set(update)
    for name in update:
        assert again[name].shape == update[name].shape
        assert torch.equal(again[name], decoded[name])
        assert float((again[name] - update[name]).abs().max()) < 0.05
