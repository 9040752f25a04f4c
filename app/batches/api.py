"""JSON API of the batch area under `/t/<slug>/api/v1/batches/...`: what the tablet calls (live checks,
idempotent entries, step actions) and planning for integrations. Session-authenticated like the screens (CSRF
token in the `X-CSRFToken` header); errors are RFC 9457 problem documents."""

from __future__ import annotations

from typing import Any

from flask import g, request
from flask_login import current_user

from app import esign
from app.audit.deletion import refuse_deletions
from app.batches import ebr, execution, queries, services
from app.batches.errors import EntryNeedsDecision
from app.batches.forms import device_clock, override_from, step_signer
from app.batches.models import Batch, StepEntry, StepExecution
from app.batches.schemas import (
    BatchOut,
    CheckIn,
    CorrectionIn,
    DispatchIn,
    EntryIn,
    EntryOut,
    ExceptionOut,
    OutputIn,
    PlanIn,
    ReasonIn,
    SignIn,
    StartIn,
    StepOut,
)
from app.core.api import one, page, parse_body, register_api_errors
from app.core.errors import NotFound
from app.core.tenancy import tenant_transaction
from app.core.web import problem, request_actor, requires, tenant_blueprint

bp = tenant_blueprint("batches_api", __name__)
register_api_errors(bp)
PREFIX = "/api/v1/batches"


@bp.errorhandler(EntryNeedsDecision)
def _needs_decision(exc: EntryNeedsDecision) -> Any:
    return problem(409, type(exc).__name__, str(exc), needs=exc.needs, check=exc.check)


def _tx() -> Any:
    return tenant_transaction(g.tenant, actor=request_actor())


def _entry_payload(model: type[EntryIn] | type[CorrectionIn]) -> tuple[Any, tuple[str, str, bytes] | None]:
    """The body as JSON, or as multipart form fields with a file (attachment captures)."""
    if request.mimetype == "multipart/form-data":
        fields: dict[str, Any] = {k: v for k, v in request.form.items() if k != "csrf_token" and v != ""}
        override = {k.removeprefix("override_"): fields.pop(k) for k in list(fields) if k.startswith("override_")}
        if override:
            fields["override"] = override
        body = model.model_validate(fields)
        upload = request.files.get("file")
        data = (upload.filename or "file", upload.mimetype or "application/octet-stream", upload.read()) \
            if upload is not None and upload.filename else None
        return body, data
    return parse_body(model), None


def _entry_reply(result: execution.EntryResult) -> Any:
    body = one(result.entry, EntryOut)
    body["replayed"] = result.replayed
    body["exception_ids"] = result.exception_ids
    body["check"] = result.verdict
    return body, (200 if result.replayed else 201)


# -- batches -----------------------------------------------------------------------------------------------------


@bp.get(PREFIX)
@requires("batches.read")
def list_batches() -> Any:
    """Batches, newest first (filter with ?status= and ?line_id=)."""
    line_id = request.args.get("line_id", type=int)
    with tenant_transaction(g.tenant) as session:
        rows = list(session.scalars(queries.batches_query(status=request.args.get("status"),
                                                          line_id=line_id).limit(500)))
        return page(rows, BatchOut)


@bp.post(PREFIX)
@requires("batches.plan")
def plan_batch() -> Any:
    """Plan a batch from a master recipe's approved, effective version."""
    body = parse_body(PlanIn)
    with _tx() as session:
        batch = services.plan_batch(session, **body.model_dump())
        return one(batch, BatchOut), 201


def _batch(session: Any, batch_id: int) -> Batch:
    return services.get_batch(session, batch_id)


@bp.get(f"{PREFIX}/<int:batch_id>")
@requires("batches.read")
def get_batch(batch_id: int) -> Any:
    """A batch with its steps and open exceptions."""
    with tenant_transaction(g.tenant) as session:
        batch = _batch(session, batch_id)
        body = one(batch, BatchOut)
        steps = session.query(StepExecution).filter_by(batch_id=batch.id).order_by(StepExecution.seq).all()
        body["steps"] = [one(s, StepOut) for s in steps]
        current = queries.current_step(session, batch)
        body["current_step_id"] = current.id if current else None
        return body


@bp.post(f"{PREFIX}/<int:batch_id>/dispatch")
@requires("batches.plan")
def dispatch(batch_id: int) -> Any:
    """Release a planned batch to the floor (e-signature; freezes the control recipe)."""
    body = parse_body(DispatchIn)
    with _tx() as session:
        control = services.dispatch_batch(session, batch_id=batch_id, password=body.password,
                                          user_id=current_user.id, actor=request_actor(), reason=body.reason,
                                          identification=body.signature_user_id,
                                          identification_required=esign.identification_required())
        result = {"control_recipe_id": control.id, "control_recipe_hash": control.content_hash}
    esign.note_signature_made()
    return result


