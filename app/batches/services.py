"""Batch planning and lifecycle: plan, assign equipment, release to the floor (freezing the control recipe),
pause, hold, resume, abort, complete, record outputs, and the tenant's batch settings.

Keyword-only and typed; they flush and never commit (the caller's tenant transaction holds the batch, its
events, its exceptions, its signatures and their audit events together). Every write first locks the batch row,
so two tablets acting on one batch queue instead of racing. Step execution lives in `app.batches.execution`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from threading import Lock
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import esign
from app.accounts.models import Membership, User
from app.accounts.queries import member_permissions
from app.audit.services import current_actor, record
from app.batches import catalog, numbering
from app.batches.checks import Finding, convert_quantity, parse_decimal, parse_unit_text, readiness_snapshot
from app.batches.models import (
    Batch,
    BatchEquipment,
    BatchEvent,
    BatchException,
    BatchSettings,
    ControlRecipe,
    EquipmentUse,
    StepExecution,
)
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.tenancy import Actor, TenantRef, control_session
from app.core.validation import clean_text, db_now
from app.esign.errors import SignatureRefused, SignerNotPermitted
from app.materials import services as materials
from app.materials.models import Material
from app.plant import services as plant
from app.plant.models import Equipment, Line
from app.recipes.document import RecipeDocument, UnknownUnitError, content_hash, parse_document, to_data
from app.recipes.models import RELEASED_STATUSES
from app.recipes.scaling import ScalingError, scale
from app.recipes.services import effective_version, get_version
from app.recipes.validation import has_errors, validate

#: Record type of signatures on a batch (release to the floor) and on a step.
BATCH_RECORD = "batch"
STEP_RECORD = "step_execution"
OVERRIDE_RECORD = "batch_override"


# ---------------------------------------------------------------------------------------------------------------
# Shared plumbing


def actor_of(session: Session) -> tuple[int | None, str]:
    """(membership id, label) of whoever acts in this unit of work."""
    actor = current_actor(session)
    return actor.member_id, actor.label[:300]


def get_batch(session: Session, batch_id: int) -> Batch:
    """Load a batch or raise NotFound."""
    batch = session.get(Batch, int(batch_id))
    if batch is None:
        raise NotFound(f"no batch {batch_id} in this tenant")
    return batch


def lock_batch(session: Session, batch_id: int) -> Batch:
    """Load a batch and lock its row until the transaction ends (writes on one batch queue here)."""
    batch = session.scalar(select(Batch).where(Batch.id == int(batch_id)).with_for_update(key_share=True)
                           .execution_options(populate_existing=True))
    if batch is None:
        raise NotFound(f"no batch {batch_id} in this tenant")
    return batch


def add_event(session: Session, batch: Batch, kind: str, *, step_id: int | None = None,
              from_status: str | None = None, to_status: str | None = None, reason: str | None = None,
              details: dict[str, Any] | None = None, actor: Actor | None = None) -> BatchEvent:
    """Append one event to the batch's own log."""
    who = actor or current_actor(session)
    event = BatchEvent(batch_id=batch.id, step_execution_id=step_id, kind=kind, from_status=from_status,
                       to_status=to_status, reason=reason, details=details or {}, member_id=who.member_id,
                       actor_label=who.label[:300])
    session.add(event)
    return event


def raise_exception(session: Session, *, batch: Batch, finding: Finding, step_id: int | None = None,
                    entry_id: int | None = None, capture_key: str | None = None,
                    acknowledgement: str | None = None, override_id: int | None = None,
                    dedupe_key: str | None = None, actor: Actor | None = None) -> BatchException | None:
    """Raise a batch exception for review by exception; a dedupe key already raised in the batch raises nothing."""
    if dedupe_key is not None and session.scalar(
            select(BatchException.id).where(BatchException.batch_id == batch.id,
                                            BatchException.dedupe_key == dedupe_key)) is not None:
        return None
    who = actor or current_actor(session)
    exc = BatchException(batch_id=batch.id, step_execution_id=step_id, entry_id=entry_id, capture_key=capture_key,
                         type=finding.type, severity=finding.severity, message=finding.message[:4000],
                         evidence=_plain(finding.evidence), acknowledgement=acknowledgement,
                         override_id=override_id, dedupe_key=dedupe_key, raised_by_member_id=who.member_id,
                         raised_by_label=who.label[:300])
    session.add(exc)
    session.flush()
    record(session, action="create", record_type="batch_exception", record_id=exc.id, actor=who,
           new={"batch": batch.batch_number, "type": exc.type, "severity": exc.severity, "message": exc.message,
                "step_execution_id": step_id, "entry_id": entry_id, "acknowledgement": acknowledgement,
                "override_id": override_id})
    return exc


