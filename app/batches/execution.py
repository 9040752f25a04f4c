"""Step execution: start (in order, or out of order under a signed supervisor override), record entries checked
live against the control recipe and the plant/material gates, correct and re-weigh without overwriting, sign
(performed / second-person verified), skip optional steps and complete steps.

Keyword-only and typed; they flush and never commit. Every write locks the batch row first. Entries are
idempotent: the tablet sends a key per entry, and a resubmission with the same key returns what was recorded
the first time instead of recording twice (flaky plant Wi-Fi retries are safe).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, func, select, text
from sqlalchemy.orm import Session, defer

from app import esign
from app.audit.services import current_actor, record, record_many
from app.batches import checks
from app.batches.checks import Context, Finding, Verdict
from app.batches.errors import (
    AcknowledgementRequired,
    OverrideRequired,
    SecondPersonRequired,
    StepRefused,
)
from app.batches.models import (
    EXECUTABLE_STATUSES,
    Batch,
    BatchAttachment,
    BatchOverride,
    BatchSettings,
    ControlRecipe,
    EquipmentUse,
    StepEntry,
    StepExecution,
)
from app.batches.services import (
    OVERRIDE_RECORD,
    STEP_RECORD,
    Signer,
    add_event,
    control_document,
    current_assignments,
    finding,
    lock_batch,
    raise_exception,
    set_equipment_status,
    sign_as,
    signer_by_email,
)
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.tenancy import TenantRef
from app.core.validation import clean_text, db_now
from app.esign.errors import SignerNotPermitted
from app.materials import services as materials
from app.plant.models import Equipment
from app.recipes.document import AttachmentCapture, CheckboxCapture, Phase, RecipeDocument, effective_dependencies

#: `session.info` key of the simulated clock the validation-pack replay (`app.batches.scenario_replay`) sets so a
#: scenario's time offsets reach the engine; nothing else sets it, so every other unit of work runs on the
#: database server's clock.
REPLAY_CLOCK = "batches.replay_clock"
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
#: Who may sign each meaning a recipe step can require.
MEANING_PERMISSION = {"performed": "batches.execute", "verified": "batches.verify", "witnessed": "batches.verify",
                      "reviewed": "batches.verify", "approved": "batches.verify"}


@dataclass(frozen=True)
class OverrideRequest:
    """A supervisor's override, given on the operator's tablet: their user ID, password and reason.

    A supervisor whose account signs in through SSO gives `sso_proof` (a fresh login at the identity provider)
    instead of the password; the proof is bound to the override's id, reserved before the detour to the provider
    (`reserve_override`), and to its content (`override_content_for`).
    """

    email: str
    password: str
    reason: str
    request_id: str | None = None
    client_addr: str | None = None
    sso_proof: Any = None
    override_id: int | None = None


@dataclass(frozen=True)
class DeviceClock:
    """The device's clock: when the operator entered the value, and its time when the request was sent."""

    entered_at: datetime | None = None
    sent_at: datetime | None = None


@dataclass
class EntryResult:
    """An entry as recorded (or as found again for a resubmitted key), with the exceptions it raised."""

    entry: StepEntry
    replayed: bool
    verdict: dict[str, Any] | None = None
    exception_ids: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class StepContext:
    """A batch (locked for writes) with one of its steps, the control recipe, the phase and the tenant settings."""

    batch: Batch
    step: StepExecution
    control: ControlRecipe
    doc: RecipeDocument
    phase: Phase
    now: datetime
    settings: BatchSettings


@cache
def _load_statement(lock: bool) -> Select[Any]:
    """The statement `_load` runs, built once per variant (constructing it cost more than running it)."""
    query = (select(StepExecution, Batch, ControlRecipe, BatchSettings, func.now())
             .join(Batch, Batch.id == StepExecution.batch_id)
             .join(ControlRecipe, ControlRecipe.id == StepExecution.control_recipe_id)
             .join(BatchSettings, BatchSettings.id == 1)
             .options(defer(ControlRecipe.document))
             .where(StepExecution.id == bindparam("step_id"), StepExecution.batch_id == bindparam("batch_id")))
    return query.with_for_update(of=Batch, key_share=True) if lock else query


def _load(session: Session, *, batch_id: int, step_id: int, lock: bool = True) -> StepContext:
    """Load (and lock) what a step action needs in one statement: every entry on a tablet starts here.

    The control recipe's document is not read unless this process has not parsed it yet (it is cached by its
    content hash, and a control recipe never changes).
    """
    row = session.execute(_load_statement(lock), {"step_id": int(step_id), "batch_id": int(batch_id)}).first()
    if row is None:
        raise NotFound(f"batch {batch_id} has no step {step_id}")
    step, batch, control, settings, now = row
    now = session.info.get(REPLAY_CLOCK) or now
    doc = control_document(control)
    return StepContext(batch=batch, step=step, control=control, doc=doc, phase=doc.phase_map()[step.phase_key],
                       now=now, settings=settings)


def _require_executable(batch: Batch) -> None:
    if batch.status not in EXECUTABLE_STATUSES:
        why = f": {batch.status_reason}" if batch.status in ("paused", "on_hold") and batch.status_reason else ""
        raise Conflict(f"batch {batch.batch_number} is {batch.status.replace('_', ' ')}{why}; nothing can be "
                       "recorded until it resumes" if batch.status in ("paused", "on_hold") else
                       f"batch {batch.batch_number} is {batch.status.replace('_', ' ')}; its steps cannot be executed")


def _check_control_hash(ctx: StepContext, control_recipe_hash: str | None) -> None:
    """Refuse an entry made on a page built from another control recipe (stale or tampered page)."""
    if not control_recipe_hash:
        raise ValidationError("control_recipe_hash is required: the tablet sends the hash of the control recipe "
                              "it shows")
    if control_recipe_hash != ctx.control.content_hash:
        raise Conflict(f"this page was built from another control recipe ({control_recipe_hash[:12]}…), not batch "
                       f"{ctx.batch.batch_number}'s ({ctx.control.content_hash[:12]}…); reload the step")


def _steps(session: Session, batch_id: int) -> dict[str, StepExecution]:
    return {s.phase_key: s for s in session.scalars(select(StepExecution).where(StepExecution.batch_id == batch_id))}


