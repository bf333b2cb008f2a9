"""Prefect tasks: thin wrappers around the `edgeopt.pipeline` stages (one task per stage)."""
