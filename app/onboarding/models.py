"""Onboarding progress and data imports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Identity, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.audit.registry import NOT_GMP
from app.core.db import CreatedAt, TenantBase


class OnboardingStep(TenantBase):
    """A step of the guided flow the tenant chose to skip (done-ness itself is derived from the data)."""

    __tablename__ = "onboarding_steps"
    __table_args__ = {"info": NOT_GMP}

    #: Step key: site, line, equipment, sensors, materials, users.
    step: Mapped[str] = mapped_column(String(20), primary_key=True)
    #: Skipped (True) or brought back into the checklist (False).
    skipped: Mapped[bool] = mapped_column(default=False)
    #: When it was last changed.
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    #: Membership that changed it.
    member_id: Mapped[int | None]


class DataImport(CreatedAt, TenantBase):
    """An uploaded CSV/XLSX file: its parsed rows, the row-by-row verdicts, and whether it was imported."""

    __tablename__ = "data_imports"
    __table_args__ = (
        CheckConstraint("kind IN ('equipment', 'sensors', 'materials', 'lots')", name="kind"),
        CheckConstraint("state IN ('previewed', 'imported')", name="state"),
        {"info": NOT_GMP},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: What the file holds: equipment / sensors / materials / lots.
    kind: Mapped[str] = mapped_column(String(20))
    #: File name as uploaded.
    filename: Mapped[str] = mapped_column(String(255))
    #: SHA-256 of the uploaded bytes (the audit event names it).
    sha256: Mapped[str] = mapped_column(String(64))
    #: Parsed rows: [{"line": n, "values": {...}}] (the file itself is not kept).
    rows: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    #: previewed / imported.
    state: Mapped[str] = mapped_column(String(20), default="previewed")
    #: Membership that uploaded it.
    created_by: Mapped[int | None]
    #: When it was imported.
    imported_at: Mapped[datetime | None]
    #: Rows created by the import.
    created_count: Mapped[int] = mapped_column(default=0)
    #: Rows already present (identical), skipped.
    skipped_count: Mapped[int] = mapped_column(default=0)