@cache
def _current_entries_statement(one_capture: bool) -> Select[Any]:
    superseded = select(StepEntry.supersedes_id).where(StepEntry.step_execution_id == bindparam("step_id"),
                                                       StepEntry.supersedes_id.is_not(None))
    query = select(StepEntry).where(StepEntry.step_execution_id == bindparam("step_id"),
                                    StepEntry.id.not_in(superseded))
    if one_capture:
        query = query.where(StepEntry.capture_key == bindparam("capture_key"))
    return query.order_by(StepEntry.id)


def current_entries(session: Session, step_id: int, capture_key: str | None = None) -> dict[str, StepEntry]:
    """The entries in force of a step (not superseded), by capture key (optionally of one capture only)."""
    params: dict[str, Any] = {"step_id": int(step_id)}
    if capture_key is not None:
        params["capture_key"] = capture_key
    rows = session.scalars(_current_entries_statement(capture_key is not None), params)
    return {row.capture_key: row for row in rows}


def _identities(session: Session, batch: Batch, doc: RecipeDocument) -> dict[str, str]:
    """Chain-of-identity values: planned ones, else the first value recorded for each identity in the batch."""
    known = {str(k): str(v) for k, v in (batch.identity or {}).items()}
    captures = {(ph.key, c.key): c.identity for ph in doc.phases() for c in ph.captures
                if getattr(c, "identity", None)}
    if not captures:
        return known
    steps = {s.id: s.phase_key
             for s in session.scalars(select(StepExecution).where(StepExecution.batch_id == batch.id))}
    rows = session.scalars(select(StepEntry).where(StepEntry.batch_id == batch.id, StepEntry.action == "entry")
                           .order_by(StepEntry.id))
    for row in rows:
        identity = captures.get((steps.get(row.step_execution_id, ""), row.capture_key))
        if identity and identity not in known and "text" in row.value:
            known[identity] = row.value["text"]
    return known


def _context(session: Session, ctx: StepContext, previous: StepEntry | None = None,
             capture: Any = None) -> Context:
    """What a check needs beyond the value; equipment assignments are read only for equipment scans."""
    assignments: dict[str, int] = {}
    occupied: set[int] = set()
    if capture is None or capture.kind == "equipment_scan":
        assignments = {k: v.equipment_id for k, v in current_assignments(session, ctx.batch.id).items()}
        occupied = set(session.scalars(select(EquipmentUse.equipment_id).where(
            EquipmentUse.batch_id == ctx.batch.id, EquipmentUse.ended_at.is_(None))))
    return Context(session=session, batch_id=ctx.batch.id, batch_number=ctx.batch.batch_number, doc=ctx.doc,
                   phase=ctx.phase, at=ctx.now, assignments=assignments, occupied=occupied,
                   identities=_identities(session, ctx.batch, ctx.doc),
                   previous_value=previous.value if previous is not None else None)


# ---------------------------------------------------------------------------------------------------------------
# Overrides


def _override(session: Session, ctx: StepContext, request: OverrideRequest | None, *, kind: str,
              blocked_by: list[dict[str, str]], capture_key: str | None = None,
              identification_required: bool = True) -> BatchOverride:
    """Sign and store a supervisor override; the supervisor re-enters ID and password on the tablet."""
    tenant: TenantRef = session.info["tenant"]
    assert request is not None  # noqa: S101 (callers check)
    reason = clean_text(request.reason, "override reason", max_len=2000)
    supervisor: Signer = signer_by_email(tenant, request.email, request_id=request.request_id,
                                         client_addr=request.client_addr)
    if "batches.override" not in supervisor.permissions:
        raise SignerNotPermitted(f"{supervisor.email} may not override (a supervisor with the batches.override "
                                 "permission must sign)")
    override_id = request.override_id if request.sso_proof is not None and request.override_id else \
        reserve_override(session)
    content = {"batch_number": ctx.batch.batch_number, "step_execution_id": ctx.step.id, "kind": kind,
               "capture_key": capture_key, "blocked_by": blocked_by, "reason": reason}
    signature = sign_as(session, supervisor, record_type=OVERRIDE_RECORD, record_id=override_id, content=content,
                        meaning="approved", password=request.password, reason=reason, identification=request.email,
                        identification_required=identification_required, sso_proof=request.sso_proof)
    override = BatchOverride(id=override_id, batch_id=ctx.batch.id, step_execution_id=ctx.step.id, kind=kind,
                             capture_key=capture_key, blocked_by=blocked_by, reason=reason,
                             supervisor_member_id=supervisor.actor.member_id, supervisor_label=supervisor.actor.label,
                             signature_id=signature.id)
    session.add(override)
    session.flush()
    record(session, action="create", record_type=OVERRIDE_RECORD, record_id=override.id,
           new={**content, "signature_id": signature.id, "supervisor": supervisor.actor.label})
    return override


def reserve_override(session: Session) -> int:
    """Take the id of an override about to be signed (an SSO re-authentication is bound to it beforehand)."""
    return int(session.execute(text("SELECT nextval(pg_get_serial_sequence('batch_overrides', 'id'))")).scalar_one())


def start_override_content(session: Session, *, batch_id: int, step_id: int, reason: str) -> dict[str, Any]:
    """What a supervisor's override to start a step out of order will sign, computed before the SSO detour.

    The same content `start_step` signs when the step still waits for the same predecessors; if anything changed
    meanwhile, the proof no longer matches and the signature is refused (the supervisor re-authenticates again).
    """
    ctx = _load(session, batch_id=batch_id, step_id=step_id, lock=False)
    waiting = predecessors_waiting(ctx.doc, _steps(session, ctx.batch.id), ctx.step.phase_key)
    blocked = [{"code": "out_of_order", "message": f"{w.phase_name} is {w.status.replace('_', ' ')}"}
               for w in waiting]
    return {"batch_number": ctx.batch.batch_number, "step_execution_id": ctx.step.id, "kind": "out_of_order",
            "capture_key": None, "blocked_by": blocked, "reason": clean_text(reason, "override reason",
                                                                             max_len=2000)}


