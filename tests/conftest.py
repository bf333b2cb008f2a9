"""Shared fixtures. Integration fixtures run the real pipeline once per session on the real model."""

from __future__ import annotations

import os

from edgeopt.environment import quiet_offline_defaults

quiet_offline_defaults()
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