def _lifecycle(fn: Any, batch_id: int, **extra: Any) -> Any:
    body = parse_body(ReasonIn)
    with _tx() as session:
        return one(fn(session, batch_id=batch_id, reason=body.reason, **extra), BatchOut)


@bp.post(f"{PREFIX}/<int:batch_id>/pause")
@requires("batches.execute")
def pause(batch_id: int) -> Any:
    """Pause a batch in progress."""
    return _lifecycle(services.pause_batch, batch_id)


@bp.post(f"{PREFIX}/<int:batch_id>/resume")
@requires("batches.execute")
def resume(batch_id: int) -> Any:
    """Resume a paused batch (a hold is released by a supervisor only)."""
    return _lifecycle(services.resume_batch, batch_id, may_release_hold="batches.override" in g.permissions)


@bp.post(f"{PREFIX}/<int:batch_id>/hold")
@requires("batches.override")
def hold(batch_id: int) -> Any:
    """Put a batch on hold."""
    return _lifecycle(services.hold_batch, batch_id)


@bp.post(f"{PREFIX}/<int:batch_id>/abort")
@requires("batches.override")
def abort(batch_id: int) -> Any:
    """Abort a batch."""
    return _lifecycle(services.abort_batch, batch_id)


@bp.post(f"{PREFIX}/<int:batch_id>/complete")
@requires("batches.execute")
def complete(batch_id: int) -> Any:
    """Complete a batch (409 listing what is missing)."""
    with _tx() as session:
        return one(services.complete_batch(session, batch_id=batch_id), BatchOut)


@bp.post(f"{PREFIX}/<int:batch_id>/outputs")
@requires("batches.execute")
def output(batch_id: int) -> Any:
    """Record a lot the batch produced."""
    body = parse_body(OutputIn)
    with _tx() as session:
        lot = services.record_output(session, batch_id=batch_id, **body.model_dump())
        return {"lot_id": lot.id, "lot_number": lot.lot_number, "quantity": str(lot.quantity), "unit": lot.unit}, 201


@bp.get(f"{PREFIX}/<int:batch_id>/exceptions")
@requires("batches.read")
def exceptions(batch_id: int) -> Any:
    """The batch's exceptions."""
    from app.batches.models import BatchException

    with tenant_transaction(g.tenant) as session:
        _batch(session, batch_id)
        rows = session.query(BatchException).filter_by(batch_id=batch_id).order_by(BatchException.id).all()
        return page(rows, ExceptionOut)


@bp.get(f"{PREFIX}/<int:batch_id>/record")
@requires("batches.read")
def record(batch_id: int) -> Any:
    """The electronic batch record as JSON (the same content as the PDF), with its content hash."""
    with tenant_transaction(g.tenant) as session:
        return ebr.build_record(session, batch_id)


@bp.get(f"{PREFIX}/floor/<int:line_id>")
@requires("batches.read")
def floor(line_id: int) -> Any:
    """A line's floor queue: batches on the floor, their next steps and what each waits for."""
    with tenant_transaction(g.tenant) as session:
        queue = queries.floor_queue(session, line_id)
        if queue["line"] is None:
            raise NotFound(f"no line {line_id}")
        return {"line": queue["line"].code, "items": [
            {"batch_id": i["batch"].id, "batch_number": i["batch"].batch_number, "status": i["batch"].status,
             "blocked": i["blocked"], "done": i["done"], "total": i["total"],
             "next": [{"step_id": n["step"].id, "phase": n["step"].phase_key, "name": n["step"].phase_name,
                       "status": n["step"].status, "waiting_for": n["waits"]["waiting_for"],
                       "start_before": n["waits"]["deadline"].isoformat() if n["waits"]["deadline"] else None}
                      for n in i["next"]]} for i in queue["items"]]}


# -- steps -------------------------------------------------------------------------------------------------------


@bp.get(f"{PREFIX}/<int:batch_id>/steps/<int:step_id>")
@requires("batches.read")
def get_step(batch_id: int, step_id: int) -> Any:
    """One step with its entries (superseded ones included) and what it waits for."""
    with tenant_transaction(g.tenant) as session:
        batch = _batch(session, batch_id)
        step = session.get(StepExecution, step_id)
        if step is None or step.batch_id != batch.id:
            raise NotFound(f"batch {batch.batch_number} has no step {step_id}")
        view = queries.step_view(session, batch, step)
        entries = session.query(StepEntry).filter_by(step_execution_id=step.id).order_by(StepEntry.id).all()
        return {**one(step, StepOut), "control_recipe_hash": view["control"].content_hash,
                "entries": [one(e, EntryOut) for e in entries], "missing": view["missing"],
                "unsigned": view["unsigned"], "waiting_for": view["waits"]["waiting_for"],
                "signatures": [{"meaning": c.signature.meaning, "by": c.signature.printed_name,
                                "at": c.signature.signed_at.isoformat(), "valid": c.valid}
                               for c in view["signatures"]]}


