"""Infrastructure the pipeline talks to: the Prefect API server, the tracking store, the workspace lock."""