def _plain(value: Any) -> Any:
    """Evidence as plain JSON (decimals as text, times ISO)."""
    from app.audit.services import plain_json

    return plain_json({"v": value})["v"]  # type: ignore[index]


def finding(exception_type: str, message: str, evidence: dict[str, Any] | None = None,
            criticality: str | None = None) -> Finding:
    """A finding with the tenant's default severity for its type."""
    return Finding(exception_type, catalog.severity_of(exception_type, criticality), message, evidence or {})


def batch_settings(session: Session) -> BatchSettings:
    """The tenant's batch settings (one row, created with the schema)."""
    found = session.get(BatchSettings, 1)
    if found is None:  # pragma: no cover - the schema build inserts it
        raise Conflict("batch settings are missing in this tenant")
    return found


_DOC_CACHE: OrderedDict[str, RecipeDocument] = OrderedDict()
_DOC_CACHE_LOCK = Lock()


def control_document(control: ControlRecipe) -> RecipeDocument:
    """The control recipe as a validated document (cached by its content hash: control recipes never change)."""
    with _DOC_CACHE_LOCK:
        doc = _DOC_CACHE.get(control.content_hash)
        if doc is not None:
            _DOC_CACHE.move_to_end(control.content_hash)
            return doc
    doc = parse_document(control.document)
    if content_hash(doc) != control.content_hash:
        raise Conflict(f"control recipe {control.id} does not match its content hash: the record was altered")
    with _DOC_CACHE_LOCK:
        _DOC_CACHE[control.content_hash] = doc
        while len(_DOC_CACHE) > 256:
            _DOC_CACHE.popitem(last=False)
    return doc


def control_recipe_of(session: Session, batch: Batch) -> ControlRecipe:
    """The batch's frozen control recipe, or a 409 when it was not released to the floor yet."""
    control = session.scalar(select(ControlRecipe).where(ControlRecipe.batch_id == batch.id))
    if control is None:
        raise Conflict(f"batch {batch.batch_number} has not been released to the floor yet")
    return control


def current_assignments(session: Session, batch_id: int) -> dict[str, BatchEquipment]:
    """The batch's equipment assignments in force, by recipe equipment class."""
    superseded = select(BatchEquipment.supersedes_id).where(BatchEquipment.supersedes_id.is_not(None))
    rows = session.scalars(select(BatchEquipment).where(BatchEquipment.batch_id == batch_id,
                                                        BatchEquipment.id.not_in(superseded))
                           .order_by(BatchEquipment.id))
    return {row.requirement: row for row in rows}


def equipment_requirements(doc: RecipeDocument) -> list[str]:
    """The equipment classes a batch of this recipe occupies (unit procedure or phase classes), in order."""
    seen: list[str] = []
    for phase in doc.phases():
        cls = doc.equipment_class_of(phase.key)
        if cls and cls not in seen:
            seen.append(cls)
    return seen


@dataclass(frozen=True)
class Signer:
    """Who signs: the user, the actor the signature is attributed to, and their permissions in the tenant."""

    user_id: int
    actor: Actor
    permissions: frozenset[str]
    email: str


def signer_by_email(tenant: TenantRef, email: str, *, request_id: str | None = None,
                    client_addr: str | None = None) -> Signer:
    """Identify a person signing on a shared tablet by their user ID (email); the password is checked by esign."""
    email = (email or "").strip().lower()
    if not email:
        raise ValidationError("enter the signer's user ID (email)")
    with control_session() as cp:
        row = cp.execute(
            select(User.id, User.name, User.email, User.active, Membership.id.label("member_id"), Membership.roles,
                   Membership.active.label("member_active"))
            .join(Membership, Membership.user_id == User.id)
            .where(User.email == email, Membership.tenant_id == tenant.id)
        ).first()
        permissions = member_permissions(cp, tenant_id=tenant.id, roles=list(row.roles)) if row is not None \
            else frozenset()
    if row is None or not row.active or not row.member_active:
        raise SignatureRefused("this user ID cannot sign here (unknown, deactivated or not a member of this tenant)")
    actor = Actor(member_id=row.member_id, label=f"{row.name} <{row.email}>"[:300], request_id=request_id,
                  client_addr=client_addr)
    return Signer(user_id=row.id, actor=actor, permissions=permissions, email=row.email)


