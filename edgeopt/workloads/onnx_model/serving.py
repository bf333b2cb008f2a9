"""The promoted onnx-model pyfunc: named tensors in, named tensors out, through the measured runtime.

Input: a dict of arrays (or nested lists) keyed by the graph's input names, each at the input's full rank, as
one model call takes them; arrays are converted to the declared dtype, except that a float array is refused
for an integer or boolean input (truncating token ids or a mask would be a silent error). Output: a dict of
numpy arrays keyed by the graph's output names, exactly what the runtime returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow.pyfunc
import numpy as np

from edgeopt.iospec import Feed
from edgeopt.serving import load_candidate_runner


def named_feed(model_input: Any, dtypes: Mapping[str, str]) -> Feed:
    """The pyfunc input as a feed of the runtime's inputs; ValueError naming a missing input or a lossy dtype."""
    if not isinstance(model_input, Mapping):
        raise ValueError(f"an onnx-model takes a dict of arrays keyed by input name ({', '.join(dtypes)}), "
                         f"got {type(model_input).__name__}")
    missing = [n for n in dtypes if n not in model_input]
    if missing:
        raise ValueError(f"missing input(s) {', '.join(missing)}; the model takes {', '.join(dtypes)}")
    feed: Feed = {}
    for name, dtype in dtypes.items():
        value = np.asarray(model_input[name])
        want = np.dtype(dtype)
        if value.dtype.kind == "f" and want.kind in "biu":
            raise ValueError(f"input {name} is {value.dtype}; the model takes {dtype}, and a float array is not "
                             f"converted to it")
        feed[name] = np.ascontiguousarray(value, dtype=want)
    return feed


class NamedTensorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        self.runner, _, _ = load_candidate_runner(context)
        self.dtypes = {t.name: t.dtype for t in self.runner.io_spec.inputs}

    # model_input has no type hint on purpose: MLflow validates (and converts) a hinted input, and a dict of
    # arrays of any rank and dtype is what no MLflow schema describes here.
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        out = self.runner.run(named_feed(model_input, self.dtypes))
        return {name: np.asarray(value) for name, value in out.items()}
