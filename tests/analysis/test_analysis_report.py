"""The report on a REAL quickstart run: plotted numbers checked against the parquet files."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from swarm_tune.analysis.columns import column
from swarm_tune.analysis.load import NotARunError, load_run
from swarm_tune.analysis.report import count_images, plot_data
from swarm_tune.runtime.cli import app
from swarm_tune.sim.runner import run_scenario
from swarm_tune.sim.scenario import load_scenario

QUICKSTART = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"


def _series(data: dict[str, dict], key: str, label: str) -> dict:
    for s in data[key]["series"]:
        if s["label"] == label:
            return s
    raise AssertionError(
        f"{key}: no series {label!r} in {[s['label'] for s in data[key]['series']]}"
    )


def _close(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x is None and (y is None or math.isnan(y))) or math.isclose(x, y, rel_tol=1e-12)


def test_report_is_self_contained_with_at_least_five_plots(report_html: str) -> None:
    assert count_images(report_html) >= 5
    assert "<table" in report_html
    # Self-contained: nothing is loaded from anywhere else.
    assert 'src="http' not in report_html and "<link" not in report_html


def test_loss_series_match_the_parquet(runs: tuple[Path, Path], report_html: str) -> None:
    run, base = runs
    data = plot_data(report_html)
    swarm = pq.read_table(run / "swarm.parquet").to_pandas()
    measured = swarm[swarm["eval_loss_median"].notna()]
    s = _series(data, "loss_vs_round", "quickstart-s7")
    _close(s["x"], measured["round"].astype(float).tolist())
    _close(s["y"], measured["eval_loss_median"].tolist())
    t = _series(data, "loss_vs_t", "quickstart-s7")
    _close(t["x"], measured["t"].tolist())
    _close(t["y"], measured["eval_loss_median"].tolist())
    b = pq.read_table(base / "swarm.parquet").to_pandas()
    bs = _series(data, "loss_vs_round", "centralized baseline")
    _close(bs["x"], b["round"].astype(float).tolist())
    _close(bs["y"], b["eval_loss_median"].tolist())
    # The reference starts where the swarm starts (same model, same initial weights).
    assert math.isclose(bs["y"][0], s["y"][0], rel_tol=1e-6)
    assert bs["y"][-1] < bs["y"][0] and s["y"][-1] < s["y"][0]


def test_traffic_and_contributions_match_the_parquet(
    runs: tuple[Path, Path], report_html: str
) -> None:
    run, _ = runs
    data = plot_data(report_html)
    rounds = pq.read_table(run / "rounds.parquet").to_pandas()
    sent = _series(data, "bytes_per_node:quickstart-s7", "sent")
    recv = _series(data, "bytes_per_node:quickstart-s7", "received")
    for node, s_val, r_val in zip(sent["x"], sent["y"], recv["y"], strict=True):
        mine = rounds[rounds["node"] == node]
        assert s_val == float(mine["bytes_sent"].sum())
        assert r_val == float(mine["bytes_recv"].sum())
    assert sorted(sent["x"]) == sorted(rounds["node"].unique())
    # The quickstart adversary is marked on the traffic plot, and only it.
    adversaries = sorted(rounds.loc[rounds["adversary"] != "", "node"].unique())
    assert adversaries and data["bytes_per_node:quickstart-s7"]["highlight"] == adversaries
    # Rejections by reason, cross-checked against the separate rejections table.
    c = _series(data, "contributions:quickstart-s7", "contributions")
    counts = dict(zip(c["x"], c["y"], strict=True))
    assert counts["accepted"] == float(rounds["accepted"].sum())
    by_reason = pq.read_table(run / "rejections.parquet").to_pandas()["reason"].value_counts()
    assert by_reason.sum() > 0  # the quickstart adversary is rejected
    assert {k.removeprefix("rejected: "): v for k, v in counts.items() if k != "accepted"} == {
        str(r): float(n) for r, n in by_reason.items()
    }


def test_durations_and_churn_match_the_parquet(runs: tuple[Path, Path], report_html: str) -> None:
    run, _ = runs
    data = plot_data(report_html)
    rounds = pq.read_table(run / "rounds.parquet").to_pandas()
    d = _series(data, "round_durations:quickstart-s7", "all nodes")
    _close(sorted(d["x"]), sorted((rounds["t_close"] - rounds["t_open"]).tolist()))
    swarm = pq.read_table(run / "swarm.parquet").to_pandas()
    online = _series(data, "churn:quickstart-s7", "online")
    _close(online["y"], swarm["online"].astype(float).tolist())
    div = _series(data, "divergence", "quickstart-s7")
    measured = swarm[swarm["divergence"].notna()]
    _close(div["y"], measured["divergence"].tolist())


def test_baseline_folder_loads_without_optional_tables(runs: tuple[Path, Path]) -> None:
    _, base = runs
    b = load_run(base)
    assert b.is_baseline and b.rounds.empty and b.events.empty
    assert list(b.swarm["tokens"]) == sorted(b.swarm["tokens"])


def test_not_a_run_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "swarm.parquet").write_bytes(b"not parquet")
    with pytest.raises(NotARunError, match=r"missing manifest\.json"):
        load_run(tmp_path)
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "no such folder" in res.output


def test_several_runs_give_one_line_per_configuration(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    run, base = runs
    other = load_scenario(QUICKSTART).model_copy(update={"seed": 8})
    run_scenario(other, tmp_path / "s8")
    res = CliRunner().invoke(app, ["report", str(run), str(tmp_path / "s8"), str(base)])
    assert res.exit_code == 0, res.output
    data = plot_data(Path(res.output.strip().splitlines()[-1]).read_text(encoding="utf-8"))
    labels = [s["label"] for s in data["loss_vs_round"]["series"]]
    assert labels == ["quickstart-s7", "quickstart-s8", "centralized baseline"]
    s8 = pd.read_parquet(tmp_path / "s8" / "swarm.parquet")
    _close(
        _series(data, "loss_vs_round", "quickstart-s8")["y"],
        s8["eval_loss_median"].dropna().tolist(),
    )


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("bytes", 1833556452, "1.83 GB"),
        ("bytes", 512, "512 B"),
        ("wall_s", 0.983, "0.983 s"),
        ("virtual_s", 132.0, "2 min 12 s"),
        ("virtual_s", 59.7, "59.7 s"),
        ("virtual_s", 3599.6, "1 h 00 min"),
        ("tokens_to_target", math.inf, "never"),
        ("x_baseline_tokens", 1.047, "1.05×"),
        ("final_loss", math.nan, "—"),
        ("some_new_metric", 12345.0, "12,345"),
    ],
)
def test_columns_are_shown_humanised(name: str, value: float, shown: str) -> None:
    col = column(name)
    assert "_" not in col.header
    assert col.fmt(value) == shown


def test_a_histogram_of_nearly_equal_values_draws() -> None:
    # A short real-mode run: every round took the same time but for a few ulps.
    from swarm_tune.analysis.figures import png_bytes
    from swarm_tune.analysis.series import Plot, Series

    same = [0.7, 0.7 + 1e-16, 0.7 - 1e-16, 0.7]
    plot = Plot("d", "round durations", "s", "rounds", [Series("rounds", same, [], "hist")])
    assert png_bytes(plot).startswith(b"\x89PNG")
