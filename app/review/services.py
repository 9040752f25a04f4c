"""State changes of review by exception: rules, concerns, signed dispositions, deviations and CAPA, release.

Keyword-only and typed; they flush and never commit: the caller's tenant transaction holds the record, its
signature and its audit events together. Signatures re-ask for the password every time (`credentials` are the
keyword arguments `esign.signing_credentials(request.form)` returns, plus nothing else).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from app import esign
from app.audit.services import current_actor, record, record_many, request_anchor
from app.batches.checks import Finding as EngineFinding
from app.batches.models import Batch, BatchException, StepEntry, StepExecution
from app.batches.services import STEP_RECORD, add_event, lock_batch, raise_exception
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.tenancy import control_session
from app.core.validation import clean_choice, clean_date, clean_text, db_now
from app.esign.errors import SignerNotPermitted
from app.esign.models import Signature
from app.materials.models import Lot, LotMovement
from app.review import rules as rules_mod
from app.review.engine import criticality_of
from app.review.models import (
    CAPA_KINDS,
    DECISIONS,
    DEVIATION_CLASSIFICATIONS,
    DEVIATION_TEXTS,
    BatchRelease,
    CapaAction,
    Deviation,
    DispositionItem,
    ExceptionDisposition,
    RbeRun,
    ReviewRuleSet,
)
from app.review.rules import RuleSet

DISPOSITION_RECORD = "exception_disposition"
DEVIATION_RECORD = "deviation"
RELEASE_RECORD = "batch_release"
#: Dispositions that hold their exceptions (a declined one frees them for a new decision).
ACTIVE_DISPOSITIONS = ("awaiting_second_signature", "complete")


def _nextval(session: Session, table: str) -> int:
    """Take a record's id before signing it, so the signature names the record it belongs to."""
    return int(session.execute(text(f"SELECT nextval(pg_get_serial_sequence('{table}', 'id'))")).scalar_one())


def _actor(session: Session) -> tuple[int | None, str]:
    actor = current_actor(session)
    return actor.member_id, actor.label[:300]


def _sign(session: Session, *, record_type: str, record_id: int, content: dict[str, Any], meaning: str,
          user_id: int, credentials: dict[str, Any], reason: str | None) -> Signature:
    return esign.sign(session, record_type=record_type, record_id=record_id, content=content, meaning=meaning,
                      actor=current_actor(session), user_id=user_id, reason=reason, **credentials)


# ---------------------------------------------------------------------------------------------------------------
# Rules


def current_rule_set(session: Session) -> RuleSet:
    """The tenant's effective rule set: the shipped default with its latest overrides."""
    latest = session.scalar(select(ReviewRuleSet).order_by(ReviewRuleSet.id.desc()).limit(1))
    if latest is None:
        return rules_mod.build_rule_set()
    return rules_mod.build_rule_set(latest.overrides, tenant_version=latest.id)


def update_rules(session: Session, *, overrides: Any, reason: str) -> ReviewRuleSet:
    """Make a new version of the tenant's overrides (severity, blocking, signatures per class)."""
    reason = clean_text(reason, "reason", max_len=2000)
    clean = rules_mod.clean_overrides(overrides)
    before = current_rule_set(session)
    member_id, label = _actor(session)
    row = ReviewRuleSet(base_version=rules_mod.default_version(), overrides=clean, reason=reason,
                        member_id=member_id, actor_label=label)
    session.add(row)
    session.flush()
    record(session, action="create", record_type="review_rule_set", record_id=row.id,
           old={"version": before.version, "overrides": before.overrides},
           new={"version": f"{row.base_version}+t{row.id}", "overrides": clean}, reason=reason)
    return row


# ---------------------------------------------------------------------------------------------------------------
# Operator concerns


