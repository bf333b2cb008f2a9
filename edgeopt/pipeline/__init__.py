"""The pipeline's stages as plain functions, one module per stage. Prefect tasks and DVC stages both call these.

prepare data -> validate -> inputs -> build candidates -> measure -> evaluate -> select -> promote

- `context`: the namespace a stage runs for, and the records stages hand each other.
- `data`: the base model and evaluation data, their validation, and the model inputs.
- `planning`: the candidate plan (order, cache keys, skip rules) the sequential loop and the fan-out share.
- `building`, `measuring`: one candidate's isolated build and measurement, each reused by its key.
- `candidates`: the sequential loop over the plan, and the evaluation of what it built and measured.
- `runs`: the MLflow pipeline run and its candidate child runs.
- `selecting`, `promoting`: gates and pick, then registering the pick.

Each stage returns what it did (records), and writes its outputs under the namespace's workspace.
"""
