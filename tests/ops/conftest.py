"""Real servers, workers and a browser on loopback for the ops tests.

Every process a fixture starts runs in its own session and is stopped by that fixture (SIGTERM to
its process group, then SIGKILL). Every wait is bounded and fails with the tail of the process log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest

from tests.integration.conftest import reduced_params, write_params

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots and logs kept after the run (git-ignored)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, grace_s: float = 20) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def start(cmd: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as f:
        popen = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                 start_new_session=True)
    return Proc(popen, log)


def wait_http(url: str, proc: Proc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            pytest.fail(f"{proc.popen.args} exited with {proc.popen.returncode}:\n{tail(proc.log)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} not up within {timeout_s:.0f} s:\n{tail(proc.log)}")


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "MLFLOW_TRACKING_"))}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def ops_dir() -> Path:
    """One folder per session under tests/artifacts: logs and screenshots stay for a look."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=time.strftime("ops-%Y%m%d-%H%M%S-"), dir=ARTIFACTS))
    print(f"\nops artifacts: {path}")
    return path


@pytest.fixture(scope="session")
def ops_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bulky state (server databases, MLflow artifacts, worker homes): pytest's tmp, pruned by pytest."""
    return tmp_path_factory.mktemp("ops")


@pytest.fixture(scope="session")
def prefect_server(ops_dir: Path, ops_tmp: Path) -> Iterator[str]:
    """`prefect server start` on loopback; yields its API URL."""
    port = free_port()
    env = base_env(PREFECT_HOME=str(ops_tmp / "prefect-server-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   PREFECT_UI_ENABLED="false", PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
                   PREFECT_LOGGING_LEVEL="INFO")
    proc = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                 ops_dir / "logs" / "prefect-server.log", env)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", proc, 600)  # a cold first start is slow
        yield f"http://127.0.0.1:{port}/api"
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def mlflow_server(ops_dir: Path, ops_tmp: Path) -> Iterator[str]:
    """`mlflow server` on loopback with the sqlite backend; yields its URL."""
    port = free_port()
    store = ops_tmp / "mlflow-server"
    store.mkdir(parents=True, exist_ok=True)
    proc = start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                  "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                  "--artifacts-destination", str(store / "artifacts")],
                 ops_dir / "logs" / "mlflow-server.log", base_env(), cwd=store)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 600)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@contextlib.contextmanager