def flag_concern(session: Session, *, batch_id: int, comment: str, step_id: int | None = None) -> BatchException:
    """Raise an operator's comment as a concern for QA (an exception of its own class)."""
    comment = clean_text(comment, "concern", max_len=2000)
    batch = lock_batch(session, batch_id)
    if batch.status not in ("dispatched", "in_progress", "paused", "on_hold", "completed", "in_review"):
        raise Conflict(f"batch {batch.batch_number} is {batch.status}; concerns are raised while it runs or is "
                       "reviewed")
    step = None
    if step_id is not None:
        step = session.get(StepExecution, int(step_id))
        if step is None or step.batch_id != batch.id:
            raise NotFound(f"step {step_id} is not a step of batch {batch.batch_number}")
    severity = current_rule_set(session).classify("operator_concern")[1]
    actor = current_actor(session)
    where = f" in step {step.phase_name}" if step else ""
    exc = raise_exception(session, batch=batch, step_id=step.id if step else None, acknowledgement=comment,
                          finding=EngineFinding("operator_concern", severity,
                                                f"concern flagged by {actor.label}{where}: {comment}",
                                                {"comment": comment, "flagged_by": actor.label}))
    assert exc is not None  # noqa: S101 (no dedupe key: a concern is always raised)
    add_event(session, batch, "concern_flagged", step_id=step.id if step else None, reason=comment,
              details={"exception_id": exc.id})
    return exc


# ---------------------------------------------------------------------------------------------------------------
# Dispositions


def disposition_content(*, batch_number: str, decision: str, justification: str, deviation_number: str | None,
                        rule_set_version: str, signatures_required: int,
                        items: list[dict[str, Any]]) -> dict[str, Any]:
    """What a disposition's signatures attest: the exceptions, how they were judged, and the decision."""
    return {"batch": batch_number, "decision": decision, "justification": justification,
            "deviation": deviation_number, "rule_set_version": rule_set_version,
            "signatures_required": signatures_required,
            "exceptions": sorted(items, key=lambda i: i["id"])}


def stored_disposition_content(session: Session, disposition: ExceptionDisposition) -> dict[str, Any]:
    """The content of a stored disposition, rebuilt from the records (signature checks on any screen)."""
    batch = session.get(Batch, disposition.batch_id)
    rows = session.execute(
        select(DispositionItem, BatchException.type, BatchException.message)
        .join(BatchException, BatchException.id == DispositionItem.exception_id)
        .where(DispositionItem.disposition_id == disposition.id)).all()
    deviation = session.get(Deviation, disposition.deviation_id) if disposition.deviation_id else None
    return disposition_content(
        batch_number=batch.batch_number if batch else "", decision=disposition.decision,
        justification=disposition.justification, deviation_number=deviation.number if deviation else None,
        rule_set_version=disposition.rule_set_version, signatures_required=disposition.signatures_required,
        items=[{"id": item.exception_id, "type": type_, "class": item.exception_class, "severity": item.severity,
                "blocks": item.blocks, "message": message} for item, type_, message in rows])


def dispositioned_ids(session: Session, batch_id: int) -> dict[int, ExceptionDisposition]:
    """Exceptions of a batch held by an active disposition (complete or awaiting its second signature)."""
    rows = session.execute(
        select(DispositionItem.exception_id, ExceptionDisposition)
        .join(ExceptionDisposition, ExceptionDisposition.id == DispositionItem.disposition_id)
        .where(ExceptionDisposition.batch_id == batch_id, ExceptionDisposition.status.in_(ACTIVE_DISPOSITIONS))).all()
    return {exc_id: disposition for exc_id, disposition in rows}


def _set_exception_status(session: Session, exceptions: list[BatchException], status: str, reason: str) -> None:
    changes = [e for e in exceptions if e.status != status]
    if not changes:
        return
    entries = [{"action": "status_change", "record_type": "batch_exception", "record_id": e.id,
                "old": {"status": e.status}, "new": {"status": status}, "reason": reason} for e in changes]
    for exc in changes:
        exc.status = status
    session.flush()
    record_many(session, entries)


def _disposition_exceptions(session: Session, disposition: ExceptionDisposition) -> list[BatchException]:
    return list(session.scalars(select(BatchException).join(
        DispositionItem, DispositionItem.exception_id == BatchException.id)
        .where(DispositionItem.disposition_id == disposition.id).order_by(BatchException.id)))