def entry_override_content(session: Session, *, batch_id: int, step_id: int, capture_key: str, raw: dict[str, Any],
                           reason: str) -> dict[str, Any]:
    """What a supervisor's override of a hard-blocked value will sign, computed before the SSO detour.

    The same content `record_entry` signs when the value is still blocked for the same reasons on return; if
    anything changed meanwhile, the proof no longer matches and the signature is refused.
    """
    ctx = _load(session, batch_id=batch_id, step_id=step_id, lock=False)
    capture = checks.capture_of(ctx.phase, capture_key)
    if isinstance(capture, AttachmentCapture):
        raise ValidationError(f"{capture.label}: an attachment is never blocked; no override is needed")
    verdict = checks.evaluate(_context(session, ctx, None, capture), capture, raw)
    if not verdict.hard_blocks:
        raise Conflict(f"{capture.label}: {verdict.message}; this value is not blocked, so no supervisor override "
                       "is needed")
    blocked = [{"code": b.code, "message": b.message} for b in verdict.hard_blocks]
    return {"batch_number": ctx.batch.batch_number, "step_execution_id": ctx.step.id, "kind": "hard_block",
            "capture_key": capture.key, "blocked_by": blocked,
            "reason": clean_text(reason, "override reason", max_len=2000)}


def override_content(override: BatchOverride, batch_number: str) -> dict[str, Any]:
    """The content an override's signature is bound to (for verifying it later)."""
    return {"batch_number": batch_number, "step_execution_id": override.step_execution_id, "kind": override.kind,
            "capture_key": override.capture_key, "blocked_by": override.blocked_by, "reason": override.reason}


# ---------------------------------------------------------------------------------------------------------------
# Starting and skipping


def predecessors_waiting(doc: RecipeDocument, steps: dict[str, StepExecution], phase_key: str) -> list[StepExecution]:
    """The predecessors of a step that are neither completed nor skipped."""
    deps = effective_dependencies(doc).get(phase_key, [])
    return [steps[d] for d in deps if d in steps and steps[d].status not in ("completed", "skipped")]


def _allowed(phase: Phase) -> timedelta | None:
    return phase.timing.max_duration or phase.timing.expected_duration


def start_step(session: Session, *, batch_id: int, step_id: int,
               override: OverrideRequest | None = None) -> StepExecution:
    """Start a step: its predecessors must be done (or a supervisor signs an override), its equipment ready."""
    ctx = _load(session, batch_id=batch_id, step_id=step_id)
    step, batch = ctx.step, ctx.batch
    if step.status == "in_progress":
        return step  # a retried "start" changes nothing
    if step.status in ("completed", "skipped"):
        raise StepRefused(f"step {step.phase_name} is already {step.status}", code="already_completed")
    _require_executable(batch)
    steps = _steps(session, batch.id)
    waiting = predecessors_waiting(ctx.doc, steps, step.phase_key)
    findings: list[tuple[Finding, str | None]] = []
    override_row: BatchOverride | None = None
    if waiting:
        names = ", ".join(w.phase_name for w in waiting)
        blocked = [{"code": "out_of_order", "message": f"{w.phase_name} is {w.status.replace('_', ' ')}"}
                   for w in waiting]
        if override is None:
            raise OverrideRequired(f"step {step.phase_name} cannot start before {names} (steps run in the recipe's "
                                   "order); a supervisor can sign an override",
                                   check={"state": "blocked", "blocks": blocked, "needs_override": True})
        override_row = _override(session, ctx, override, kind="out_of_order", blocked_by=blocked)
        findings.append((finding("out_of_order", f"step {step.phase_name} started before {names}: {override.reason}",
                                 {"waiting_for": [w.phase_key for w in waiting],
                                  "override_id": override_row.id}), None))
    equipment_id = None
    if step.equipment_class:
        assignment = current_assignments(session, batch.id).get(step.equipment_class)
        if assignment is None:
            raise Conflict(f"no {step.equipment_class} is assigned to batch {batch.batch_number}; a supervisor "
                           "assigns one on the batch page")
        equipment_id = assignment.equipment_id
        findings += _occupy(session, ctx, equipment_id, override, override_row)
    for pred_key in effective_dependencies(ctx.doc).get(step.phase_key, []):
        pred = steps.get(pred_key)
        hold = ctx.doc.phase_map()[pred_key].timing.max_hold_time if pred else None
        if pred is not None and hold is not None and pred.status == "completed" and pred.ended_at is not None \
                and ctx.now - pred.ended_at > hold:
            _raise_hold(session, batch, pred, hold, ctx.now - pred.ended_at)
    member_id, label = current_actor(session).member_id, current_actor(session).label[:300]
    step.status, step.started_at, step.started_by_member_id, step.started_by_label = (
        "in_progress", ctx.now, member_id, label)
    step.equipment_id = equipment_id
    step.override_id = override_row.id if override_row else step.override_id
    if batch.status == "dispatched":
        batch.status, batch.status_changed_at, batch.started_at = "in_progress", ctx.now, ctx.now
        record(session, action="status_change", record_type="batch", record_id=batch.id,
               old={"status": "dispatched"}, new={"status": "in_progress"}, reason=f"step {step.phase_name} started")
        add_event(session, batch, "started", from_status="dispatched", to_status="in_progress")
    session.flush()
    for item, capture in findings:
        raise_exception(session, batch=batch, finding=item, step_id=step.id, capture_key=capture,
                        override_id=override_row.id if override_row else None,
                        acknowledgement=override.reason if override else None)
    record(session, action="status_change", record_type=STEP_RECORD, record_id=step.id, old={"status": "pending"},
           new={"status": "in_progress", "equipment_id": equipment_id, "override_id": step.override_id},
           reason=f"started by {label}")
    add_event(session, batch, "step_started", step_id=step.id, details={"phase": step.phase_key,
                                                                        "equipment_id": equipment_id})
    session.flush()
    return step


