"""Seeded random picks for the protocol's hot paths.

Why not ``random.Random.sample``/``choice``: they draw every index through ``_randbelow``,
Python-level bit fiddling; a simulated 10,000-node run makes millions of picks (gossip
targets, peer exchange, view replacement), and that was several percent of its CPU time. One
``random()`` call (C) per pick is about 3x cheaper and, seeded, just as reproducible. Scaling a
53-bit float to an index biases it by less than 2^-40 for the view sizes used here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def pick(rng: random.Random, population: Sequence[T], k: int) -> list[T]:
    """``k`` distinct elements in random order (all of them if ``k`` >= the size):
    a partial Fisher-Yates shuffle of a copy."""
    pool = list(population)
    n = len(pool)
    draw = rng.random
    for i in range(min(k, n)):
        j = i + int(draw() * (n - i))
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


def pick_one(rng: random.Random, population: Sequence[T]) -> T:
    """One element (the population must not be empty)."""
    return population[int(rng.random() * len(population))]
