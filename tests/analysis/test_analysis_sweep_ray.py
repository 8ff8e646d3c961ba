"""Sweeps on Ray: the driver ships its own code, the workers prove they ran it.

The cheap tests stage the code (from the running package and from a wheel) and refuse bad
input. The cluster test starts a real two-node Ray cluster on this machine: a head that runs
no tasks, and a worker node started from a fresh venv that can import the dependencies but
not swarm_tune (the editable install's link stays out, as in the wheel test). Every point
must run there, from the shipped tree, and land on the driver's disk.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import site
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from procs import REPO, free_port, patience
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.sim import ray_ship
from swarm_tune.sim.sweep_run import DONE, PointOutput, PointTask, SweepBackendError, commit_point

SWEEP = REPO / "scenarios" / "sweep-churn.yaml"
PY = sys.executable


def _small_sweep(tmp: Path) -> Path:
    data = yaml.safe_load(SWEEP.read_text(encoding="utf-8"))
    data["rounds"]["target"] = 3
    data["sweep"] = {"grid": {"protocol.strategy": ["flat", "gossip"]}, "seeds": [1]}
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _wheel_of_running_code(path: Path) -> Path:
    """A wheel-shaped zip of the running package plus a dist-info folder (not shipped)."""
    root = Path(ray_ship.running_code().path)
    with zipfile.ZipFile(path, "w") as zf:
        for f in ray_ship._files(root):
            zf.write(f, f"swarm_tune/{f.relative_to(root).as_posix()}")
        zf.writestr("swarm_tune-0.1.0.dist-info/METADATA", "Name: swarm-tune\n")
    return path


def test_staged_tree_and_wheel_carry_the_running_code(tmp_path: Path) -> None:
    running = ray_ship.running_code()
    from_tree = ray_ship.stage(tmp_path / "tree")
    assert from_tree.sha256 == running.sha256
    assert not any(p.is_symlink() for p in Path(from_tree.path).rglob("*"))
    from_wheel = ray_ship.stage(tmp_path / "wheel", _wheel_of_running_code(tmp_path / "x.whl"))
    assert from_wheel.sha256 == running.sha256
    assert not (tmp_path / "wheel" / "swarm_tune-0.1.0.dist-info").exists()
    # The hash is of the bytes: one changed file is another code.
    (Path(from_wheel.path) / "sim" / "sweep_run.py").write_text("# edited\n", encoding="utf-8")
    assert ray_ship.tree_sha256(Path(from_wheel.path)) != running.sha256


def test_bad_wheels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ray_ship.ShipError, match="no such file"):
        ray_ship.check_wheel(tmp_path / "missing.whl")
    (tmp_path / "text.whl").write_text("not a zip", encoding="utf-8")
    with pytest.raises(ray_ship.ShipError, match="not a zip"):
        ray_ship.check_wheel(tmp_path / "text.whl")
    with zipfile.ZipFile(tmp_path / "other.whl", "w") as zf:
        zf.writestr("other/__init__.py", "")
    with pytest.raises(ray_ship.ShipError, match=r"no swarm_tune/__init__\.py"):
        ray_ship.check_wheel(tmp_path / "other.whl")
    with zipfile.ZipFile(tmp_path / "evil.whl", "w") as zf:
        zf.writestr("swarm_tune/__init__.py", "")
        zf.writestr("swarm_tune/../../escaped.py", "")
    with pytest.raises(ray_ship.ShipError, match="unsafe member"):
        ray_ship.stage(tmp_path / "stage", tmp_path / "evil.whl")
    assert not (tmp_path / "escaped.py").exists()


def test_cli_refuses_a_bad_wheel_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["sim", "sweep", str(_small_sweep(tmp_path)), "--backend", "ray",
            "--ray-wheel", str(tmp_path / "missing.whl"), "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2, res.output
    assert "no such file" in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()
    res = CliRunner().invoke(app, [*argv[:3], "--ray-wheel", "x.whl", "--out", str(out)])
    assert res.exit_code == 2 and "needs --backend ray" in res.output
    assert not out.exists()


def test_a_returned_file_cannot_escape_the_point_folder(tmp_path: Path) -> None:
    task = PointTask("p", "c", {}, 1, "", str(tmp_path / "points" / "p"), "s")
    code = ray_ship.CodeOrigin("/x", "0" * 64)
    with pytest.raises(SweepBackendError, match="unsafe file name"):
        commit_point(task, PointOutput({}, {"../../evil": b"x"}, code))
    assert not (tmp_path / "evil").exists() and not (tmp_path / "points" / "p").exists()
    commit_point(task, PointOutput({"point": "p"}, {"swarm.parquet": b"1"}, code))
    assert json.loads((tmp_path / "points" / "p" / DONE).read_text())["point"] == "p"


def _worker_venv(root: Path) -> Path:
    """A venv that sees the dependencies but not swarm_tune (see the wheel test's note)."""
    venv = root / "venv"
    subprocess.run([PY, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    shared = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "zz-test-deps.pth").write_text("\n".join(shared) + "\n", encoding="utf-8")
    return python


def _ray_start(python: Path, cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    ports = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--runtime-env-agent-port", "--metrics-export-port")  # fmt: skip
    argv = [str(python), "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
            "--node-ip-address", "127.0.0.1", *args]  # fmt: skip
    for flag in ports:  # two nodes on one machine: no fixed default port may be shared
        argv += [flag, str(free_port())]
    log = (cwd / f"ray-{len(list(cwd.glob('ray-*.log')))}.log").open("wb")
    # Its own session: the raylet, GCS and workers it starts are killed with it (by group id).
    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]  # the cluster's auth token, no PYTHONPATH
    worker_python: Path


@pytest.fixture
def two_node_cluster(tmp_path: Path) -> Iterator[Cluster]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    node_dir = tmp_path / "nodes"
    node_dir.mkdir()
    worker_python = _worker_venv(tmp_path)
    probe = subprocess.run(
        [str(worker_python), "-c", "import swarm_tune"], cwd=node_dir, env=env,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert probe.returncode != 0, "the worker venv must not see swarm_tune"
    port = free_port()
    procs = [
        _ray_start(Path(PY), node_dir, env, "--head", "--port", str(port), "--num-cpus", "0",
                   "--include-dashboard", "false", "--ray-client-server-port", str(free_port())),
        _ray_start(worker_python, node_dir, env, "--address", f"127.0.0.1:{port}",
                   "--num-cpus", "2"),
    ]  # fmt: skip
    try:
        yield Cluster(f"127.0.0.1:{port}", env, worker_python)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.slow
@pytest.mark.timeout(patience(300))
def test_two_node_cluster_runs_the_shipped_code(tmp_path: Path, two_node_cluster: Cluster) -> None:
    out = tmp_path / "out"
    cluster = two_node_cluster
    argv = [PY, "-m", "swarm_tune.runtime.cli", "sim", "sweep", str(_small_sweep(tmp_path)),
            "--backend", "ray", "--ray-address", cluster.address, "--out", str(out)]  # fmt: skip
    driver_env = cluster.env | {"PYTHONPATH": str(REPO / ".pkg")}
    res = subprocess.run(
        argv, cwd=tmp_path, env=driver_env, capture_output=True, text=True,
        timeout=patience(240), check=False,
    )  # fmt: skip
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    assert "'ray_nodes': 2" in res.stdout
    shipped = ray_ship.running_code()
    done = [json.loads(p.read_text()) for p in sorted(out.glob(f"points/*/{DONE}"))]
    assert len(done) == 2
    for summary in done:  # every point ran on the worker node, from the shipped tree
        assert summary["worker_python"] == str(cluster.worker_python)
        assert summary["code_sha256"] == shipped.sha256
    assert (out / "sweep.parquet").is_file() and (out / "report.html").is_file()


@pytest.mark.slow
@pytest.mark.timeout(patience(300))
def test_a_local_ray_starts_its_own_on_loopback_past_a_stale_cluster_file(tmp_path: Path) -> None:
    """``--backend ray`` without an address starts a Ray of its own on loopback: it does not
    join the dead cluster that ``ray_current_cluster`` names (the file a killed ``ray start``
    leaves behind) and does not bind the first network interface's address (before: the
    node's address was the interface's, 192.0.2.2 here)."""
    import tempfile

    # Ray's socket paths must stay short: its temp dir directly under /tmp, not tmp_path.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    try:
        (ray_tmp / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")  # dead
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
        env |= {"RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO / ".pkg")}
        out = tmp_path / "out"
        argv = [PY, "-m", "swarm_tune.runtime.cli", "sim", "sweep", str(_small_sweep(tmp_path)),
                "--backend", "ray", "--workers", "2", "--out", str(out)]  # fmt: skip
        res = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=patience(240), check=False,
        )  # fmt: skip
        assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
        said = " ".join(res.stdout.split())  # the console wraps long lines
        assert "'ray_nodes': 1," in said and "'ray_node_ips': ['127." in said, said
        assert len(list(out.glob(f"points/*/{DONE}"))) == 2
    finally:
        subprocess.run(["rm", "-rf", str(ray_tmp)], check=False)