def member_signer(tenant: TenantRef, *, user_id: int, actor: Actor, email: str) -> Signer:
    """The signed-in member as a signer, with the permissions of their roles in this tenant."""
    with control_session() as cp:
        roles = cp.scalar(select(Membership.roles).where(Membership.id == actor.member_id,
                                                         Membership.user_id == user_id,
                                                         Membership.tenant_id == tenant.id,
                                                         Membership.active.is_(True)))
        permissions = member_permissions(cp, tenant_id=tenant.id, roles=list(roles)) if roles is not None \
            else frozenset()
    if roles is None:
        raise SignatureRefused("the signed-in user is not an active member of this tenant")
    return Signer(user_id=user_id, actor=actor, permissions=permissions, email=email)


def sign_as(session: Session, signer: Signer, *, record_type: str, record_id: Any, content: dict[str, Any],
            meaning: str, password: str, reason: str | None, identification: str | None,
            identification_required: bool, sso_proof: Any = None) -> Any:
    """Sign through the e-signature area on behalf of `signer`: password re-entered every time, or for an SSO
    account a single-use proof of a fresh login at its identity provider bound to this record and content."""
    return esign.sign(session, record_type=record_type, record_id=record_id, content=content, meaning=meaning,
                      password=password, actor=signer.actor, user_id=signer.user_id, reason=reason,
                      identification=identification, identification_required=identification_required,
                      sso_proof=sso_proof)


# ---------------------------------------------------------------------------------------------------------------
# Settings


def update_settings(session: Session, *, batch_number_pattern: str | None = None,
                    clock_skew_tolerance_s: Any = None, late_entry_grace_s: Any = None,
                    reason: str) -> BatchSettings:
    """Change the tenant's batch settings (audited, with a reason)."""
    reason = clean_text(reason, "reason", max_len=2000)
    current = batch_settings(session)
    old = {"batch_number_pattern": current.batch_number_pattern,
           "clock_skew_tolerance_s": current.clock_skew_tolerance_s, "late_entry_grace_s": current.late_entry_grace_s}
    if batch_number_pattern is not None:
        current.batch_number_pattern = numbering.check_pattern(batch_number_pattern)
    for name, value, low in (("clock_skew_tolerance_s", clock_skew_tolerance_s, 1),
                             ("late_entry_grace_s", late_entry_grace_s, 0)):
        if value is not None:
            number = parse_decimal(value, name.replace("_", " "))
            if number != number.to_integral_value() or number < low or number > 86400:
                raise ValidationError(f"{name.replace('_', ' ')} must be a whole number of seconds "
                                      f"between {low} and 86400")
            setattr(current, name, int(number))
    session.flush()
    record(session, action="status_change", record_type="batch_settings", record_id=1, old=old,
           new={"batch_number_pattern": current.batch_number_pattern,
                "clock_skew_tolerance_s": current.clock_skew_tolerance_s,
                "late_entry_grace_s": current.late_entry_grace_s}, reason=reason)
    return current


# ---------------------------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class PlanPreview:
    """What planning shows before the batch exists: the version, the scaled formula, the equipment needed."""

    version: Any
    document: RecipeDocument
    scaled: Any
    requirements: list[str]


def _size(batch_size: Any, unit: Any, doc: RecipeDocument) -> tuple[Decimal, str]:
    size = parse_decimal(batch_size, "batch size")
    if size <= 0:
        raise ValidationError("batch size must be greater than zero")
    unit_text = parse_unit_text(unit, doc.header.batch_size.unit, "batch size unit")
    return size.quantize(Decimal("0.000001")), unit_text


