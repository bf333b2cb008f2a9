"""Shared test setup: offline, no telemetry, and a private Prefect home (its DB and result cache)."""

from __future__ import annotations

import os
import tempfile

from edgeopt.environment import quiet_offline_defaults

quiet_offline_defaults()
# Before any test imports prefect: keep the user's ~/.prefect (server DB, cached results) untouched.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="edgeopt-test-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
