"""Random distributions as YAML-friendly values: latency, session lengths, compute times.

Why a tagged union of tiny pydantic models instead of "a callable": scenarios must be data
(validated, diffable, written back resolved into the run folder), and every sample must come
from a seeded ``random.Random`` that the caller owns, so the same seed replays the same world.
``random.Random``'s own ``expovariate``/``lognormvariate``/``weibullvariate`` are used: they
are exactly reproducible across platforms, unlike numpy's legacy global state.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Constant(_Dist):
    dist: Literal["constant"] = "constant"
    value: float = Field(ge=0)

    def sample(self, rng: random.Random) -> float:
        return self.value

    @property
    def mean(self) -> float:
        return self.value


class Uniform(_Dist):
    dist: Literal["uniform"] = "uniform"
    low: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    @property
    def mean(self) -> float:
        return 0.5 * (self.low + self.high)


class Exponential(_Dist):
    dist: Literal["exponential"] = "exponential"
    mean_: float = Field(gt=0, alias="mean")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean_)

    @property
    def mean(self) -> float:
        return self.mean_


class LogNormal(_Dist):
    """Parameterised by its median (what people can guess) and the sigma of log(x)."""

    dist: Literal["lognormal"] = "lognormal"
    median: float = Field(gt=0)
    sigma: float = Field(ge=0)

    def sample(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median), self.sigma)

    @property
    def mean(self) -> float:
        return self.median * math.exp(0.5 * self.sigma**2)


class Weibull(_Dist):
    """Session lengths in P2P measurements are Weibull with shape < 1 (heavy tail)."""

    dist: Literal["weibull"] = "weibull"
    scale: float = Field(gt=0)
    shape: float = Field(gt=0)

    def sample(self, rng: random.Random) -> float:
        return rng.weibullvariate(self.scale, self.shape)

    @property
    def mean(self) -> float:
        return self.scale * math.gamma(1.0 + 1.0 / self.shape)


class Normal(_Dist):
    """Truncated at ``min`` (times cannot be negative)."""

    dist: Literal["normal"] = "normal"
    mean_: float = Field(alias="mean")
    std: float = Field(ge=0)
    min: float = 0.0

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def sample(self, rng: random.Random) -> float:
        return max(self.min, rng.gauss(self.mean_, self.std))

    @property
    def mean(self) -> float:
        return max(self.min, self.mean_)


Distribution = Annotated[
    Constant | Uniform | Exponential | LogNormal | Weibull | Normal, Field(discriminator="dist")
]


def constant(value: float) -> Constant:
    return Constant(value=value)
