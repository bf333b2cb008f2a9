# The two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test lint typecheck pytest bench clean

install:
	@bash scripts/bootstrap.sh

run: install
	$(BIN)/edgeopt run

test: install lint typecheck pytest

lint:
	$(BIN)/ruff check edgeopt flows tasks tests bench deployments

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest

clean:
	rm -rf outputs mlflow.db mlruns/*/ .dvc-storage

bench: install
	$(BIN)/python bench/run_bench.py