def _completed(session: Session, disposition: ExceptionDisposition) -> None:
    """A disposition has all its signatures: accepted exceptions close, escalated ones wait for the deviation."""
    status = "closed" if disposition.decision == "accepted" else "acknowledged"
    if disposition.decision == "escalated":
        deviation = session.get(Deviation, disposition.deviation_id)
        if deviation is not None and deviation.status == "closed":
            status = "closed"
    _set_exception_status(session, _disposition_exceptions(session, disposition), status,
                          f"disposition #{disposition.id}: {disposition.decision}")


def dispose_exceptions(session: Session, *, batch_id: int, exception_ids: list[int], decision: str,
                       justification: str, user_id: int, credentials: dict[str, Any],
                       deviation_id: int | None = None, new_deviation: dict[str, Any] | None = None,
                       ) -> ExceptionDisposition:
    """Accept exceptions with a justification, or escalate them to a deviation; signed (1 or 2 signatures)."""
    decision = clean_choice(decision, "decision", DECISIONS)
    justification = clean_text(justification, "justification", max_len=4000)
    ids = sorted({int(i) for i in exception_ids or []})
    if not ids:
        raise ValidationError("choose at least one exception to disposition")
    batch = lock_batch(session, batch_id)
    if batch.status in ("planned", "released", "rejected"):
        raise Conflict(f"batch {batch.batch_number} is {batch.status}: its exceptions are no longer dispositioned")
    exceptions = list(session.scalars(select(BatchException).where(BatchException.id.in_(ids))
                                      .order_by(BatchException.id)))
    foreign = sorted(set(ids) - {e.id for e in exceptions if e.batch_id == batch.id})
    if foreign:
        raise NotFound(f"exceptions {', '.join(map(str, foreign))} are not exceptions of batch {batch.batch_number}")
    taken = dispositioned_ids(session, batch.id)
    already = [e.id for e in exceptions if e.id in taken]
    if already:
        raise Conflict(f"exceptions {', '.join(map(str, already))} already have a disposition "
                       f"(#{taken[already[0]].id}, {taken[already[0]].status.replace('_', ' ')})")
    rules = current_rule_set(session)
    entries = {e.id: e for e in session.scalars(select(StepEntry).where(
        StepEntry.id.in_({e.entry_id for e in exceptions if e.entry_id} or {-1})))}
    items = []
    for exc in exceptions:
        code, severity, blocks, signatures = rules.classify(exc.type, criticality=criticality_of(exc, entries),
                                                            raised_severity=exc.severity)
        items.append({"id": exc.id, "type": exc.type, "class": code, "severity": severity, "blocks": blocks,
                      "message": exc.message, "signatures": signatures})
    if decision == "accepted":
        blocking = [i for i in items if i["blocks"]]
        if blocking:
            first = blocking[0]
            raise Conflict(f"exception #{first['id']} ({rules.rule(first['class']).label}, {first['severity']}) "
                           "cannot simply be accepted: escalate it to a deviation, which must be closed before "
                           "release")
    deviation = None
    if decision == "escalated":
        if deviation_id is not None:
            deviation = session.get(Deviation, int(deviation_id))
            if deviation is None:
                raise NotFound(f"no deviation {deviation_id}")
            if deviation.status != "open":
                raise Conflict(f"deviation {deviation.number} is closed; escalate to an open deviation or open a "
                               "new one")
            if deviation.batch_id not in (None, batch.id):
                raise Conflict(f"deviation {deviation.number} belongs to another batch")
        else:
            spec = new_deviation or {}
            deviation = open_deviation(session, batch_id=batch.id, title=spec.get("title") or "",
                                       classification=spec.get("classification") or "",
                                       description=spec.get("description") or justification,
                                       immediate_action=spec.get("immediate_action") or "")
    required = max(i["signatures"] for i in items)
    disposition_id = _nextval(session, "exception_dispositions")
    content = disposition_content(
        batch_number=batch.batch_number, decision=decision, justification=justification,
        deviation_number=deviation.number if deviation else None, rule_set_version=rules.version,
        signatures_required=required,
        items=[{k: v for k, v in i.items() if k != "signatures"} for i in items])
    _sign(session, record_type=DISPOSITION_RECORD, record_id=disposition_id, content=content, meaning="reviewed",
          user_id=user_id, credentials=credentials, reason=justification)
    member_id, label = _actor(session)
    now = db_now(session)
    disposition = ExceptionDisposition(
        id=disposition_id, batch_id=batch.id, decision=decision, justification=justification,
        deviation_id=deviation.id if deviation else None, rule_set_version=rules.version,
        signatures_required=required, status="complete" if required == 1 else "awaiting_second_signature",
        completed_at=now if required == 1 else None, member_id=member_id, actor_label=label)
    session.add(disposition)
    session.flush()
    session.execute(insert(DispositionItem.__table__), [
        {"disposition_id": disposition.id, "exception_id": i["id"], "exception_class": i["class"],
         "severity": i["severity"], "blocks": i["blocks"]} for i in items])
    record(session, action="create", record_type=DISPOSITION_RECORD, record_id=disposition.id,
           new={"batch": batch.batch_number, "decision": decision, "justification": justification,
                "deviation": deviation.number if deviation else None, "exceptions": ids,
                "signatures_required": required, "status": disposition.status, "rule_set": rules.version})
    if disposition.status == "complete":
        _completed(session, disposition)
    return disposition


