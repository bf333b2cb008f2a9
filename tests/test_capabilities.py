"""Capability detection: an unmet requirement makes a candidate SKIPPED with the reason, never an error."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeopt import recipes
from edgeopt.config import Params
from edgeopt.pipeline.candidates import run_candidates
from edgeopt.pipeline.context import ModelInputs, PipelineContext, PreparedData
from edgeopt.recipes import BuildContext, BuildOutput, NoOptions, Recipe, Requirements, get_recipe, register_recipe

ABSENT = "edgeopt_test_absent_module"
RECIPE = "test-needs-absent-module"


def test_requirements_unmet_reasons() -> None:
    assert Requirements().unmet() is None
    assert Requirements(modules=("numpy",)).unmet() is None
    assert Requirements(modules=("numpy", ABSENT)).unmet() == f"needs Python module(s) {ABSENT}, not installed"
    other = "Plan9" if platform.system() != "Plan9" else "Linux"
    assert Requirements(platforms=(other,)).unmet() == f"needs platform {other}, this is {platform.system()}"
    assert "needs CPU architecture" in (Requirements(machines=("not-a-cpu",)).unmet() or "")
    if recipes.cpu_flags():  # flags are only known on Linux; elsewhere the check is lenient by design
        assert Requirements(cpu_flags=("no_such_isa_flag",)).unmet() == "needs CPU feature(s) no_such_isa_flag"


def test_new_adapters_declare_their_libraries() -> None:
    assert get_recipe("mlx-convert").requires.modules == ("mlx",)
    assert get_recipe("olive-workflow").requires.modules == ("olive",)
    assert get_recipe("olive-optimize").requires.modules == ("olive",)


def _never_built(ctx: BuildContext) -> BuildOutput:
    raise AssertionError("a candidate with an unmet requirement must not be built")


@pytest.fixture
def absent_recipe() -> Iterator[str]:
    register_recipe(Recipe(name=RECIPE, framework="absent", options_model=NoOptions, accepts=("base", "hf"),
                           build=_never_built, requires=Requirements(modules=(ABSENT,))))
    yield RECIPE
    recipes._RECIPES.pop(RECIPE, None)  # keep the registry as other tests expect it


def test_run_candidates_skips_with_reason(absent_recipe: str, tmp_path: Path) -> None:
    params = Params.model_validate({
        "output_dir": str(tmp_path / "outputs"),
        "pipelines": {"p": {
            "task": "text-embedding",
            "model": {"kind": "bundled", "id": "all-minilm-l6-v2"},
            "data": {"kind": "pydoc-topics"},
            "candidates": [
                {"name": "needs-absent", "recipe": absent_recipe},
                {"name": "child-of-absent", "recipe": absent_recipe, "parent": "needs-absent"},
            ],
            "selection": {"baseline": "needs-absent"},
            "registry": {"model_name": "capability-test"},
        }},
    })
    ctx = PipelineContext(params=params, namespace="p", project_root=tmp_path)
    # Nothing is built or measured when every candidate is skipped, so no data files are needed.
    prepared = PreparedData(base_path=str(tmp_path), base_format="hf", tokenizer_dir=str(tmp_path),
                            base_sha256="0" * 64, task="text-embedding", data_digest="d", n_pairs=0, n_sentences=0)
    inputs = ModelInputs(path=str(tmp_path / "inputs.npz"), digest="i", shapes={})
    records, rows = run_candidates(ctx, prepared, inputs)
    assert records == {}
    by = {r.name: r for r in rows}
    assert by["needs-absent"].status == "skipped"
    assert by["needs-absent"].error == f"needs Python module(s) {ABSENT}, not installed"
    assert by["needs-absent"].framework == "absent"
    assert by["child-of-absent"].status == "skipped"
    assert by["child-of-absent"].error == "parent needs-absent was not built"