def preview_plan(session: Session, *, master_recipe_id: int, batch_size: Any, unit: Any = None,
                 at: datetime | None = None) -> PlanPreview:
    """Scale the master recipe's effective version to a size, refusing drafts, errors and impossible sizes."""
    moment = at or db_now(session)
    version = effective_version(session, master_recipe_id, moment)
    doc = parse_document(version.document)
    if has_errors(validate(doc)):
        raise Conflict(f"recipe {version.recipe_code} v{version.version} has validation errors and cannot be planned")
    size, unit_text = _size(batch_size, unit, doc)
    try:
        scaled = scale(doc, float(size), unit_text)
    except (ScalingError, UnknownUnitError) as exc:
        raise ValidationError(f"batch size: {exc}") from exc
    return PlanPreview(version=version, document=doc, scaled=scaled, requirements=equipment_requirements(doc))


def _check_equipment(session: Session, *, requirement: str, equipment_id: Any, line_id: int, size: Decimal,
                     unit: str, main: bool) -> Equipment:
    try:
        equipment = session.get(Equipment, int(equipment_id))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"equipment for {requirement}: {equipment_id!r} is not an equipment id") from exc
    if equipment is None:
        raise ValidationError(f"equipment for {requirement}: no equipment {equipment_id} in this tenant")
    if not catalog.class_matches(requirement, equipment.equipment_class):
        wanted = catalog.plant_class_for(requirement) or "an unknown class"
        raise ValidationError(f"{equipment.tag} is a {equipment.equipment_class}; {requirement} needs {wanted}")
    if equipment.line_id != line_id:
        raise ValidationError(f"{equipment.tag} is not on the batch's line")
    if main and equipment.capacity is not None and equipment.capacity_unit:
        try:
            needed = convert_quantity(size, unit, equipment.capacity_unit)
        except ValidationError:
            needed = None  # a capacity in other units (e.g. kg for a batch in L) says nothing about fit
        if needed is not None and needed > equipment.capacity:
            raise ValidationError(f"{equipment.tag} holds {equipment.capacity.normalize():f} "
                                  f"{equipment.capacity_unit}; the batch is {size.normalize():f} {unit}")
    return equipment


def _assign(session: Session, batch: Batch, *, requirement: str, equipment: Equipment, at: datetime,
            supersedes: BatchEquipment | None = None, reason: str | None = None) -> BatchEquipment:
    member_id, _ = actor_of(session)
    snapshot = readiness_snapshot(equipment, at, set())
    row = BatchEquipment(batch_id=batch.id, requirement=requirement, equipment_id=equipment.id,
                         equipment_tag=equipment.tag, readiness=snapshot,
                         supersedes_id=supersedes.id if supersedes else None, reason=reason, member_id=member_id)
    session.add(row)
    session.flush()
    record(session, action="correct" if supersedes else "create", record_type="batch_equipment", record_id=row.id,
           old={"equipment": supersedes.equipment_tag} if supersedes else None,
           new={"batch": batch.batch_number, "requirement": requirement, "equipment": equipment.tag,
                "ready": snapshot["ready"]}, reason=reason)
    return row


