"""Shared test setup: offline, no telemetry, a private Prefect home, and one Prefect server for the session.

Without a server, every process that runs a flow starts Prefect's embedded one, which gives up after
20 s: on a fresh, slow machine the first start (database migrations) takes longer, and the test
session failed that way. So the session starts the server the CLI uses (`edgeopt.io.prefect_server`)
once, before any test imports Prefect, and every test and child process reports to it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from edgeopt.environment import quiet_offline_defaults

_session = ExitStack()


def pytest_configure(config: pytest.Config) -> None:
    from edgeopt.io.prefect_server import ENV_TIMEOUT, local_server

    quiet_offline_defaults()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Keep the user's ~/.prefect (server DB, cached results) untouched; the session leaves nothing in /tmp.
    if "PREFECT_HOME" not in os.environ:
        home = tempfile.mkdtemp(prefix="edgeopt-test-prefect-")
        os.environ["PREFECT_HOME"] = home
        _session.callback(shutil.rmtree, home, ignore_errors=True)
    if "PREFECT_API_URL" not in os.environ and not hasattr(config, "workerinput"):
        timeout = float(os.environ.get(ENV_TIMEOUT, "600"))
        api_url = _session.enter_context(local_server(timeout, Path(os.environ["PREFECT_HOME"])))
        os.environ["PREFECT_API_URL"] = api_url
        _session.callback(os.environ.pop, "PREFECT_API_URL", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    from edgeopt.io.prefect_server import flush_prefect_clients

    flush_prefect_clients()
    _session.close()


@pytest.fixture(autouse=True)
def _no_tracking_uri_leaks() -> Iterator[None]:
    """`mlflow.set_tracking_uri` exports MLFLOW_TRACKING_URI; a test must not hand its store to the next
    test's child processes."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if os.environ.get("MLFLOW_TRACKING_URI") != before:
        import mlflow

        mlflow.set_tracking_uri(before)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
