"""Real data for the learning surrogate: a shared sample pool and per-shard index lists.

Why a pool plus indices, not per-node datasets: 10,000 nodes x 256 samples of even a tiny input
would be hundreds of megabytes if every node held its own copy. Every task here keeps ONE pool
(the TinyTales text as a character array; the teacher-labelled feature matrix) and a node's
shard is just a list of pool indices, so a shard costs a few bytes per sample and a batch for
thousands of nodes is one gather.

Why these two tasks:

* ``char-lm`` — next-character prediction on the shipped TinyTales corpus (real text, never
  downloaded). Loss starts at ln(vocab) ~ 3.8 and falls clearly within a few dozen steps. Home
  regions are contiguous blocks of stories, so ``non_iid`` skews which stories a node reads.
* ``classification`` — inputs ~ N(0, I), labels from a fixed random teacher network (a known
  ground truth the student can reach), or (``generator: gaussian-mixture``) one isotropic
  Gaussian cluster per class, the standard federated toy task (Flower's own). Home regions are
  two classes per shard, so ``non_iid`` is classic label skew, the hard case for federated
  averaging.

Shards are deterministic functions of ``(seed, shard)``; the held-out set is shared by everyone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from swarm_tune.runtime.training.corpus import CORPUS_TRAIN, CORPUS_VALID
from swarm_tune.sim.learning_settings import LearningSettings

_M32 = 0xFFFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash on int64 tensors (multipliers < 2**31: no int64 overflow)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x68E31DA5) & _M32
    return x ^ (x >> 16)


def _mix32_int(x: int) -> int:
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x68E31DA5) & _M32
    return x ^ (x >> 16)


def mix_int(*parts: int) -> int:
    """Combine integers into one 32-bit seed (pure Python, the same hash as ``mix32``)."""
    h = 0x9E3779B9
    for p in parts:
        h = _mix32_int(h + (p & _M32))
    return h


@lru_cache(maxsize=1)
def _corpus() -> tuple[str, torch.Tensor, torch.Tensor]:
    """The shipped corpus as character ids (alphabet, train, held-out); read once per process."""
    train = CORPUS_TRAIN.read_text(encoding="utf-8")
    valid = CORPUS_VALID.read_text(encoding="utf-8")
    chars = sorted(set(train))
    lookup = {c: i for i, c in enumerate(chars)}
    unknown = lookup.get(" ", 0)  # unseen held-out characters map to space
    text = torch.tensor([lookup[c] for c in train], dtype=torch.int64)
    vtext = torch.tensor([lookup.get(c, unknown) for c in valid], dtype=torch.int64)
    # Shared by every TaskData of the process: never written to.
    return "".join(chars), text, vtext


@dataclass(frozen=True, slots=True)
class Batch:
    inputs: torch.Tensor  # char-lm: int64 [n, S, context]; classification: float [n, S, D]
    targets: torch.Tensor  # int64 [n, S]


class TaskData:
    """One task's pool, held-out set and shard construction."""

    def __init__(self, settings: LearningSettings, num_shards: int, seed: int) -> None:
        self.settings = settings
        self.task = settings.task
        self.num_shards = num_shards
        self.seed = seed
        gen = torch.Generator().manual_seed(mix_int(seed, 1))
        if self.task == "char-lm":
            self._init_text(gen)
        else:
            self._init_classification(gen)

    # -------------------------------------------------------------------------- char-lm
    def _init_text(self, gen: torch.Generator) -> None:
        self.alphabet, self.text, vtext = _corpus()
        self.vocab = len(self.alphabet)
        self.num_outputs = self.vocab
        c = self.settings.context
        self.pool_size = int(self.text.numel()) - c
        span = torch.arange(c + 1)
        starts = torch.randint(
            0, int(vtext.numel()) - c, (self.settings.eval_samples,), generator=gen
        )
        windows = vtext[starts[:, None] + span]
        self.eval = Batch(windows[None, :, :c], windows[None, :, c])
        self._span = span

    # -------------------------------------------------------------------- classification
    def _init_classification(self, gen: torch.Generator) -> None:
        s = self.settings
        d, k = s.features, s.classes
        self.vocab = 0
        self.num_outputs = k
        self.pool_size = s.pool_size
        if s.generator == "gaussian-mixture":
            means = torch.randn(k, d, generator=gen) * s.separation
            self.features, self.labels = self._mixture(means, s.pool_size, gen)
            ex, ey = self._mixture(means, s.eval_samples, gen)
            self.eval = Batch(ex[None], ey[None])
        else:
            self._t1 = torch.randn(d, 4 * d, generator=gen) / math.sqrt(d)
            self._t2 = torch.randn(4 * d, k, generator=gen) / math.sqrt(4 * d)
            self.features = torch.randn(s.pool_size, d, generator=gen)
            self.labels = self._teacher(self.features)
            ex = torch.randn(s.eval_samples, d, generator=gen)
            self.eval = Batch(ex[None], self._teacher(ex)[None])
        self._by_class = [torch.nonzero(self.labels == c).flatten() for c in range(k)]

    @staticmethod
    def _mixture(
        means: torch.Tensor, count: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` samples: a uniform class, its mean plus N(0, I) noise."""
        labels = torch.randint(0, means.shape[0], (count,), generator=gen)
        return means[labels] + torch.randn(count, means.shape[1], generator=gen), labels

    def _teacher(self, x: torch.Tensor) -> torch.Tensor:
        return torch.argmax(torch.tanh(x @ self._t1) @ self._t2, dim=-1)

    # ------------------------------------------------------------------------- shards
    def shard_size(self, shard: int) -> int:
        s = self.settings
        if s.size_spread == 0.0:
            return s.samples_per_node
        gen = torch.Generator().manual_seed(mix_int(self.seed, 2, shard))
        z = float(torch.randn(1, generator=gen)[0])
        sigma = s.size_spread
        size = round(s.samples_per_node * math.exp(sigma * z - sigma * sigma / 2))
        return max(s.batch_size, min(size, self.max_shard_size))

    @property
    def max_shard_size(self) -> int:
        s = self.settings
        return s.samples_per_node if s.size_spread == 0.0 else 8 * s.samples_per_node

    def shard_indices(self, shard: int, size: int) -> torch.Tensor:
        """Pool indices of ``shard``'s samples: ``non_iid`` share from its home region."""
        if not 0 <= shard < self.num_shards:
            raise ValueError(f"shard {shard} outside [0, {self.num_shards})")
        gen = torch.Generator().manual_seed(mix_int(self.seed, 3, shard))
        home = round(self.settings.non_iid * size)
        rest = torch.randint(0, self.pool_size, (size - home,), generator=gen)
        if home == 0:
            return rest
        if self.task == "char-lm":
            block = self.pool_size / self.num_shards
            width = max(size, math.ceil(block))
            start = min(int(shard * block), self.pool_size - width)
            own = start + torch.randint(0, width, (home,), generator=gen)
        else:
            k = self.settings.classes
            classes = [shard % k, (shard + 1) % k]
            members = torch.cat([self._by_class[c] for c in classes])
            if members.numel() == 0:
                members = torch.arange(self.pool_size)
            own = members[torch.randint(0, int(members.numel()), (home,), generator=gen)]
        return torch.cat([own, rest])

    def union_indices(self, num_shards: int) -> torch.Tensor:
        """All samples of shards ``0 .. num_shards-1`` (the centralised baseline's data)."""
        parts = [self.shard_indices(s, self.shard_size(s)) for s in range(num_shards)]
        return torch.cat(parts)

    def batch(self, pool_index: torch.Tensor) -> Batch:
        """Inputs/targets for pool indices of shape [n, S]."""
        if self.task == "char-lm":
            windows = self.text[pool_index[..., None] + self._span]
            c = self.settings.context
            return Batch(windows[..., :c], windows[..., c])
        return Batch(self.features[pool_index], self.labels[pool_index])
