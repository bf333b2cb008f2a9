"""Models-from-code: the promoted onnx-model pyfunc (a dict of arrays in, a dict of arrays out).

MLflow runs this file (`python_model=<its path>`) to build the model, so the registry holds source code,
never a pickle: loading a champion executes this code and unpickles nothing.
"""

import mlflow.models

from edgeopt.workloads.onnx_model.serving import NamedTensorModel

mlflow.models.set_model(NamedTensorModel())
