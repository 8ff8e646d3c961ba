"""Progress of the long evaluation commands: ``compete`` and ``checkpoint reconstruct`` report
done-of-total that only grows and ends at its total (what the user's bar is drawn from)."""

from __future__ import annotations

from pathlib import Path

from ops_eval_helpers import Trained

from swarm_tune.runtime.eval.compete import compete
from swarm_tune.runtime.eval.reconstruct import reconstruct

Call = tuple[int, int, str]


def _steady(calls: list[Call]) -> None:
    """One total throughout, ``done`` never falls, and the last call is the whole of it."""
    assert calls, "no progress reported"
    totals = {total for _, total, _ in calls}
    assert len(totals) == 1 and totals.pop() > 0, calls
    dones = [done for done, _, _ in calls]
    assert dones == sorted(dones), calls
    assert calls[-1][0] == calls[-1][1], calls


def test_compete_counts_both_teams_sequences(trained: Trained, tmp_path: Path) -> None:
    calls: list[Call] = []
    compete(
        trained.red,
        trained.blue,
        out=tmp_path / "result.json",
        allowed_dir=trained.root,
        max_batches=2,
        progress=lambda done, total, note: calls.append((done, total, note)),
    )
    _steady(calls)
    # Team a's sequences first, then team b's: each half of the bar is one team.
    half = calls[-1][1] // 2
    assert [n for d, _, n in calls if d <= half] == ["a"] * sum(d <= half for d, _, _ in calls)
    assert {n for d, _, n in calls if d > half} == {"b"}


def test_reconstruct_counts_each_checkpoint_then_merge_build_save(
    trained: Trained, tmp_path: Path
) -> None:
    calls: list[Call] = []
    out = tmp_path / "merged"
    reconstruct(
        list(trained.node_dirs),
        model="tiny-gpt2",
        out_dir=out,
        allowed_dir=trained.root,
        progress=lambda done, total, note: calls.append((done, total, note)),
    )
    _steady(calls)
    assert calls[-1][1] == len(trained.node_dirs) + 3
    assert [n.split()[0] for _, _, n in calls] == [
        "verified",
        "verified",
        "average",
        "model",
        "saved",
    ]
