"""What a finished pipeline run amounts to: one line and an exit code (pure; no Prefect, no MLflow).

A nightly job reads the exit code, so "nothing could be compared" must not look like success.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edgeopt.errors import ExitCode
from edgeopt.results import Promotion, Selection


@dataclass(frozen=True)
class Verdict:
    code: ExitCode
    line: str


def verdict(selection: Selection, promotion: Promotion | None, promote: bool = True) -> Verdict:
    """The outcome of one namespace's run, from its selection and promotion."""
    name = selection.pipeline
    rows = {r.name: r for r in selection.candidates}
    base = rows.get(selection.baseline)
    if base is None or base.status != "ok":
        why = (base.error or base.status) if base is not None else "not a candidate"
        return Verdict(ExitCode.NOT_COMPARED,
                       f"{name}: the baseline {selection.baseline} could not be measured ({_short(why)})")
    others = [r for r in selection.candidates if r.name != selection.baseline]
    if not any(r.status == "ok" for r in others):
        failed = sum(r.status == "failed" for r in others)
        skipped = sum(r.status == "skipped" for r in others)
        return Verdict(ExitCode.NOT_COMPARED, f"{name}: no candidate could be compared with the baseline "
                                              f"{selection.baseline} ({failed} failed, {skipped} skipped)")
    if selection.pick is None:
        return Verdict(ExitCode.OK, f"{name}: no candidate passed the gates; nothing promoted")
    if not promote or promotion is None:
        return Verdict(ExitCode.OK, f"{name}: pick {selection.pick} (promotion disabled)")
    if promotion.unchanged:
        return Verdict(ExitCode.OK, f"{name}: champion unchanged: {promotion.model_name}@{promotion.alias} is "
                                    f"already {promotion.candidate} (version {promotion.version}, same artifact)")
    if promotion.promoted:
        return Verdict(ExitCode.OK, f"{name}: promoted {promotion.candidate} as {promotion.model_name}@"
                                    f"{promotion.alias} (version {promotion.version})")
    # A gated pick that could not be registered, loaded or aliased: the run did not do its job.
    return Verdict(ExitCode.INTERNAL, f"{name}: {selection.pick} passed the gates but was not promoted: "
                                      f"{_short(promotion.reason)}")


def worst(codes: Iterable[int]) -> ExitCode:
    """The process's exit code over several namespaces: any failure wins over success, and a user
    mistake (which explains the rest) over an internal failure over "nothing compared"."""
    failing = {ExitCode(c) for c in codes} - {ExitCode.OK}
    for code in (ExitCode.USER, ExitCode.INTERNAL, ExitCode.NOT_COMPARED):
        if code in failing:
            return code
    return min(failing) if failing else ExitCode.OK


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
