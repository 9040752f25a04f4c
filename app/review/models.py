"""Review-by-exception records: rule-set versions, RBE runs, signed dispositions, deviations with CAPA, releases.

Inserted, never rewritten: rule-set versions, RBE runs, disposition items and release decisions are append-only.
Dispositions, deviations and CAPA actions have a status (and, for an open deviation, its investigation texts)
that moves; a guard trigger per table refuses any other change, lets statuses move only forward and sets each
closing field once. Every change writes an audit event with old and new values and the reason. Times come from
the database clock.

The exceptions themselves are the batch area's `BatchException` rows (one model for everything off-script):
the engine raises them during execution, and the RBE job raises the ones its checks and the sensor episodes find.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    PrimaryKeyConstraint,
    String,
    Text,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.audit.registry import gmp_table_info, protect_gmp_table, register_record_type
from app.core.db import CreatedAt, TenantBase

DECISIONS = ("accepted", "escalated")
DISPOSITION_STATUSES = ("awaiting_second_signature", "complete", "declined")
DEVIATION_CLASSIFICATIONS = ("minor", "major", "critical")
DEVIATION_STATUSES = ("open", "closed")
#: Texts of a deviation that are filled in while it is open (each change is audited with its reason).
DEVIATION_TEXTS = ("description", "immediate_action", "investigation", "root_cause", "product_impact")
CAPA_KINDS = ("corrective", "preventive")
CAPA_STATUSES = ("open", "done", "cancelled")
RELEASE_DECISIONS = ("released", "rejected")
RBE_TRIGGERS = ("completion", "on_demand", "sweep", "release")


def _in(values: Any) -> str:
    return ", ".join(f"'{v}'" for v in values)


class ReviewRuleSet(CreatedAt, TenantBase):
    """One version of the tenant's overrides of the default rule set (the newest is in force)."""

    __tablename__ = "review_rule_sets"
    __table_args__ = {"info": gmp_table_info("review_rule_set", privileges="append_only")}

    #: Never reused; the tenant's rule-set version number (`<default version>+t<id>`).
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Version of the shipped default the overrides apply to.
    base_version: Mapped[str] = mapped_column(String(40))
    #: Overrides per class: {class: {severity?, blocking?, signatures?}} (all of them, not a delta).
    overrides: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: Why the rules changed.
    reason: Mapped[str] = mapped_column(Text)
    #: Membership that changed them.
    member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Who, as a person reads it.
    actor_label: Mapped[str] = mapped_column(String(300))


