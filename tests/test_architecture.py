"""The shape of the package: no import cycles (function-level imports included), and a core that never
names a task: task knowledge lives in edgeopt/workloads/<task>/ and the adapters that declare what they serve."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgeopt"
# Modules that may know tasks: the task packages themselves, and adapters (a recipe may be BERT- or LLM-only;
# the registry lists adapter modules by name, some named after what they run).
TASK_AWARE = ("workloads/", "adapters/")


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every edgeopt module `path` imports, anywhere in the file (TYPE_CHECKING and function bodies too)."""
    found: set[str] = set()
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` packages up
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parents + ([base] if base else []))
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    # A module's own ancestor packages are not edges: Python has imported them before the module runs.
    return {m: {d for d in _imports(p, set(files)) if d != m and not m.startswith(d + ".")}
            for m, p in files.items()}


def test_the_package_has_no_import_cycles(graph: dict[str, set[str]]) -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def _code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals and dotted names the code uses; docstrings (documentation) left out."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return out


def test_the_core_never_names_a_task() -> None:
    from edgeopt.taskspec import all_tasks

    names = sorted(all_tasks())
    assert {"text-embedding", "causal-lm", "image-classification"} <= set(names)
    pattern = re.compile("|".join(re.escape(n) for n in names) + r"|text_embedding|causal_lm|image_classification")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(TASK_AWARE):
            continue
        offenders += [f"{rel}:{line}: {text!r}" for line, text in _code_strings(ast.parse(path.read_text()))
                      if pattern.search(text) and not text.startswith("edgeopt.adapters.")]
    assert offenders == []


def test_every_task_package_is_found_and_complete() -> None:
    from edgeopt.taskspec import all_tasks
    from edgeopt.workloads.base import Workload

    for name, spec in all_tasks().items():
        workload = spec.load_workload()
        assert isinstance(workload, Workload) and workload.task == name
        assert spec.model_kinds and spec.data_kinds, name
        assert set(spec.quality_metrics) <= set(workload.metric_names), name
        assert workload.python_model().is_file(), name
