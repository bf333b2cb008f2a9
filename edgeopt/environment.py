"""Process defaults for entry points: offline, no telemetry. Called explicitly, never at import."""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "ORT_DISABLE_TELEMETRY": "1",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # A tracking server that goes away mid-run fails in seconds, not after MLflow's default 7 retries
    # with exponential back-off (267 s measured); preflight probes it before the run starts.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # The measurement subprocesses must not inherit a half-configured logging setup.
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
}


def quiet_offline_defaults() -> None:
    """Set offline/telemetry defaults without overriding what the user exported."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
