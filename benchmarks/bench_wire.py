"""Wire codec benchmark: a GPT-2-small-sized fp16 update through the SWRM format.

Everything is measured in one run on the same machine, against baselines measured in the
same run (plain memory copies of the same bytes, and torch.save/torch.load to BytesIO), so
the ratios are meaningful even though the absolute numbers depend on the box.

    .venv/bin/python benchmarks/bench_wire.py [--repeats 3]

Throughput = payload bytes / seconds (MB = 1e6 bytes). "enc+dec" is one encode plus one
decode of the same message, the work a sender and a receiver do together; it is compared
with one memcpy of the same bytes into a fresh buffer (page faults included, as encode's
output buffer is fresh too). Takes ~1 minute on a 2-core box.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time
from collections.abc import Callable

import blake3
import numpy as np
import torch
from nacl.signing import VerifyKey

from swarm_tune.runtime.wire import (
    Envelope,
    Identity,
    MsgType,
    decode,
    encode,
    encode_buffer,
)


def gpt2_small_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter shapes of GPT-2 small (124,439,808 params, 148 tensors)."""
    d, v, ctx, layers = 768, 50257, 1024, 12
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.wte.weight": (v, d),
        "transformer.wpe.weight": (ctx, d),
    }
    for i in range(layers):
        p = f"transformer.h.{i}."
        shapes |= {
            p + "ln_1.weight": (d,),
            p + "ln_1.bias": (d,),
            p + "attn.c_attn.weight": (d, 3 * d),
            p + "attn.c_attn.bias": (3 * d,),
            p + "attn.c_proj.weight": (d, d),
            p + "attn.c_proj.bias": (d,),
            p + "ln_2.weight": (d,),
            p + "ln_2.bias": (d,),
            p + "mlp.c_fc.weight": (d, 4 * d),
            p + "mlp.c_fc.bias": (4 * d,),
            p + "mlp.c_proj.weight": (4 * d, d),
            p + "mlp.c_proj.bias": (d,),
        }
    shapes |= {"transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,)}
    return shapes


def best(fn: Callable[[], object], repeats: int) -> float:
    """Best-of-N wall time in seconds (the least disturbed run on a shared box)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    r = args.repeats

    gen = torch.Generator().manual_seed(0)
    tensors = {
        name: torch.randn(shape, generator=gen, dtype=torch.float32).to(torch.float16)
        for name, shape in gpt2_small_shapes().items()
    }
    nparams = sum(t.numel() for t in tensors.values())
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    ident = Identity.from_seed(bytes(range(32)))
    env = Envelope(MsgType.CONTRIBUTION, "bench", 1, ident.peer_id, {"samples": 4096}, tensors)
    print(f"GPT-2 small fp16 update: {len(tensors)} tensors, {nparams:,} params", end="")
    print(f", {nbytes / 1e6:.1f} MB")
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, repeats={r} (best of)\n")

    rows: list[tuple[str, float, str]] = []

    def row(label: str, seconds: float, note: str = "") -> float:
        rows.append((label, seconds, note))
        return seconds

    # -- baselines: plain copies of the same bytes ----------------------------------------
    flat = np.concatenate([t.view(torch.uint8).reshape(-1).numpy() for t in tensors.values()])
    t_np = row("memcpy: numpy copy (fresh buffer)", best(flat.copy, r), "baseline")
    t_ba = row("memcpy: bytearray(bytes) copy", best(lambda: bytearray(flat.data), r))
    warm = np.empty_like(flat)
    row("memcpy: into warm buffer", best(lambda: np.copyto(warm, flat), r), "no page faults")

    # -- codec ---------------------------------------------------------------------------
    msg = encode(env, ident)
    t_enc_ba = row(
        "encode -> bytearray (zero-filled, 4K pages)", best(lambda: encode(env, ident), r)
    )
    t_enc = row(
        "encode_buffer -> memoryview (numpy, THP)", best(lambda: encode_buffer(env, ident), r)
    )
    buf = encode_buffer(env, ident)
    assert bytes(buf[:4096]) == bytes(msg[:4096])
    t_dec = row(
        "decode (verify, zero-copy views)", best(lambda: decode(buf, expected_run_id="bench"), r)
    )
    frozen = bytes(msg)
    row(
        "decode from bytes (verify + 1 copy)",
        best(lambda: decode(frozen, expected_run_id="bench"), r),
    )
    got = decode(msg, expected_run_id="bench")
    assert all(torch.equal(got.tensors[k], v) for k, v in tensors.items())
    t_rt = row("encode_buffer + decode", t_enc + t_dec, "ROUND TRIP")
    t_rt_ba = row("encode + decode", t_enc_ba + t_dec)

    # -- signing and digests in isolation ------------------------------------------------
    mv = memoryview(msg)
    row("digest: blake3 1 thread", best(lambda: blake3.blake3(mv).digest(), r))
    row(
        "digest: blake3 all cores (used)",
        best(lambda: blake3.blake3(mv, max_threads=blake3.blake3.AUTO).digest(), r),
    )
    row("digest: sha256", best(lambda: hashlib.sha256(mv).digest(), r))
    row("digest: blake2b", best(lambda: hashlib.blake2b(mv).digest(), r))
    digest = blake3.blake3(b"header").digest()
    n_sig = 2000
    t0 = time.perf_counter()
    for _ in range(n_sig):
        sig = ident.sign(digest)
    t_sign = (time.perf_counter() - t0) / n_sig
    vk = VerifyKey(ident.public_key)
    t0 = time.perf_counter()
    for _ in range(n_sig):
        vk.verify(digest, sig)
    t_verify = (time.perf_counter() - t0) / n_sig

    # -- reference: torch.save / torch.load(weights_only=True) ---------------------------
    def torch_roundtrip() -> None:
        buf = io.BytesIO()
        torch.save(tensors, buf)
        buf.seek(0)
        torch.load(buf, weights_only=True)

    t_torch = row("torch.save + torch.load(weights_only) BytesIO", best(torch_roundtrip, r))

    # -- report --------------------------------------------------------------------------
    print(f"{'step':<48} {'ms':>9} {'MB/s':>9}  note")
    print("-" * 80)
    for label, s, note in rows:
        print(f"{label:<48} {s * 1e3:9.1f} {nbytes / s / 1e6:9.0f}  {note}")
    print("-" * 80)
    print(f"Ed25519 sign of header digest   : {t_sign * 1e6:7.1f} us   (constant, not O(payload))")
    print(f"Ed25519 verify of header digest : {t_verify * 1e6:7.1f} us")
    overhead = len(msg) - nbytes
    print(f"message size {len(msg):,} B, overhead {overhead:,} B ({overhead / nbytes:.4%})")
    print()
    # The headline ratio is measured *paired*: memcpy and encode+decode back to back in each
    # repeat, so load from other processes on a shared box hits both sides alike.
    paired, paired_cpu = [], []
    for _ in range(max(r, 5)):
        c0, t0 = time.process_time(), time.perf_counter()
        flat.copy()
        c1, t1 = time.process_time(), time.perf_counter()
        b = encode_buffer(env, ident)
        decode(b, expected_run_id="bench")
        c2, t2 = time.process_time(), time.perf_counter()
        del b
        paired.append((t1 - t0) / (t2 - t1))
        # CPU time is immune to being descheduled by other processes; it counts every
        # thread's work, so parallel hashing makes this figure conservative.
        paired_cpu.append((c1 - c0) / (c2 - c1))
    paired.sort()
    paired_cpu.sort()

    print("ratios (same run, same bytes; >1 means faster than the reference):")
    med = paired[len(paired) // 2]
    print(f"  enc+dec vs numpy memcpy, PAIRED median      = {med:.2f}  (goal >= 0.5)", end="")
    print(f"  [min {paired[0]:.2f}, max {paired[-1]:.2f}, n={len(paired)}]")
    cmed = paired_cpu[len(paired_cpu) // 2]
    print(f"  same, CPU-time (process_time) median        = {cmed:.2f}", end="")
    print(f"  [min {paired_cpu[0]:.2f}, max {paired_cpu[-1]:.2f}]")
    print(f"  enc+dec (encode_buffer) vs numpy memcpy     = {t_np / t_rt:.2f}  (best-of each)")
    print(f"  enc+dec (encode_buffer) vs bytearray memcpy = {t_ba / t_rt:.2f}")
    print(f"  enc+dec (encode, bytearray) vs numpy memcpy = {t_np / t_rt_ba:.2f}")
    print(f"  enc+dec vs torch.save+torch.load            = {t_torch / t_rt:.2f}")


if __name__ == "__main__":
    main()