def _occupy(session: Session, ctx: StepContext, equipment_id: int, override: OverrideRequest | None,
            override_row: BatchOverride | None) -> list[tuple[Finding, str | None]]:
    """Make the batch occupy its equipment at a step's start, through the equipment gate."""
    open_use = session.scalar(select(EquipmentUse).where(EquipmentUse.batch_id == ctx.batch.id,
                                                         EquipmentUse.equipment_id == equipment_id,
                                                         EquipmentUse.ended_at.is_(None)))
    if open_use is not None:
        return []
    equipment = session.scalar(select(Equipment).where(Equipment.id == equipment_id).with_for_update())
    assert equipment is not None  # noqa: S101 (assignment has a foreign key)
    snapshot = checks.readiness_snapshot(equipment, ctx.now, set())
    found: list[tuple[Finding, str | None]] = []
    if snapshot["reasons"]:
        blocked = snapshot["reasons"]
        message = "; ".join(r["message"] for r in blocked)
        if override is None:
            raise OverrideRequired(f"{message}; the step cannot start on it (a supervisor can sign an override)",
                                   check={"state": "blocked", "blocks": blocked, "needs_override": True})
        row = override_row or _override(session, ctx, override, kind="hard_block", blocked_by=blocked)
        found.append((finding("equipment_not_ready", f"{equipment.tag} was not ready when step {ctx.step.phase_name} "
                              f"started: {message}", {"status_at_use": snapshot}), None))
        found.append((finding("override", f"supervisor override: step {ctx.step.phase_name} started on "
                              f"{equipment.tag} although {message}: {override.reason}",
                              {"override_id": row.id, "blocked_by": blocked}), None))
        override_row = row
    use = EquipmentUse(batch_id=ctx.batch.id, equipment_id=equipment.id, equipment_tag=equipment.tag,
                       first_step_id=ctx.step.id, status_at_use=snapshot)
    session.add(use)
    session.flush()
    record(session, action="create", record_type="equipment_use", record_id=use.id,
           new={"batch": ctx.batch.batch_number, "equipment": equipment.tag, "status_at_use": snapshot})
    if equipment.status == "clean":
        set_equipment_status(session, ctx.batch, equipment, "in_use",
                             f"batch {ctx.batch.batch_number}, step {ctx.step.phase_name}")
    return found


def _raise_hold(session: Session, batch: Batch, pred: StepExecution, hold: timedelta,
               waited: timedelta) -> Any:
    return raise_exception(session, batch=batch, step_id=pred.id, dedupe_key=f"hold:{pred.id}", finding=finding(
        "hold_time_exceeded", f"the result of {pred.phase_name} waited {_human(waited)} (max hold time {_human(hold)})",
        {"completed_at": pred.ended_at, "max_hold_s": hold.total_seconds(), "waited_s": waited.total_seconds()}))


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if minutes or not parts else []
    return " ".join(parts)


def skip_step(session: Session, *, batch_id: int, step_id: int, reason: str) -> StepExecution:
    """Skip an optional step, with a reason; mandatory steps cannot be skipped."""
    reason = clean_text(reason, "reason", max_len=2000)
    ctx = _load(session, batch_id=batch_id, step_id=step_id)
    step = ctx.step
    _require_executable(ctx.batch)
    if step.mandatory:
        raise StepRefused(f"step {step.phase_name} is mandatory and cannot be skipped", code="skip_not_allowed")
    if step.status in ("completed", "skipped"):
        raise StepRefused(f"step {step.phase_name} is already {step.status}", code="already_completed")
    if step.status != "pending":
        raise Conflict(f"step {step.phase_name} is {step.status.replace('_', ' ')}; only a step not started is "
                       "skipped")
    member_id, label = current_actor(session).member_id, current_actor(session).label[:300]
    step.status, step.ended_at, step.ended_by_member_id, step.ended_by_label, step.skip_reason = (
        "skipped", ctx.now, member_id, label, reason)
    session.flush()
    record(session, action="status_change", record_type=STEP_RECORD, record_id=step.id, old={"status": "pending"},
           new={"status": "skipped"}, reason=reason)
    add_event(session, ctx.batch, "step_skipped", step_id=step.id, reason=reason, details={"phase": step.phase_key})
    _let_go_of_equipment(session, ctx.batch, ctx.doc)
    session.flush()
    return step


# ---------------------------------------------------------------------------------------------------------------
# Entries


def check_entry(session: Session, *, batch_id: int, step_id: int, capture_key: str, raw: dict[str, Any],
                entry_id: int | None = None) -> dict[str, Any]:
    """The live check the tablet calls while the operator types: nothing is written."""
    ctx = _load(session, batch_id=batch_id, step_id=step_id, lock=False)
    capture = checks.capture_of(ctx.phase, capture_key)
    previous = session.get(StepEntry, int(entry_id)) if entry_id else None
    if isinstance(capture, AttachmentCapture):
        return {"capture": capture_key, "state": "none", "message": "attach the file and save",
                "needs_acknowledgement": False, "needs_override": False, "blocks": [], "exceptions": []}
    return checks.evaluate(_context(session, ctx, previous, capture), capture, raw).as_dict()


def _clean_key(key: Any) -> str:
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise ValidationError("idempotency_key must be 8-64 letters, digits, '-' or '_' (the tablet makes one "
                              "per entry)")
    return key


_REPLAY = select(StepEntry).where(StepEntry.batch_id == bindparam("batch_id"),
                                  StepEntry.idempotency_key == bindparam("key"))


def _replay(session: Session, batch: Batch, key: str, *, step_id: int, capture_key: str) -> EntryResult | None:
    existing = session.scalar(_REPLAY, {"batch_id": batch.id, "key": key})
    if existing is None:
        return None
    if existing.step_execution_id != int(step_id) or existing.capture_key != capture_key:
        raise Conflict(f"idempotency key {key} was already used for another entry; the tablet must use a new key "
                       "per entry")
    return EntryResult(entry=existing, replayed=True)


def _attachment(session: Session, ctx: StepContext, capture: AttachmentCapture,
                upload: tuple[str, str, bytes] | None) -> dict[str, Any] | None:
    if upload is None:
        return None
    filename, content_type, data = upload
    filename = clean_text(filename, "file name", max_len=200)
    if not data:
        raise ValidationError(f"{capture.label}: the file is empty")
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise ValidationError(f"{capture.label}: the file is larger than {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB")
    content_type = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if capture.accept and content_type not in capture.accept:
        raise ValidationError(f"{capture.label}: a {content_type} file was given; "
                              f"accepted: {', '.join(capture.accept)}")
    if content_type == "application/pdf" and not data.startswith(b"%PDF-"):
        raise ValidationError(f"{capture.label}: the file is not a PDF")
    digest = hashlib.sha256(data).hexdigest()
    member_id = current_actor(session).member_id
    row = BatchAttachment(batch_id=ctx.batch.id, step_execution_id=ctx.step.id, filename=filename,
                          content_type=content_type, sha256=digest, size=len(data), data=data, member_id=member_id)
    session.add(row)
    session.flush()
    record(session, action="create", record_type="batch_attachment", record_id=row.id,
           new={"batch": ctx.batch.batch_number, "filename": filename, "sha256": digest, "size": len(data)})
    return {"attachment_id": row.id, "filename": filename, "content_type": content_type, "sha256": digest,
            "size": len(data)}


