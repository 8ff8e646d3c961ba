"""LoRA adapters (the ``peft`` library): train and exchange low-rank adapters, not the model.

Why this is enough for the whole swarm: the learner exchanges exactly the parameters that
require a gradient (hf_learner.py), and ``get_peft_model`` freezes the base and leaves only
the adapters' A and B matrices trainable. So contributions, validation, averaging, state sync
and checkpoints all carry adapters only, and their size is what the wire costs.

Why the adapters' initialisation is seeded: every replica must start from the same A (B starts
at zero, so the merged model starts as the base), or averaging A and B would mix unrelated
subspaces. ``merge`` folds averaged adapters into the base with peft's own merge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # torch loads with the model, not when settings check a LoRA spec
    import torch

__all__ = [
    "LORA_KEY",
    "LoraError",
    "LoraSettings",
    "LoraSpec",
    "apply_lora",
    "merge",
    "parse_targets",
]

LORA_KEY = "lora"  # key of a checkpoint's extra that holds LoraSpec.record(...)


class LoraError(ValueError):
    """A LoRA setting that cannot apply to this model (e.g. a target module it lacks)."""


@dataclass(frozen=True, slots=True)
class LoraSpec:
    rank: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise LoraError(f"LoRA rank must be >= 1, got {self.rank}")
        if not self.alpha > 0:
            raise LoraError(f"LoRA alpha must be > 0, got {self.alpha}")
        if not self.target_modules or not all(m.strip() for m in self.target_modules):
            raise LoraError("LoRA target modules: name at least one module (e.g. q_proj)")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def record(self, base_seed: int) -> dict[str, Any]:
        """What a checkpoint keeps (``extra[LORA_KEY]``) so reconstruct can merge: the spec
        and the seed a built-in tiny base was initialised with."""
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "target_modules": list(self.target_modules),
            "base_seed": base_seed,
        }

    @classmethod
    def from_record(cls, record: object) -> tuple[LoraSpec, int]:
        """(spec, base seed) from a checkpoint's record; LoraError if it is malformed."""
        try:
            assert isinstance(record, dict)
            rank, alpha, seed = record["rank"], record["alpha"], record["base_seed"]
            targets = record["target_modules"]
            assert all(isinstance(v, int) and not isinstance(v, bool) for v in (rank, alpha, seed))
            assert isinstance(targets, list) and all(isinstance(t, str) for t in targets)
        except (AssertionError, KeyError) as exc:
            raise LoraError(f"checkpoint's LoRA record is malformed: {record!r}") from exc
        return cls(rank, alpha, tuple(targets)), seed


_LORA = LoraSpec()


class LoraSettings(BaseModel):
    """A LoRA spec as a YAML/JSON block: a sim scenario's ``learning.lora`` (real mode) and a
    run manifest's ``model.lora``. The defaults are LoraSpec's, written nowhere else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(default=_LORA.rank, ge=1)
    alpha: int = Field(default=_LORA.alpha, ge=1)
    target_modules: tuple[str, ...] = Field(default=_LORA.target_modules, min_length=1)

    def to_spec(self) -> LoraSpec:
        return LoraSpec(self.rank, self.alpha, self.target_modules)


def apply_lora(model: torch.nn.Module, spec: LoraSpec, *, seed: int = 0) -> torch.nn.Module:
    """``model`` with adapters on ``spec.target_modules`` (base frozen), A seeded by ``seed``."""
    import torch
    from peft import LoraConfig, get_peft_model  # heavy, only with LoRA

    known = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    missing = [m for m in spec.target_modules if m not in known]
    if missing:
        linear = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, mod in model.named_modules()
                if isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D"
            }
        )
        raise LoraError(
            f"LoRA target modules not in the model: {', '.join(map(repr, missing))} "
            f"(its linear layers: {', '.join(linear)})"
        )
    config: Any = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        target_modules=list(spec.target_modules),
        lora_dropout=0.0,
        bias="none",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wrapped: Any = get_peft_model(model, config)
    assert isinstance(wrapped, torch.nn.Module)
    return wrapped


def merge(
    base: torch.nn.Module, spec: LoraSpec, adapters: Mapping[str, torch.Tensor]
) -> torch.nn.Module:
    """``base`` with ``adapters`` (names as the learner exchanges them) folded in:
    W + scale * B @ A on every target module; returns a plain model, no adapters left."""
    import torch

    wrapped: Any = apply_lora(base, spec)
    own = dict(wrapped.named_parameters())
    unknown = sorted(set(adapters) - set(own))[:3]
    if unknown:
        raise LoraError(f"adapter tensors not in this model: {unknown}")
    with torch.no_grad():
        for name, t in adapters.items():
            own[name].copy_(t.to(dtype=own[name].dtype))
    merged: Any = wrapped.merge_and_unload()
    assert isinstance(merged, torch.nn.Module)
    return merged


def parse_targets(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"q_proj,v_proj"`` (or a list) -> the target module names."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(i.strip() for i in items if i.strip())
