"""Models-from-code: the promoted causal-lm pyfunc (prompts in, greedy continuations out)."""

import mlflow.models

from edgeopt.serving import TextGenerationModel

mlflow.models.set_model(TextGenerationModel())
