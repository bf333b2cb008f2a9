"""Models-from-code: the promoted text-embedding pyfunc (texts in, L2-normalised embeddings out).

MLflow runs this file (`python_model=<its path>`) to build the model, so the registry holds source code,
never a pickle: loading a champion executes this code and unpickles nothing.
"""

import mlflow.models

from edgeopt.workloads.text_embedding.serving import TextEmbeddingModel

mlflow.models.set_model(TextEmbeddingModel())