def _locked_disposition(session: Session, disposition_id: int) -> ExceptionDisposition:
    disposition = session.scalar(select(ExceptionDisposition).where(ExceptionDisposition.id == int(disposition_id))
                                 .with_for_update())
    if disposition is None:
        raise NotFound(f"no disposition {disposition_id}")
    lock_batch(session, disposition.batch_id)
    return disposition


def countersign_disposition(session: Session, *, disposition_id: int, user_id: int,
                            credentials: dict[str, Any]) -> ExceptionDisposition:
    """The second signature of a disposition that needs two, by another person."""
    disposition = _locked_disposition(session, disposition_id)
    if disposition.status != "awaiting_second_signature":
        raise Conflict(f"disposition #{disposition.id} is {disposition.status.replace('_', ' ')}; it awaits no "
                       "signature")
    member_id, _ = _actor(session)
    if member_id == disposition.member_id:
        raise SignerNotPermitted("separation of duties: you made this disposition; another person signs it second")
    _sign(session, record_type=DISPOSITION_RECORD, record_id=disposition.id,
          content=stored_disposition_content(session, disposition), meaning="approved", user_id=user_id,
          credentials=credentials, reason=f"second signature of disposition #{disposition.id}")
    disposition.status, disposition.completed_at = "complete", db_now(session)
    session.flush()
    record(session, action="status_change", record_type=DISPOSITION_RECORD, record_id=disposition.id,
           old={"status": "awaiting_second_signature"}, new={"status": "complete"},
           reason="second signature made")
    _completed(session, disposition)
    return disposition


def decline_disposition(session: Session, *, disposition_id: int, reason: str, user_id: int,
                        credentials: dict[str, Any]) -> ExceptionDisposition:
    """The second reviewer does not agree: a signed rejection with the reason frees the exceptions again."""
    reason = clean_text(reason, "reason", max_len=2000)
    disposition = _locked_disposition(session, disposition_id)
    if disposition.status != "awaiting_second_signature":
        raise Conflict(f"disposition #{disposition.id} is {disposition.status.replace('_', ' ')}; only one awaiting "
                       "its second signature can be declined")
    member_id, _ = _actor(session)
    if member_id == disposition.member_id:
        raise SignerNotPermitted("you made this disposition; the second reviewer declines it, not its author")
    _sign(session, record_type=DISPOSITION_RECORD, record_id=disposition.id,
          content=stored_disposition_content(session, disposition), meaning="rejected", user_id=user_id,
          credentials=credentials, reason=reason)
    disposition.status, disposition.completed_at, disposition.declined_reason = "declined", db_now(session), reason
    session.flush()
    record(session, action="status_change", record_type=DISPOSITION_RECORD, record_id=disposition.id,
           old={"status": "awaiting_second_signature"}, new={"status": "declined"}, reason=reason)
    return disposition


# ---------------------------------------------------------------------------------------------------------------
# Deviations and CAPA