def plan_batch(session: Session, *, master_recipe_id: int, batch_size: Any, unit: Any = None, line_id: int,
               planned_start: datetime, equipment: dict[str, Any] | None = None,
               identity: dict[str, str] | None = None, recipe_version_id: int | None = None) -> Batch:
    """Plan a batch from the master recipe's approved, effective version; assign its number now."""
    now = db_now(session)
    preview = preview_plan(session, master_recipe_id=master_recipe_id, batch_size=batch_size, unit=unit, at=now)
    version = preview.version
    if recipe_version_id is not None and int(recipe_version_id) != version.id:
        raise Conflict(f"recipe version {recipe_version_id} is not the effective version of {version.recipe_code} "
                       f"(v{version.version} is); plan from the effective version")
    line = session.get(Line, int(line_id))
    if line is None:
        raise ValidationError(f"line: no line {line_id} in this tenant")
    if planned_start.tzinfo is None:
        raise ValidationError("planned start needs a time zone")
    size, unit_text = _size(batch_size, unit, preview.document)
    chosen = {k: v for k, v in (equipment or {}).items() if v not in (None, "")}
    unknown = sorted(set(chosen) - set(preview.requirements))
    if unknown:
        raise ValidationError(f"the recipe needs no equipment of class {', '.join(unknown)} "
                              f"(it needs {', '.join(preview.requirements) or 'none'})")
    checked = {req: _check_equipment(session, requirement=req, equipment_id=eq, line_id=line.id, size=size,
                                     unit=unit_text, main=req == (preview.requirements or [None])[0])
               for req, eq in chosen.items()}
    settings = batch_settings(session)
    number = numbering.next_batch_number(session, pattern=settings.batch_number_pattern, at=now,
                                         recipe=version.recipe_code, product=version.product_code, line=line.code)
    clean_identity = {str(k)[:64]: clean_text(v, f"identity {k}", max_len=200) for k, v in (identity or {}).items()
                      if str(v or "").strip()}
    member_id, _ = actor_of(session)
    batch = Batch(batch_number=number, master_recipe_id=version.master_recipe_id, recipe_version_id=version.id,
                  recipe_code=version.recipe_code, recipe_version=version.version,
                  recipe_content_hash=version.content_hash, product_code=version.product_code,
                  product_name=version.product_name, batch_size=size, batch_unit=unit_text, line_id=line.id,
                  planned_start=planned_start, identity=clean_identity, status="planned",
                  planned_by_member_id=member_id)
    session.add(batch)
    session.flush()
    record(session, action="create", record_type="batch", record_id=batch.id,
           new={"batch_number": number, "recipe": version.recipe_code, "recipe_version": version.version,
                "recipe_content_hash": version.content_hash, "batch_size": size, "unit": unit_text,
                "line": line.code, "planned_start": planned_start, "identity": clean_identity})
    add_event(session, batch, "planned", to_status="planned",
              details={"recipe_version_id": version.id, "batch_size": str(size), "unit": unit_text})
    for req, eq in checked.items():
        _assign(session, batch, requirement=req, equipment=eq, at=now)
    session.flush()
    return batch


def assign_equipment(session: Session, *, batch_id: int, requirement: str, equipment_id: Any,
                     reason: str | None = None) -> BatchEquipment:
    """Assign (or reassign, with a reason) the equipment filling one of the recipe's equipment classes."""
    batch = lock_batch(session, batch_id)
    if batch.status not in ("planned", "dispatched", "in_progress", "paused", "on_hold"):
        raise Conflict(f"batch {batch.batch_number} is {batch.status}; its equipment can no longer change")
    version = get_version(session, batch.recipe_version_id)
    doc = parse_document(version.document)
    requirements = equipment_requirements(doc)
    if requirement not in requirements:
        raise ValidationError(f"the recipe needs no {requirement} (it needs {', '.join(requirements) or 'none'})")
    current = current_assignments(session, batch.id).get(requirement)
    if current is not None:
        reason = clean_text(reason, "reason for the reassignment", max_len=2000)
        in_use = session.scalar(select(EquipmentUse.id).where(EquipmentUse.batch_id == batch.id,
                                                              EquipmentUse.equipment_id == current.equipment_id,
                                                              EquipmentUse.ended_at.is_(None)))
        if in_use is not None:
            raise Conflict(f"{current.equipment_tag} is in use by batch {batch.batch_number}; it cannot be "
                           "swapped in the middle of its unit procedure")
    equipment = _check_equipment(session, requirement=requirement, equipment_id=equipment_id, line_id=batch.line_id,
                                 size=batch.batch_size, unit=batch.batch_unit, main=requirement == requirements[0])
    if current is not None and current.equipment_id == equipment.id:
        return current
    row = _assign(session, batch, requirement=requirement, equipment=equipment, at=db_now(session),
                  supersedes=current, reason=reason)
    add_event(session, batch, "equipment_assigned", reason=reason,
              details={"requirement": requirement, "equipment": equipment.tag,
                       "replaces": current.equipment_tag if current else None})
    return row


def release_content(batch: Batch, control_hash: str, assignments: dict[str, BatchEquipment]) -> dict[str, Any]:
    """What the release-to-floor signature attests: the batch, its size and line, the control recipe, equipment."""
    return {"batch_number": batch.batch_number, "recipe_version_id": batch.recipe_version_id,
            "recipe_content_hash": batch.recipe_content_hash, "batch_size": str(batch.batch_size),
            "unit": batch.batch_unit, "line_id": batch.line_id, "control_recipe_hash": control_hash,
            "equipment": {k: v.equipment_id for k, v in sorted(assignments.items())}}


