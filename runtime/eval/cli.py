"""Commands around finished training: ``checkpoint reconstruct|publish``, ``benchmark``,
``compete``.

Why one error funnel: every failure that bad input can cause here (a checkpoint from another
run or model, a truncated or tampered file, a path outside ``--allowed-dir``, a bad manifest,
a missing token) is a typed error from the ops modules. They are printed as one line on
stderr with exit code 2, like the other operator commands, never as a traceback; and because
the modules only write at the very end (atomically), such an error has touched no file.

Why ``--allowed-dir`` defaults to the current directory: checkpoint paths may be pasted from
someone else's result file; reading only below a folder the operator chose is the safe default.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

# Light imports only: a bad path or option is refused before torch and transformers load
# (each command checks its inputs with existing_inside, then imports its runner).
from swarm_tune.runtime.ops.checkpoint import (
    CheckpointError,
    OutsideAllowedDirError,
    existing_inside,
)
from swarm_tune.runtime.ops.manifest import ManifestError
from swarm_tune.runtime.training.corpus import SHIPPED_CORPUS

__all__ = ["benchmark", "checkpoint_app", "compete"]

checkpoint_app = typer.Typer(
    help="Turn node checkpoints into a model and publish it.", no_args_is_help=True
)

AllowedDirOpt = Annotated[
    Path,
    typer.Option("--allowed-dir", help="Only read checkpoints below this folder (default: cwd)."),
]
SeqLenOpt = Annotated[int, typer.Option("--seq-len", help="Tokens per evaluated sequence.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass.")]
MaxBatchesOpt = Annotated[
    int | None, typer.Option("--max-batches", help="Evaluate only the first N batches.")
]


def _errors() -> tuple[type[Exception], ...]:
    from swarm_tune.runtime.eval.evaluate import EvalError
    from swarm_tune.runtime.eval.publish import PublishError
    from swarm_tune.runtime.training.data import DataError
    from swarm_tune.runtime.training.lora import LoraError
    from swarm_tune.runtime.training.models import ModelLoadError
    from swarm_tune.runtime.training.tokenizer import TokenizerError

    return (
        CheckpointError,
        ManifestError,
        DataError,
        LoraError,
        ModelLoadError,
        TokenizerError,
        EvalError,
        PublishError,
        OSError,
    )


def _check_inputs(paths: list[Path], allowed_dir: Path) -> None:
    """Refuse a missing or out-of-bounds input at once, before the runner's heavy imports."""
    for path in paths:
        try:
            existing_inside(path, allowed_dir)
        except CheckpointError as exc:
            raise _fail(exc) from None


def _quiet_logs() -> None:
    # Results go to stdout (``--json`` must stay parseable); logs to the process's real
    # stderr, warnings only (a skipped torn checkpoint is worth seeing, "saved" is not).
    from swarm_tune.runtime.ops.logging import configure_logging

    configure_logging("WARNING", "console", stream=sys.__stderr__ or sys.stderr)


def _fail(exc: Exception) -> typer.Exit:
    # One line: manifest errors may carry several problems; join them.
    message = " ".join(str(exc).split("\n")) or type(exc).__name__
    if isinstance(exc, OutsideAllowedDirError):
        # Say the fix, not only the refusal.
        message += " (pass --allowed-dir FOLDER to read checkpoints below another folder)"
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@checkpoint_app.command("reconstruct")
def reconstruct_cmd(
    checkpoints: Annotated[
        list[Path], typer.Argument(help="Checkpoint files or node checkpoint folders.")
    ],
    model: Annotated[str, typer.Option("--model", help="Model the checkpoints are for.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the merged model.")],
    mode: Annotated[str, typer.Option("--mode", help="average or latest.")] = "average",
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Require this run (default: the first's).")
    ] = None,
    allowed_dir: AllowedDirOpt = Path("."),
) -> None:
    """Merge or average node checkpoints into a model folder (save_pretrained)."""
    _check_inputs(checkpoints, allowed_dir)
    from swarm_tune.runtime.eval.reconstruct import reconstruct
    from swarm_tune.runtime.progress import progress_bar

    _quiet_logs()

    if mode not in ("average", "latest"):
        raise _fail(ValueError(f"--mode must be average or latest (got {mode!r})"))
    try:
        with progress_bar("reconstruct", "steps") as update:
            res = reconstruct(
                checkpoints,
                model=model,
                out_dir=out,
                allowed_dir=allowed_dir,
                mode="average" if mode == "average" else "latest",
                run_id=run_id,
                progress=update,
            )
    except _errors() as exc:
        raise _fail(exc) from None
    typer.echo(f"wrote {res.out_dir}")
    typer.echo(f"run {res.run_id}, rounds {res.rounds}, mode {res.mode}")
    typer.echo(f"param digest {res.param_digest}")


