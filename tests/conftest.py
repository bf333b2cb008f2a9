"""Shared test setup: offline, no telemetry, and a private Prefect home (its DB and result cache)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from edgeopt.environment import quiet_offline_defaults

quiet_offline_defaults()
# Before any test imports prefect: keep the user's ~/.prefect (server DB, cached results) untouched.
if "PREFECT_HOME" not in os.environ:
    _prefect_home = tempfile.mkdtemp(prefix="edgeopt-test-prefect-")
    os.environ["PREFECT_HOME"] = _prefect_home
    atexit.register(shutil.rmtree, _prefect_home, ignore_errors=True)  # a test session leaves nothing in /tmp
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