def record_entry(session: Session, *, batch_id: int, step_id: int, capture_key: str, raw: dict[str, Any],
                 idempotency_key: str, control_recipe_hash: str | None, acknowledgement: str | None = None,
                 override: OverrideRequest | None = None, device: DeviceClock | None = None,
                 upload: tuple[str, str, bytes] | None = None) -> EntryResult:
    """Record one value of a step, checked live; a resubmitted idempotency key returns the first recording."""
    key = _clean_key(idempotency_key)
    ctx = _load(session, batch_id=batch_id, step_id=step_id)
    replay = _replay(session, ctx.batch, key, step_id=ctx.step.id, capture_key=capture_key)
    if replay is not None:
        return replay
    _check_control_hash(ctx, control_recipe_hash)
    _require_executable(ctx.batch)
    if ctx.step.status == "pending":
        raise Conflict(f"start step {ctx.step.phase_name} before recording its data")
    if ctx.step.status != "in_progress":
        raise Conflict(f"step {ctx.step.phase_name} is {ctx.step.status}; change a value there by correcting it, "
                       "with a reason")
    capture = checks.capture_of(ctx.phase, capture_key)
    existing = current_entries(session, ctx.step.id, capture_key).get(capture_key)
    if existing is not None:
        raise Conflict(f"{capture.label} is already recorded ({existing.display}); to change it, correct it with a "
                       "reason")
    return _record(session, ctx, capture, raw, key=key, action="entry", previous=None, reason=None,
                   acknowledgement=acknowledgement, override=override, device=device, upload=upload)


def correct_entry(session: Session, *, batch_id: int, entry_id: int, raw: dict[str, Any], reason: str,
                  idempotency_key: str, control_recipe_hash: str | None, action: str = "correction",
                  acknowledgement: str | None = None, override: OverrideRequest | None = None,
                  device: DeviceClock | None = None, upload: tuple[str, str, bytes] | None = None) -> EntryResult:
    """Correct (or re-weigh) an entry: a new entry supersedes it with a reason; both stay in the record."""
    if action not in ("correction", "reweigh"):
        raise ValidationError("action must be correction or reweigh")
    key = _clean_key(idempotency_key)
    previous = session.get(StepEntry, int(entry_id))
    if previous is None or previous.batch_id != int(batch_id):
        raise NotFound(f"batch {batch_id} has no entry {entry_id}")
    ctx = _load(session, batch_id=batch_id, step_id=previous.step_execution_id)
    replay = _replay(session, ctx.batch, key, step_id=ctx.step.id, capture_key=previous.capture_key)
    if replay is not None:
        return replay
    _check_control_hash(ctx, control_recipe_hash)
    reason = clean_text(reason, "reason for the change", max_len=2000)
    if ctx.batch.status not in ("in_progress", "dispatched"):
        raise Conflict(f"batch {ctx.batch.batch_number} is {ctx.batch.status.replace('_', ' ')}; values cannot be "
                       "changed now" + (" (after completion, changes go through review)"
                                        if ctx.batch.status == "completed" else ""))
    newer = session.scalar(select(StepEntry).where(StepEntry.supersedes_id == previous.id))
    if newer is not None:
        raise Conflict(f"entry {previous.id} was already replaced by entry {newer.id} ({newer.display}); change the "
                       "value in force")
    capture = checks.capture_of(ctx.phase, previous.capture_key)
    if action == "reweigh" and capture.kind not in ("material_scan", "number"):
        raise ValidationError(f"{capture.label} is not weighed; correct it instead")
    return _record(session, ctx, capture, raw, key=key, action=action, previous=previous, reason=reason,
                   acknowledgement=acknowledgement, override=override, device=device, upload=upload)


