"""The Prefect API a run reports to: `$PREFECT_API_URL` if set, else a local server started here.

Prefect's own embedded ("ephemeral") server gives up after 20 s, which a cold first start on a slow
2-core machine exceeds (database migrations, imports), and the server it gave up on keeps running.
So the CLI and the test session start the same server themselves, wait for it as long as
`orchestration.server_start_timeout_s` allows, and stop its whole process group on exit. The child
also dies with its parent (PR_SET_PDEATHSIG), so a killed run leaves no server behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeopt.errors import InfrastructureError, UserError

ENV_TIMEOUT = "EDGEOPT_PREFECT_START_TIMEOUT_S"  # overrides orchestration.server_start_timeout_s
PROBE_TIMEOUT_S = 5.0
TIMEOUT_HINT = (f"raise orchestration.server_start_timeout_s in params.yaml (or ${ENV_TIMEOUT}), "
                "or point PREFECT_API_URL at a running server")


def health_problem(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why `<url>/health` does not answer 200 within `timeout_s` (None: it does). Prefect and MLflow
    servers both serve /health."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout_s) as resp:
            return None if resp.status == 200 else f"/health answered {resp.status}, not 200"
    except (urllib.error.URLError, OSError, ValueError) as err:
        return str(getattr(err, "reason", err))


def _healthy(api_url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    return health_problem(api_url, timeout_s) is None


def require_reachable(api_url: str) -> None:
    """A configured server must answer now: a user's mistake, found before anything starts."""
    if not _healthy(api_url):
        raise UserError(f"PREFECT_API_URL {api_url} does not answer (no /health within {PROBE_TIMEOUT_S:g} s): "
                        "start that server, or unset PREFECT_API_URL to use a local one")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def start_timeout(configured_s: float) -> float:
    raw = os.environ.get(ENV_TIMEOUT)
    if not raw:
        return configured_s
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"${ENV_TIMEOUT}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise UserError(f"${ENV_TIMEOUT} must be positive, not {raw}")
    return value


@contextmanager
def local_server(timeout_s: float, log_dir: Path,
                 on_wait: Callable[[float], None] | None = None) -> Iterator[str]:
    """Start `prefect.server` on a free loopback port, wait until it answers, yield its API URL.

    Its database is Prefect's own (`$PREFECT_HOME`), so runs stay browsable with `prefect server start`.
    """
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "prefect-server.log"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    # The same command Prefect's embedded server runs, with our own lifetime and timeout.
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True, preexec_fn=_die_with_parent)
    try:
        started = time.monotonic()
        while not _healthy(api_url, timeout_s=2.0):
            waited = time.monotonic() - started
            if proc.poll() is not None:
                raise InfrastructureError(f"the local Prefect server exited with code {proc.returncode} while "
                                          f"starting ({_log_tail(log_path) or 'no output'}; log: {log_path})")
            if waited > timeout_s:
                raise InfrastructureError(f"the local Prefect server did not answer within {timeout_s:g} s "
                                          f"(log: {log_path}): {TIMEOUT_HINT}")
            if on_wait is not None:
                on_wait(waited)
            time.sleep(0.25)
        yield api_url
    finally:
        _stop(proc)


@contextmanager
def prefect_api(timeout_s: float, log_dir: Path, on_wait: Callable[[float], None] | None = None) -> Iterator[str]:
    """The API this process reports to: the configured server (probed), or a local one for the run.

    Sets PREFECT_API_URL in the environment, so Prefect (imported after this) and every child
    process report to it; the previous value is restored on exit.
    """
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        require_reachable(configured)
        yield configured
        return
    with local_server(timeout_s, log_dir, on_wait) as api_url:
        os.environ["PREFECT_API_URL"] = api_url
        try:
            yield api_url
        finally:
            flush_prefect_clients()
            os.environ.pop("PREFECT_API_URL", None)


def flush_prefect_clients() -> None:
    """Send buffered logs and events before the server they go to stops (else: errors at exit)."""
    if "prefect" not in sys.modules:
        return
    from contextlib import suppress

    with suppress(Exception):
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
    with suppress(Exception):
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=5)