def get_deviation(session: Session, deviation_id: int, *, lock: bool = False) -> Deviation:
    """Load a deviation (optionally locked) or raise NotFound."""
    query = select(Deviation).where(Deviation.id == int(deviation_id))
    deviation = session.scalar(query.with_for_update() if lock else query)
    if deviation is None:
        raise NotFound(f"no deviation {deviation_id} in this tenant")
    return deviation


def open_deviation(session: Session, *, batch_id: int | None, title: str, classification: str, description: str,
                   immediate_action: str = "") -> Deviation:
    """Open a deviation (linked to a batch, or on its own)."""
    title = clean_text(title, "deviation title", max_len=200)
    classification = clean_choice(classification, "classification", DEVIATION_CLASSIFICATIONS)
    description = clean_text(description, "description", max_len=20000)
    immediate_action = clean_text(immediate_action, "immediate action", max_len=20000, required=False)
    batch = None
    if batch_id is not None:
        batch = session.get(Batch, int(batch_id))
        if batch is None:
            raise NotFound(f"no batch {batch_id} in this tenant")
    deviation_id = _nextval(session, "deviations")
    now = db_now(session)
    member_id, label = _actor(session)
    deviation = Deviation(id=deviation_id, number=f"DEV-{now:%Y}-{deviation_id:04d}",
                          batch_id=batch.id if batch else None, title=title, classification=classification,
                          description=description, immediate_action=immediate_action, status="open",
                          opened_by_member_id=member_id, opened_by_label=label)
    session.add(deviation)
    session.flush()
    record(session, action="create", record_type=DEVIATION_RECORD, record_id=deviation.id,
           new={"number": deviation.number, "batch": batch.batch_number if batch else None, "title": title,
                "classification": classification, "description": description,
                "immediate_action": immediate_action})
    if batch is not None:
        add_event(session, batch, "deviation_opened", reason=title,
                  details={"deviation_id": deviation.id, "number": deviation.number})
    return deviation


def update_deviation(session: Session, *, deviation_id: int, changes: dict[str, Any],
                     reason: str | None = None) -> Deviation:
    """Record the investigation of an open deviation; changing what was already written needs a reason."""
    deviation = get_deviation(session, deviation_id, lock=True)
    if deviation.status != "open":
        raise Conflict(f"deviation {deviation.number} is closed; nothing in it changes any more")
    allowed = (*DEVIATION_TEXTS, "title", "classification")
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise ValidationError(f"{', '.join(unknown)} cannot be changed on a deviation")
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "classification":
            clean = clean_choice(value, "classification", DEVIATION_CLASSIFICATIONS)
        else:
            clean = clean_text(value, name.replace("_", " "), max_len=200 if name == "title" else 20000,
                               required=name in ("title", "description"))
        if clean != getattr(deviation, name):
            old[name], new[name] = getattr(deviation, name), clean
    if not new:
        return deviation
    rewrites = [n for n, v in old.items() if v]
    reason = (reason or "").strip() or None
    if rewrites and not reason:
        raise ValidationError(f"a reason is required to change what was already recorded "
                              f"({', '.join(n.replace('_', ' ') for n in rewrites)})")
    for name, value in new.items():
        setattr(deviation, name, value)
    session.flush()
    record(session, action="correct" if rewrites else "update", record_type=DEVIATION_RECORD,
           record_id=deviation.id, old=old, new=new, reason=reason)
    return deviation


def _member_label(tenant_id: int, member_id: int) -> str:
    from app.accounts.models import Membership, User

    with control_session() as control:
        row = control.execute(select(User.name, User.email).join(Membership, Membership.user_id == User.id)
                              .where(Membership.id == int(member_id), Membership.tenant_id == tenant_id,
                                     Membership.active.is_(True), User.active.is_(True))).first()
    if row is None:
        raise ValidationError("the CAPA owner must be an active member of this workspace")
    return f"{row.name} <{row.email}>"