class RbeRun(TenantBase):
    """One run of the review-by-exception checks over a batch: what ran, under which rules, and what it found."""

    __tablename__ = "rbe_runs"
    __table_args__ = (
        CheckConstraint(f"trigger IN ({_in(RBE_TRIGGERS)})", name="trigger"),
        Index("ix_rbe_runs_batch_id_id", "batch_id", "id"),
        {"info": gmp_table_info("rbe_run", privileges="append_only")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The batch.
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    #: completion / on_demand / sweep / release.
    trigger: Mapped[str] = mapped_column(String(20))
    #: Batch status when the checks ran.
    batch_status: Mapped[str] = mapped_column(String(20))
    #: True when the batch was completed (the record was final) when the checks ran.
    final: Mapped[bool] = mapped_column(Boolean)
    #: Version of the effective rule set.
    rule_set_version: Mapped[str] = mapped_column(String(60))
    #: The effective rule set itself (classes, severities, blocking, signatures).
    rule_set: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: Every check that ran: [{code, label, passed, detail, findings, exception_ids, counts}].
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    #: Every exception of the batch at the end of the run.
    exception_ids: Mapped[list[int]] = mapped_column(JSONB)
    #: Exceptions this run raised.
    new_exception_ids: Mapped[list[int]] = mapped_column(JSONB)
    #: Counts: {"by_severity": {...}, "by_class": {...}, "total": n}.
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB)
    #: The completeness statement ("no exceptions" is evidence too).
    statement: Mapped[str] = mapped_column(Text)
    #: SHA-256 over the batch record as it stood when the checks ran (release compares it with the record now).
    record_fingerprint: Mapped[str] = mapped_column(String(64))
    #: Database time the run started.
    started_at: Mapped[datetime] = mapped_column()
    #: How long the run took, in milliseconds.
    duration_ms: Mapped[int] = mapped_column(BigInteger)
    #: Membership that asked for it (None: the system, e.g. at completion).
    member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Who, as a person reads it.
    actor_label: Mapped[str] = mapped_column(String(300))


class Deviation(CreatedAt, TenantBase):
    """A deviation: classification, investigation, root cause, impact, CAPA, and closure signed by QA."""

    __tablename__ = "deviations"
    __table_args__ = (
        CheckConstraint(f"classification IN ({_in(DEVIATION_CLASSIFICATIONS)})", name="classification"),
        CheckConstraint(f"status IN ({_in(DEVIATION_STATUSES)})", name="status"),
        CheckConstraint("(status = 'closed') = (closed_at IS NOT NULL)", name="closed_iff_closed_at"),
        Index("uq_deviations_number", "number", unique=True),
        Index("ix_deviations_batch_id", "batch_id"),
        Index("ix_deviations_status_opened_at", "status", "opened_at"),
        {"info": gmp_table_info("deviation")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: DEV-<yyyy>-<id>, never reused.
    number: Mapped[str] = mapped_column(String(40))
    #: The batch it arose in (None: a deviation outside any batch).
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"))
    #: One-line title.
    title: Mapped[str] = mapped_column(String(200))
    #: minor / major / critical.
    classification: Mapped[str] = mapped_column(String(10))
    #: What happened.
    description: Mapped[str] = mapped_column(Text)
    #: What was done at once (containment).
    immediate_action: Mapped[str] = mapped_column(Text, server_default=text("''"))
    #: The investigation.
    investigation: Mapped[str] = mapped_column(Text, server_default=text("''"))
    #: The root cause found.
    root_cause: Mapped[str] = mapped_column(Text, server_default=text("''"))
    #: Assessment of the impact on the product (and other batches).
    product_impact: Mapped[str] = mapped_column(Text, server_default=text("''"))
    #: open / closed.
    status: Mapped[str] = mapped_column(String(10), server_default=text("'open'"))
    #: When it was opened (database clock).
    opened_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: Membership that opened it.
    opened_by_member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Who opened it.
    opened_by_label: Mapped[str] = mapped_column(String(300))
    #: When QA closed it.
    closed_at: Mapped[datetime | None] = mapped_column()
    #: QA's closing conclusion.
    closure_summary: Mapped[str | None] = mapped_column(Text)
    #: Who closed it.
    closed_by_label: Mapped[str | None] = mapped_column(String(300))
    #: The closing e-signature.
    closure_signature_id: Mapped[int | None] = mapped_column(BigInteger)


class CapaAction(CreatedAt, TenantBase):
    """A corrective or preventive action of a deviation, with its owner and due date."""

    __tablename__ = "deviation_capas"
    __table_args__ = (
        CheckConstraint(f"kind IN ({_in(CAPA_KINDS)})", name="kind"),
        CheckConstraint(f"status IN ({_in(CAPA_STATUSES)})", name="status"),
        Index("ix_deviation_capas_deviation_id", "deviation_id"),
        {"info": gmp_table_info("capa_action")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The deviation.
    deviation_id: Mapped[int] = mapped_column(ForeignKey("deviations.id"))
    #: corrective / preventive.
    kind: Mapped[str] = mapped_column(String(12))
    #: What is to be done.
    description: Mapped[str] = mapped_column(Text)
    #: Membership that owns it.
    owner_member_id: Mapped[int] = mapped_column(BigInteger)
    #: The owner as a person reads it (frozen at assignment).
    owner_label: Mapped[str] = mapped_column(String(300))
    #: When it is due.
    due_date: Mapped[date] = mapped_column()
    #: open / done / cancelled.
    status: Mapped[str] = mapped_column(String(10), server_default=text("'open'"))
    #: When it was done or cancelled (database clock).
    completed_at: Mapped[datetime | None] = mapped_column()
    #: What was done (or why it was cancelled).
    completion_note: Mapped[str | None] = mapped_column(Text)
    #: Membership that created it.
    member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Who created it.
    actor_label: Mapped[str] = mapped_column(String(300))


class ExceptionDisposition(CreatedAt, TenantBase):
    """QA's signed decision on one or more exceptions of a batch: accepted with a justification, or escalated."""

    __tablename__ = "exception_dispositions"
    __table_args__ = (
        CheckConstraint(f"decision IN ({_in(DECISIONS)})", name="decision"),
        CheckConstraint(f"status IN ({_in(DISPOSITION_STATUSES)})", name="status"),
        CheckConstraint("signatures_required IN (1, 2)", name="signatures_required"),
        CheckConstraint("(decision = 'escalated') = (deviation_id IS NOT NULL)", name="escalated_has_deviation"),
        Index("ix_exception_dispositions_batch_id", "batch_id"),
        {"info": gmp_table_info("exception_disposition")},
    )

    #: Never reused (taken before signing, so the signature names it).
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The batch.
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    #: accepted / escalated.
    decision: Mapped[str] = mapped_column(String(10))
    #: Why it is acceptable, or why it is escalated.
    justification: Mapped[str] = mapped_column(Text)
    #: The deviation it was escalated to.
    deviation_id: Mapped[int | None] = mapped_column(ForeignKey("deviations.id"))
    #: Version of the rule set that decided severity and signatures.
    rule_set_version: Mapped[str] = mapped_column(String(60))
    #: Signatures it needs (1, or 2 by different people).
    signatures_required: Mapped[int] = mapped_column()
    #: awaiting_second_signature / complete / declined.
    status: Mapped[str] = mapped_column(String(30))
    #: When it became complete or was declined (database clock).
    completed_at: Mapped[datetime | None] = mapped_column()
    #: Why the second reviewer declined it.
    declined_reason: Mapped[str | None] = mapped_column(Text)
    #: Membership that made it (the first signer).
    member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Who made it.
    actor_label: Mapped[str] = mapped_column(String(300))


class DispositionItem(TenantBase):
    """One exception covered by a disposition, with the class and severity it was judged under."""

    __tablename__ = "exception_disposition_items"
    __table_args__ = (
        PrimaryKeyConstraint("disposition_id", "exception_id", name="pk_exception_disposition_items"),
        Index("ix_exception_disposition_items_exception_id", "exception_id"),
        {"info": gmp_table_info("exception_disposition_item", privileges="append_only")},
    )

    #: The disposition.
    disposition_id: Mapped[int] = mapped_column(ForeignKey("exception_dispositions.id"))
    #: The exception.
    exception_id: Mapped[int] = mapped_column(ForeignKey("batch_exceptions.id"))
    #: Its class under the rule set.
    exception_class: Mapped[str] = mapped_column(String(40))
    #: Its severity under the rule set.
    severity: Mapped[str] = mapped_column(String(10))
    #: Whether it needed a closed deviation before release.
    blocks: Mapped[bool] = mapped_column(Boolean)


class BatchRelease(TenantBase):
    """QA's signed release or rejection of a batch, stamped with the audit chain head it was anchored at."""

    __tablename__ = "batch_releases"
    __table_args__ = (
        CheckConstraint(f"decision IN ({_in(RELEASE_DECISIONS)})", name="decision"),
        Index("uq_batch_releases_batch_id", "batch_id", unique=True),
        {"info": gmp_table_info("batch_release", privileges="append_only")},
    )

    #: Never reused (taken before signing, so the signature names it).
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The batch (one decision per batch, final).
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    #: released / rejected.
    decision: Mapped[str] = mapped_column(String(10))
    #: QA's statement (required to reject).
    reason: Mapped[str] = mapped_column(Text)
    #: The RBE run the decision rests on.
    rbe_run_id: Mapped[int] = mapped_column(ForeignKey("rbe_runs.id"))
    #: The batch record's fingerprint, equal to that run's.
    record_fingerprint: Mapped[str] = mapped_column(String(64))
    #: The release (or rejection) e-signature.
    signature_id: Mapped[int] = mapped_column(BigInteger)
    #: Audit chain head when the decision was made (includes the signature's own event).
    audit_head_seq: Mapped[int] = mapped_column(BigInteger)
    #: Hash of that head; the TSA anchor requested at release time-stamps it (or a later head).
    audit_head_hash: Mapped[str] = mapped_column(String(64))
    #: Produced lots and their disposition: [{lot_id, lot_number, from, to, status_change_id}].
    lots: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    #: When (database clock).
    decided_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: Membership that decided.
    member_id: Mapped[int | None] = mapped_column(BigInteger)
    #: Who, as a person reads it.
    actor_label: Mapped[str] = mapped_column(String(300))


# ---------------------------------------------------------------------------------------------------------------
# Database guards: statuses move forward only, closing fields are set once, identities never change.

DISPOSITION_GUARD_SQL = """
CREATE FUNCTION exception_disposition_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.batch_id, NEW.decision, NEW.justification, NEW.deviation_id, NEW.rule_set_version,
      NEW.signatures_required, NEW.member_id, NEW.actor_label, NEW.created_at)
     IS DISTINCT FROM
     (OLD.id, OLD.batch_id, OLD.decision, OLD.justification, OLD.deviation_id, OLD.rule_set_version,
      OLD.signatures_required, OLD.member_id, OLD.actor_label, OLD.created_at)
     OR OLD.status <> 'awaiting_second_signature' THEN
    RAISE EXCEPTION 'disposition %: only a disposition awaiting its second signature moves, and only its status',
      OLD.id USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""

DEVIATION_GUARD_SQL = """
CREATE FUNCTION deviation_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.number, NEW.batch_id, NEW.opened_at, NEW.opened_by_member_id, NEW.opened_by_label,
      NEW.created_at)
     IS DISTINCT FROM
     (OLD.id, OLD.number, OLD.batch_id, OLD.opened_at, OLD.opened_by_member_id, OLD.opened_by_label,
      OLD.created_at) THEN
    RAISE EXCEPTION 'deviation %: its number, batch and opening never change', OLD.number
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.status = 'closed' THEN
    RAISE EXCEPTION 'deviation % is closed: nothing in it changes any more', OLD.number
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""

CAPA_GUARD_SQL = """
CREATE FUNCTION deviation_capa_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.deviation_id, NEW.kind, NEW.description, NEW.owner_member_id, NEW.owner_label, NEW.due_date,
      NEW.member_id, NEW.actor_label, NEW.created_at)
     IS DISTINCT FROM
     (OLD.id, OLD.deviation_id, OLD.kind, OLD.description, OLD.owner_member_id, OLD.owner_label, OLD.due_date,
      OLD.member_id, OLD.actor_label, OLD.created_at)
     OR OLD.status <> 'open' THEN
    RAISE EXCEPTION 'CAPA action %: only an open action moves, and only to done or cancelled', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""

GUARDED_TABLES = {"exception_dispositions": ("exception_disposition_guard", DISPOSITION_GUARD_SQL),
                  "deviations": ("deviation_guard", DEVIATION_GUARD_SQL),
                  "deviation_capas": ("deviation_capa_guard", CAPA_GUARD_SQL)}
APPEND_ONLY_TABLES = ("review_rule_sets", "rbe_runs", "exception_disposition_items", "batch_releases")


def guard_trigger_sql(table: str) -> str:
    """The statement attaching a table's guard function (copied literally into the migration)."""
    return (f"CREATE TRIGGER {table}_guard BEFORE UPDATE ON {table} FOR EACH ROW "
            f"EXECUTE FUNCTION {GUARDED_TABLES[table][0]}()")


def append_only_trigger_sql(table: str) -> str:
    """The statement that makes `table` refuse UPDATE (copied literally into the migration)."""
    return (f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} FOR EACH ROW "
            "EXECUTE FUNCTION gmp_refuse_change()")


for _model in (ReviewRuleSet, RbeRun, Deviation, CapaAction, ExceptionDisposition, DispositionItem, BatchRelease):
    protect_gmp_table(_model.__table__)  # type: ignore[arg-type]
for _table_name, (_fn, _sql) in GUARDED_TABLES.items():
    _table = TenantBase.metadata.tables[_table_name]
    event.listen(_table, "after_create", DDL(_sql.replace("%", "%%")))
    event.listen(_table, "after_create", DDL(guard_trigger_sql(_table_name)))
for _table_name in APPEND_ONLY_TABLES:
    event.listen(TenantBase.metadata.tables[_table_name], "after_create", DDL(append_only_trigger_sql(_table_name)))


# ---------------------------------------------------------------------------------------------------------------
# Record types (their content loaders let signature checks run on any screen, e.g. the audit history page).


def _disposition_content(session: Any, record_id: str) -> dict[str, Any] | None:
    from app.review.services import stored_disposition_content

    row = session.get(ExceptionDisposition, int(record_id)) if str(record_id).isdigit() else None
    return stored_disposition_content(session, row) if row is not None else None


def _deviation_content(session: Any, record_id: str) -> dict[str, Any] | None:
    from app.review.services import deviation_closure_content

    row = session.get(Deviation, int(record_id)) if str(record_id).isdigit() else None
    if row is None or row.closure_summary is None:
        return None
    return deviation_closure_content(session, row, row.closure_summary)


def _release_content(session: Any, record_id: str) -> dict[str, Any] | None:
    from app.review.services import stored_release_content

    row = session.get(BatchRelease, int(record_id)) if str(record_id).isdigit() else None
    return stored_release_content(session, row) if row is not None else None


register_record_type("review_rule_set", label="Review rule set", table="review_rule_sets")
register_record_type("rbe_run", label="Review-by-exception run", table="rbe_runs")
register_record_type("exception_disposition", label="Exception disposition", table="exception_dispositions",
                     content=_disposition_content)
register_record_type("exception_disposition_item", label="Exception disposition item",
                     table="exception_disposition_items")
register_record_type("deviation", label="Deviation", table="deviations", endpoint="review.deviation",
                     id_arg="deviation_id", content=_deviation_content)
register_record_type("capa_action", label="CAPA action", table="deviation_capas")
register_record_type("batch_release", label="Batch release decision", table="batch_releases",
                     content=_release_content)
