"""Models-from-code: the promoted text-embedding pyfunc (texts in, L2-normalised embeddings out)."""

import mlflow.models

from edgeopt.serving import TextEmbeddingModel

mlflow.models.set_model(TextEmbeddingModel())
