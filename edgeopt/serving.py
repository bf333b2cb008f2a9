"""What every promoted pyfunc shares: the measured candidate's runtime, loaded from its artifacts.

MLflow has no flavour for OpenVINO IR, GGUF or MLX, and its ONNX flavour takes raw tensors, so every
runtime is wrapped the same way: the candidate folder (and the task's preprocessing files) are artifacts
and the runtime adapter that measured the candidate also serves it. Each task's serving class (in its
package) turns the user's inputs into the runtime's and back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_candidate_runner(context: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(runner, candidate record, model_config) of the pyfunc's `candidate` artifact."""
    from edgeopt.environment import quiet_offline_defaults
    from edgeopt.recipes import load_runner
    from edgeopt.results import CandidateRecord

    quiet_offline_defaults()
    candidate = Path(context.artifacts["candidate"])
    record = CandidateRecord.model_validate_json((candidate / "candidate.json").read_text())
    cfg = dict(context.model_config or {})
    # The runtime settings it was measured with (edgeopt.tuning); none recorded: the runtime's defaults.
    runner = load_runner(record.runtime, candidate, record.model_file, record.details, int(cfg.get("threads", 2)),
                         dict(cfg.get("runtime_settings") or {}))
    return runner, record, cfg


def text_inputs(model_input: Any) -> list[str]:
    if isinstance(model_input, str):
        return [model_input]
    try:
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            col = "text" if "text" in model_input.columns else model_input.columns[0]
            return [str(t) for t in model_input[col].tolist()]
        if isinstance(model_input, pd.Series):
            return [str(t) for t in model_input.tolist()]
    except ImportError:  # pragma: no cover
        pass
    return [str(t) for t in model_input]


