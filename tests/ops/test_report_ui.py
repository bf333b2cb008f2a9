"""The report of the deployed run, the DVC plots, and the MLflow UI, rendered in headless Chromium.

Screenshots are kept under tests/artifacts/ops-*/ (paths are printed with -s).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import mlflow
import pytest
import yaml

from edgeopt.results import Promotion, Selection
from tests.ops.conftest import CHEAP, POOLS, ROOT, Deployed, base_env, chromium

pytestmark = pytest.mark.integration


def _workspace(d: Deployed) -> Path:
    raw = yaml.safe_load(d.params.read_text())
    return Path(raw["output_dir"]) / "minilm"


def _pipeline_runs(d: Deployed) -> dict[str, mlflow.entities.Run]:
    mlflow.set_tracking_uri(d.mlflow_url)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("ops")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`edgeopt.kind` = 'pipeline'")
    return {r.data.tags["edgeopt.target"]: r for r in runs}


def test_the_report_is_written_logged_and_renders(deployed: Deployed, ops_dir: Path) -> None:
    ws = _workspace(deployed)
    selection = Selection.model_validate_json((ws / "selection.json").read_text())
    promotion = Promotion.model_validate_json((ws / "promotion.json").read_text())
    assert promotion.promoted, promotion.reason
    report = ws / "report.html"
    for target in POOLS:  # each target's report sits in its own folder
        assert (ws / "targets" / target / "report.html").is_file()
    # Logged to the pipeline run of each machine.
    runs = _pipeline_runs(deployed)  # points MLflow at the test server first
    client = mlflow.MlflowClient()
    for target, run in runs.items():
        assert "report.html" in {a.path for a in client.list_artifacts(run.info.run_id)}, target
    # Self-contained: no external scripts, styles or images.
    text = report.read_text()
    assert not re.search(r'<(script|link|img)\b[^>]*\b(src|href)=', text)

    dom = chromium(report.as_uri(), ops_dir / "report.png", size=(1400, 2200))
    chart = dom[dom.index('id="pareto-chart"'):dom.index("</figure>")]
    assert "<svg" in chart and 'id="frontier"' in chart and 'id="champion"' in chart
    assert "latency p50" in chart and "quality retention" in chart
    for c in CHEAP:
        assert f'data-candidate="{c["name"]}"' in dom
        assert c["name"] in chart  # every measured point is labelled
    row = re.search(r'<tr class="([^"]*)" data-candidate="' + re.escape(promotion.candidate or "") + '"', dom)
    assert row and "champion" in row.group(1).split() and "frontier" in row.group(1).split()
    card = dom[dom.index('id="model-card"'):]
    assert f"Model card: {promotion.candidate}" in card
    assert f"{promotion.model_name}@{promotion.alias} = version {promotion.version}" in card
    for section in ("Base", "Recipe", "Metrics", "Gates", "Lineage"):
        assert f"<h3>{section}</h3>" in card
    for gate in ("quality_retention", "speedup", "footprint_reduction"):
        assert f"<td>{gate}</td>" in card
    parents = {r.name: r.parent for r in selection.candidates}
    chain = [promotion.candidate]
    while parents[chain[0]] is not None:
        chain.insert(0, parents[chain[0]])
    assert re.findall(r"<li><b>([^<]+)</b>", card) == chain  # the recipe chain from the base model
    assert "base_sha256" in card and "dataset_digest" in card


def test_dvc_plots_show_renders_latency_and_quality(deployed: Deployed) -> None:
    """The project's dvc.yaml over the deployed run's folder; its report stage regenerates the plots."""
    repo = deployed.params.parent  # params.yaml and outputs/ live here
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    env = base_env(PATH=f"{Path(sys.executable).parent}:{base_env()['PATH']}")

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)

    init = run("dvc", "init", "--no-scm", "-q")
    assert init.returncode == 0, init.stderr
    ws = _workspace(deployed)
    (ws / "plots" / "latency.json").unlink()
    # The report stage alone (its upstream stages ran through Prefect): it writes the plot files.
    repro = run("dvc", "repro", "--single-item", "report@minilm")
    assert repro.returncode == 0, repro.stdout[-2000:] + repro.stderr[-2000:]
    assert (ws / "plots" / "latency.json").is_file()
    shown = run("dvc", "plots", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert not data.get("errors"), data["errors"]
    plots = {Path(k).name: v[0]["content"] for k, v in data["data"].items()}
    latency, quality = plots["latency.json"], plots["quality.json"]
    assert latency["encoding"]["x"]["field"] == "latency_p50_ms"
    assert quality["encoding"]["x"]["field"] == "latency_p50_ms"
    assert quality["encoding"]["y"]["field"] == "quality_retention"
    for plot in (latency, quality):
        assert {v["candidate"] for v in plot["data"]["values"]} == {c["name"] for c in CHEAP}
        assert all(v["latency_p50_ms"] > 0 for v in plot["data"]["values"])


def test_the_mlflow_ui_shows_the_run_and_the_comparison(deployed: Deployed, ops_dir: Path) -> None:
    host = _pipeline_runs(deployed)["local"]
    client = mlflow.MlflowClient()
    children = client.search_runs([host.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{host.info.run_id}'")
    pick = next(c for c in children if c.data.tags["edgeopt.candidate"] == host.data.tags["edgeopt.pick"])
    exp = host.info.experiment_id

    page = chromium(f"{deployed.mlflow_url}/#/experiments/{exp}/runs/{pick.info.run_id}", ops_dir / "mlflow-run.png",
                    size=(1400, 1800))
    assert pick.info.run_name in page and pick.info.run_id in page
    assert "latency_p50_ms" in page and "quality_retention" in page
    assert "minilm" in page  # the parent run, linked

    ids = quote(json.dumps([c.info.run_id for c in children]))
    page = chromium(f"{deployed.mlflow_url}/#/compare-runs?runs={ids}&experiments={quote(json.dumps([exp]))}",
                    ops_dir / "mlflow-compare.png", size=(1400, 1800))
    assert f"Comparing {len(children)} Runs" in page
    for c in children:
        assert c.info.run_id in page and c.data.tags["edgeopt.candidate"] in page
    assert "latency_p50_ms" in page