def prefect_api(url: str) -> Iterator[None]:
    """Point this process's Prefect client at a started server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


def start_worker(pool: str, api_url: str, ops_dir: Path, ops_tmp: Path) -> Proc:
    """`prefect worker start` for a process pool (a stand-in for a machine polling it)."""
    env = base_env(PREFECT_API_URL=api_url, PREFECT_HOME=str(ops_tmp / f"worker-home-{pool}"),
                   PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="5",
                   PREFECT_LOGGING_LEVEL="INFO")
    return start([str(BIN / "prefect"), "worker", "start", "--pool", pool, "--name", f"worker-{pool}", "--limit", "1"],
                 ops_dir / "logs" / f"worker-{pool}.log", env, cwd=ops_tmp)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
        if os.environ.get("CI"):  # CI installs it, so there its absence is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message)
    return path


def chromium(url: str, screenshot: Path | None = None, size: tuple[int, int] = (1400, 1000),
             budget_ms: int = 20000) -> str:
    """Render a page in headless Chromium; returns the DOM after scripts ran, optionally a screenshot."""
    exe = chromium_path()
    common = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--hide-scrollbars", f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}"]
    code, dom, err = _browser([exe, *common, "--dump-dom", url])
    if code != 0:
        pytest.fail(f"chromium --dump-dom {url} failed ({code}):\n{err[-2000:]}")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        code, _, err = _browser([exe, *common, f"--screenshot={screenshot}", url])
        if code != 0 or not screenshot.is_file():
            pytest.fail(f"chromium --screenshot {url} failed ({code}):\n{err[-2000:]}")
        print(f"screenshot: {screenshot}")
    return dom


def _browser(cmd: list[str], timeout_s: float = 180) -> tuple[int, str, str]:
    """One headless Chromium, in its own session and a fresh profile; its whole group is killed after."""
    with tempfile.TemporaryDirectory(prefix="edgeopt-chromium-") as profile:
        popen = subprocess.Popen([*cmd[:-1], f"--user-data-dir={profile}", cmd[-1]], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
        timed_out = False
        try:
            out, err = popen.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out, out, err = True, "", f"timed out after {timeout_s:.0f} s"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)  # renderer/zygote children included
            popen.wait(10)
    return (-1 if timed_out else popen.returncode), out, err


# -- the deployed pipeline, shared by the deployment, report and UI tests -----------------------


# Two cheap candidates: the ONNX export is the baseline (a torch baseline's measurement alone costs
# more than both of these, and every target measures the baseline again).
CHEAP = [{"name": "onnx-fp32", "recipe": "onnx-export"},
         {"name": "ort-int8-dynamic", "recipe": "ort-dynamic-int8", "parent": "onnx-fp32"}]
# The test is about orchestration, not speed: a contended CI box must not fail the speed-up gate (speed
# claims belong in bench/).
GATES = {"min_quality_retention": 0.9, "min_speedup": 0.01, "min_footprint_reduction": 0.5}
HOST_POOL, POOLS = "ops-host", {"edge-a": "ops-edge-a", "edge-b": "ops-edge-b"}
LIMIT = "ops-benchmark"  # one machine stands in for all three, so they share its benchmark slot
RUN_TIMEOUT_S = 1500
ROUNDS = 2  # measurement rounds per candidate; no extra rounds, so the count of benchmarks is known


def ops_params(tmp: Path, mlflow_url: str, candidates: list[dict] | None = None) -> Path:
    raw = reduced_params(tmp, candidates=candidates or CHEAP, gates=GATES)
    raw["pipelines"]["minilm"]["selection"]["baseline"] = "onnx-fp32"
    raw["pipelines"]["minilm"]["benchmark"].update(rounds=ROUNDS, extra_rounds=0)
    raw["pipelines"] = {"minilm": raw["pipelines"]["minilm"]}  # only the model under test
    raw["tracking"] = {"uri": mlflow_url, "experiment": "ops"}
    raw["orchestration"] = {"work_pool": HOST_POOL, "schedule_cron": "0 2 * * *", "schedule_timezone": "UTC",
                            "benchmark_concurrency_limit": LIMIT}
    raw["targets"] = {t: {"work_pool": pool, "concurrency_limit": LIMIT, "timeout_s": RUN_TIMEOUT_S}
                      for t, pool in POOLS.items()}
    return write_params(tmp, raw)


@dataclass
class Deployed:
    api: str
    mlflow_url: str
    params: Path
    registered: str
    flow_run_id: UUID
    state: str
    started: dt.datetime
    seconds: float


def _wait_for_run(run_id: UUID, workers: list[Proc], timeout_s: float) -> str:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(run_id).state
            if state is not None and state.is_final():
                return f"{state.type.value}: {state.message or ''}"
            for w in workers:
                if w.popen.poll() is not None:
                    pytest.fail(f"worker {w.log.name} exited:\n{tail(w.log)}")
            time.sleep(3)
    logs = "\n".join(f"--- {w.log.name}\n{tail(w.log, 25)}" for w in workers)
    pytest.fail(f"flow run {run_id} not finished within {timeout_s:.0f} s\n{logs}")


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory, ops_dir: Path, ops_tmp: Path, prefect_server: str,
             mlflow_server: str) -> Iterator[Deployed]:
    from prefect.deployments import run_deployment

    params = ops_params(tmp_path_factory.mktemp("deployed"), mlflow_server)
    reg = subprocess.run([sys.executable, "-m", "deployments.deploy", "register", "--params", str(params)],
                         env=base_env(PREFECT_API_URL=prefect_server), cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert reg.returncode == 0, reg.stderr[-3000:]
    workers = [start_worker(pool, prefect_server, ops_dir, ops_tmp) for pool in (HOST_POOL, *POOLS.values())]
    try:
        with prefect_api(prefect_server):
            started = dt.datetime.now(dt.UTC)
            t0 = time.monotonic()
            run = run_deployment("edgeopt/minilm", timeout=0)
            state = _wait_for_run(run.id, workers, RUN_TIMEOUT_S)
            seconds = time.monotonic() - t0
        print(f"edgeopt/minilm (host + 2 targets) took {seconds:.0f} s: {state}")
        yield Deployed(prefect_server, mlflow_server, params, reg.stdout, run.id, state, started, seconds)
    finally:
        for w in workers:
            w.stop()
