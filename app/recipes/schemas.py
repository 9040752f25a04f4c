"""Request and response schemas of the recipes JSON API (the API never returns ORM objects)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import Field

from app.core.api import ApiModel, OutModel


class VersionSummary(OutModel):
    """A version as lists show it."""

    id: int
    version: int
    status: str
    content_hash: str
    change_reason: str | None
    effective_from: datetime | None
    effective_until: datetime | None


class RecipeOut(OutModel):
    """A master recipe with its latest and effective versions."""

    id: int
    code: str
    name: str
    product_code: str
    template_id: str | None
    template_version: str | None
    template_hash: str | None
    latest: VersionSummary
    effective: VersionSummary | None


class MessageOut(OutModel):
    """An editor validation message."""

    level: str
    path: str
    message: str


class VersionOut(OutModel):
    """A recipe version with its whole document."""

    id: int
    master_recipe_id: int
    version: int
    status: str
    revision: int
    recipe_code: str
    product_code: str
    product_name: str
    batch_size: float
    batch_size_unit: str
    effective_date: date | None
    expiry_date: date | None
    effective_from: datetime | None
    effective_until: datetime | None
    approved_at: datetime | None
    change_reason: str | None
    parent_version_id: int | None
    template_id: str | None
    template_version: str | None
    template_hash: str | None
    content_hash: str
    document: dict[str, Any]
    messages: list[MessageOut] = []


class ImportIn(ApiModel):
    """Import a recipe: our JSON document (`document`) or BatchML text (`batchml`)."""

    format: Literal["json", "batchml"]
    document: dict[str, Any] | None = None
    batchml: str | None = None
    change_reason: str | None = Field(default=None, max_length=2000)


class TemplateImportIn(ApiModel):
    """Import a library template as a draft."""

    create_missing_materials: bool = False
    change_reason: str | None = Field(default=None, max_length=2000)


class TemplateOut(OutModel):
    """A template of the library."""

    id: str
    version: str
    title: str
    sha256: str
    recipe_content_hash: str
    requirements: int
    scenarios: int


class ChangeOut(OutModel):
    """One difference between two versions."""

    category: str
    kind: str
    label: str
    path: str
    old: Any = None
    new: Any = None
    text_diff: list[str] = []


class DiffOut(OutModel):
    """A version compared with its previous version (or its template)."""

    against: str
    against_version_id: int | None
    against_hash: str | None
    changes: list[ChangeOut]


class ScaledRowOut(OutModel):
    """One scaled value."""

    item: str
    field: str
    before: str
    after: str


class ScaledOut(OutModel):
    """A version scaled to a batch size: the factor, what changed, and the scaled document."""

    batch_size: float
    unit: str
    factor: float
    source_hash: str
    rows: list[ScaledRowOut]
    document: dict[str, Any]
