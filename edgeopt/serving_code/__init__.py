"""Models-from-code files of the promoted pyfuncs: MLflow runs one (`python_model=<its path>`) to build the model.

Each file only calls `mlflow.models.set_model(...)` with a serving class of `edgeopt.serving`, so the
registry holds source code, never a pickle: loading a champion executes this code and unpickles nothing.
Importing this package does not import the files.
"""

from __future__ import annotations

from pathlib import Path


def code_file(name: str) -> Path:
    """The path of the models-from-code file `<name>.py` in this package."""
    path = Path(__file__).resolve().with_name(f"{name}.py")
    if not path.is_file() or path.name == "__init__.py":
        raise FileNotFoundError(f"no models-from-code file {path}")
    return path
