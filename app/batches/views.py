"""Batch screens: planning (supervisor), the floor queue and the one-step-at-a-time tablet screens (operator),
and the electronic batch record with its PDF and JSON exports. Thin: parse, call a service or a query, render.

Every form also works without JavaScript; `app/static/batch_step.js` adds the live checks and the
offline-tolerant, idempotent submission of entries on top (through the JSON API).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from flask import Response, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from app import esign
from app.batches import ebr, execution, queries, services
from app.batches.errors import EntryNeedsDecision
from app.batches.forms import device_clock, form_override, form_raw, form_upload, step_signer
from app.batches.models import (
    BATCH_STATUSES,
    FLOOR_STATUSES,
    STEP_STATUSES,
    BatchAttachment,
    ControlRecipe,
    StepExecution,
)
from app.core.errors import BatchlineError, NotFound
from app.core.tenancy import tenant_transaction
from app.core.validation import db_now
from app.core.web import request_actor, requires, tenant_blueprint
from app.plant.models import Equipment, Line
from app.recipes.models import MasterRecipe, RecipeVersion

bp = tenant_blueprint("batches", __name__, template_folder="templates")


@bp.app_template_filter("when")
def _when(value: Any) -> str:
    """A database time as people read it on the floor (UTC, to the second)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("num")
def _num(value: Any) -> str:
    """A number without float noise."""
    if value is None:
        return "—"
    try:
        return f"{float(value):.10g}"
    except (TypeError, ValueError):
        return str(value)


@bp.app_template_global("trend_svg")
def _trend_svg(chart: dict[str, Any]) -> Any:
    """A sensor trend chart of the record as inline SVG (server-drawn: the same in the page and the PDF)."""
    from app.batches.trends import trend_svg

    return trend_svg(chart)


def _tx() -> Any:
    return tenant_transaction(g.tenant, actor=request_actor())


def _back_to_step(batch_id: int, step_id: int, anchor: str = "") -> Any:
    return redirect(url_for("batches.step", batch_id=batch_id, step_id=step_id) + anchor, 303)


def _step_of(session: Any, batch_id: int, step_id: int) -> StepExecution:
    step = session.get(StepExecution, step_id)
    if step is None or step.batch_id != batch_id:
        raise NotFound(f"batch {batch_id} has no step {step_id}")
    return step


def _act(fn: Any, done: Any, fail: Any) -> Any:
    """Run a service; on a refusal say why in words and go back (nothing was stored)."""
    try:
        result = fn()
    except EntryNeedsDecision as exc:
        flash(str(exc), "error")
        return fail(exc)
    except BatchlineError as exc:
        flash(str(exc), "error")
        return fail(exc)
    return done(result)


# -- lists and planning ------------------------------------------------------------------------------------------


@bp.get("/batches/")
@requires("batches.read")
def index() -> Any:
    """Batches, newest first."""
    status = request.args.get("status") or None
    if status and status not in BATCH_STATUSES:
        status = None
    with tenant_transaction(g.tenant) as session:
        batches = list(session.scalars(queries.batches_query(status=status).limit(200)))
        lines = {line.id: line for line in session.scalars(select(Line))}
        counts = queries.open_exception_counts(session, [b.id for b in batches])
        return render_template("batches/index.html", batches=batches, lines=lines, counts=counts,
                               statuses=BATCH_STATUSES, status=status)


def _recipes(session: Any, now: datetime) -> list[tuple[MasterRecipe, RecipeVersion]]:
    """Master recipes with a version effective now."""
    from app.recipes.services import effective_version

    out = []
    for master in session.scalars(select(MasterRecipe).order_by(MasterRecipe.code)):
        try:
            out.append((master, effective_version(session, master.id, now)))
        except NotFound:
            continue
    return out


def _candidates(session: Any, requirements: list[str], line_id: int | None, now: datetime) -> dict[str, Any]:
    from app.batches import catalog
    from app.batches.checks import readiness_snapshot

    out: dict[str, list[dict[str, Any]]] = {}
    if not line_id:
        return out
    items = session.scalars(select(Equipment).where(Equipment.line_id == line_id).order_by(Equipment.tag)).all()
    for requirement in requirements:
        out[requirement] = [{"equipment": e, "readiness": readiness_snapshot(e, now, set())} for e in items
                            if catalog.class_matches(requirement, e.equipment_class)]
    return out


