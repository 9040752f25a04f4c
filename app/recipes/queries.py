"""Read-side queries of the recipes area for pages and the API (no writes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.recipes.models import MasterRecipe, RecipeVersion, RecipeVersionRevision, ValidationRun


@dataclass(frozen=True)
class RecipeRow:
    """A master recipe with its latest version and the version effective now."""

    master: MasterRecipe
    latest: RecipeVersion
    effective: RecipeVersion | None


def versions_query(master_recipe_id: int) -> Select[tuple[RecipeVersion]]:
    """Every version of a master recipe, newest first."""
    return (select(RecipeVersion).where(RecipeVersion.master_recipe_id == master_recipe_id)
            .order_by(RecipeVersion.version.desc()))


def is_effective(version: RecipeVersion, at: datetime) -> bool:
    """Whether a version is the one in force at `at` (approved, started, not ended)."""
    return (version.effective_from is not None and version.effective_from <= at
            and (version.effective_until is None or version.effective_until > at))


def recipe_rows(session: Session, at: datetime) -> list[RecipeRow]:
    """Every master recipe with its latest version and the version effective at `at`, by code."""
    masters = list(session.scalars(select(MasterRecipe).order_by(MasterRecipe.code)))
    versions: dict[int, list[RecipeVersion]] = {}
    for version in session.scalars(select(RecipeVersion).order_by(RecipeVersion.version.desc())):
        versions.setdefault(version.master_recipe_id, []).append(version)
    rows = []
    for master in masters:
        mine = versions.get(master.id, [])
        if not mine:
            continue
        effective = next((v for v in mine if is_effective(v, at)), None)
        rows.append(RecipeRow(master=master, latest=mine[0], effective=effective))
    return rows


def revisions_query(version_id: int) -> Select[tuple[RecipeVersionRevision]]:
    """The saved states of a draft, newest first."""
    return (select(RecipeVersionRevision).where(RecipeVersionRevision.version_id == version_id)
            .order_by(RecipeVersionRevision.revision.desc()))


def validation_runs_query() -> Select[tuple[ValidationRun]]:
    """Validation report runs, newest first."""
    return select(ValidationRun).order_by(ValidationRun.id.desc())