@checkpoint_app.command("publish")
def publish_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Folder written by `reconstruct`.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub repository ORG/NAME.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Stage and list the upload; send nothing.")
    ] = False,
    staging_dir: Annotated[
        Path | None,
        typer.Option("--staging-dir", help="Where to stage (default: <MODEL_DIR>.publish)."),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Dataset to name in the model card.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar=["HF_TOKEN", "SWARM_HF_TOKEN"],
            show_default=False,
            help="Hub token (default: HF_TOKEN, SWARM_HF_TOKEN or the hf login cache).",
        ),
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Create a private repo.")] = False,
) -> None:
    """Push a model folder and a generated model card to the Hugging Face Hub."""
    import tempfile

    from swarm_tune.runtime.eval.publish import publish, resolve_token, stage_upload

    _quiet_logs()

    try:
        if dry_run:
            where = staging_dir or model_dir.with_name(model_dir.resolve().name + ".publish")
            staged = stage_upload(model_dir, repo_id, where, data=data)
            typer.echo(f"dry run: {len(staged.files)} files staged in {staged.folder}")
            typer.echo(f"upload manifest: {staged.manifest_path} (target {staged.repo_id})")
            return
        resolve_token(token)  # fail before staging anything
        with tempfile.TemporaryDirectory(prefix="swarm-publish-") as tmp:
            staged = stage_upload(model_dir, repo_id, Path(tmp) / "stage", data=data)
            url = publish(staged, token=token, private=private)
    except _errors() as exc:
        raise _fail(exc) from None
    typer.echo(f"uploaded {len(staged.files)} files to {repo_id}: {url}")


def benchmark(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file/folder or model folder.")],
    model: Annotated[
        str | None, typer.Option("--model", help="Require this model (default: the checkpoint's).")
    ] = None,
    data: Annotated[
        str, typer.Option("--data", help="tinytales, a text file/folder or a hub id.")
    ] = SHIPPED_CORPUS,
    split: Annotated[str, typer.Option("--split", help="Held-out split.")] = "validation",
    seq_len: SeqLenOpt = 64,
    batch_size: BatchOpt = 8,
    max_batches: MaxBatchesOpt = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Require this run.")] = None,
    text_column: Annotated[str, typer.Option("--text-column", help="Hub text column.")] = "text",
    allowed_dir: AllowedDirOpt = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
) -> None:
    """Perplexity of a checkpoint on a held-out split (deterministic, with hashes)."""
    _check_inputs([checkpoint], allowed_dir)
    from swarm_tune.runtime.eval.evaluate import benchmark as run_benchmark
    from swarm_tune.runtime.progress import progress_bar

    _quiet_logs()

    try:
        with progress_bar("benchmark", "sequences") as update:
            r = run_benchmark(
                checkpoint,
                allowed_dir=allowed_dir,
                model=model,
                run_id=run_id,
                data=data,
                split=split,
                seq_len=seq_len,
                batch_size=batch_size,
                max_batches=max_batches,
                text_column=text_column,
                progress=lambda done, total: update(done, total, ""),
            )
    except _errors() as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(r.to_dict(), indent=2))
        return
    typer.echo(f"perplexity        {r.perplexity!r}")
    typer.echo(f"mean loss         {r.mean_loss!r}")
    typer.echo(f"tokens            {r.tokens} ({r.sequences} x {r.seq_len})")
    typer.echo(f"checkpoint sha256 {r.checkpoint_sha256}")
    typer.echo(f"data sha256       {r.data_sha256 or 'n/a (hub dataset)'}")
    typer.echo(f"tokens sha256     {r.tokens_sha256}")


def compete(
    team_a: Annotated[Path, typer.Option("--team-a", help="Team A's checkpoint.")],
    team_b: Annotated[Path, typer.Option("--team-b", help="Team B's checkpoint.")],
    out: Annotated[Path, typer.Option("--out", help="Result JSON to write.")],
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="Competition manifest (runs/*.json).")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Require this model.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Override the eval data.")] = None,
    split: Annotated[str | None, typer.Option("--split", help="Held-out split.")] = None,
    seq_len: SeqLenOpt = 64,
    batch_size: BatchOpt = 8,
    max_batches: MaxBatchesOpt = None,
    allowed_dir: AllowedDirOpt = Path("."),
) -> None:
    """Evaluate two teams' checkpoints on the same data and write a verifiable result."""
    _check_inputs([team_a, team_b], allowed_dir)
    from swarm_tune.runtime.eval.compete import compete as run_compete
    from swarm_tune.runtime.progress import progress_bar

    _quiet_logs()

    try:
        with progress_bar("compete", "sequences") as update:
            result: dict[str, Any] = run_compete(
                team_a,
                team_b,
                out=out,
                allowed_dir=allowed_dir,
                manifest=manifest,
                model=model,
                data=data,
                split=split,
                seq_len=seq_len,
                batch_size=batch_size,
                max_batches=max_batches,
                progress=update,
            )
    except _errors() as exc:
        raise _fail(exc) from None
    for name, team in result["teams"].items():
        typer.echo(f"{name}: perplexity {team['perplexity']!r} (loss {team['mean_loss']!r})")
    typer.echo(f"winner: {result['winner'] or 'tie'}  -> {out}")