@bp.route("/batches/plan", methods=["GET", "POST"])
@requires("batches.plan")
def plan() -> Any:
    """Plan a batch: recipe (effective version), size with the scaled formula, line, equipment, planned start."""
    values = request.values
    master_id = values.get("master_recipe_id", type=int)
    line_id = values.get("line_id", type=int)
    error = None
    if request.method == "POST" and request.form.get("confirm") and master_id:
        try:
            start = datetime.fromisoformat(request.form.get("planned_start") or "")
        except ValueError:
            error = "planned start: give a date and time (e.g. 2026-12-01T08:00)"
        else:
            start = start if start.tzinfo else start.replace(tzinfo=UTC)
            try:
                with _tx() as session:
                    preview = services.preview_plan(session, master_recipe_id=master_id,
                                                    batch_size=request.form.get("batch_size"),
                                                    unit=request.form.get("unit") or None)
                    equipment = {req: request.form.get(f"equipment_{req}") for req in preview.requirements}
                    batch = services.plan_batch(session, master_recipe_id=master_id,
                                                batch_size=request.form.get("batch_size"),
                                                unit=request.form.get("unit") or None, line_id=line_id or 0,
                                                planned_start=start, equipment=equipment)
                    number, batch_id = batch.batch_number, batch.id
                flash(f"Batch {number} planned", "ok")
                return redirect(url_for("batches.batch", batch_id=batch_id), 303)
            except BatchlineError as exc:
                error = str(exc)
    with tenant_transaction(g.tenant) as session:
        now = db_now(session)
        recipes = _recipes(session, now)
        lines = list(session.scalars(select(Line).order_by(Line.code)))
        preview = None
        if master_id and values.get("batch_size"):
            try:
                preview = services.preview_plan(session, master_recipe_id=master_id, batch_size=values["batch_size"],
                                                unit=values.get("unit") or None, at=now)
            except BatchlineError as exc:
                error = error or str(exc)
        candidates = _candidates(session, preview.requirements if preview else [], line_id, now)
        status = 422 if error and request.method == "POST" else 200
        return render_template("batches/plan.html", recipes=recipes, lines=lines, preview=preview, error=error,
                               values=values, candidates=candidates, now=now), status


@bp.get("/batches/<int:batch_id>")
@requires("batches.read")
def batch(batch_id: int) -> Any:
    """The batch page: header, scaled formula, equipment with readiness, steps, actions by status."""
    with tenant_transaction(g.tenant) as session:
        b = services.get_batch(session, batch_id)
        now = db_now(session)
        control = session.scalar(select(ControlRecipe).where(ControlRecipe.batch_id == b.id))
        version = session.get(RecipeVersion, b.recipe_version_id)
        summary = control.scaling_summary if control else None
        requirements: list[str] = []
        if control is None and version is not None:
            try:
                preview = services.preview_plan(session, master_recipe_id=b.master_recipe_id,
                                                batch_size=b.batch_size, unit=b.batch_unit, at=now)
                summary, requirements = preview.scaled.summary(), preview.requirements
            except BatchlineError as exc:
                flash(f"This plan can no longer be released: {exc}", "error")
        else:
            requirements = services.equipment_requirements(services.control_document(control)) if control else []
        assignments = services.current_assignments(session, b.id)
        from app.batches.checks import readiness_snapshot

        readiness = {req: readiness_snapshot(session.get(Equipment, a.equipment_id), now, set())
                     for req, a in assignments.items()}
        steps = session.scalars(select(StepExecution).where(StepExecution.batch_id == b.id)
                                .order_by(StepExecution.seq)).all()
        candidates = _candidates(session, requirements, b.line_id, now)
        gaps = services.completion_gaps(session, b) if b.status == "in_progress" else []
        return render_template("batches/batch.html", b=b, control=control, summary=summary,
                               requirements=requirements, assignments=assignments, readiness=readiness, steps=steps,
                               candidates=candidates, line=session.get(Line, b.line_id), statuses=BATCH_STATUSES,
                               step_statuses=STEP_STATUSES, gaps=gaps, yields=queries.batch_yields(session, b.id),
                               require_user_id=esign.identification_required(),
                               exceptions=queries.open_exception_counts(session, [b.id]).get(b.id, 0))


def _to_batch(batch_id: int) -> Any:
    return lambda _r: redirect(url_for("batches.batch", batch_id=batch_id), 303)


