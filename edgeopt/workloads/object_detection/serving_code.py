"""Models-from-code: the promoted object-detection pyfunc (images in, boxes, scores and class ids out).

MLflow runs this file (`python_model=<its path>`) to build the model, so the registry holds source code,
never a pickle: loading a champion executes this code and unpickles nothing.
"""

import mlflow.models

from edgeopt.workloads.object_detection.serving import ObjectDetectorModel

mlflow.models.set_model(ObjectDetectorModel())
