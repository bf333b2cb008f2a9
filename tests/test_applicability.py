"""Which recipes apply to a model source, judged on the real recipe registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeopt.applicability import applicability_table, recipe_applicability
from edgeopt.recipes import NoOptions, Recipe, Requirements, all_recipes
from edgeopt.sources import SourceFacts

HF = SourceFacts(kind="hf", formats=("hf",), path=Path("model"))
ONNX = SourceFacts(kind="onnx", formats=("onnx",), path=Path("model.onnx"))
GGUF = SourceFacts(kind="gguf", formats=("gguf",), path=Path("model.gguf"))


def _rows(task: str, family: str, facts: SourceFacts, candidates: dict[str, str] | None = None) -> dict:
    return {r.recipe: r for r in applicability_table(all_recipes(), task, family, facts, candidates or {})}


def test_an_onnx_classifier_gets_every_onnx_framework_and_no_pytorch_or_llm_recipe() -> None:
    rows = _rows("image-classification", "tensor", ONNX, {"fp32": "onnx-export", "int8": "ort-static-int8"})
    applicable = {name for name, r in rows.items() if r.applies}
    assert {"onnx-export", "ort-graph-optimize", "ort-dynamic-int8", "ort-static-int8", "ov-convert",
            "nncf-ptq-int8", "olive-workflow"} <= applicable
    assert rows["torch-eager"].applies is False
    assert rows["ort-transformer-optimize"].reason == "knows only text-embedding"
    assert "task image-classification is tensor" in rows["gguf-quantize"].reason
    assert rows["onnx-export"].reason == "from the base model (onnx)"
    assert rows["ort-static-int8"].listed_as == ("int8",)
    assert rows["ov-convert"].listed_as == ()


def test_a_gguf_llm_gets_llama_cpp_and_a_hf_llm_gets_its_exporters() -> None:
    gguf = _rows("causal-lm", "generation", GGUF)
    assert gguf["gguf-quantize"].applies and gguf["gguf-quantize"].reason == "from the base model (gguf)"
    assert not gguf["onnx-export"].applies
    hf = _rows("causal-lm", "generation", HF)
    assert hf["ov-causal-lm"].applies and hf["ort-causal-lm-export"].applies
    assert not gguf["ov-causal-lm"].applies or "gguf" in gguf["ov-causal-lm"].reason


def test_applicable_rows_come_first() -> None:
    rows = applicability_table(all_recipes(), "text-embedding", "tensor", HF, {})
    flags = [r.applies for r in rows]
    assert flags == sorted(flags, reverse=True) and True in flags and False in flags


@pytest.mark.parametrize(("requires", "expect"), [
    (Requirements(modules=("no_such_module_for_edgeopt",)), "cannot run on this machine: needs Python module"),
    (Requirements(), "from the base model (hf)"),
])
def test_a_recipe_whose_machine_requirements_fail_does_not_apply(requires: Requirements, expect: str) -> None:
    recipe = Recipe(name="probe", framework="none", options_model=NoOptions, accepts=("base",),
                    build=lambda ctx: None, requires=requires)  # type: ignore[arg-type,return-value]
    row = recipe_applicability(recipe, "text-embedding", "tensor", HF)
    assert row.reason.startswith(expect)
    assert row.applies is (not requires.modules)


def test_a_parent_only_recipe_names_the_format_it_starts_from() -> None:
    row = recipe_applicability(all_recipes()["ov-convert"], "text-embedding", "tensor", HF)
    assert row.applies and row.reason == "from a parent candidate of format onnx"