@bp.post("/batches/<int:batch_id>/equipment")
@requires("batches.plan")
def assign(batch_id: int) -> Any:
    """Assign or reassign equipment for one of the recipe's equipment classes."""
    def run() -> Any:
        with _tx() as session:
            return services.assign_equipment(session, batch_id=batch_id,
                                             requirement=request.form.get("requirement", ""),
                                             equipment_id=request.form.get("equipment_id"),
                                             reason=request.form.get("reason") or None)
    return _act(run, _to_batch(batch_id), _to_batch(batch_id))


@bp.post("/batches/<int:batch_id>/dispatch")
@requires("batches.plan")
def dispatch(batch_id: int) -> Any:
    """Release the batch to the floor: the supervisor signs, the control recipe is frozen."""
    def run() -> Any:
        with _tx() as session:
            control = services.dispatch_batch(session, batch_id=batch_id, user_id=current_user.id,
                                              actor=request_actor(), reason=request.form.get("reason") or None,
                                              **esign.signing_credentials(request.form))
        esign.note_signature_made()
        flash(f"Released to the floor; control recipe {control.content_hash[:12]}… frozen", "ok")
        return control
    return _act(run, _to_batch(batch_id), _to_batch(batch_id))


def _lifecycle(batch_id: int, fn: Any, message: str, **extra: Any) -> Any:
    def run() -> Any:
        with _tx() as session:
            fn(session, batch_id=batch_id, reason=request.form.get("reason", ""), **extra)
        flash(message, "ok")
    back = request.form.get("next") or url_for("batches.batch", batch_id=batch_id)
    if not back.startswith("/"):
        back = url_for("batches.batch", batch_id=batch_id)
    return _act(run, lambda _r: redirect(back, 303), lambda _e: redirect(back, 303))


@bp.post("/batches/<int:batch_id>/pause")
@requires("batches.execute")
def pause(batch_id: int) -> Any:
    """Pause the batch."""
    return _lifecycle(batch_id, services.pause_batch, "Batch paused")


@bp.post("/batches/<int:batch_id>/resume")
@requires("batches.execute")
def resume(batch_id: int) -> Any:
    """Resume the batch (a hold only by a supervisor)."""
    return _lifecycle(batch_id, services.resume_batch, "Batch resumed",
                      may_release_hold="batches.override" in g.permissions)


@bp.post("/batches/<int:batch_id>/hold")
@requires("batches.override")
def hold(batch_id: int) -> Any:
    """Put the batch on hold."""
    return _lifecycle(batch_id, services.hold_batch, "Batch on hold")


@bp.post("/batches/<int:batch_id>/abort")
@requires("batches.override")
def abort_batch(batch_id: int) -> Any:
    """Abort the batch."""
    return _lifecycle(batch_id, services.abort_batch, "Batch aborted")


@bp.post("/batches/<int:batch_id>/complete")
@requires("batches.execute")
def complete(batch_id: int) -> Any:
    """Complete the batch (refused, with the list of what is missing, until everything is in)."""
    def run() -> Any:
        with _tx() as session:
            services.complete_batch(session, batch_id=batch_id)
        flash("Batch completed", "ok")
    return _act(run, _to_batch(batch_id), _to_batch(batch_id))


@bp.post("/batches/<int:batch_id>/outputs")
@requires("batches.execute")
def output(batch_id: int) -> Any:
    """Record a lot the batch produced."""
    def run() -> Any:
        with _tx() as session:
            lot = services.record_output(session, batch_id=batch_id, lot_number=request.form.get("lot_number", ""),
                                         quantity=request.form.get("quantity"), unit=request.form.get("unit") or None)
        flash(f"Output lot {lot.lot_number} recorded (quarantine until QA releases it)", "ok")
    return _act(run, _to_batch(batch_id), _to_batch(batch_id))


# -- floor -------------------------------------------------------------------------------------------------------


@bp.get("/floor/")
@requires("batches.read")
def floor() -> Any:
    """Lines with the number of batches on the floor."""
    with tenant_transaction(g.tenant) as session:
        lines = list(session.scalars(select(Line).order_by(Line.code)))
        from sqlalchemy import func

        from app.batches.models import Batch

        counts = dict(session.execute(select(Batch.line_id, func.count()).where(Batch.status.in_(FLOOR_STATUSES))
                                      .group_by(Batch.line_id)).all())
        if len(lines) == 1 and not request.args.get("all"):
            return redirect(url_for("batches.line_queue", line_id=lines[0].id))
        return render_template("batches/floor.html", lines=lines, counts=counts)


