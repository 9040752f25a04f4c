"""Batch records (EBR): batches, their frozen control recipes, step executions, entries, exceptions, overrides.

Everything an operator records is inserted, never updated: a correction or a re-weigh is a new entry that
supersedes the old one (`supersedes_id`), and both stay in the record. The few mutable columns are statuses
(batch, step, equipment use, exception), and a guard trigger per table refuses any other change, lets statuses
move only along their lifecycle and sets each lifecycle timestamp once. Times come from the database clock;
the device's clock is kept beside it (ALCOA+: contemporaneous, attributable).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.audit.registry import NOT_GMP, gmp_table_info, protect_gmp_table, register_record_type
from app.core.db import CreatedAt, TenantBase

#: Batch statuses. `in_review`, `released` and `rejected` belong to review by exception (issue 9).
BATCH_STATUSES: dict[str, str] = {
    "planned": "Planned",
    "dispatched": "Released to the floor",
    "in_progress": "In progress",
    "paused": "Paused",
    "on_hold": "On hold",
    "completed": "Completed",
    "aborted": "Aborted",
    "in_review": "In review",
    "released": "Released by QA",
    "rejected": "Rejected by QA",
}
#: Statuses in which operators may record data.
EXECUTABLE_STATUSES = frozenset({"dispatched", "in_progress"})
#: Statuses of batches still on the floor (the floor queue shows them).
FLOOR_STATUSES = ("dispatched", "in_progress", "paused", "on_hold")
STEP_STATUSES: dict[str, str] = {
    "pending": "Not started",
    "in_progress": "In progress",
    "completed": "Completed",
    "skipped": "Skipped",
}
#: Kinds of entry: a first entry, a correction (new value, same measurement) or a re-weigh (new attempt).
ENTRY_ACTIONS = ("entry", "correction", "reweigh")
#: Outcome of the live check an entry went through.
CHECK_STATES = ("none", "green", "amber", "red", "blocked")
EXCEPTION_SEVERITIES = ("critical", "major", "minor")
EXCEPTION_STATUSES = ("open", "acknowledged", "closed")
OVERRIDE_KINDS = ("out_of_order", "hard_block")


def _in(values: Any) -> str:
    return ", ".join(f"'{v}'" for v in values)


class BatchSettings(CreatedAt, TenantBase):
    """The tenant's batch settings: the batch number pattern and the tolerances of contemporaneous entry."""

    __tablename__ = "batch_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("clock_skew_tolerance_s > 0", name="skew_positive"),
        CheckConstraint("late_entry_grace_s >= 0", name="grace_not_negative"),
        {"info": gmp_table_info("batch_settings")},
    )

    #: Always 1.
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    #: Pattern of new batch numbers: {recipe} {product} {line} {yyyy} {yy} {mm} {dd} and {seq:N} (N digits).
    batch_number_pattern: Mapped[str] = mapped_column(String(100))
    #: Largest tolerated difference between a device's clock and the database clock, in seconds.
    clock_skew_tolerance_s: Mapped[int] = mapped_column()
    #: Seconds after a step's allowed time in which entries still count as on time.
    late_entry_grace_s: Mapped[int] = mapped_column()


class BatchNumberCounter(TenantBase):
    """The last sequence number given out per batch number scope (a scope is the pattern with {seq} left open)."""

    __tablename__ = "batch_number_counters"
    __table_args__ = {"info": NOT_GMP}

    #: The rendered pattern with the sequence replaced by `#`, e.g. `B-2026-#`.
    scope: Mapped[str] = mapped_column(String(120), primary_key=True)
    #: Last number given out in this scope (numbers are never reused).
    last_value: Mapped[int] = mapped_column()