def add_capa(session: Session, *, deviation_id: int, kind: str, description: str, owner_member_id: int,
             due_date: Any) -> CapaAction:
    """Add a corrective or preventive action with an owner and a due date to an open deviation."""
    kind = clean_choice(kind, "CAPA kind", CAPA_KINDS)
    description = clean_text(description, "CAPA description", max_len=4000)
    due = clean_date(due_date, "due date", required=True)
    assert due is not None  # noqa: S101 (required above)
    deviation = get_deviation(session, deviation_id, lock=True)
    if deviation.status != "open":
        raise Conflict(f"deviation {deviation.number} is closed; open a new deviation for further actions")
    today: date = db_now(session).date()
    if due < today:
        raise ValidationError(f"the due date {due.isoformat()} is in the past")
    try:
        owner = int(owner_member_id)
    except (TypeError, ValueError) as exc:
        raise ValidationError("choose the CAPA owner") from exc
    owner_label = _member_label(session.info["tenant"].id, owner)
    member_id, label = _actor(session)
    capa = CapaAction(deviation_id=deviation.id, kind=kind, description=description, owner_member_id=owner,
                      owner_label=owner_label[:300], due_date=due, status="open", member_id=member_id,
                      actor_label=label)
    session.add(capa)
    session.flush()
    record(session, action="create", record_type="capa_action", record_id=capa.id,
           new={"deviation": deviation.number, "kind": kind, "description": description, "owner": owner_label,
                "due_date": due})
    return capa


def finish_capa(session: Session, *, capa_id: int, status: str, note: str) -> CapaAction:
    """Mark a CAPA action done (what was done) or cancelled (why)."""
    status = clean_choice(status, "CAPA status", ("done", "cancelled"))
    note = clean_text(note, "what was done" if status == "done" else "why it is cancelled", max_len=4000)
    capa = session.scalar(select(CapaAction).where(CapaAction.id == int(capa_id)).with_for_update())
    if capa is None:
        raise NotFound(f"no CAPA action {capa_id}")
    if capa.status != "open":
        raise Conflict(f"CAPA action #{capa.id} is already {capa.status}")
    capa.status, capa.completed_at, capa.completion_note = status, db_now(session), note
    session.flush()
    record(session, action="status_change", record_type="capa_action", record_id=capa.id, old={"status": "open"},
           new={"status": status, "note": note}, reason=note)
    return capa


def deviation_closure_content(session: Session, deviation: Deviation, summary: str) -> dict[str, Any]:
    """What QA's closing signature attests: the deviation's findings, its CAPA plan and the conclusion."""
    batch = session.get(Batch, deviation.batch_id) if deviation.batch_id else None
    capas = session.scalars(select(CapaAction).where(CapaAction.deviation_id == deviation.id)
                            .order_by(CapaAction.id))
    exceptions = session.scalars(select(DispositionItem.exception_id).join(
        ExceptionDisposition, ExceptionDisposition.id == DispositionItem.disposition_id)
        .where(ExceptionDisposition.deviation_id == deviation.id,
               ExceptionDisposition.status.in_(ACTIVE_DISPOSITIONS)).order_by(DispositionItem.exception_id))
    return {"number": deviation.number, "batch": batch.batch_number if batch else None, "title": deviation.title,
            "classification": deviation.classification,
            **{name: getattr(deviation, name) for name in DEVIATION_TEXTS},
            "capa": [{"id": c.id, "kind": c.kind, "description": c.description, "owner": c.owner_label,
                      "due_date": c.due_date.isoformat()} for c in capas],
            "exceptions": list(exceptions), "closure_summary": summary}