@bp.get("/floor/<int:line_id>")
@requires("batches.read")
def line_queue(line_id: int) -> Any:
    """The floor queue of one line: batches, their next steps and what each waits for."""
    with tenant_transaction(g.tenant) as session:
        queue = queries.floor_queue(session, line_id)
        if queue["line"] is None:
            abort(404)
        return render_template("batches/queue.html", q=queue, statuses=BATCH_STATUSES)


@bp.get("/batches/<int:batch_id>/run")
@requires("batches.read")
def run(batch_id: int) -> Any:
    """Open the step to work on now."""
    with tenant_transaction(g.tenant) as session:
        b = services.get_batch(session, batch_id)
        step = queries.current_step(session, b)
    if step is None:
        return redirect(url_for("batches.batch", batch_id=batch_id))
    return redirect(url_for("batches.step", batch_id=batch_id, step_id=step.id))


@bp.get("/batches/<int:batch_id>/steps/<int:step_id>")
@requires("batches.read")
def step(batch_id: int, step_id: int) -> Any:
    """The tablet screen of one step."""
    with tenant_transaction(g.tenant) as session:
        b = services.get_batch(session, batch_id)
        st = session.get(StepExecution, step_id)
        if st is None or st.batch_id != b.id:
            abort(404)
        view = queries.step_view(session, b, st)
        # Live sensor tiles and open alarms of the equipment the step runs on (the sensor path, issue 8).
        from app.sensors.queries import tiles as sensor_tiles

        tiles = sensor_tiles(session, equipment_id=st.equipment_id) if st.equipment_id else []
        return render_template("batches/step.html", v=view, b=b, st=st, statuses=BATCH_STATUSES,
                               step_statuses=STEP_STATUSES, require_user_id=esign.identification_required(),
                               sensor_tiles=tiles,
                               sso=esign.sso_signing(record_type=services.STEP_RECORD, record_id=st.id),
                               sso_override=esign.sso_signing(record_type=services.OVERRIDE_RECORD))


@bp.post("/batches/<int:batch_id>/steps/<int:step_id>/start")
@requires("batches.execute")
def start(batch_id: int, step_id: int) -> Any:
    """Start the step (an override lets a supervisor start it out of order or on equipment not ready)."""
    if esign.wants_sso_reauth(request.form):
        return _start_override_reauth(batch_id, step_id)

    def run_() -> Any:
        with _tx() as session:
            return execution.start_step(session, batch_id=batch_id, step_id=step_id, override=form_override())
    return _act(run_, lambda _r: _back_to_step(batch_id, step_id),
                lambda e: _back_to_step(batch_id, step_id, "#override" if isinstance(e, EntryNeedsDecision) else ""))


def _start_override_reauth(batch_id: int, step_id: int) -> Any:
    """A signed-in SSO supervisor re-authenticates at the provider before signing an out-of-order start."""
    reason = request.form.get("override_reason") or ""
    try:
        with _tx() as session:
            content = execution.start_override_content(session, batch_id=batch_id, step_id=step_id, reason=reason)
            override_id = execution.reserve_override(session)
        return esign.start_sso_reauth(
            record_type=services.OVERRIDE_RECORD, record_id=override_id, meaning="approved", content=content,
            return_to=url_for("batches.step", batch_id=batch_id, step_id=step_id, _anchor="override"),
            keep={"override_reason": content["reason"]})
    except BatchlineError as exc:
        flash(str(exc), "error")
        return _back_to_step(batch_id, step_id, "#override")


@bp.post("/batches/<int:batch_id>/steps/<int:step_id>/entries")
@requires("batches.execute")
def enter(batch_id: int, step_id: int) -> Any:
    """Record a value from a capture form (the no-JavaScript path; the tablet script uses the JSON API).

    A signed-in SSO supervisor overriding a hard-blocked value first re-authenticates at the provider
    ("Re-authenticate ... to override" button); back on the step, the value waits with the proof bound to it.
    """
    capture = request.form.get("capture", "")
    if esign.wants_sso_reauth(request.form):
        return _entry_override_reauth(batch_id, step_id, capture)

    def run_() -> Any:
        with _tx() as session:
            result = execution.record_entry(
                session, batch_id=batch_id, step_id=step_id, capture_key=capture, raw=form_raw(),
                idempotency_key=request.form.get("idempotency_key", ""),
                control_recipe_hash=request.form.get("control_recipe_hash"),
                acknowledgement=request.form.get("acknowledgement"), override=form_override(),
                device=device_clock(request.form.get("device_time"), request.form.get("device_sent_at")),
                upload=form_upload())
        flash(f"Saved: {result.entry.display}", "ok")
        return result
    return _act(run_, lambda _r: _back_to_step(batch_id, step_id, f"#c-{capture}"),
                lambda _e: _back_to_step(batch_id, step_id, f"#c-{capture}"))


