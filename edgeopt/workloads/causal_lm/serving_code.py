"""Models-from-code: the promoted causal-lm pyfunc (prompts in, greedy continuations out).

MLflow runs this file (`python_model=<its path>`) to build the model: the registry holds source, not a pickle.
"""

import mlflow.models

from edgeopt.workloads.causal_lm.serving import TextGenerationModel

mlflow.models.set_model(TextGenerationModel())