class Batch(CreatedAt, TenantBase):
    """A batch (production order): what is made, from which recipe version, at which size, on which line."""

    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("batch_number"),
        CheckConstraint(f"status IN ({_in(BATCH_STATUSES)})", name="status"),
        CheckConstraint("batch_size > 0", name="batch_size_positive"),
        Index("ix_batches_line_id_status", "line_id", "status"),
        Index("ix_batches_status", "status"),
        {"info": gmp_table_info("batch")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Batch number from the tenant's pattern, assigned at planning (containers are labelled with it).
    batch_number: Mapped[str] = mapped_column(String(60))
    #: The master recipe.
    master_recipe_id: Mapped[int] = mapped_column(BigInteger)
    #: The approved, effective recipe version planned from.
    recipe_version_id: Mapped[int] = mapped_column(ForeignKey("recipe_versions.id"))
    #: Recipe code (copied from the version).
    recipe_code: Mapped[str] = mapped_column(String(64))
    #: Version number of the recipe.
    recipe_version: Mapped[int] = mapped_column()
    #: Content hash of the recipe version's document (what the control recipe was scaled from).
    recipe_content_hash: Mapped[str] = mapped_column(String(64))
    #: Product code.
    product_code: Mapped[str] = mapped_column(String(64))
    #: Product name.
    product_name: Mapped[str] = mapped_column(String(200))
    #: Batch size (exact decimal).
    batch_size: Mapped[Decimal] = mapped_column(Numeric(18, 6))
    #: Unit of the batch size.
    batch_unit: Mapped[str] = mapped_column(String(40))
    #: Line (or area) the batch runs on.
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    #: Planned start.
    planned_start: Mapped[datetime] = mapped_column()
    #: Chain-of-identity values known at planning (e.g. a patient id); entries with an identity must match.
    identity: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    #: Lifecycle status (keys of BATCH_STATUSES).
    status: Mapped[str] = mapped_column(String(20), server_default=text("'planned'"))
    #: When the status last changed (database clock).
    status_changed_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: Why the batch is paused, held or aborted (the last such reason; the events hold every one).
    status_reason: Mapped[str | None] = mapped_column(Text)
    #: When it was released to the floor (control recipe frozen).
    dispatched_at: Mapped[datetime | None] = mapped_column()
    #: When its first step started.
    started_at: Mapped[datetime | None] = mapped_column()
    #: When it was completed or aborted.
    ended_at: Mapped[datetime | None] = mapped_column()
    #: Membership that planned it.
    planned_by_member_id: Mapped[int | None] = mapped_column(BigInteger)


class ControlRecipe(TenantBase):
    """The control recipe of a batch: the recipe version scaled to the batch, frozen at release to the floor."""

    __tablename__ = "control_recipes"
    __table_args__ = (
        UniqueConstraint("batch_id"),
        {"info": gmp_table_info("control_recipe", privileges="append_only")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The batch (one control recipe per batch, never replaced: 21 CFR 211.188(a)).
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    #: The recipe version it was scaled from.
    recipe_version_id: Mapped[int] = mapped_column(ForeignKey("recipe_versions.id"))
    #: Content hash of that version's document.
    source_content_hash: Mapped[str] = mapped_column(String(64))
    #: The scaled recipe document (schema batchline.recipe/1).
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: SHA-256 of the scaled document's canonical JSON; every entry names it.
    content_hash: Mapped[str] = mapped_column(String(64))
    #: Batch size / the recipe's reference batch size.
    factor: Mapped[Decimal] = mapped_column(Numeric(24, 12))
    #: What scaling changed: rows {item, field, before, after}.
    scaling_summary: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    #: When it was frozen (database clock).
    frozen_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: Membership that released the batch to the floor.
    frozen_by_member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: The release signature.
    signature_id: Mapped[int | None] = mapped_column(BigInteger)


class BatchEquipment(TenantBase):
    """An equipment assignment of a batch for one equipment class of its recipe; a reassignment supersedes it."""

    __tablename__ = "batch_equipment"
    __table_args__ = (
        Index("ix_batch_equipment_batch_id", "batch_id"),
        Index("uq_batch_equipment_supersedes_id", "supersedes_id", unique=True,
              postgresql_where=text("supersedes_id IS NOT NULL")),
        {"info": gmp_table_info("batch_equipment", privileges="append_only")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The batch.
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    #: The recipe's equipment class this item fills (e.g. SUB-50L).
    requirement: Mapped[str] = mapped_column(String(64))
    #: The equipment item.
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"))
    #: Its tag at assignment.
    equipment_tag: Mapped[str] = mapped_column(String(60))
    #: Readiness when assigned: {"ready": bool, "reasons": [{code, message}], "status": ...}.
    readiness: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: The assignment this one replaces.
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("batch_equipment.id"))
    #: Why it was reassigned.
    reason: Mapped[str | None] = mapped_column(Text)
    #: When (database clock).
    assigned_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: Membership that assigned it.
    member_id: Mapped[int | None] = mapped_column(BigInteger)


class StepExecution(CreatedAt, TenantBase):
    """One phase of the control recipe executed in one batch: its status and its times."""

    __tablename__ = "step_executions"
    __table_args__ = (
        UniqueConstraint("batch_id", "phase_key"),
        UniqueConstraint("batch_id", "seq"),
        CheckConstraint(f"status IN ({_in(STEP_STATUSES)})", name="status"),
        # The sensor path asks "what ran on this equipment at that moment" for every payload.
        Index("ix_step_executions_equipment_started", "equipment_id", "started_at",
              postgresql_where=text("equipment_id IS NOT NULL AND started_at IS NOT NULL")),
        {"info": gmp_table_info("step_execution")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The batch.
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    #: The control recipe the step belongs to.
    control_recipe_id: Mapped[int] = mapped_column(ForeignKey("control_recipes.id"))
    #: Position in the recipe's order (1, 2, ...).
    seq: Mapped[int] = mapped_column()
    #: Phase key in the control recipe.
    phase_key: Mapped[str] = mapped_column(String(64))
    #: Phase name.
    phase_name: Mapped[str] = mapped_column(String(200))
    #: Unit procedure key.
    unit_procedure_key: Mapped[str] = mapped_column(String(64))
    #: Operation key.
    operation_key: Mapped[str] = mapped_column(String(64))
    #: Whether the step must be completed before the batch can be.
    mandatory: Mapped[bool] = mapped_column()
    #: Equipment class the step runs on (its own or its unit procedure's), if any.
    equipment_class: Mapped[str | None] = mapped_column(String(64))
    #: pending / in_progress / completed / skipped.
    status: Mapped[str] = mapped_column(String(20), server_default=text("'pending'"))
    #: The equipment item it ran on (set at start).
    equipment_id: Mapped[int | None] = mapped_column(BigInteger)
    #: When it started (database clock).
    started_at: Mapped[datetime | None] = mapped_column()
    #: Membership that started it.
    started_by_member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Who started it, as a person reads it.
    started_by_label: Mapped[str | None] = mapped_column(String(300))
    #: When it completed or was skipped (database clock).
    ended_at: Mapped[datetime | None] = mapped_column()
    #: Membership that completed or skipped it.
    ended_by_member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Who completed or skipped it.
    ended_by_label: Mapped[str | None] = mapped_column(String(300))
    #: Why an optional step was skipped.
    skip_reason: Mapped[str | None] = mapped_column(Text)
    #: The supervisor override that let it start out of order.
    override_id: Mapped[int | None] = mapped_column(BigInteger)


class StepEntry(TenantBase):
    """One recorded value of a step (a capture): inserted only; a correction or re-weigh supersedes it."""

    __tablename__ = "step_entries"
    __table_args__ = (
        UniqueConstraint("batch_id", "idempotency_key"),
        CheckConstraint(f"action IN ({_in(ENTRY_ACTIONS)})", name="action"),
        CheckConstraint(f"check_state IN ({_in(CHECK_STATES)})", name="check_state"),
        CheckConstraint("(action = 'entry') = (supersedes_id IS NULL)", name="supersedes_iff_change"),
        CheckConstraint("action = 'entry' OR reason IS NOT NULL", name="change_has_reason"),
        Index("ix_step_entries_step_execution_id_capture_key", "step_execution_id", "capture_key"),
        Index("uq_step_entries_supersedes_id", "supersedes_id", unique=True,
              postgresql_where=text("supersedes_id IS NOT NULL")),
        {"info": gmp_table_info("step_entry", privileges="append_only")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The batch.
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    #: The step.
    step_execution_id: Mapped[int] = mapped_column(ForeignKey("step_executions.id"))
    #: The capture key in the control recipe.
    capture_key: Mapped[str] = mapped_column(String(64))
    #: The capture kind (number, text, choice, checkbox, timestamp, material_scan, equipment_scan, ...).
    capture_kind: Mapped[str] = mapped_column(String(20))
    #: entry / correction / reweigh.
    action: Mapped[str] = mapped_column(String(12))
    #: 1 for the first entry of a capture, +1 per correction or re-weigh.
    attempt: Mapped[int] = mapped_column()
    #: The entry this one supersedes (corrections and re-weighs).
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("step_entries.id"))
    #: Why it was corrected or re-weighed.
    reason: Mapped[str | None] = mapped_column(Text)
    #: The value as recorded (typed JSON: number+unit, text, lot, equipment, ...).
    value: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: The value as a person reads it.
    display: Mapped[str] = mapped_column(Text)
    #: Numbers: the value converted to the limit's unit (for trends and reports).
    numeric_value: Mapped[Decimal | None] = mapped_column(Numeric(30, 12))
    #: Outcome of the live check: none / green / amber / red / blocked.
    check_state: Mapped[str] = mapped_column(String(10))
    #: The check's sentence shown to the operator.
    check_message: Mapped[str] = mapped_column(Text, server_default=text("''"))
    #: Check details: limits used, gate reasons, required amount.
    check_details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    #: The operator's acknowledgement of a red or blocked result.
    acknowledgement: Mapped[str | None] = mapped_column(Text)
    #: The supervisor override that let a hard-blocked value be recorded.
    override_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Client-chosen key: a resubmission with the same key records nothing new.
    idempotency_key: Mapped[str] = mapped_column(String(64))
    #: The control recipe hash the tablet showed when the value was entered.
    control_recipe_hash: Mapped[str] = mapped_column(String(64))
    #: Database server time (UTC) of recording, set by a trigger.
    recorded_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: The device's time when the operator entered the value.
    device_time: Mapped[datetime | None] = mapped_column()
    #: Device clock minus database clock at submission, in milliseconds.
    clock_skew_ms: Mapped[int | None] = mapped_column(BigInteger)
    #: Lot movements posted for this entry (material scans).
    movement_ids: Mapped[list[int]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    #: Membership that recorded it.
    member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Who recorded it, as a person reads it, frozen at the time.
    actor_label: Mapped[str] = mapped_column(String(300))


class BatchAttachment(TenantBase):
    """A file attached to a step (printout, chromatogram): the bytes and their SHA-256, inserted only."""

    __tablename__ = "batch_attachments"
    __table_args__ = (
        Index("ix_batch_attachments_batch_id", "batch_id"),
        {"info": gmp_table_info("batch_attachment", privileges="append_only")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The batch.
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    #: The step.
    step_execution_id: Mapped[int] = mapped_column(ForeignKey("step_executions.id"))
    #: File name as uploaded.
    filename: Mapped[str] = mapped_column(String(200))
    #: MIME type as checked against the capture's accepted types.
    content_type: Mapped[str] = mapped_column(String(100))
    #: SHA-256 of the bytes.
    sha256: Mapped[str] = mapped_column(String(64))
    #: Size in bytes.
    size: Mapped[int] = mapped_column()
    #: The bytes.
    data: Mapped[bytes] = mapped_column(LargeBinary)
    #: When (database clock).
    uploaded_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: Membership that uploaded it.
    member_id: Mapped[int | None] = mapped_column(BigInteger)


class BatchOverride(TenantBase):
    """A signed supervisor override: a step started out of order, or a hard block let through."""

    __tablename__ = "batch_overrides"
    __table_args__ = (
        CheckConstraint(f"kind IN ({_in(OVERRIDE_KINDS)})", name="kind"),
        Index("ix_batch_overrides_batch_id", "batch_id"),
        {"info": gmp_table_info("batch_override", privileges="append_only")},
    )

    #: Never reused (taken before signing, so the signature names it).
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The batch.
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    #: The step.
    step_execution_id: Mapped[int] = mapped_column(ForeignKey("step_executions.id"))
    #: out_of_order / hard_block.
    kind: Mapped[str] = mapped_column(String(20))
    #: Capture key the hard block was on (hard blocks).
    capture_key: Mapped[str | None] = mapped_column(String(64))
    #: What was blocked: [{code, message}].
    blocked_by: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    #: The supervisor's reason.
    reason: Mapped[str] = mapped_column(Text)
    #: The supervisor's membership.
    supervisor_member_id: Mapped[int] = mapped_column(BigInteger)
    #: The supervisor as a person reads it.
    supervisor_label: Mapped[str] = mapped_column(String(300))
    #: The e-signature of the override.
    signature_id: Mapped[int] = mapped_column(BigInteger)
    #: When (database clock).
    occurred_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class BatchException(TenantBase):
    """An exception raised by the batch engine for review by exception: type, severity, step, evidence."""

    __tablename__ = "batch_exceptions"
    __table_args__ = (
        CheckConstraint(f"severity IN ({_in(EXCEPTION_SEVERITIES)})", name="severity"),
        CheckConstraint(f"status IN ({_in(EXCEPTION_STATUSES)})", name="status"),
        Index("ix_batch_exceptions_batch_id_status", "batch_id", "status"),
        # One exception per (batch, dedupe key): a hold time or a skewed clock is reported once, not per entry.
        Index("uq_batch_exceptions_batch_id_dedupe_key", "batch_id", "dedupe_key", unique=True,
              postgresql_where=text("dedupe_key IS NOT NULL")),
        {"info": gmp_table_info("batch_exception")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The batch.
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    #: The step it arose on (None: the batch as a whole).
    step_execution_id: Mapped[int | None] = mapped_column(ForeignKey("step_executions.id"))
    #: The entry that raised it, if any.
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("step_entries.id"))
    #: Capture key, if any.
    capture_key: Mapped[str | None] = mapped_column(String(64))
    #: Exception type (out_of_limit, alarm_limit, out_of_order, override, ...).
    type: Mapped[str] = mapped_column(String(40))
    #: critical / major / minor (from the tenant's severity table at the time).
    severity: Mapped[str] = mapped_column(String(10))
    #: What happened, in a sentence.
    message: Mapped[str] = mapped_column(Text)
    #: Evidence: values, limits, times, gate reasons, signature ids.
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: open / acknowledged / closed (review by exception moves it on).
    status: Mapped[str] = mapped_column(String(20), server_default=text("'open'"))
    #: The operator's acknowledgement comment when it was raised.
    acknowledgement: Mapped[str | None] = mapped_column(Text)
    #: The supervisor override involved, if any.
    override_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Set for exceptions reported once per batch (e.g. `hold:<step id>`).
    dedupe_key: Mapped[str | None] = mapped_column(String(120))
    #: When it was raised (database clock).
    raised_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: Membership whose action raised it (None: the system, e.g. the hold-time timer).
    raised_by_member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Who raised it, as a person reads it.
    raised_by_label: Mapped[str] = mapped_column(String(300))


class BatchEvent(TenantBase):
    """The batch's own log: planning, release, status changes, step starts and ends, outputs (inserted only)."""

    __tablename__ = "batch_events"
    __table_args__ = (
        Index("ix_batch_events_batch_id_id", "batch_id", "id"),
        {"info": gmp_table_info("batch_event", privileges="append_only")},
    )

    #: Never reused; orders the log.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The batch.
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    #: The step, if the event is about one.
    step_execution_id: Mapped[int | None] = mapped_column(BigInteger)
    #: What happened (planned, dispatched, paused, step_started, output_recorded, ...).
    kind: Mapped[str] = mapped_column(String(40))
    #: Status before.
    from_status: Mapped[str | None] = mapped_column(String(20))
    #: Status after.
    to_status: Mapped[str | None] = mapped_column(String(20))
    #: Why (pause, hold, abort, reassignment, skip).
    reason: Mapped[str | None] = mapped_column(Text)
    #: Further facts.
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    #: When (database clock).
    occurred_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: Membership that caused it (None: the system).
    member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Who, as a person reads it.
    actor_label: Mapped[str] = mapped_column(String(300))


class EquipmentUse(TenantBase):
    """An equipment item occupied by a batch, from the first step on it until the batch lets it go."""

    __tablename__ = "equipment_uses"
    __table_args__ = (
        Index("ix_equipment_uses_equipment_id_started_at", "equipment_id", "started_at"),
        Index("uq_equipment_uses_open", "batch_id", "equipment_id", unique=True,
              postgresql_where=text("ended_at IS NULL")),
        {"info": gmp_table_info("equipment_use")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The batch.
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    #: The equipment item.
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"))
    #: Its tag.
    equipment_tag: Mapped[str] = mapped_column(String(60))
    #: The step that first used it.
    first_step_id: Mapped[int] = mapped_column(ForeignKey("step_executions.id"))
    #: Its status at use: status, cleaned_at, calibration_due, qualification and readiness reasons.
    status_at_use: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: When the batch started using it (database clock).
    started_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: When the batch let it go (None: still in use).
    ended_at: Mapped[datetime | None] = mapped_column()


# ---------------------------------------------------------------------------------------------------------------
# Database guards. The runtime role may UPDATE these tables (statuses move); the triggers are what keeps a
# recorded batch from being quietly edited by anyone holding SQL access as the tenant role.

BATCH_GUARD_SQL = """
CREATE FUNCTION batch_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.batch_number, NEW.master_recipe_id, NEW.recipe_version_id, NEW.recipe_code, NEW.recipe_version,
      NEW.recipe_content_hash, NEW.product_code, NEW.product_name, NEW.created_at, NEW.planned_by_member_id)
     IS DISTINCT FROM
     (OLD.id, OLD.batch_number, OLD.master_recipe_id, OLD.recipe_version_id, OLD.recipe_code, OLD.recipe_version,
      OLD.recipe_content_hash, OLD.product_code, OLD.product_name, OLD.created_at, OLD.planned_by_member_id) THEN
    RAISE EXCEPTION 'batch %: identity and recipe never change', OLD.batch_number
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.status <> 'planned' AND (NEW.batch_size, NEW.batch_unit, NEW.line_id, NEW.planned_start, NEW.identity)
     IS DISTINCT FROM (OLD.batch_size, OLD.batch_unit, OLD.line_id, OLD.planned_start, OLD.identity) THEN
    RAISE EXCEPTION 'batch % is % and its plan is frozen', OLD.batch_number, OLD.status
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
       (OLD.status = 'planned' AND NEW.status IN ('dispatched', 'aborted'))
    OR (OLD.status = 'dispatched' AND NEW.status IN ('in_progress', 'on_hold', 'aborted'))
    OR (OLD.status = 'in_progress' AND NEW.status IN ('paused', 'on_hold', 'completed', 'aborted'))
    OR (OLD.status = 'paused' AND NEW.status IN ('in_progress', 'on_hold', 'aborted'))
    OR (OLD.status = 'on_hold' AND NEW.status IN ('dispatched', 'in_progress', 'aborted'))
    OR (OLD.status = 'completed' AND NEW.status = 'in_review')
    OR (OLD.status = 'in_review' AND NEW.status IN ('released', 'rejected'))) THEN
    RAISE EXCEPTION 'batch %: status % cannot become %', OLD.batch_number, OLD.status, NEW.status
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (OLD.dispatched_at IS NOT NULL AND NEW.dispatched_at IS DISTINCT FROM OLD.dispatched_at)
     OR (OLD.started_at IS NOT NULL AND NEW.started_at IS DISTINCT FROM OLD.started_at)
     OR (OLD.ended_at IS NOT NULL AND NEW.ended_at IS DISTINCT FROM OLD.ended_at) THEN
    RAISE EXCEPTION 'batch %: lifecycle times are set once', OLD.batch_number
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""

STEP_GUARD_SQL = """
CREATE FUNCTION step_execution_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.batch_id, NEW.control_recipe_id, NEW.seq, NEW.phase_key, NEW.phase_name, NEW.unit_procedure_key,
      NEW.operation_key, NEW.mandatory, NEW.equipment_class, NEW.created_at)
     IS DISTINCT FROM
     (OLD.id, OLD.batch_id, OLD.control_recipe_id, OLD.seq, OLD.phase_key, OLD.phase_name, OLD.unit_procedure_key,
      OLD.operation_key, OLD.mandatory, OLD.equipment_class, OLD.created_at) THEN
    RAISE EXCEPTION 'step %: identity never changes', OLD.id USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
       (OLD.status = 'pending' AND NEW.status IN ('in_progress', 'skipped'))
    OR (OLD.status = 'in_progress' AND NEW.status = 'completed')) THEN
    RAISE EXCEPTION 'step %: status % cannot become %', OLD.id, OLD.status, NEW.status
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (OLD.started_at IS NOT NULL AND (NEW.started_at, NEW.started_by_member_id, NEW.started_by_label, NEW.equipment_id,
                                      NEW.override_id)
        IS DISTINCT FROM (OLD.started_at, OLD.started_by_member_id, OLD.started_by_label, OLD.equipment_id,
                          OLD.override_id))
     OR (OLD.ended_at IS NOT NULL AND (NEW.ended_at, NEW.ended_by_member_id, NEW.ended_by_label, NEW.skip_reason)
        IS DISTINCT FROM (OLD.ended_at, OLD.ended_by_member_id, OLD.ended_by_label, OLD.skip_reason)) THEN
    RAISE EXCEPTION 'step %: start and end are recorded once', OLD.id USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""

EXCEPTION_GUARD_SQL = """
CREATE FUNCTION batch_exception_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.batch_id, NEW.step_execution_id, NEW.entry_id, NEW.capture_key, NEW.type, NEW.severity,
      NEW.message, NEW.evidence, NEW.acknowledgement, NEW.override_id, NEW.dedupe_key, NEW.raised_at,
      NEW.raised_by_member_id, NEW.raised_by_label)
     IS DISTINCT FROM
     (OLD.id, OLD.batch_id, OLD.step_execution_id, OLD.entry_id, OLD.capture_key, OLD.type, OLD.severity,
      OLD.message, OLD.evidence, OLD.acknowledgement, OLD.override_id, OLD.dedupe_key, OLD.raised_at,
      OLD.raised_by_member_id, OLD.raised_by_label) THEN
    RAISE EXCEPTION 'batch exception %: only its review status moves', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""

EQUIPMENT_USE_GUARD_SQL = """
CREATE FUNCTION equipment_use_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.batch_id, NEW.equipment_id, NEW.equipment_tag, NEW.first_step_id, NEW.status_at_use,
      NEW.started_at)
     IS DISTINCT FROM
     (OLD.id, OLD.batch_id, OLD.equipment_id, OLD.equipment_tag, OLD.first_step_id, OLD.status_at_use,
      OLD.started_at)
     OR (OLD.ended_at IS NOT NULL AND NEW.ended_at IS DISTINCT FROM OLD.ended_at) THEN
    RAISE EXCEPTION 'equipment use %: only its end is recorded, once', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""

#: Entries take the database clock, whatever the client sends.
ENTRY_STAMP_SQL = """
CREATE FUNCTION step_entry_stamp() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.recorded_at := now();
  RETURN NEW;
END
$$
"""

DEFAULT_SETTINGS_SQL = ("INSERT INTO batch_settings (id, batch_number_pattern, clock_skew_tolerance_s, "
                        "late_entry_grace_s) VALUES (1, 'B-{yyyy}-{seq:05}', 120, 900)")

GUARDED_TABLES = {"batches": ("batch_guard", BATCH_GUARD_SQL),
                  "step_executions": ("step_execution_guard", STEP_GUARD_SQL),
                  "batch_exceptions": ("batch_exception_guard", EXCEPTION_GUARD_SQL),
                  "equipment_uses": ("equipment_use_guard", EQUIPMENT_USE_GUARD_SQL)}
APPEND_ONLY_TABLES = ("control_recipes", "batch_equipment", "step_entries", "batch_attachments", "batch_overrides",
                      "batch_events")


def guard_trigger_sql(table: str) -> str:
    """The statement attaching a table's guard function (copied literally into the migration)."""
    function = GUARDED_TABLES[table][0]
    return f"CREATE TRIGGER {table}_guard BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()"


def append_only_trigger_sql(table: str) -> str:
    """The statement that makes `table` refuse UPDATE (copied literally into the migration)."""
    return (f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} FOR EACH ROW "
            "EXECUTE FUNCTION gmp_refuse_change()")


ENTRY_STAMP_TRIGGER_SQL = ("CREATE TRIGGER step_entries_stamp BEFORE INSERT ON step_entries FOR EACH ROW "
                           "EXECUTE FUNCTION step_entry_stamp()")

_GMP_MODELS = (BatchSettings, Batch, ControlRecipe, BatchEquipment, StepExecution, StepEntry, BatchAttachment,
               BatchOverride, BatchException, BatchEvent, EquipmentUse)
for _model in _GMP_MODELS:
    protect_gmp_table(_model.__table__)  # type: ignore[arg-type]
for _table_name, (_fn, _sql) in GUARDED_TABLES.items():
    _table = TenantBase.metadata.tables[_table_name]
    event.listen(_table, "after_create", DDL(_sql.replace("%", "%%")))
    event.listen(_table, "after_create", DDL(guard_trigger_sql(_table_name)))
for _table_name in APPEND_ONLY_TABLES:
    event.listen(TenantBase.metadata.tables[_table_name], "after_create", DDL(append_only_trigger_sql(_table_name)))
event.listen(StepEntry.__table__, "after_create", DDL(ENTRY_STAMP_SQL))
event.listen(StepEntry.__table__, "after_create", DDL(ENTRY_STAMP_TRIGGER_SQL))
event.listen(BatchSettings.__table__, "after_create", DDL(DEFAULT_SETTINGS_SQL))

register_record_type("batch_settings", label="Batch settings", table="batch_settings")
register_record_type("batch", label="Batch", table="batches", endpoint="batches.batch", id_arg="batch_id")
register_record_type("control_recipe", label="Control recipe", table="control_recipes")
register_record_type("batch_equipment", label="Batch equipment assignment", table="batch_equipment")
register_record_type("step_execution", label="Batch step", table="step_executions")
register_record_type("step_entry", label="Batch record entry", table="step_entries")
register_record_type("batch_attachment", label="Batch record attachment", table="batch_attachments")
register_record_type("batch_override", label="Supervisor override", table="batch_overrides")
register_record_type("batch_exception", label="Batch exception", table="batch_exceptions")
register_record_type("batch_event", label="Batch event", table="batch_events")
register_record_type("equipment_use", label="Equipment use by a batch", table="equipment_uses")