def _record(session: Session, ctx: StepContext, capture: Any, raw: dict[str, Any], *, key: str, action: str,
            previous: StepEntry | None, reason: str | None, acknowledgement: str | None,
            override: OverrideRequest | None, device: DeviceClock | None,
            upload: tuple[str, str, bytes] | None) -> EntryResult:
    check_ctx = _context(session, ctx, previous, capture)
    attachment_preview = None
    if isinstance(capture, AttachmentCapture):
        if upload is None:
            raise ValidationError(f"{capture.label}: attach a file")
        attachment_preview = {"filename": upload[0], "size": len(upload[2]), "sha256": "pending"}
    verdict = checks.evaluate(check_ctx, capture, raw, attachment=attachment_preview)
    ack = (acknowledgement or "").strip() or None
    if ack is not None and len(ack) > 2000:
        raise ValidationError("the acknowledgement is too long (at most 2000 characters)")
    override_row: BatchOverride | None = None
    if verdict.hard_blocks:
        if override is None:
            raise OverrideRequired(f"{verdict.message}: this cannot be recorded without a supervisor override",
                                   check=verdict.as_dict())
        blocked = [{"code": b.code, "message": b.message} for b in verdict.hard_blocks]
        override_row = _override(session, ctx, override, kind="hard_block", blocked_by=blocked,
                                 capture_key=capture.key)
        ack = ack or override.reason
    elif verdict.needs_ack and ack is None:
        raise AcknowledgementRequired(f"{verdict.message}: acknowledge it with a comment to record it (an exception "
                                      "is raised for review)", check=verdict.as_dict())
    if isinstance(capture, AttachmentCapture):
        stored = _attachment(session, ctx, capture, upload)
        assert stored is not None  # noqa: S101
        verdict.value = stored
        verdict.display = f"{stored['filename']} ({stored['size']} bytes, SHA-256 {stored['sha256'][:12]}…)"
    settings = ctx.settings
    findings = list(verdict.findings) + _block_findings(verdict, ctx, capture, override_row)
    skew_ms = None
    if device is not None and device.sent_at is not None:
        skew_ms = int((device.sent_at - ctx.now).total_seconds() * 1000)
    movements = _post_consumption(session, ctx, verdict, previous, action)
    member_id, label = current_actor(session).member_id, current_actor(session).label[:300]
    entry = StepEntry(batch_id=ctx.batch.id, step_execution_id=ctx.step.id, capture_key=capture.key,
                      capture_kind=verdict.kind, action=action, attempt=(previous.attempt + 1) if previous else 1,
                      supersedes_id=previous.id if previous else None, reason=reason, value=verdict.value,
                      display=verdict.display[:2000], numeric_value=verdict.numeric, check_state=verdict.state,
                      check_message=verdict.message[:2000], check_details=_jsonable(verdict.details),
                      acknowledgement=ack, override_id=override_row.id if override_row else None,
                      idempotency_key=key, control_recipe_hash=ctx.control.content_hash,
                      device_time=device.entered_at if device else None, clock_skew_ms=skew_ms,
                      movement_ids=[m.id for m in movements], member_id=member_id, actor_label=label)
    session.add(entry)
    session.flush()
    if previous is not None:
        kind = "reweigh" if action == "reweigh" else "data_correction"
        findings.append(finding(kind, f"{capture.label} {'re-weighed' if kind == 'reweigh' else 'corrected'}: "
                                      f"{previous.display} → {verdict.display} ({reason})",
                                {"previous_entry_id": previous.id, "previous": previous.display,
                                 "new": verdict.display, "reason": reason, "attempt": entry.attempt}))
    exception_ids = []
    for item in findings:
        exc = raise_exception(session, batch=ctx.batch, finding=item, step_id=ctx.step.id, entry_id=entry.id,
                              capture_key=capture.key, acknowledgement=ack,
                              override_id=override_row.id if override_row else None)
        if exc is not None:
            exception_ids.append(exc.id)
    exception_ids += _timeliness(session, ctx, entry, settings, device, skew_ms, previous)
    entry_movements = [m.id for m in movements]
    audit = {"action": "create" if previous is None else "correct", "record_type": "step_entry",
             "record_id": entry.id, "reason": reason,
             "old": {"entry_id": previous.id, "display": previous.display} if previous else None,
             "new": {"batch": ctx.batch.batch_number, "step": ctx.step.phase_key, "capture": capture.key,
                     "action": action, "attempt": entry.attempt, "value": verdict.value, "display": entry.display,
                     "check_state": verdict.state, "acknowledgement": ack, "device_time": entry.device_time,
                     "clock_skew_ms": skew_ms, "movement_ids": entry_movements,
                     "override_id": entry.override_id}}
    record_many(session, [audit])
    return EntryResult(entry=entry, replayed=False, verdict=verdict.as_dict(), exception_ids=exception_ids)


def _jsonable(value: Any) -> Any:
    from app.audit.services import plain_json

    return plain_json({"v": value})["v"]  # type: ignore[index]


def _block_findings(verdict: Verdict, ctx: StepContext, capture: Any,
                    override_row: BatchOverride | None) -> list[Finding]:
    out: list[Finding] = []
    for block in verdict.hard_blocks + verdict.soft_blocks:
        out.append(finding(block.exception, f"{capture.label}: {block.message}",
                           {"code": block.code, "value": verdict.value}))
    if override_row is not None:
        out.append(finding("override", f"supervisor override on {capture.label} in step {ctx.step.phase_name}: "
                           f"{override_row.reason}", {"override_id": override_row.id,
                                                      "blocked_by": override_row.blocked_by,
                                                      "supervisor": override_row.supervisor_label}))
    return out


def _timeliness(session: Session, ctx: StepContext, entry: StepEntry, settings: Any, device: DeviceClock | None,
                skew_ms: int | None, previous: StepEntry | None) -> list[int]:
    """Raise clock_skew when the device clock is off, late_entry when a value comes after the step's window."""
    raised: list[int] = []
    tolerance_ms = settings.clock_skew_tolerance_s * 1000
    if skew_ms is not None and abs(skew_ms) > tolerance_ms:
        exc = raise_exception(session, batch=ctx.batch, step_id=ctx.step.id, entry_id=entry.id,
                              capture_key=entry.capture_key, dedupe_key=f"skew:{ctx.step.id}", finding=finding(
                                  "clock_skew", f"the tablet's clock was {abs(skew_ms) / 1000:.0f} s "
                                  f"{'ahead of' if skew_ms > 0 else 'behind'} the server's (tolerance "
                                  f"{settings.clock_skew_tolerance_s} s)",
                                  {"clock_skew_ms": skew_ms, "device_time": entry.device_time,
                                   "server_time": ctx.now, "tolerance_s": settings.clock_skew_tolerance_s}))
        if exc is not None:
            raised.append(exc.id)
    allowed = _allowed(ctx.phase)
    if previous is None and allowed is not None and ctx.step.started_at is not None:
        window_end = ctx.step.started_at + allowed + timedelta(seconds=settings.late_entry_grace_s)
        # The value was made when the operator entered it, if the tablet's clock can be trusted (kept offline).
        made_at = ctx.now
        if device is not None and device.entered_at is not None and skew_ms is not None \
                and abs(skew_ms) <= tolerance_ms:
            made_at = device.entered_at - timedelta(milliseconds=skew_ms)
        if made_at > window_end:
            exc = raise_exception(session, batch=ctx.batch, step_id=ctx.step.id, entry_id=entry.id,
                                  capture_key=entry.capture_key, dedupe_key=f"late:{ctx.step.id}", finding=finding(
                                      "late_entry", f"{entry.capture_key} was entered {_human(made_at - window_end)} "
                                      f"after step {ctx.step.phase_name}'s window closed",
                                      {"entered_at": made_at, "window_end": window_end,
                                       "allowed_s": allowed.total_seconds(),
                                       "grace_s": settings.late_entry_grace_s}))
            if exc is not None:
                raised.append(exc.id)
    return raised