def close_deviation(session: Session, *, deviation_id: int, summary: str, user_id: int,
                    credentials: dict[str, Any]) -> Deviation:
    """QA closes a deviation with a signature, once investigation, root cause and impact are recorded."""
    summary = clean_text(summary, "closure summary", max_len=4000)
    deviation = get_deviation(session, deviation_id, lock=True)
    if deviation.status != "open":
        raise Conflict(f"deviation {deviation.number} is already closed")
    missing = [n.replace("_", " ") for n in ("investigation", "root_cause", "product_impact")
               if not (getattr(deviation, n) or "").strip()]
    if missing:
        raise Conflict(f"deviation {deviation.number} cannot be closed: record the {', '.join(missing)} first")
    capas = list(session.scalars(select(CapaAction).where(CapaAction.deviation_id == deviation.id,
                                                          CapaAction.status != "cancelled")))
    if deviation.classification in ("major", "critical") and not capas:
        raise Conflict(f"deviation {deviation.number} is {deviation.classification}: plan at least one CAPA action "
                       "(with an owner and a due date) before closing it")
    signature = _sign(session, record_type=DEVIATION_RECORD, record_id=deviation.id,
                      content=deviation_closure_content(session, deviation, summary), meaning="approved",
                      user_id=user_id, credentials=credentials, reason=f"deviation closed: {summary}")
    _member_id, label = _actor(session)
    deviation.status, deviation.closed_at = "closed", db_now(session)
    deviation.closure_summary, deviation.closed_by_label, deviation.closure_signature_id = summary, label, signature.id
    session.flush()
    record(session, action="status_change", record_type=DEVIATION_RECORD, record_id=deviation.id,
           old={"status": "open"}, new={"status": "closed", "closure_summary": summary,
                                        "signature_id": signature.id}, reason=summary)
    escalated = list(session.scalars(select(BatchException).join(
        DispositionItem, DispositionItem.exception_id == BatchException.id).join(
        ExceptionDisposition, ExceptionDisposition.id == DispositionItem.disposition_id)
        .where(ExceptionDisposition.deviation_id == deviation.id, ExceptionDisposition.status == "complete")))
    _set_exception_status(session, escalated, "closed", f"deviation {deviation.number} closed")
    if deviation.batch_id is not None:
        batch = session.get(Batch, deviation.batch_id)
        if batch is not None:
            add_event(session, batch, "deviation_closed", reason=summary,
                      details={"deviation_id": deviation.id, "number": deviation.number})
    return deviation


# ---------------------------------------------------------------------------------------------------------------
# Release


def release_content(*, batch_number: str, decision: str, reason: str, rbe_run: RbeRun,
                    lots: list[str]) -> dict[str, Any]:
    """What the release (or rejection) signature attests: the batch, the review it rests on, the decision."""
    return {"batch": batch_number, "decision": decision, "reason": reason, "rbe_run_id": rbe_run.id,
            "record_fingerprint": rbe_run.record_fingerprint, "rule_set_version": rbe_run.rule_set_version,
            "exceptions": sorted(rbe_run.exception_ids), "lots": sorted(lots)}


def latest_final_run(session: Session, batch_id: int) -> RbeRun | None:
    """The batch's most recent RBE run over its completed record."""
    return session.scalar(select(RbeRun).where(RbeRun.batch_id == batch_id, RbeRun.final.is_(True))
                          .order_by(RbeRun.id.desc()).limit(1))


def produced_lots(session: Session, batch: Batch) -> list[Lot]:
    """The lots the batch produced (genealogy: batch -> lot)."""
    return list(session.scalars(select(Lot).join(LotMovement, LotMovement.lot_id == Lot.id)
                                .where(LotMovement.kind == "produce", LotMovement.batch_number == batch.batch_number)
                                .distinct().order_by(Lot.id)))


def _production_people(session: Session, batch: Batch) -> set[int]:
    """Memberships that recorded or signed the batch's execution (QA release must be independent of them)."""
    people = set(session.scalars(select(StepEntry.member_id).where(StepEntry.batch_id == batch.id,
                                                                   StepEntry.member_id.is_not(None))))
    step_ids = [str(i) for i in session.scalars(select(StepExecution.id).where(StepExecution.batch_id == batch.id))]
    if step_ids:
        people |= set(session.scalars(select(Signature.signer_member_id).where(
            Signature.record_type == STEP_RECORD, Signature.record_id.in_(step_ids))))
    return people


def _change_lot(session: Session, lot: Lot, to_status: str, reason: str, *, user_id: int,
                credentials: dict[str, Any]) -> Any:
    """Move a produced lot with the materials area's own QA disposition (it signs the lot change itself)."""
    from app.materials import services as materials

    return materials.change_lot_status(session, lot_id=lot.id, to_status=to_status, reason=reason,
                                       credentials={"user_id": user_id, **credentials})


