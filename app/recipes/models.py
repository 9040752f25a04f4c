"""Master recipes and their versions (ISA-88): the validated document, its lifecycle and its history.

A master recipe holds versions; a version holds one recipe document (schema ``batchline.recipe/1``, validated
by `app.recipes.document`) as JSONB with its content hash, plus header columns copied from the document for
querying. Drafts are edited; every edit is kept as a revision (append-only), so nothing a process engineer
wrote is ever lost. Once a version leaves draft its document is frozen: a database trigger refuses any change
to the document, its hash or its header columns, and only allows the lifecycle transitions below.

    draft ──authored──> in_review ──reviewed──> reviewed ──approved──> approved ──> superseded ──> retired
      ^                     │                      │                      └──────────────────────> retired
      └──── rejected ───────┴──────────────────────┘          (a draft that is abandoned is retired too)

`effective_from` is set once, at approval; `effective_until` is set when a later version takes over, when the
version is retired, or from the expiry date. A batch is planned from the version effective at a moment
(`app.recipes.services.effective_version`).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.audit.registry import gmp_table_info, protect_gmp_table, register_record_type
from app.core.db import CreatedAt, TenantBase

#: Lifecycle statuses of a recipe version, in order.
VERSION_STATUSES: tuple[str, ...] = ("draft", "in_review", "reviewed", "approved", "superseded", "retired")
#: Statuses of versions whose document may no longer change.
FROZEN_STATUSES: frozenset[str] = frozenset(VERSION_STATUSES) - {"draft"}
#: Statuses of versions that were approved (they may be, or have been, effective).
RELEASED_STATUSES: frozenset[str] = frozenset({"approved", "superseded", "retired"})
#: The audit / e-signature record type of a version.
VERSION_RECORD_TYPE = "recipe_version"


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class MasterRecipe(CreatedAt, TenantBase):
    """A master recipe: one product at one process, holding its versions; identified by its recipe code."""

    __tablename__ = "master_recipes"
    __table_args__ = (
        UniqueConstraint("code"),
        {"info": gmp_table_info("master_recipe")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Recipe code, unique in the tenant (the document header's `recipe_code`; fixed for every version).
    code: Mapped[str] = mapped_column(String(64))
    #: Name shown in lists (the product name of the first version).
    name: Mapped[str] = mapped_column(String(200))
    #: Product code (the document header's `product_code`).
    product_code: Mapped[str] = mapped_column(String(64))
    #: Template the recipe was imported from (None when authored or imported from a file).
    template_id: Mapped[str | None] = mapped_column(String(64))
    #: Template version imported.
    template_version: Mapped[str | None] = mapped_column(String(20))
    #: SHA-256 of the template directory (template.json + validation.json) as listed in the library index.
    template_hash: Mapped[str | None] = mapped_column(String(64))
    #: The template's recipe document exactly as imported: what adaptations are measured against.
    template_document: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    #: Membership that created it.
    created_by_member_id: Mapped[int | None] = mapped_column(BigInteger)


class RecipeVersion(CreatedAt, TenantBase):
    """One version of a master recipe: its document, content hash, lifecycle status and effective period."""

    __tablename__ = "recipe_versions"
    __table_args__ = (
        UniqueConstraint("master_recipe_id", "version"),
        CheckConstraint(f"status IN ({_in(VERSION_STATUSES)})", name="status"),
        CheckConstraint("effective_until IS NULL OR effective_from IS NULL OR effective_until >= effective_from",
                        name="effective_period"),
        Index("ix_recipe_versions_effective", "master_recipe_id", "effective_from",
              postgresql_where=text("effective_from IS NOT NULL")),
        {"info": gmp_table_info(VERSION_RECORD_TYPE)},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The master recipe.
    master_recipe_id: Mapped[int] = mapped_column(ForeignKey("master_recipes.id"))
    #: 1, 2, ... per master recipe.
    version: Mapped[int] = mapped_column()
    #: draft / in_review / reviewed / approved / superseded / retired (follows the signature route).
    status: Mapped[str] = mapped_column(String(20), server_default=text("'draft'"))
    #: The recipe document (schema batchline.recipe/1), validated; frozen once the version leaves draft.
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: SHA-256 of the document's canonical JSON (what signatures and control recipes bind to).
    content_hash: Mapped[str] = mapped_column(String(64))
    #: Draft revision number: 1 at creation, +1 per saved edit (each kept in recipe_version_revisions).
    revision: Mapped[int] = mapped_column(server_default=text("1"))
    #: Header copy: recipe code.
    recipe_code: Mapped[str] = mapped_column(String(64))
    #: Header copy: product code.
    product_code: Mapped[str] = mapped_column(String(64))
    #: Header copy: product name.
    product_name: Mapped[str] = mapped_column(String(200))
    #: Header copy: reference batch size.
    batch_size: Mapped[float] = mapped_column(Float)
    #: Header copy: unit of the reference batch size.
    batch_size_unit: Mapped[str] = mapped_column(String(40))
    #: Header copy: the date the author wants the version effective from (None: from approval).
    effective_date: Mapped[date | None] = mapped_column(Date)
    #: Header copy: the date the version expires (None: until superseded or retired).
    expiry_date: Mapped[date | None] = mapped_column(Date)
    #: Why this version exists (required from version 2 on, and for imports over an existing recipe).
    change_reason: Mapped[str | None] = mapped_column(Text)
    #: The version this one was derived from (None for the first).
    parent_version_id: Mapped[int | None] = mapped_column(ForeignKey("recipe_versions.id"))
    #: Template provenance (copied from the master recipe, so each version names its origin).
    template_id: Mapped[str | None] = mapped_column(String(64))
    #: Template version.
    template_version: Mapped[str | None] = mapped_column(String(20))
    #: Template directory hash (library index).
    template_hash: Mapped[str | None] = mapped_column(String(64))
    #: Membership that created the version (its author; cannot approve it).
    created_by_member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: When the approval signature was made (database time).
    approved_at: Mapped[datetime | None] = mapped_column()
    #: Start of the effective period: the later of approval and the header's effective date (set once).
    effective_from: Mapped[datetime | None] = mapped_column()
    #: End of the effective period: expiry, the next version's start, or retirement (may only move earlier).
    effective_until: Mapped[datetime | None] = mapped_column()
    #: When the version was retired, and why.
    retired_at: Mapped[datetime | None] = mapped_column()
    #: Why the version was retired.
    retired_reason: Mapped[str | None] = mapped_column(Text)

    def signed_content(self, attachments: dict[str, str] | None = None) -> dict[str, Any]:
        """What a signature on this version attests to: identity, document hash, dates and its images' hashes."""
        return {"master_recipe_id": self.master_recipe_id, "version": self.version,
                "attachments": dict(sorted((attachments or {}).items())),
                "content_hash": self.content_hash, "recipe_code": self.recipe_code,
                "effective_date": self.effective_date.isoformat() if self.effective_date else None,
                "expiry_date": self.expiry_date.isoformat() if self.expiry_date else None,
                "change_reason": self.change_reason}