def _post_consumption(session: Session, ctx: StepContext, verdict: Verdict, previous: StepEntry | None,
                      action: str) -> list[Any]:
    """Post the lot movements of a material scan: consume, or on a correction net it against the previous one."""
    from decimal import Decimal

    movements = []
    consumption = verdict.consumption
    old = previous.value if previous is not None and previous.capture_kind == "material_scan" else None
    if old is not None and old.get("quantity_in_lot_unit") is not None:
        old_qty = Decimal(str(old["quantity_in_lot_unit"]))
        same_lot = consumption is not None and consumption.lot_id == old["lot_id"]
        returned = old_qty - consumption.quantity if same_lot and consumption is not None else old_qty
        if returned > 0:
            movements.append(materials.adjust_lot(
                session, lot_id=int(old["lot_id"]), quantity=returned,
                reason=f"returned: {'re-weigh' if action == 'reweigh' else 'correction'} in batch "
                       f"{ctx.batch.batch_number} step {ctx.step.phase_name} (entry {previous.id})"))  # type: ignore[union-attr]
        if same_lot and consumption is not None:
            extra = consumption.quantity - old_qty
            if extra > 0:
                movements.append(materials.consume_lot(session, lot_id=consumption.lot_id, quantity=extra,
                                                       batch_number=ctx.batch.batch_number,
                                                       material_id=consumption.material_id,
                                                       override=bool(verdict.hard_blocks)))
            return movements
    if consumption is not None:
        movements.append(materials.consume_lot(session, lot_id=consumption.lot_id, quantity=consumption.quantity,
                                               batch_number=ctx.batch.batch_number,
                                               material_id=consumption.material_id,
                                               override=bool(verdict.hard_blocks)))
    return movements


# ---------------------------------------------------------------------------------------------------------------
# Signatures and completion


def signed_content(session: Session, batch: Batch, step: StepExecution) -> dict[str, Any]:
    """What a step signature attests: the step and every value in force, as recorded."""
    return signed_contents(session, batch, [step])[step.id]


def signed_contents(session: Session, batch: Batch, steps: list[StepExecution],
                    in_force_entries: list[StepEntry] | None = None) -> dict[int, dict[str, Any]]:
    """`signed_content` of many steps of a batch at once (two queries, however many steps); `in_force_entries`:
    the batch's entries not superseded, in id order, if the caller has them loaded (one query then)."""
    ids = [step.id for step in steps]
    hashes = dict(session.execute(select(ControlRecipe.id, ControlRecipe.content_hash).where(
        ControlRecipe.id.in_({step.control_recipe_id for step in steps}))).all()) if steps else {}
    if in_force_entries is None:
        superseded = select(StepEntry.supersedes_id).where(StepEntry.step_execution_id.in_(ids),
                                                           StepEntry.supersedes_id.is_not(None))
        in_force_entries = list(session.scalars(select(StepEntry).where(
            StepEntry.step_execution_id.in_(ids), StepEntry.id.not_in(superseded)).order_by(StepEntry.id)))
    in_force: dict[int, dict[str, StepEntry]] = {step_id: {} for step_id in ids}
    for row in in_force_entries:
        if row.step_execution_id in in_force:
            in_force[row.step_execution_id][row.capture_key] = row
    return {step.id: {"batch_number": batch.batch_number, "step_execution_id": step.id, "phase_key": step.phase_key,
                      "control_recipe_hash": hashes.get(step.control_recipe_id),
                      "entries": [{"entry_id": e.id, "capture": k, "display": e.display, "attempt": e.attempt}
                                  for k, e in sorted(in_force[step.id].items())]}
            for step in steps}


def step_signatures(session: Session, batch: Batch, step: StepExecution) -> list[esign.SignatureCheck]:
    """The step's signatures, each checked against the step's current content."""
    return steps_signatures(session, batch, [step])[step.id]


def steps_signatures(session: Session, batch: Batch, steps: list[StepExecution],
                     in_force_entries: list[StepEntry] | None = None) -> dict[int, list[esign.SignatureCheck]]:
    """`step_signatures` of many steps at once (a review checks every step of a batch in four queries)."""
    checks = esign.check_record_signatures(session, record_type=STEP_RECORD,
                                           contents=signed_contents(session, batch, steps, in_force_entries))
    return {step.id: checks[str(step.id)] for step in steps}


def required_signature_gaps(session: Session, batch: Batch, step: StepExecution, phase: Phase) -> list[str]:
    """The meanings a step requires that have no valid signature on its current content."""
    valid = {c.signature.meaning for c in step_signatures(session, batch, step) if c.valid}
    return [r.meaning for r in phase.signatures if r.meaning not in valid]


def missing_captures(session: Session, step: StepExecution, phase: Phase) -> list[str]:
    """Labels of required captures with no value in force (an unticked required checkbox counts as missing)."""
    return [capture.label for capture in _missing(session, step, phase)]


def _missing(session: Session, step: StepExecution, phase: Phase) -> list[Any]:
    entries = current_entries(session, step.id)
    missing = []
    for capture in phase.captures:
        if not capture.required:
            continue
        entry = entries.get(capture.key)
        if entry is None or (isinstance(capture, CheckboxCapture) and not entry.value.get("checked")):
            missing.append(capture)
    return missing


def _refuse_incomplete(session: Session, step: StepExecution, phase: Phase, why: str) -> None:
    """Refuse to sign or complete a step while a required capture has no value in force."""
    missing = _missing(session, step, phase)
    if missing:
        raise StepRefused(why.format(step=step.phase_name, missing=", ".join(c.label for c in missing)),
                          code="missing_required_capture", captures=tuple(c.key for c in missing))