def _entry_override_reauth(batch_id: int, step_id: int, capture: str) -> Any:
    """Reserve the override of a hard-blocked value and send the SSO supervisor to the provider to sign it."""
    raw = form_raw()
    try:
        with _tx() as session:
            content = execution.entry_override_content(session, batch_id=batch_id, step_id=step_id,
                                                       capture_key=capture, raw=raw,
                                                       reason=request.form.get("override_reason") or "")
            override_id = execution.reserve_override(session)
        # The value typed comes back with the proof, under the same idempotency key (a retry records it once).
        keep = {f"raw_{name}": str(value) for name, value in raw.items()}
        keep.update(capture=capture, override_reason=content["reason"],
                    acknowledgement=request.form.get("acknowledgement") or "",
                    idempotency_key=request.form.get("idempotency_key") or secrets.token_urlsafe(18))
        return esign.start_sso_reauth(
            record_type=services.OVERRIDE_RECORD, record_id=override_id, meaning="approved", content=content,
            return_to=url_for("batches.step", batch_id=batch_id, step_id=step_id, _anchor=f"c-{capture}"),
            keep=keep)
    except BatchlineError as exc:
        flash(str(exc), "error")
        return _back_to_step(batch_id, step_id, f"#c-{capture}")


@bp.post("/batches/<int:batch_id>/entries/<int:entry_id>/correct")
@requires("batches.execute")
def correct(batch_id: int, entry_id: int) -> Any:
    """Correct or re-weigh a value (the old one stays, struck through, with the reason)."""
    step_id = request.form.get("step_id", type=int) or 0

    def run_() -> Any:
        with _tx() as session:
            result = execution.correct_entry(
                session, batch_id=batch_id, entry_id=entry_id, raw=form_raw(), reason=request.form.get("reason", ""),
                action=request.form.get("action", "correction"),
                idempotency_key=request.form.get("idempotency_key", ""),
                control_recipe_hash=request.form.get("control_recipe_hash"),
                acknowledgement=request.form.get("acknowledgement"), override=form_override(),
                device=device_clock(request.form.get("device_time"), request.form.get("device_sent_at")),
                upload=form_upload())
        flash(f"Changed to {result.entry.display}", "ok")
        return result
    return _act(run_, lambda _r: _back_to_step(batch_id, step_id), lambda _e: _back_to_step(batch_id, step_id))


@bp.post("/batches/<int:batch_id>/steps/<int:step_id>/sign")
@requires("batches.execute")
def sign(batch_id: int, step_id: int) -> Any:
    """Sign the step: performed by the operator, verified by a second person (on this tablet or their own).

    A signed-in member whose account signs through SSO first re-authenticates at the provider ("Re-authenticate"
    button); back on the step, the form carries the single-use proof bound to this step, meaning and content.
    """
    if esign.wants_sso_reauth(request.form):
        def reauth() -> Any:
            with _tx() as session:
                content = execution.signed_content(session, services.get_batch(session, batch_id),
                                                   _step_of(session, batch_id, step_id))
            return esign.start_sso_reauth(
                record_type=services.STEP_RECORD, record_id=step_id, meaning=request.form.get("meaning", ""),
                content=content, return_to=url_for("batches.step", batch_id=batch_id, step_id=step_id,
                                                   _anchor="signatures"),
                keep={"reason": request.form.get("reason") or ""})
        return _act(reauth, lambda r: r, lambda _e: _back_to_step(batch_id, step_id, "#signatures"))

    def run_() -> Any:
        signer, ident = step_signer(request.form.get("signature_user_id") or request.form.get("signer_email"),
                                    request.form.get("signature_sso_proof"))
        with _tx() as session:
            signature = execution.sign_step(session, batch_id=batch_id, step_id=step_id,
                                            meaning=request.form.get("meaning", ""),
                                            password=request.form.get("signature_password") or "", signer=signer,
                                            reason=request.form.get("reason") or None, **ident)
            text_ = esign.manifestation_text(signature)
        if signer.actor.member_id == g.member_id:
            esign.note_signature_made()
        flash(f"Signed: {text_}", "ok")
    return _act(run_, lambda _r: _back_to_step(batch_id, step_id, "#signatures"),
                lambda _e: _back_to_step(batch_id, step_id, "#signatures"))


