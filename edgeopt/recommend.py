"""A hardware-aware recommendation from measured data, checked against the seeds' decision tree.

For the machine the run measured on, report which framework won each objective (among candidates
that ran, and among those that passed every gate), and whether that agrees with the seeds' rule of
thumb: Intel -> OpenVINO, Apple -> MLX, enterprise -> Olive, anything else (cross-platform) ->
llama.cpp. Everything here is pure except `machine_profile`, which reads /proc/cpuinfo and platform.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from edgeopt.results import CandidateResult, Record, Selection

# ISA features that decide which kernels a framework can use (VNNI/AMX: INT8/BF16 matmuls).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx", "neon")
_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}
# /proc/cpuinfo "CPU implementer" on arm64 Linux.
_ARM_IMPLEMENTERS = {"0x41": "ARM", "0x61": "Apple", "0x51": "Qualcomm", "0x48": "HiSilicon", "0xc0": "Ampere"}

# recipe.framework -> the framework family the seeds' tree talks about.
FAMILIES = {
    "openvino": "openvino",
    "nncf": "openvino",
    "onnx": "onnxruntime",
    "onnxruntime": "onnxruntime",
    "mlx": "mlx",
    "llama.cpp": "llama.cpp",
    "llamacpp": "llama.cpp",
    "gguf": "llama.cpp",
    "olive": "olive",
    "torch": "pytorch",
}

Verdict = Literal["agree", "disagree", "untested", "no-data"]


class Winner(Record):
    candidate: str
    framework: str  # family
    value: float


class ObjectiveVerdict(Record):
    objective: str
    best_ok: Winner | None  # among candidates that ran (baseline excluded)
    best_gated: Winner | None  # among candidates that passed every gate
    by_framework: dict[str, Winner]  # each family's best candidate that ran
    verdict: Verdict
    basis: Literal["gated", "ok", "none"]  # which winner the verdict compares with the tree


class Recommendation(Record):
    profile: dict[str, Any]
    tree_rule: str
    tree_prediction: str  # a framework family
    objectives: list[ObjectiveVerdict]
    skipped: dict[str, str]  # candidate -> why it did not run here (capabilities)
    failed: dict[str, str]
    text: str


# -- machine profile -----------------------------------------------------------------------


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Vendor, model and ISA flags from /proc/cpuinfo text (x86 or arm64)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor block describes them all here
            fields[key.strip()] = value.strip()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    vendor = _VENDORS.get(fields.get("vendor_id", ""), "")
    if not vendor and "CPU implementer" in fields:
        vendor = _ARM_IMPLEMENTERS.get(fields["CPU implementer"].lower(), "ARM")
    isa = {f: f in flags for f in ISA_FLAGS}
    isa["amx"] = any(f.startswith("amx") for f in flags)
    isa["neon"] = bool(flags & {"asimd", "neon"})
    return {
        "cpu_vendor": vendor or (fields.get("vendor_id") or "unknown"),
        "cpu_model": fields.get("model name") or fields.get("Model") or fields.get("Hardware") or "unknown",
        "isa": isa,
    }


def build_profile(cpuinfo: str, system: str, machine: str, cores: int | None, accelerator: str) -> dict[str, Any]:
    """The machine profile from already-read facts (pure)."""
    profile = parse_cpuinfo(cpuinfo) if cpuinfo else {
        "cpu_vendor": "unknown", "cpu_model": "unknown", "isa": dict.fromkeys(ISA_FLAGS, False)}
    if system == "Darwin" and machine == "arm64":
        profile["cpu_vendor"] = "Apple"
        profile["isa"] = {**dict.fromkeys(ISA_FLAGS, False), "neon": True}
    return {**profile, "os": system, "machine": machine, "cores": cores, "accelerator": accelerator}


def _accelerator(system: str, machine: str) -> str:
    # Cheap checks only: a device node, or the platform itself. No driver library is loaded.
    if Path("/dev/nvidia0").exists():
        return "nvidia-gpu"
    if system == "Darwin" and machine == "arm64":
        return "apple-gpu"
    return "none"


def machine_profile() -> dict[str, Any]:
    """This machine: CPU vendor/model, ISA flags of interest, OS, architecture, accelerator."""
    system, machine = platform.system(), platform.machine()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    profile = build_profile(cpuinfo, system, machine, os.cpu_count(), _accelerator(system, machine))
    if profile["cpu_model"] == "unknown" and platform.processor():
        profile["cpu_model"] = platform.processor()
    return profile


# -- the seeds' tree -------------------------------------------------------------------------


def tree_prediction(profile: dict[str, Any]) -> tuple[str, str]:
    """(framework family, the rule that fired). `profile["deployment"] == "enterprise"` selects Olive."""
    if profile.get("deployment") == "enterprise":
        return "olive", "enterprise deployment -> Olive"
    vendor = str(profile.get("cpu_vendor", ""))
    if vendor == "Apple" or (profile.get("os") == "Darwin" and profile.get("machine") == "arm64"):
        return "mlx", "Apple silicon -> MLX"
    if vendor == "Intel":
        return "openvino", "Intel CPU -> OpenVINO"
    return "llama.cpp", f"cross-platform ({vendor or 'unknown'} CPU, not Intel or Apple) -> llama.cpp"


def framework_family(framework: str | None) -> str:
    name = (framework or "unknown").lower()
    return FAMILIES.get(name, name)


# -- recommendation --------------------------------------------------------------------------


def _value(row: CandidateResult, objective: str) -> float | None:
    try:
        return float(row.objective(objective))
    except (ValueError, KeyError):
        return None  # not measured, or no retention yet (selection fills it)


def _best(rows: Iterable[CandidateResult], objective: str) -> Winner | None:
    scored = [(v, r.name, r) for r in rows if (v := _value(r, objective)) is not None]
    if not scored:
        return None
    value, name, row = min(scored, key=lambda t: (t[0], t[1]))
    return Winner(candidate=name, framework=framework_family(row.framework), value=value)


def _verdict(
    objective: str, ok: list[CandidateResult], gated: list[CandidateResult], predicted: str
) -> ObjectiveVerdict:
    families: dict[str, list[CandidateResult]] = {}
    for r in ok:
        families.setdefault(framework_family(r.framework), []).append(r)
    by_framework = {f: w for f, rs in sorted(families.items()) if (w := _best(rs, objective)) is not None}
    best_ok, best_gated = _best(ok, objective), _best(gated, objective)
    winner, basis = (best_gated, "gated") if best_gated else (best_ok, "ok") if best_ok else (None, "none")
    verdict: Verdict
    if winner is None:
        verdict = "no-data"
    elif predicted not in by_framework:
        verdict = "untested"
    else:
        verdict = "agree" if winner.framework == predicted else "disagree"
    return ObjectiveVerdict(objective=objective, best_ok=best_ok, best_gated=best_gated, by_framework=by_framework,
                            verdict=verdict, basis=basis)


def _describe(profile: dict[str, Any]) -> str:
    isa = [k for k, v in (profile.get("isa") or {}).items() if v]
    vendor, model = str(profile.get("cpu_vendor")), str(profile.get("cpu_model"))
    cpu = model if model.startswith(vendor) else f"{vendor} {model}"
    return (f"{cpu} ({profile.get('machine')}, {profile.get('os')}; "
            f"{', '.join(isa) or 'no listed ISA extensions'}), accelerator {profile.get('accelerator', 'none')}")


def _text(profile: dict[str, Any], rule: str, predicted: str, verdicts: list[ObjectiveVerdict],
          skipped: dict[str, str]) -> str:
    lines = [f"Machine: {_describe(profile)}.", f"Seeds' tree: {rule}."]
    for v in verdicts:
        w = v.best_gated or v.best_ok
        if w is None:
            lines.append(f"{v.objective}: no measured candidate.")
            continue
        where = "among gated candidates" if v.best_gated else "no candidate passed the gates; among all that ran"
        line = f"{v.objective}: {w.framework} won ({w.candidate}, {w.value:.4g}; {where})"
        if v.verdict == "untested":
            line += f"; the tree's {predicted} had no measured candidate"
        else:
            line += f"; {v.verdict}s with the tree"
            tree_best = v.by_framework.get(predicted)
            if v.verdict == "disagree" and tree_best is not None:
                line += f" (best {predicted}: {tree_best.candidate}, {tree_best.value:.4g})"
        lines.append(line + ".")
    if skipped:
        lines.append("Not run here: " + "; ".join(f"{k} ({why})" for k, why in sorted(skipped.items())) + ".")
    return "\n".join(lines)


def recommend(rows: Sequence[CandidateResult], objectives: Sequence[str], profile: dict[str, Any],
              baseline: str | None = None) -> Recommendation:
    """Per objective (all minimised), the winning candidate and framework, and the tree's verdict.

    rows: the selection's rows (gates and retention filled). baseline: excluded from the winners,
    since it is the reference the others are measured against (its quality loss is 0 by definition).
    """
    predicted, rule = tree_prediction(profile)
    ok = [r for r in rows if r.status == "ok" and r.measurement is not None and r.name != baseline]
    gated = [r for r in ok if r.passed_gates]
    verdicts = [_verdict(o, ok, gated, predicted) for o in objectives]
    skipped = {r.name: r.error or "skipped" for r in rows if r.status == "skipped"}
    failed = {r.name: r.error or "failed" for r in rows if r.status == "failed"}
    return Recommendation(profile=profile, tree_rule=rule, tree_prediction=predicted, objectives=verdicts,
                          skipped=skipped, failed=failed, text=_text(profile, rule, predicted, verdicts, skipped))


def recommend_selection(selection: Selection, profile: dict[str, Any] | None = None) -> Recommendation:
    """`recommend` over a pipeline's selection (its rows, objectives and baseline), on this machine by default."""
    return recommend(selection.candidates, selection.objectives, profile if profile is not None else machine_profile(),
                     baseline=selection.baseline)