def sign_step(session: Session, *, batch_id: int, step_id: int, meaning: str, password: str, signer: Signer,
              reason: str | None = None, identification: str | None = None,
              identification_required: bool = False, sso_proof: Any = None) -> Any:
    """Sign a step (performed / verified...): all required data must be in; a verifier is a second person.

    SSO accounts give `sso_proof` (a fresh login at their provider bound to this step, meaning and content)
    instead of the password.
    """
    ctx = _load(session, batch_id=batch_id, step_id=step_id)
    step, batch, phase = ctx.step, ctx.batch, ctx.phase
    _require_executable(batch)
    if step.status not in ("in_progress", "completed"):
        raise Conflict(f"step {step.phase_name} is {step.status.replace('_', ' ')}; only a started step is signed")
    required = {r.meaning: r for r in phase.signatures}
    if meaning not in required:
        wanted = ", ".join(required) or "no signature"
        raise ValidationError(f"step {step.phase_name} needs {wanted}, not {meaning!r}")
    _refuse_incomplete(session, step, phase, "a signature attests complete data: {missing} still missing in {step}")
    needed = MEANING_PERMISSION.get(meaning, "batches.verify")
    if needed not in signer.permissions:
        raise SignerNotPermitted(f"{signer.actor.label} may not sign {meaning!r} ({needed} is needed)")
    valid = [c.signature for c in step_signatures(session, batch, step) if c.valid]
    if any(s.meaning == meaning for s in valid):
        raise Conflict(f"step {step.phase_name} is already signed {meaning!r}")
    if meaning != "performed" and "performed" in required and not any(s.meaning == "performed" for s in valid):
        raise Conflict(f"step {step.phase_name} must be signed 'performed' before {meaning!r}")
    if required[meaning].independent:
        others = {s.signer_member_id for s in valid}
        authors = {e.member_id for e in current_entries(session, step.id).values()}
        if signer.actor.member_id in others | authors:
            raise SecondPersonRequired(f"{meaning!r} needs a second person: {signer.actor.label} performed or "
                                       "recorded this step; another person must sign")
    signature = sign_as(session, signer, record_type=STEP_RECORD, record_id=step.id,
                        content=signed_content(session, batch, step), meaning=meaning, password=password,
                        reason=reason, identification=identification, identification_required=identification_required,
                        sso_proof=sso_proof)
    add_event(session, batch, "step_signed", step_id=step.id, actor=signer.actor,
              details={"meaning": meaning, "signature_id": signature.id, "signer": signer.actor.label})
    session.flush()
    return signature


def complete_step(session: Session, *, batch_id: int, step_id: int) -> StepExecution:
    """Complete a step once its required data and signatures are in; its duration is checked."""
    ctx = _load(session, batch_id=batch_id, step_id=step_id)
    step, batch, phase = ctx.step, ctx.batch, ctx.phase
    if step.status == "completed":
        return step  # a retried "complete" changes nothing
    _require_executable(batch)
    if step.status != "in_progress":
        raise Conflict(f"step {step.phase_name} is {step.status.replace('_', ' ')}; start it first")
    _refuse_incomplete(session, step, phase, "step {step} cannot be completed: {missing} missing")
    unsigned = required_signature_gaps(session, batch, step, phase)
    if unsigned:
        raise StepRefused(f"step {step.phase_name} cannot be completed: it still needs "
                          + ", ".join(f"a {m} signature" + (" (second person)" if any(
                              r.meaning == m and r.independent for r in phase.signatures) else "") for m in unsigned),
                          code="missing_signature")
    took = ctx.now - step.started_at if step.started_at else None
    timing = phase.timing
    member_id, label = current_actor(session).member_id, current_actor(session).label[:300]
    step.status, step.ended_at, step.ended_by_member_id, step.ended_by_label = "completed", ctx.now, member_id, label
    session.flush()
    if took is not None and ((timing.min_duration is not None and took < timing.min_duration)
                             or (timing.max_duration is not None and took > timing.max_duration)):
        bounds = f"{_human(timing.min_duration) if timing.min_duration else '0'} to " \
                 f"{_human(timing.max_duration) if timing.max_duration else 'no limit'}"
        raise_exception(session, batch=batch, step_id=step.id, finding=finding(
            "duration_out_of_range", f"step {step.phase_name} took {_human(took)} (allowed {bounds})",
            {"took_s": took.total_seconds(),
             "min_s": timing.min_duration.total_seconds() if timing.min_duration else None,
             "max_s": timing.max_duration.total_seconds() if timing.max_duration else None}))
    record(session, action="status_change", record_type=STEP_RECORD, record_id=step.id,
           old={"status": "in_progress"}, new={"status": "completed"}, reason=f"completed by {label}")
    add_event(session, batch, "step_completed", step_id=step.id, details={"phase": step.phase_key})
    _let_go_of_equipment(session, batch, ctx.doc)
    session.flush()
    return step


def _let_go_of_equipment(session: Session, batch: Batch, doc: RecipeDocument) -> None:
    """Release equipment no remaining step of the batch needs (it goes to dirty)."""
    from app.batches.services import _release_equipment

    remaining = {s.equipment_class for s in session.scalars(select(StepExecution).where(
        StepExecution.batch_id == batch.id, StepExecution.status.in_(("pending", "in_progress"))))
        if s.equipment_class}
    assignments = current_assignments(session, batch.id)
    still_needed = {assignments[c].equipment_id for c in remaining if c in assignments}
    open_uses = set(session.scalars(select(EquipmentUse.equipment_id).where(EquipmentUse.batch_id == batch.id,
                                                                           EquipmentUse.ended_at.is_(None))))
    done = open_uses - still_needed
    if done:
        _release_equipment(session, batch, done)


def raise_due_hold_times(session: Session, *, now: datetime | None = None) -> int:
    """Raise hold_time_exceeded for every completed step whose result waits past its max hold time (timer job)."""
    from app.batches.models import FLOOR_STATUSES

    moment = now or db_now(session)
    raised = 0
    batches = session.scalars(select(Batch).where(Batch.status.in_(FLOOR_STATUSES)).order_by(Batch.id))
    for batch_row in batches:
        control = session.scalar(select(ControlRecipe).where(ControlRecipe.batch_id == batch_row.id))
        if control is None:
            continue
        doc = control_document(control)
        phases = doc.phase_map()
        steps = _steps(session, batch_row.id)
        successors: dict[str, list[str]] = {}
        for key, deps in effective_dependencies(doc).items():
            for dep in deps:
                successors.setdefault(dep, []).append(key)
        for key, step in steps.items():
            hold = phases[key].timing.max_hold_time
            if hold is None or step.status != "completed" or step.ended_at is None:
                continue
            nexts = [steps[s] for s in successors.get(key, []) if s in steps]
            if nexts and all(n.status == "pending" for n in nexts) and moment - step.ended_at > hold:
                batch = lock_batch(session, batch_row.id)
                if _raise_hold(session, batch, step, hold, moment - step.ended_at) is not None:
                    raised += 1
    return raised