def dispatch_batch(session: Session, *, batch_id: int, password: str, user_id: int, actor: Actor,
                   reason: str | None = None, identification: str | None = None,
                   identification_required: bool = False, sso_proof: Any = None) -> ControlRecipe:
    """Release a planned batch to the floor: freeze its control recipe (signed) and lay out its steps."""
    batch = lock_batch(session, batch_id)
    if batch.status != "planned":
        raise Conflict(f"batch {batch.batch_number} is {batch.status}; only a planned batch is released to the floor")
    now = db_now(session)
    version = get_version(session, batch.recipe_version_id)
    if version.status not in RELEASED_STATUSES or version.effective_from is None or version.effective_from > now \
            or (version.effective_until is not None and version.effective_until <= now):
        raise Conflict(f"recipe {version.recipe_code} v{version.version} is no longer effective; plan the batch "
                       "again from the effective version")
    doc = parse_document(version.document)
    scaled = scale(doc, float(batch.batch_size), batch.batch_unit)
    requirements = equipment_requirements(doc)
    assignments = current_assignments(session, batch.id)
    missing = [r for r in requirements if r not in assignments]
    if missing:
        raise Conflict(f"assign equipment for {', '.join(missing)} before releasing batch {batch.batch_number}")
    scaled_hash = content_hash(scaled.document)
    signature = esign.sign(session, record_type=BATCH_RECORD, record_id=batch.id,
                           content=release_content(batch, scaled_hash, assignments), meaning="approved",
                           password=password, actor=actor, user_id=user_id,
                           reason=reason or "released to the floor", identification=identification,
                           identification_required=identification_required, sso_proof=sso_proof)
    member_id, _ = actor_of(session)
    control = ControlRecipe(batch_id=batch.id, recipe_version_id=version.id, source_content_hash=version.content_hash,
                            document=to_data(scaled.document), content_hash=scaled_hash,
                            factor=Decimal(repr(scaled.factor)), scaling_summary=scaled.summary(),
                            frozen_by_member_id=member_id, signature_id=signature.id)
    session.add(control)
    session.flush()
    for seq, (unit_procedure, operation, phase) in enumerate(_walk(scaled.document), start=1):
        session.add(StepExecution(batch_id=batch.id, control_recipe_id=control.id, seq=seq, phase_key=phase.key,
                                  phase_name=phase.name, unit_procedure_key=unit_procedure.key,
                                  operation_key=operation.key, mandatory=phase.mandatory,
                                  equipment_class=scaled.document.equipment_class_of(phase.key), status="pending"))
    old = batch.status
    batch.status, batch.status_changed_at, batch.dispatched_at = "dispatched", now, now
    session.flush()
    record(session, action="create", record_type="control_recipe", record_id=control.id,
           new={"batch": batch.batch_number, "content_hash": scaled_hash, "source_content_hash": version.content_hash,
                "factor": control.factor, "signature_id": signature.id})
    record(session, action="status_change", record_type="batch", record_id=batch.id, old={"status": old},
           new={"status": "dispatched", "control_recipe_id": control.id}, reason="released to the floor")
    add_event(session, batch, "dispatched", from_status=old, to_status="dispatched",
              details={"control_recipe_hash": scaled_hash, "signature_id": signature.id})
    session.flush()
    return control


def _walk(doc: RecipeDocument) -> list[tuple[Any, Any, Any]]:
    return [(up, op, ph) for up in doc.procedure.unit_procedures for op in up.operations for ph in op.phases]


# ---------------------------------------------------------------------------------------------------------------
# Lifecycle


def _transition(session: Session, batch: Batch, to_status: str, *, reason: str | None, kind: str,
                details: dict[str, Any] | None = None) -> Batch:
    old = batch.status
    now = db_now(session)
    batch.status, batch.status_changed_at = to_status, now
    if reason is not None:
        batch.status_reason = reason
    if to_status in ("completed", "aborted"):
        batch.ended_at = now
    session.flush()
    record(session, action="status_change", record_type="batch", record_id=batch.id, old={"status": old},
           new={"status": to_status, **(details or {})}, reason=reason or kind)
    add_event(session, batch, kind, from_status=old, to_status=to_status, reason=reason, details=details)
    return batch


def pause_batch(session: Session, *, batch_id: int, reason: str) -> Batch:
    """Pause a batch in progress (no entries until it resumes), with a reason."""
    reason = clean_text(reason, "reason", max_len=2000)
    batch = lock_batch(session, batch_id)
    if batch.status != "in_progress":
        raise Conflict(f"batch {batch.batch_number} is {batch.status}; only a batch in progress is paused")
    return _transition(session, batch, "paused", reason=reason, kind="paused")


