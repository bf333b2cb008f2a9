"""Which registered recipes can make a candidate of a given model, and why the others cannot.

`edgeopt candidates --list` shows this for each pipeline of a params.yaml, so a user sees every
framework their model can get (and which of those params.yaml does not list yet) before anything
builds. Pure: it reads the recipe registry, the task's family and the model source's facts only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgeopt.recipes import Recipe
from edgeopt.sources import SourceFacts


@dataclass(frozen=True)
class Applicability:
    """One recipe against one model source: whether it applies, and the reason in a few words."""

    recipe: str
    framework: str
    applies: bool
    reason: str
    listed_as: tuple[str, ...] = ()  # the pipeline's candidates that use it


def recipe_applicability(recipe: Recipe, task: str, family: str, facts: SourceFacts,
                         listed_as: Iterable[str] = ()) -> Applicability:
    """Judge one recipe, in the order the pipeline itself would refuse it: task, machine, formats."""

    def verdict(applies: bool, reason: str) -> Applicability:
        return Applicability(recipe.name, recipe.framework, applies, reason, tuple(listed_as))

    if family not in recipe.families:
        return verdict(False, f"makes {'/'.join(recipe.families)} models; task {task} is {family}")
    if recipe.tasks and task not in recipe.tasks:
        return verdict(False, f"knows only {', '.join(recipe.tasks)}")
    unmet = recipe.requires.unmet()
    if unmet:
        return verdict(False, f"cannot run on this machine: {unmet}")
    parent_formats = [f for f in recipe.accepts if f != "base"]
    from_parent = f"from a parent candidate of format {'/'.join(parent_formats)}" if parent_formats else ""
    if "base" in recipe.accepts:
        offered = [f for f in facts.formats if not recipe.base_formats or f in recipe.base_formats]
        if offered:
            return verdict(True, f"from the base model ({'/'.join(offered)})")
        if from_parent:
            return verdict(True, f"{from_parent} (the {facts.kind} base offers {'/'.join(facts.formats)})")
        return verdict(False, f"needs a {'/'.join(recipe.base_formats)} base model; this {facts.kind} source "
                              f"offers {'/'.join(facts.formats)}")
    return verdict(True, from_parent)


def applicability_table(recipes: Mapping[str, Recipe], task: str, family: str, facts: SourceFacts,
                        candidates: Mapping[str, str]) -> list[Applicability]:
    """Every registered recipe, applicable ones first. `candidates`: the pipeline's name -> recipe."""
    rows = [recipe_applicability(r, task, family, facts, [c for c, used in candidates.items() if used == name])
            for name, r in sorted(recipes.items())]
    return sorted(rows, key=lambda row: (not row.applies, row.recipe))