def decide_batch(session: Session, *, batch_id: int, decision: str, reason: str, user_id: int,
                 credentials: dict[str, Any]) -> BatchRelease:
    """QA releases (or rejects) a reviewed batch with an e-signature; its produced lots follow; anchors the trail."""
    from app.review.queries import release_readiness

    decision = clean_choice(decision, "decision", ("released", "rejected"))
    reason = clean_text(reason, "reason", max_len=4000, required=decision == "rejected")
    batch = lock_batch(session, batch_id)
    if batch.status in ("released", "rejected"):
        raise Conflict(f"batch {batch.batch_number} is already {batch.status}")
    if batch.status not in ("completed", "in_review"):
        raise Conflict(f"batch {batch.batch_number} is {batch.status.replace('_', ' ')}; only a completed batch is "
                       f"{decision}")
    readiness = release_readiness(session, batch.id)
    run = latest_final_run(session, batch.id)
    if decision == "released" and not readiness.ready:
        raise Conflict(f"release of batch {batch.batch_number} refused: " + "; ".join(readiness.blockers))
    if run is None:
        raise Conflict(f"batch {batch.batch_number}: the review-by-exception checks have not run on the completed "
                       "record; run them first")
    if batch.status != "in_review":
        raise Conflict(f"batch {batch.batch_number} is not in review yet; run the review-by-exception checks")
    member_id, label = _actor(session)
    if member_id in _production_people(session, batch):
        raise SignerNotPermitted(f"separation of duties: you recorded or signed steps of batch {batch.batch_number}; "
                                 "another QA person releases or rejects it")
    lots = produced_lots(session, batch)
    release_id = _nextval(session, "batch_releases")
    statement = reason or f"batch {batch.batch_number} released: every exception dispositioned, checks complete"
    signature = _sign(session, record_type=RELEASE_RECORD, record_id=release_id,
                      content=release_content(batch_number=batch.batch_number, decision=decision, reason=statement,
                                              rbe_run=run, lots=[lot.lot_number for lot in lots]),
                      meaning=decision, user_id=user_id, credentials=credentials, reason=statement)
    lot_rows = []
    target = "released" if decision == "released" else "rejected"
    for lot in lots:
        before = lot.status
        change = None
        if before != target:
            change = _change_lot(session, lot, target, f"batch {batch.batch_number} {decision} by QA "
                                 f"(release record #{release_id})", user_id=user_id,
                                 credentials=credentials)
        lot_rows.append({"lot_id": lot.id, "lot_number": lot.lot_number, "from": before, "to": target,
                         "status_change_id": change.id if change is not None else None})
    old = batch.status
    now = db_now(session)
    batch.status, batch.status_changed_at = decision, now
    session.flush()
    record(session, action="status_change", record_type="batch", record_id=batch.id, old={"status": old},
           new={"status": decision, "release_id": release_id, "signature_id": signature.id}, reason=statement)
    add_event(session, batch, decision, from_status=old, to_status=decision, reason=statement,
              details={"release_id": release_id, "signature_id": signature.id, "lots": lot_rows})
    session.flush()
    head = session.execute(text("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")).one()
    release = BatchRelease(id=release_id, batch_id=batch.id, decision=decision, reason=statement, rbe_run_id=run.id,
                           record_fingerprint=run.record_fingerprint, signature_id=signature.id,
                           audit_head_seq=head.seq, audit_head_hash=head.hash, lots=lot_rows, member_id=member_id,
                           actor_label=label)
    session.add(release)
    session.flush()
    record(session, action="create", record_type=RELEASE_RECORD, record_id=release.id,
           new={"batch": batch.batch_number, "decision": decision, "rbe_run_id": run.id,
                "signature_id": signature.id, "audit_head_seq": head.seq, "audit_head_hash": head.hash,
                "lots": lot_rows}, reason=statement)
    request_anchor(session, reason="batch_release", record_type=RELEASE_RECORD, record_id=release.id)
    return release


def stored_release_content(session: Session, release: BatchRelease) -> dict[str, Any] | None:
    """The content of a stored release decision (signature checks on any screen)."""
    batch = session.get(Batch, release.batch_id)
    run = session.get(RbeRun, release.rbe_run_id)
    if batch is None or run is None:
        return None
    return release_content(batch_number=batch.batch_number, decision=release.decision, reason=release.reason,
                           rbe_run=run, lots=[row["lot_number"] for row in release.lots])
