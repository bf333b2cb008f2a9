"""Prefect deployments of edgeopt: `python -m deployments.deploy --help`."""
