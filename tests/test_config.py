"""params.yaml validation: the shipped file is valid; mistakes are rejected with their key's path."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from edgeopt.config import Params, json_schema, load_params, parse_params
from edgeopt.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_shipped_params_are_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert "minilm" in params.pipelines
    cfg = params.pipelines["minilm"]
    assert cfg.selection.baseline in {c.name for c in cfg.candidates}


def _mutated(raw: dict, path: list, value: object) -> dict:
    data = copy.deepcopy(raw)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["pipelines", "minilm", "gates", "min_sped"], 2.0, "pipelines.minilm.gates.min_sped"),
        (["pipelines", "minilm", "benchmark", "threads"], "two", "pipelines.minilm.benchmark.threads"),
        (["pipelines", "minilm", "model", "kind"], "pytorch", "pipelines.minilm.model"),
        (["pipelines", "minilm", "selection", "baseline"], "nope", "baseline 'nope' is not a candidate"),
        (["trackin"], {}, "trackin"),
    ],
)
def test_mistakes_name_the_key(raw: dict, path: list, value: object, expected: str) -> None:
    with pytest.raises(UserError) as err:
        parse_params(_mutated(raw, path, value))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_recipe_and_bad_options_are_rejected(raw: dict) -> None:
    data = copy.deepcopy(raw)
    data["pipelines"]["minilm"]["candidates"].append({"name": "x", "recipe": "onnx-exprt"})
    with pytest.raises(UserError, match="unknown recipe 'onnx-exprt'"):
        parse_params(data)
    data = copy.deepcopy(raw)
    data["pipelines"]["minilm"]["candidates"][-1]["options"] = {"mode": "int3"}
    last = len(data["pipelines"]["minilm"]["candidates"]) - 1
    with pytest.raises(UserError, match=rf"candidates\.{last}\b"):
        parse_params(data)


def test_parents_must_exist_and_come_first(raw: dict) -> None:
    data = copy.deepcopy(raw)
    cands = data["pipelines"]["minilm"]["candidates"]
    cands[2]["parent"] = "ghost"
    with pytest.raises(UserError, match="parent 'ghost' is not a candidate"):
        parse_params(data)
    data = copy.deepcopy(raw)
    cands = data["pipelines"]["minilm"]["candidates"]
    cands.insert(0, cands.pop(2))
    with pytest.raises(UserError, match="must be listed before it"):
        parse_params(data)


def test_duplicate_names_rejected(raw: dict) -> None:
    data = copy.deepcopy(raw)
    data["pipelines"]["minilm"]["candidates"].append(dict(data["pipelines"]["minilm"]["candidates"][0]))
    with pytest.raises(UserError, match="duplicate candidate names"):
        parse_params(data)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipelines: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a list\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_params(bad)


def test_schema_is_json_and_forbids_extras() -> None:
    schema = json.loads(json_schema())
    assert schema["additionalProperties"] is False
    assert "PipelineConfig" in schema["$defs"]
    assert schema["$defs"]["GatesConfig"]["additionalProperties"] is False
    assert Params.model_config["extra"] == "forbid"
