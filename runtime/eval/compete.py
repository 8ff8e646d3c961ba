"""Decide a two-team competition with a result file anyone can check.

Why a result *file* with hashes and a command: the teams do not trust each other or the
organiser. The file names the checkpoint files by SHA-256, the evaluation text and the exact
token tensor by SHA-256, the code version, every evaluation setting, and for each team the
exact ``swarm-tune benchmark ...`` command that recomputes its number. Evaluation is
bit-deterministic (see ``evaluate``), so "verify" means "re-run and compare for equality",
not "compare within a tolerance".

Tie rule: the team with the strictly lower mean token loss (equivalently perplexity) wins.
Equal losses, compared as exact floats, are a tie and ``winner`` is ``null``; because the
numbers are reproducible bit for bit there is no tolerance to argue about.

With a run manifest, team names come from ``competition.teams`` (in file order: team A is
the first), each checkpoint must come from that team's run (``<run_id>-<team>``) and model,
and the evaluation data is ``competition.eval_dataset``; a checkpoint from the wrong team is a
:class:`WrongRunError`. Both checkpoints are verified before either is evaluated, and the
result is written atomically only at the end, so bad input leaves every file untouched.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm_tune.runtime.eval.evaluate import BenchmarkResult, benchmark, load_model_source
from swarm_tune.runtime.ops.atomic_io import atomic_write_text
from swarm_tune.runtime.ops.checkpoint import BASE_CONFIG_KEY, WrongModelError
from swarm_tune.runtime.ops.manifest import ManifestError, load_manifest
from swarm_tune.runtime.ops.provenance import code_version
from swarm_tune.runtime.training.corpus import SHIPPED_CORPUS

__all__ = ["TIE_RULE", "EvalPlan", "benchmark_command", "compete", "plan_from_manifest"]

TIE_RULE = (
    "lower mean token loss (= lower perplexity) wins; exactly equal losses are a tie "
    "(winner null); no tolerance, evaluation is bit-reproducible"
)


@dataclass(frozen=True, slots=True)
class EvalPlan:
    """Everything both teams are evaluated with."""

    teams: tuple[str, str]
    run_ids: tuple[str | None, str | None]
    model: str | None
    data: str
    split: str
    text_column: str = "text"


def plan_from_manifest(path: Path, *, data: str | None = None) -> EvalPlan:
    """Team names, run ids, model and eval data from a competition manifest."""
    manifest = load_manifest(path)
    comp = manifest.competition
    if comp is None:
        raise ManifestError(path, ["not a competition manifest (no 'competition' section)"])
    names = list(comp.teams)
    if len(names) != 2:
        raise ManifestError(path, [f"compete ranks exactly two teams, manifest has {len(names)}"])
    a, b = names
    ds = comp.eval_dataset
    return EvalPlan(
        teams=(a, b),
        run_ids=(f"{manifest.run_id}-{a}", f"{manifest.run_id}-{b}"),
        model=manifest.model.name,
        data=data if data is not None else ds.name,
        split=ds.held_out_split or "validation",
        text_column=ds.text_field,
    )


def benchmark_command(r: BenchmarkResult, allowed_dir: Path, text_column: str) -> str:
    """The shell command that recomputes ``r`` (prints JSON to compare field by field)."""
    args = ["swarm-tune", "benchmark", r.checkpoint, "--model", r.model, "--data", r.data]
    args += ["--split", r.split, "--seq-len", str(r.seq_len), "--batch-size", str(r.batch_size)]
    if r.max_batches is not None:
        args += ["--max-batches", str(r.max_batches)]
    if r.run_id is not None:
        args += ["--run-id", r.run_id]
    if text_column != "text":
        args += ["--text-column", text_column]
    args += ["--allowed-dir", str(allowed_dir.resolve()), "--json"]
    return shlex.join(args)


def _team(r: BenchmarkResult, command: str) -> dict[str, Any]:
    return {
        "checkpoint": r.checkpoint,
        "checkpoint_sha256": r.checkpoint_sha256,
        "run_id": r.run_id,
        "round": r.round,
        "mean_loss": r.mean_loss,
        "perplexity": r.perplexity,
        "verify_command": command,
    }


def compete(
    team_a: Path,
    team_b: Path,
    *,
    out: Path,
    allowed_dir: Path,
    manifest: Path | None = None,
    model: str | None = None,
    data: str | None = None,
    split: str | None = None,
    seq_len: int = 64,
    batch_size: int = 8,
    max_batches: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate both checkpoints on the same data, write ``out``, return the result.

    ``progress(done, total, team)`` counts the sequences of both evaluations together."""
    if manifest is not None:
        plan = plan_from_manifest(manifest, data=data)
        if model is not None and model != plan.model:
            raise WrongModelError(f"--model {model!r} but the manifest's model is {plan.model!r}")
        if split is not None:
            plan = EvalPlan(plan.teams, plan.run_ids, plan.model, plan.data, split)
    else:
        plan = EvalPlan(
            ("a", "b"), (None, None), model, data or SHIPPED_CORPUS, split or "validation"
        )
    # Verify both before spending time evaluating either, and pin one model for both.
    srcs = [
        load_model_source(p, allowed_dir=allowed_dir, expected_run_id=r, expected_model=plan.model)
        for p, r in zip((team_a, team_b), plan.run_ids, strict=True)
    ]
    # One base model: by its config hash where checkpoints carry one (a save_pretrained
    # folder may have moved between the two runs), else by name (ops/checkpoint.py).
    models = {
        (s.meta.extra.get(BASE_CONFIG_KEY) or s.meta.model_name) if s.meta else None for s in srcs
    }
    if len(models) != 1:
        names = sorted({str(s.meta.model_name) if s.meta else "None" for s in srcs})
        raise WrongModelError(f"the two checkpoints are for different models: {names}")

    def team_progress(index: int) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        report = progress
        return lambda done, total: report(index * total + done, 2 * total, plan.teams[index])

    results = [
        benchmark(
            s.path,
            allowed_dir=allowed_dir,
            model=plan.model,
            run_id=r,
            data=plan.data,
            split=plan.split,
            seq_len=seq_len,
            batch_size=batch_size,
            max_batches=max_batches,
            text_column=plan.text_column,
            progress=team_progress(i),
        )
        for i, (s, r) in enumerate(zip(srcs, plan.run_ids, strict=True))
    ]
    ra, rb = results
    assert ra.tokens_sha256 == rb.tokens_sha256  # same tokenizer and data by construction
    if ra.mean_loss < rb.mean_loss:
        winner: str | None = plan.teams[0]
    elif rb.mean_loss < ra.mean_loss:
        winner = plan.teams[1]
    else:
        winner = None
    result: dict[str, Any] = {
        "format": "swarm-tune/compete/1",
        "winner": winner,
        "tie_rule": TIE_RULE,
        "manifest": str(manifest.resolve()) if manifest is not None else None,
        "teams": {
            name: _team(r, benchmark_command(r, allowed_dir, plan.text_column))
            for name, r in zip(plan.teams, results, strict=True)
        },
        "eval": {
            "model": ra.model,
            "data": ra.data,
            "split": ra.split,
            "data_sha256": ra.data_sha256,
            "tokens_sha256": ra.tokens_sha256,
            "seq_len": seq_len,
            "batch_size": batch_size,
            "max_batches": max_batches,
            "sequences": ra.sequences,
            "tokens": ra.tokens,
        },
        "code_version": code_version(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return result