def hold_batch(session: Session, *, batch_id: int, reason: str) -> Batch:
    """Put a batch on hold (a supervisor's decision), with a reason."""
    reason = clean_text(reason, "reason", max_len=2000)
    batch = lock_batch(session, batch_id)
    if batch.status not in ("dispatched", "in_progress", "paused"):
        raise Conflict(f"batch {batch.batch_number} is {batch.status}; it cannot be put on hold")
    return _transition(session, batch, "on_hold", reason=reason, kind="held")


def resume_batch(session: Session, *, batch_id: int, reason: str, may_release_hold: bool) -> Batch:
    """Resume a paused batch, or (supervisors only) release a hold; the batch returns to where it was."""
    reason = clean_text(reason, "reason", max_len=2000)
    batch = lock_batch(session, batch_id)
    if batch.status == "on_hold" and not may_release_hold:
        raise Conflict(f"batch {batch.batch_number} is on hold: only a supervisor can release the hold")
    if batch.status not in ("paused", "on_hold"):
        raise Conflict(f"batch {batch.batch_number} is {batch.status}; only a paused or held batch resumes")
    target = "in_progress" if batch.started_at is not None else "dispatched"
    return _transition(session, batch, target, reason=reason, kind="resumed")


def _release_equipment(session: Session, batch: Batch, equipment_ids: set[int] | None = None) -> list[str]:
    """End the batch's use of equipment (all, or the given items) and mark items it had in use dirty."""
    uses = session.scalars(select(EquipmentUse).where(EquipmentUse.batch_id == batch.id,
                                                      EquipmentUse.ended_at.is_(None)))
    released = []
    now = db_now(session)
    for use in uses:
        if equipment_ids is not None and use.equipment_id not in equipment_ids:
            continue
        use.ended_at = now
        equipment = session.get(Equipment, use.equipment_id)
        if equipment is not None and equipment.status == "in_use":
            set_equipment_status(session, batch, equipment, "dirty", f"used by batch {batch.batch_number}")
        released.append(use.equipment_tag)
        session.flush()
        record(session, action="status_change", record_type="equipment_use", record_id=use.id,
               old={"ended_at": None}, new={"ended_at": now, "equipment": use.equipment_tag},
               reason=f"batch {batch.batch_number} no longer needs it")
    return released


def set_equipment_status(session: Session, batch: Batch, equipment: Equipment, to_status: str, reason: str) -> bool:
    """Move equipment the batch takes or lets go of (in use / dirty) through the plant logbook.

    A site that routes equipment status changes through an e-signature needs a person to sign them: the batch
    does not sign for anyone, so it leaves the status to a signed logbook entry and says so in its own log.
    """
    if plant.signature_required(session, equipment, "equipment.status_change"):
        add_event(session, batch, "equipment_status_left", reason=reason,
                  details={"equipment": equipment.tag, "wanted": to_status,
                           "why": "the site signs equipment status changes: record it in the equipment logbook"})
        return False
    plant.change_equipment_status(session, equipment_id=equipment.id, to_status=to_status, reason=reason)
    return True


def abort_batch(session: Session, *, batch_id: int, reason: str) -> Batch:
    """Abort a batch (a critical exception for review); its equipment is let go and marked dirty."""
    reason = clean_text(reason, "reason", max_len=2000)
    batch = lock_batch(session, batch_id)
    if batch.status not in ("planned", "dispatched", "in_progress", "paused", "on_hold"):
        raise Conflict(f"batch {batch.batch_number} is {batch.status}; it cannot be aborted")
    open_steps = list(session.scalars(select(StepExecution).where(
        StepExecution.batch_id == batch.id, StepExecution.status.in_(("pending", "in_progress")),
        StepExecution.mandatory.is_(True)).order_by(StepExecution.seq)))
    _transition(session, batch, "aborted", reason=reason, kind="aborted")
    raise_exception(session, batch=batch, finding=finding(
        "batch_aborted", f"batch {batch.batch_number} was aborted: {reason}",
        {"reason": reason, "mandatory_steps_not_completed": [s.phase_key for s in open_steps]}),
        dedupe_key="aborted")
    # Review by exception sees each mandatory step the batch ended without (the scenario vocabulary's
    # missing_mandatory_step), not only the list inside the abort.
    for step in open_steps:
        raise_exception(session, batch=batch, step_id=step.id, dedupe_key=f"missing:{step.id}", finding=finding(
            "missing_mandatory_step", f"batch {batch.batch_number} ended without mandatory step {step.phase_name}",
            {"status": step.status, "reason": reason}))
    _release_equipment(session, batch)
    return batch


