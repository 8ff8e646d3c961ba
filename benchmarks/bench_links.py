"""The fair link model's cost per bulk message, against a raw SimPy timeout per message.

Every delivered message costs at least one SimPy event (its arrival); the old FIFO model cost
exactly that plus a few arithmetic operations (3.1 us per message measured on the 2-core
box, 1,000 nodes, bursts of 4 x 1 MB). Fair sharing (sim/links.py) adds per message a flow
record, a reservation at the receiver and two dictionary entries, and per burst one uplink
wake-up: measured there 6.0 us per message. This prints, in one run, the same two numbers
for the model as it is and for the floor (a bare timeout per message), for a gossip-like
pattern (bursts of 4) and a flat-like one (bursts of 99), and the ratio.

Usage: python benchmarks/bench_links.py [--bursts N]
"""

from __future__ import annotations

import argparse
import gc
import random
import time

import simpy

from swarm_tune.sim.network import Network

NODES = 1000
SIZE = 1_000_000


def plan(bursts: int, seed: int = 1) -> list[tuple[float, int]]:
    rng = random.Random(seed)
    return sorted((rng.uniform(0, 200), rng.randrange(NODES)) for _ in range(bursts))


def floor_run(bursts: list[tuple[float, int]], k: int) -> tuple[float, int]:
    env = simpy.Environment()
    got = [0]

    def deliver(_: simpy.Event) -> None:
        got[0] += 1

    def burst(ev: simpy.Event) -> None:
        for _ in range(k):
            simpy.Timeout(env, 0.1, None).callbacks.append(deliver)

    for t, src in bursts:
        simpy.Timeout(env, t, src).callbacks.append(burst)
    c0 = time.process_time()
    env.run()
    return time.process_time() - c0, got[0]


def model_run(bursts: list[tuple[float, int]], k: int) -> tuple[float, int]:
    rng = random.Random(2)
    ups = [1e9 if rng.random() < 0.25 else 1e8 for _ in range(NODES)]
    downs = [1e9 if u == 1e9 else 5e8 for u in ups]
    env = simpy.Environment()
    got = [0]

    def deliver(_: simpy.Event) -> None:
        got[0] += 1

    net = Network(env, [0] * NODES, [[0.02]], ups, downs, random.Random(3), deliver)
    pick = random.Random(4)

    def burst(ev: simpy.Event) -> None:
        src: int = ev._value  # set at construction (the sim driver reads it the same way)
        for dst in [d for d in pick.sample(range(NODES), k + 1) if d != src][:k]:
            net.send(src, dst, SIZE, None, 1)
        net.commit()

    for t, src in bursts:
        simpy.Timeout(env, t, src).callbacks.append(burst)
    c0 = time.process_time()
    env.run()
    return time.process_time() - c0, got[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bursts", type=int, default=20_000)
    args = ap.parse_args()
    gc.disable()  # as SimDriver.run does: the world frees everything by reference counting
    for label, k, n in (("gossip-like, bursts of 4", 4, args.bursts), ("flat-like, 99", 99, 800)):
        bursts = plan(n)
        floor_s, floor_n = floor_run(bursts, k)
        model_s, model_n = model_run(bursts, k)
        per_floor = floor_s / floor_n * 1e6
        per_model = model_s / model_n * 1e6
        print(
            f"{label}: model {per_model:.2f} us/message ({model_n:,} delivered), "
            f"bare SimPy timeout {per_floor:.2f} us/message; ratio {per_model / per_floor:.2f} "
            "(goal: as close to the old FIFO model's 3.1 us as fairness allows)"
        )


if __name__ == "__main__":
    main()
