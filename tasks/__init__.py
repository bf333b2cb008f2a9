"""Prefect tasks: thin wrappers around `edgeopt.pipeline` stages (one task per stage)."""
