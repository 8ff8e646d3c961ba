"""Figures of merit computed from run tables: tokens spent, tokens-to-target, final loss.

Why tokens and not rounds: a swarm round and a centralized step are not the same amount of
work (offline nodes train nothing; a straggler's round may contribute nothing), so the fair
comparison with the centralized baseline is the training data each side consumed before its
held-out loss first reached a target. The swarm's consumption is counted from what nodes
actually did: every ``rounds`` row with a finite training loss is one local step of
``batch_size * local_steps`` samples, and swarm round R has consumed the steps that closed by
the virtual time the swarm reached R. The baseline writes its own ``tokens`` column.

Why "tokens" = samples x tokens_per_sample: the surrogate predicts one token (char-lm) or one
label per sample; real mode trains on ``seq_len`` tokens a sample. The ratio to the baseline
does not depend on this constant, the absolute figure does.

The swarm's loss is ``eval_loss_median``: the held-out loss of the median node's OWN
parameters, i.e. what a participant actually walks away with (the loss of the average of the
models, ``eval_loss_mean_model``, flatters a drifting swarm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from swarm_tune.analysis.load import RunData

LOSS_COLUMN = "eval_loss_median"


def tokens_per_step(run: RunData) -> int:
    learn = run.learning()
    batch = int(learn.get("batch_size", 1)) * int(learn.get("local_steps", 1))
    per_sample = int(learn.get("seq_len", 1)) if learn.get("mode") == "real" else 1
    return batch * per_sample


def swarm_tokens(run: RunData) -> pd.Series:
    """Cumulative tokens consumed at each ``swarm`` row (index aligned with run.swarm)."""
    swarm = run.swarm
    if "tokens" in swarm.columns:
        return swarm["tokens"].astype("float64")
    rounds = run.rounds
    if rounds.empty or "loss" not in rounds.columns:
        return pd.Series(np.nan, index=swarm.index, dtype="float64")
    closes = np.sort(rounds.loc[np.isfinite(rounds["loss"].to_numpy()), "t_close"].to_numpy())
    steps = np.searchsorted(closes, swarm["t"].to_numpy(dtype="float64"), side="right")
    return pd.Series(steps * float(tokens_per_step(run)), index=swarm.index, dtype="float64")


def loss_curve(run: RunData) -> pd.DataFrame:
    """round, t, tokens, loss for rows where the loss was measured."""
    df = pd.DataFrame(
        {
            "round": run.swarm["round"].astype("int64"),
            "t": run.swarm["t"].astype("float64"),
            "tokens": swarm_tokens(run),
            "loss": run.swarm[LOSS_COLUMN].astype("float64"),
        }
    )
    return df[np.isfinite(df["loss"].to_numpy())].reset_index(drop=True)


def tokens_to_target(run: RunData, target: float) -> float:
    """Tokens consumed when the loss first reached ``target`` (inf if it never did)."""
    curve = loss_curve(run)
    hit = curve[curve["loss"] <= target]
    return float(hit["tokens"].iloc[0]) if not hit.empty else math.inf


def final_loss(run: RunData) -> float:
    curve = loss_curve(run)
    return float(curve["loss"].iloc[-1]) if not curve.empty else math.nan


def initial_loss(run: RunData) -> float:
    curve = loss_curve(run)
    return float(curve["loss"].iloc[0]) if not curve.empty else math.nan


@dataclass(frozen=True, slots=True)
class Comparison:
    """A swarm run against its centralized baseline."""

    target_loss: float
    swarm_tokens: float
    baseline_tokens: float
    swarm_final: float
    baseline_final: float

    @property
    def tokens_ratio(self) -> float:
        if not math.isfinite(self.swarm_tokens):
            return math.inf
        return self.swarm_tokens / self.baseline_tokens if self.baseline_tokens > 0 else math.nan

    @property
    def final_ratio(self) -> float:
        return self.swarm_final / self.baseline_final


def compare(swarm: RunData, baseline: RunData, target_fraction: float) -> Comparison:
    """Target = initial loss minus ``target_fraction`` of the baseline's total improvement.

    Defined relative to the baseline so the target moves with the model and data instead of
    being a magic number that silently goes stale.
    """
    start, end = initial_loss(baseline), final_loss(baseline)
    target = start - target_fraction * (start - end)
    return Comparison(
        target_loss=target,
        swarm_tokens=tokens_to_target(swarm, target),
        baseline_tokens=tokens_to_target(baseline, target),
        swarm_final=final_loss(swarm),
        baseline_final=end,
    )
