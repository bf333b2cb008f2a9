"""Models-from-code: the promoted image-classification pyfunc (images in, top class and top-5 out).

MLflow runs this file (`python_model=<its path>`) to build the model, so the registry holds source code,
never a pickle: loading a champion executes this code and unpickles nothing.
"""

import mlflow.models

from edgeopt.workloads.image_classification.serving import ImageClassifierModel

mlflow.models.set_model(ImageClassifierModel())