@dataclass(frozen=True)
class Missing:
    """Something a batch still lacks before it can be completed."""

    step: str | None
    what: str


def completion_gaps(session: Session, batch: Batch) -> list[Missing]:
    """Everything that stands between the batch and completion: open steps, missing or invalid signatures."""
    from app.batches.execution import required_signature_gaps

    gaps: list[Missing] = []
    steps = list(session.scalars(select(StepExecution).where(StepExecution.batch_id == batch.id)
                                 .order_by(StepExecution.seq)))
    if not steps:
        return [Missing(None, "the batch has not been released to the floor")]
    control = control_recipe_of(session, batch)
    doc = control_document(control)
    phases = doc.phase_map()
    for step in steps:
        if step.status == "in_progress":
            gaps.append(Missing(step.phase_key, f"step {step.phase_name} is still in progress"))
        elif step.status == "pending" and step.mandatory:
            gaps.append(Missing(step.phase_key, f"mandatory step {step.phase_name} was not executed"))
        if step.status == "completed":
            for meaning in required_signature_gaps(session, batch, step, phases[step.phase_key]):
                gaps.append(Missing(step.phase_key, f"step {step.phase_name} lacks a valid {meaning} signature"))
    return gaps


def complete_batch(session: Session, *, batch_id: int) -> Batch:
    """Complete a batch once every mandatory step is done and every required signature is valid."""
    batch = lock_batch(session, batch_id)
    if batch.status == "completed":
        return batch
    if batch.status != "in_progress":
        raise Conflict(f"batch {batch.batch_number} is {batch.status}; only a batch in progress is completed")
    gaps = completion_gaps(session, batch)
    if gaps:
        raise Conflict(f"batch {batch.batch_number} cannot be completed: " + "; ".join(g.what for g in gaps))
    released = _release_equipment(session, batch)
    return _transition(session, batch, "completed", reason=None, kind="completed",
                       details={"equipment_released": released})


def record_output(session: Session, *, batch_id: int, lot_number: str, quantity: Any, unit: Any = None,
                  material_code: str | None = None, expiry_date: Any = None) -> Any:
    """Record a lot the batch produced (genealogy batch -> lot) through the materials area, in quarantine."""
    batch = lock_batch(session, batch_id)
    if batch.status not in ("in_progress", "paused"):
        raise Conflict(f"batch {batch.batch_number} is {batch.status}; outputs are recorded while it runs")
    code = (material_code or batch.product_code).strip()
    material = session.scalar(select(Material).where(Material.code == code))
    if material is None:
        raise ValidationError(f"material {code} is not registered under Materials; register the product before "
                              "recording what the batch made")
    qty = parse_decimal(quantity, "quantity")
    if qty <= 0:
        raise ValidationError("quantity must be greater than zero")
    unit_text = parse_unit_text(unit, material.unit, "unit")
    in_material_unit = convert_quantity(qty, unit_text, material.unit)
    lot = materials.produce_lot(session, material_id=material.id, lot_number=lot_number, quantity=in_material_unit,
                                batch_number=batch.batch_number, expiry_date=expiry_date)
    add_event(session, batch, "output_recorded",
              details={"lot_id": lot.id, "lot_number": lot.lot_number, "material": code,
                       "quantity": str(in_material_unit), "unit": material.unit})
    return lot


__all__ = [
    "BATCH_RECORD",
    "OVERRIDE_RECORD",
    "STEP_RECORD",
    "Missing",
    "PlanPreview",
    "Signer",
    "SignerNotPermitted",
    "abort_batch",
    "assign_equipment",
    "complete_batch",
    "completion_gaps",
    "dispatch_batch",
    "hold_batch",
    "member_signer",
    "pause_batch",
    "plan_batch",
    "preview_plan",
    "record_output",
    "resume_batch",
    "update_settings",
]