@bp.post("/batches/<int:batch_id>/steps/<int:step_id>/complete")
@requires("batches.execute")
def complete_step(batch_id: int, step_id: int) -> Any:
    """Complete the step and go on to the next one."""
    def run_() -> Any:
        with _tx() as session:
            execution.complete_step(session, batch_id=batch_id, step_id=step_id)
        flash("Step completed", "ok")
    return _act(run_, lambda _r: redirect(url_for("batches.run", batch_id=batch_id), 303),
                lambda _e: _back_to_step(batch_id, step_id))


@bp.post("/batches/<int:batch_id>/steps/<int:step_id>/skip")
@requires("batches.execute")
def skip(batch_id: int, step_id: int) -> Any:
    """Skip an optional step, with a reason."""
    def run_() -> Any:
        with _tx() as session:
            execution.skip_step(session, batch_id=batch_id, step_id=step_id, reason=request.form.get("reason", ""))
        flash("Step skipped", "ok")
    return _act(run_, lambda _r: redirect(url_for("batches.run", batch_id=batch_id), 303),
                lambda _e: _back_to_step(batch_id, step_id))


# -- the record --------------------------------------------------------------------------------------------------


@bp.get("/batches/<int:batch_id>/record")
@requires("batches.read")
def record(batch_id: int) -> Any:
    """The complete electronic batch record."""
    with tenant_transaction(g.tenant) as session:
        r = ebr.build_record(session, batch_id)
    return render_template("batches/record.html", r=r)


@bp.get("/batches/<int:batch_id>/record.json")
@requires("batches.read")
def record_json(batch_id: int) -> Any:
    """The EBR as JSON (same content as the PDF)."""
    import json

    with tenant_transaction(g.tenant) as session:
        r = ebr.build_record(session, batch_id)
    body = json.dumps(r, ensure_ascii=False, indent=1, sort_keys=True)
    return Response(body, mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="EBR-{r["batch"]["batch_number"]}.json"'})


@bp.get("/batches/<int:batch_id>/record.pdf")
@requires("batches.read")
def record_pdf(batch_id: int) -> Any:
    """The EBR as PDF (page numbers, content hash in the footer, manifestations, changed values marked)."""
    with tenant_transaction(g.tenant) as session:
        r = ebr.build_record(session, batch_id)
    return Response(ebr.render_pdf(r), mimetype="application/pdf", headers={
        "Content-Disposition": f'inline; filename="EBR-{r["batch"]["batch_number"]}.pdf"'})


@bp.get("/batches/<int:batch_id>/attachments/<int:attachment_id>")
@requires("batches.read")
def attachment(batch_id: int, attachment_id: int) -> Any:
    """Download a file attached to the record."""
    with tenant_transaction(g.tenant) as session:
        row = session.get(BatchAttachment, attachment_id)
        if row is None or row.batch_id != batch_id:
            abort(404)
        return Response(row.data, mimetype=row.content_type, headers={
            "Content-Disposition": f'attachment; filename="{row.filename.replace(chr(34), "")}"',
            "X-Content-SHA256": row.sha256})


# -- settings ----------------------------------------------------------------------------------------------------


@bp.route("/batches/settings", methods=["GET", "POST"])
@requires("settings.manage")
def settings() -> Any:
    """The batch number pattern and the tolerances of contemporaneous entry."""
    if request.method == "POST":
        try:
            with _tx() as session:
                services.update_settings(session, batch_number_pattern=request.form.get("batch_number_pattern"),
                                         clock_skew_tolerance_s=request.form.get("clock_skew_tolerance_s"),
                                         late_entry_grace_s=request.form.get("late_entry_grace_s"),
                                         reason=request.form.get("reason", ""))
            flash("Batch settings saved", "ok")
            return redirect(url_for("batches.settings"), 303)
        except BatchlineError as exc:
            flash(str(exc), "error")
    with tenant_transaction(g.tenant) as session:
        return render_template("batches/settings.html", s=services.batch_settings(session))
