"""Recipe state changes and the lookups other areas build on, inside the caller's tenant transaction.

Services flush, never commit: the audit event and any signature land in the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.recipes.models import RELEASED_STATUSES, RecipeVersion


def get_version(session: Session, version_id: int) -> RecipeVersion:
    """Return one recipe version (any status) or raise NotFound; `.document` is the validated recipe document."""
    version = session.get(RecipeVersion, int(version_id))
    if version is None:
        raise NotFound(f"recipe version {version_id} does not exist in this tenant")
    return version


def effective_version(session: Session, master_recipe_id: int, at: datetime) -> RecipeVersion:
    """Return the approved version of a master recipe that is effective at `at` (timezone-aware), or NotFound.

    A version is effective from `effective_from` (the later of its approval and its header's effective date)
    until `effective_until` (its expiry, the start of the next approved version, or its retirement), so the
    answer for a past moment is the version that was effective then. Batches plan from this version and
    freeze its document (`content_hash` identifies it) as their control recipe.
    """
    if at.tzinfo is None:
        raise ValueError("effective_version needs a timezone-aware moment")
    version = session.scalar(
        select(RecipeVersion)
        .where(RecipeVersion.master_recipe_id == int(master_recipe_id),
               RecipeVersion.status.in_(RELEASED_STATUSES),
               RecipeVersion.effective_from.is_not(None),
               RecipeVersion.effective_from <= at,
               or_(RecipeVersion.effective_until.is_(None), RecipeVersion.effective_until > at))
        .order_by(RecipeVersion.effective_from.desc(), RecipeVersion.version.desc())
        .limit(1)
    )
    if version is None:
        raise NotFound(f"master recipe {master_recipe_id} has no approved version effective at {at.isoformat()}")
    return version