class RecipeVersionRevision(CreatedAt, TenantBase):
    """A saved state of a draft (append-only): the draft's whole edit history, never overwritten."""

    __tablename__ = "recipe_version_revisions"
    __table_args__ = (
        UniqueConstraint("version_id", "revision"),
        {"info": gmp_table_info("recipe_version_revision", privileges="append_only")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The version.
    version_id: Mapped[int] = mapped_column(ForeignKey("recipe_versions.id"))
    #: The draft revision this row holds.
    revision: Mapped[int] = mapped_column()
    #: The document at this revision.
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: Its content hash.
    content_hash: Mapped[str] = mapped_column(String(64))
    #: What the edit did (editor summary, import source).
    note: Mapped[str] = mapped_column(Text, server_default=text("''"))
    #: Membership that saved it.
    member_id: Mapped[int | None] = mapped_column(BigInteger)


class RecipeVersionDiff(CreatedAt, TenantBase):
    """The diff a reviewer or approver was shown, stored with their signature (append-only)."""

    __tablename__ = "recipe_version_diffs"
    __table_args__ = (
        Index("ix_recipe_version_diffs_version_id", "version_id"),
        {"info": gmp_table_info("recipe_version_diff", privileges="append_only")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The version signed.
    version_id: Mapped[int] = mapped_column(ForeignKey("recipe_versions.id"))
    #: The signature the diff was shown for (None for a diff stored outside a signature).
    signature_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Meaning of that signature (reviewed, approved).
    meaning: Mapped[str] = mapped_column(String(40))
    #: What the version was compared with: `version` (the previous version) or `template`, or `none`.
    against: Mapped[str] = mapped_column(String(20))
    #: The version compared with (when `against` is `version`).
    against_version_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Content hash of what it was compared with.
    against_hash: Mapped[str | None] = mapped_column(String(64))
    #: Content hash of the version when the diff was taken.
    content_hash: Mapped[str] = mapped_column(String(64))
    #: The diff: a list of changes `{area, path, change, old, new, label}`.
    diff: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)


class RecipeAttachment(CreatedAt, TenantBase):
    """An image (or other file) shown in a step's instructions; inserted only while its version is a draft.

    The document names attachments (``attachment:NAME`` in instructions, ``attachments`` on the phase); the bytes
    live here, and their SHA-256 is part of what a signature on the version attests to. A newer upload of the
    same name replaces the older one for display (the latest row wins), the older stays.
    """

    __tablename__ = "recipe_attachments"
    __table_args__ = (
        Index("ix_recipe_attachments_version_id_name", "version_id", "name"),
        CheckConstraint("size = octet_length(data)", name="size_matches"),
        {"info": gmp_table_info("recipe_attachment", privileges="append_only")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The version whose instructions show it.
    version_id: Mapped[int] = mapped_column(ForeignKey("recipe_versions.id"))
    #: File name as the document names it (``attachment:NAME``).
    name: Mapped[str] = mapped_column(String(128))
    #: Media type, detected from the content (never trusted from the browser).
    content_type: Mapped[str] = mapped_column(String(100))
    #: Size in bytes.
    size: Mapped[int] = mapped_column()
    #: SHA-256 of the content.
    sha256: Mapped[str] = mapped_column(String(64))
    #: The content.
    data: Mapped[bytes] = mapped_column(LargeBinary)
    #: Membership that uploaded it.
    member_id: Mapped[int | None] = mapped_column(BigInteger)


class ValidationRun(CreatedAt, TenantBase):
    """One run of the validation report on this instance: environment, results and their evidence hash."""

    __tablename__ = "recipe_validation_runs"
    __table_args__ = (
        {"info": gmp_table_info("recipe_validation_run", privileges="append_only")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Environment: package versions, migration revisions, database and Python versions.
    environment: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: Results: per template (and tenant adaptation) each requirement, its scenarios and their outcome.
    results: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: Number of scenarios run, passed and failed.
    scenarios_run: Mapped[int] = mapped_column()
    #: Scenarios whose outcome matched what the pack expects.
    scenarios_passed: Mapped[int] = mapped_column()
    #: SHA-256 of the canonical JSON of environment + results: the evidence hash printed on the report.
    evidence_hash: Mapped[str] = mapped_column(String(64))
    #: Who ran it (label), for the report.
    performed_by: Mapped[str] = mapped_column(String(300))
    #: Membership that ran it (None for the CLI).
    member_id: Mapped[int | None] = mapped_column(BigInteger)


#: Freeze a version's document once it leaves draft, and allow only the lifecycle's transitions. The runtime
#: role may UPDATE recipe_versions (statuses move), so this is what stands between an approved recipe and a
#: quiet edit by anyone holding SQL access as the tenant role.
VERSION_GUARD_SQL = """
CREATE FUNCTION recipe_version_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id IS DISTINCT FROM OLD.id OR NEW.master_recipe_id IS DISTINCT FROM OLD.master_recipe_id
     OR NEW.version IS DISTINCT FROM OLD.version OR NEW.created_at IS DISTINCT FROM OLD.created_at
     OR NEW.created_by_member_id IS DISTINCT FROM OLD.created_by_member_id
     OR NEW.parent_version_id IS DISTINCT FROM OLD.parent_version_id
     OR NEW.template_id IS DISTINCT FROM OLD.template_id
     OR NEW.template_version IS DISTINCT FROM OLD.template_version
     OR NEW.template_hash IS DISTINCT FROM OLD.template_hash THEN
    RAISE EXCEPTION 'recipe version %: identity and provenance never change', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (OLD.status <> 'draft' OR NEW.status <> 'draft') AND (
       NEW.document IS DISTINCT FROM OLD.document OR NEW.content_hash IS DISTINCT FROM OLD.content_hash
       OR NEW.revision IS DISTINCT FROM OLD.revision OR NEW.recipe_code IS DISTINCT FROM OLD.recipe_code
       OR NEW.product_code IS DISTINCT FROM OLD.product_code OR NEW.product_name IS DISTINCT FROM OLD.product_name
       OR NEW.batch_size IS DISTINCT FROM OLD.batch_size OR NEW.batch_size_unit IS DISTINCT FROM OLD.batch_size_unit
       OR NEW.effective_date IS DISTINCT FROM OLD.effective_date OR NEW.expiry_date IS DISTINCT FROM OLD.expiry_date
       OR NEW.change_reason IS DISTINCT FROM OLD.change_reason) THEN
    RAISE EXCEPTION 'recipe version % is % and cannot be changed: create a new draft version with a reason',
      OLD.id, OLD.status USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
       (OLD.status = 'draft' AND NEW.status IN ('in_review', 'retired'))
    OR (OLD.status = 'in_review' AND NEW.status IN ('reviewed', 'draft'))
    OR (OLD.status = 'reviewed' AND NEW.status IN ('approved', 'draft'))
    OR (OLD.status = 'approved' AND NEW.status IN ('superseded', 'retired'))
    OR (OLD.status = 'superseded' AND NEW.status = 'retired')) THEN
    RAISE EXCEPTION 'recipe version %: status % cannot become %', OLD.id, OLD.status, NEW.status
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (OLD.approved_at IS NOT NULL AND NEW.approved_at IS DISTINCT FROM OLD.approved_at)
     OR (OLD.effective_from IS NOT NULL AND NEW.effective_from IS DISTINCT FROM OLD.effective_from)
     OR (OLD.retired_at IS NOT NULL AND (NEW.retired_at IS DISTINCT FROM OLD.retired_at
                                         OR NEW.retired_reason IS DISTINCT FROM OLD.retired_reason))
     OR (OLD.effective_until IS NOT NULL AND (NEW.effective_until IS NULL
                                              OR NEW.effective_until > OLD.effective_until)) THEN
    RAISE EXCEPTION 'recipe version %: approval and effective dates are set once (an end may only move earlier)',
      OLD.id USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""
VERSION_GUARD_TRIGGER_SQL = ("CREATE TRIGGER recipe_versions_guard BEFORE UPDATE ON recipe_versions FOR EACH ROW "
                             "EXECUTE FUNCTION recipe_version_guard()")
#: The master recipe's identity and template provenance are fixed; only its display name may change.
MASTER_GUARD_SQL = """
CREATE FUNCTION master_recipe_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id IS DISTINCT FROM OLD.id OR NEW.code IS DISTINCT FROM OLD.code
     OR NEW.created_at IS DISTINCT FROM OLD.created_at
     OR NEW.template_id IS DISTINCT FROM OLD.template_id OR NEW.template_version IS DISTINCT FROM OLD.template_version
     OR NEW.template_hash IS DISTINCT FROM OLD.template_hash
     OR NEW.template_document IS DISTINCT FROM OLD.template_document THEN
    RAISE EXCEPTION 'master recipe %: code and template provenance never change', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""
MASTER_GUARD_TRIGGER_SQL = ("CREATE TRIGGER master_recipes_guard BEFORE UPDATE ON master_recipes FOR EACH ROW "
                            "EXECUTE FUNCTION master_recipe_guard()")
#: A version's images are frozen with it: new ones only while it is a draft.
ATTACHMENT_GUARD_SQL = """
CREATE FUNCTION recipe_attachment_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT status FROM recipe_versions WHERE id = NEW.version_id) IS DISTINCT FROM 'draft' THEN
    RAISE EXCEPTION 'recipe version % is not a draft: its images are frozen', NEW.version_id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""
ATTACHMENT_GUARD_TRIGGER_SQL = ("CREATE TRIGGER recipe_attachments_guard BEFORE INSERT ON recipe_attachments "
                                "FOR EACH ROW EXECUTE FUNCTION recipe_attachment_guard()")
#: Append-only tables refuse UPDATE too (the role has no UPDATE grant; the trigger holds even for the owner).
APPEND_ONLY_TABLES = ("recipe_version_revisions", "recipe_version_diffs", "recipe_validation_runs",
                      "recipe_attachments")


def append_only_trigger_sql(table: str) -> str:
    """The statement that makes `table` refuse UPDATE (copied literally into the migration)."""
    return (f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} FOR EACH ROW "
            "EXECUTE FUNCTION gmp_refuse_change()")


for _model in (MasterRecipe, RecipeVersion, RecipeVersionRevision, RecipeVersionDiff, ValidationRun,
               RecipeAttachment):
    protect_gmp_table(_model.__table__)  # type: ignore[arg-type]
event.listen(RecipeVersion.__table__, "after_create", DDL(VERSION_GUARD_SQL.replace("%", "%%")))
event.listen(RecipeVersion.__table__, "after_create", DDL(VERSION_GUARD_TRIGGER_SQL))
event.listen(MasterRecipe.__table__, "after_create", DDL(MASTER_GUARD_SQL.replace("%", "%%")))
event.listen(MasterRecipe.__table__, "after_create", DDL(MASTER_GUARD_TRIGGER_SQL))
event.listen(RecipeAttachment.__table__, "after_create", DDL(ATTACHMENT_GUARD_SQL.replace("%", "%%")))
event.listen(RecipeAttachment.__table__, "after_create", DDL(ATTACHMENT_GUARD_TRIGGER_SQL))
for _model in (RecipeVersionRevision, RecipeVersionDiff, ValidationRun, RecipeAttachment):
    event.listen(_model.__table__, "after_create", DDL(append_only_trigger_sql(_model.__tablename__)))

register_record_type("master_recipe", label="Master recipe", table="master_recipes")


def attachment_hashes(session: Session, version_id: int) -> dict[str, str]:
    """The SHA-256 of each current attachment of a version (the latest upload of each name)."""
    rows = session.execute(select(RecipeAttachment.name, RecipeAttachment.sha256)
                           .where(RecipeAttachment.version_id == version_id).order_by(RecipeAttachment.id)).all()
    return {name: digest for name, digest in rows}


def _version_content(session: Session, record_id: str) -> dict[str, Any] | None:
    """The signed content of a version, for signature checks made outside this area."""
    version = session.get(RecipeVersion, int(record_id)) if str(record_id).isdigit() else None
    return version.signed_content(attachment_hashes(session, version.id)) if version is not None else None


register_record_type(VERSION_RECORD_TYPE, label="Recipe version", table="recipe_versions",
                     endpoint="recipes.version", id_arg="version_id", content=_version_content,
                     route_on_own_page=True)
register_record_type("recipe_version_revision", label="Recipe draft revision", table="recipe_version_revisions")
register_record_type("recipe_version_diff", label="Recipe version diff", table="recipe_version_diffs")
register_record_type("recipe_attachment", label="Recipe instruction image", table="recipe_attachments")
register_record_type("recipe_validation_run", label="Recipe validation run", table="recipe_validation_runs")