@bp.post(f"{PREFIX}/<int:batch_id>/steps/<int:step_id>/check")
@requires("batches.read")
def check(batch_id: int, step_id: int) -> Any:
    """The live check of a value being typed: green / amber / red / blocked and why. Nothing is written."""
    body = parse_body(CheckIn)
    with tenant_transaction(g.tenant) as session:
        return execution.check_entry(session, batch_id=batch_id, step_id=step_id, capture_key=body.capture,
                                     raw=body.raw(), entry_id=body.entry_id)


@bp.post(f"{PREFIX}/<int:batch_id>/steps/<int:step_id>/start")
@requires("batches.execute")
def start(batch_id: int, step_id: int) -> Any:
    """Start a step (out of order or on equipment not ready only with a supervisor's signed override)."""
    body = parse_body(StartIn) if request.get_data() else StartIn()
    with _tx() as session:
        step = execution.start_step(session, batch_id=batch_id, step_id=step_id,
                                    override=override_from(body.override.model_dump() if body.override else None))
        return one(step, StepOut)


@bp.post(f"{PREFIX}/<int:batch_id>/steps/<int:step_id>/entries")
@requires("batches.execute")
def enter(batch_id: int, step_id: int) -> Any:
    """Record a value (idempotent per key: a retry returns the first recording with 200)."""
    body, upload = _entry_payload(EntryIn)
    with _tx() as session:
        result = execution.record_entry(
            session, batch_id=batch_id, step_id=step_id, capture_key=body.capture, raw=body.raw(),
            idempotency_key=body.idempotency_key, control_recipe_hash=body.control_recipe_hash,
            acknowledgement=body.acknowledgement,
            override=override_from(body.override.model_dump() if body.override else None),
            device=device_clock(body.device_time, body.device_sent_at), upload=upload)
    return _entry_reply(result)  # after the commit: the tenant's audit chain is not held while it serialises


@bp.post(f"{PREFIX}/<int:batch_id>/entries/<int:entry_id>/corrections")
@requires("batches.execute")
def correct(batch_id: int, entry_id: int) -> Any:
    """Correct or re-weigh an entry: a new entry supersedes it, with a reason."""
    body, upload = _entry_payload(CorrectionIn)
    with _tx() as session:
        result = execution.correct_entry(
            session, batch_id=batch_id, entry_id=entry_id, raw=body.raw(), reason=body.reason,
            idempotency_key=body.idempotency_key, control_recipe_hash=body.control_recipe_hash, action=body.action,
            acknowledgement=body.acknowledgement,
            override=override_from(body.override.model_dump() if body.override else None),
            device=device_clock(body.device_time, body.device_sent_at), upload=upload)
    return _entry_reply(result)  # after the commit: the tenant's audit chain is not held while it serialises


@bp.post(f"{PREFIX}/<int:batch_id>/steps/<int:step_id>/signatures")
@requires("batches.execute")
def sign(batch_id: int, step_id: int) -> Any:
    """Sign a step (performed / verified by a second person).

    An SSO member signs as themselves with `sso_proof`, the token of a re-authentication at the provider made
    through the step screen's detour (single-use, bound to this step, meaning and content) instead of a password.
    """
    body = parse_body(SignIn)
    signer, ident = step_signer(body.signer_email, body.sso_proof)
    with _tx() as session:
        signature = execution.sign_step(session, batch_id=batch_id, step_id=step_id, meaning=body.meaning,
                                        password=body.password, signer=signer, reason=body.reason, **ident)
        result = {"signature_id": signature.id, "meaning": signature.meaning, "by": signature.printed_name,
                  "signed_at": signature.signed_at.isoformat(), "manifestation": esign.manifestation_text(signature)}
    if signer.actor.member_id == g.member_id:
        esign.note_signature_made()
    return result, 201


@bp.post(f"{PREFIX}/<int:batch_id>/steps/<int:step_id>/complete")
@requires("batches.execute")
def complete_step(batch_id: int, step_id: int) -> Any:
    """Complete a step (409 listing missing data or signatures)."""
    with _tx() as session:
        return one(execution.complete_step(session, batch_id=batch_id, step_id=step_id), StepOut)


@bp.post(f"{PREFIX}/<int:batch_id>/steps/<int:step_id>/skip")
@requires("batches.execute")
def skip(batch_id: int, step_id: int) -> Any:
    """Skip an optional step, with a reason."""
    body = parse_body(ReasonIn)
    with _tx() as session:
        return one(execution.skip_step(session, batch_id=batch_id, step_id=step_id, reason=body.reason), StepOut)


refuse_deletions(bp, permission="batches.plan", rules={f"{PREFIX}/<int:record_id>": "batch"})
