"""The guided onboarding flow (site -> line -> equipment -> sensors -> materials -> users) and data imports."""

from __future__ import annotations

from typing import Any

from flask import Response, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user

from app.accounts.services import invite_member
from app.core.errors import BatchlineError, NotFound
from app.core.permissions import BUILTIN_ROLES
from app.core.tenancy import tenant_transaction
from app.core.web import MEMBER, request_actor, requires, tenant_blueprint
from app.materials import services as materials
from app.materials.models import MATERIAL_TYPES
from app.materials.views import MATERIAL_KEYS
from app.onboarding import imports, services
from app.onboarding.models import DataImport
from app.plant import queries as plant_queries
from app.plant import services as plant
from app.plant.models import EQUIPMENT_CLASSES, EQUIPMENT_STATUSES, QUALIFICATION_STATUSES, SIGNATURE_ROUTES
from app.plant.views import (
    COMMON_TIMEZONES,
    SENSOR_KINDS,
    equipment_form_values,
    form,
    sensor_form_values,
    site_form_values,
)

bp = tenant_blueprint("onboarding_flow", __name__, template_folder="templates")
STEP_TITLES = {key: title for key, title, _, _ in services.STEPS}


def _states() -> list[services.StepState]:
    with tenant_transaction(g.tenant) as session:
        return services.checklist(session, g.tenant)


def _need(permission: str) -> None:
    if permission not in g.permissions:
        abort(403, description=f"your role does not allow this ({permission})")


@bp.get("/onboarding/")
@requires("plant.manage")
def start() -> Any:
    """Resume the flow at the first step neither done nor skipped."""
    states = _states()
    step = services.next_step(states)
    if step is None:
        return render_template("onboarding/finished.html", states=states)
    return redirect(url_for("onboarding_flow.step", step=step.key))


def _step_context(step: str, states: list[services.StepState]) -> dict[str, Any]:
    context: dict[str, Any] = {"step": step, "states": states, "title": STEP_TITLES[step],
                               "state": next(s for s in states if s.key == step)}
    with tenant_transaction(g.tenant) as session:
        if step == "site":
            context["existing"] = [f"{s.code} — {s.name}" for s in session.scalars(plant_queries.sites_query())]
            context.update(timezones=COMMON_TIMEZONES, routes=list(SIGNATURE_ROUTES.items()))
        elif step == "line":
            context["sites"] = [(str(s.id), f"{s.code} — {s.name}")
                                for s in session.scalars(plant_queries.sites_query())]
            context["existing"] = [f"{ln.code} — {ln.name} ({ln.site.code})"
                                   for ln in session.scalars(plant_queries.lines_query())]
        elif step == "equipment":
            context["lines"] = [(str(ln.id), f"{ln.code} — {ln.name} ({ln.site.code})")
                                for ln in session.scalars(plant_queries.lines_query())]
            context["existing"] = [f"{e.tag} — {e.name} ({e.line.code}, {EQUIPMENT_STATUSES[e.status].lower()})"
                                   for e in session.scalars(plant_queries.equipment_query())]
            context.update(classes=list(EQUIPMENT_CLASSES.items()),
                           qualifications=list(QUALIFICATION_STATUSES.items()),
                           initial=[(s, EQUIPMENT_STATUSES[s]) for s in plant.INITIAL_STATUSES])
        elif step == "sensors":
            context["equipment"] = [(str(e.id), f"{e.tag} — {e.name}")
                                    for e in session.scalars(plant_queries.equipment_query())]
            context["existing"] = [f"{s.tag} on {s.equipment.tag}: {s.quantity_kind} ({s.unit})"
                                   for s in session.scalars(plant_queries.sensors_query())]
            context["kinds"] = SENSOR_KINDS
        elif step == "materials":
            from app.materials.queries import materials_query

            context["existing"] = [f"{m.code} — {m.name} ({m.unit})" for m in session.scalars(materials_query())]
            context["types"] = list(MATERIAL_TYPES.items())
        else:
            context["roles"] = [(r, r) for r in BUILTIN_ROLES]
            context["existing"] = [f"{email}: invited as {', '.join(roles)}"
                                   for email, roles in services.open_invitations(g.tenant)]
    return context


def _render_step(step: str, values: dict[str, Any], status: int = 200, **extra: Any) -> Any:
    context = _step_context(step, _states())
    return render_template(f"onboarding/step_{step}.html", values=values, **context, **extra), status


STEP_DEFAULTS: dict[str, dict[str, Any]] = {
    "site": {"timezone": "Europe/Zurich", "regulatory_profile": "21 CFR Part 11 / EU GMP Annex 11"},
    "line": {"kind": "line"},
    "equipment": {"qualification_status": "qualified", "status": "dirty", "equipment_class": "bioreactor"},
    "sensors": {"sampling_period_s": "10"},
    "materials": {"material_type": "raw"},
    "users": {"role": "Operator"},
}


@bp.route("/onboarding/<step>", methods=["GET", "POST"])
@requires(MEMBER)
def step(step: str) -> Any:
    """One step: a form to add a record, what exists already, skip or continue."""
    if step not in STEP_TITLES:
        abort(404)
    permission = next(p for k, _, _, p in services.STEPS if k == step)
    _need(permission)
    if request.method == "GET":
        defaults = dict(STEP_DEFAULTS[step])
        if step == "equipment" and request.args.get("line_id"):
            defaults["line_id"] = request.args["line_id"]
        return _render_step(step, defaults)
    values = form()
    if step == "users":
        return _invite(values)
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            services.set_skipped(session, step=step, skipped=False)
            if step == "site":
                made = plant.create_site(session, **site_form_values(values)).code
            elif step == "line":
                made = plant.create_line(session, site_id=int(values.get("site_id") or 0), code=values.get("code", ""),
                                         name=values.get("name", ""), kind=values.get("kind", "line")).code
            elif step == "equipment":
                made = plant.create_equipment(session, **equipment_form_values(values)).tag
            elif step == "sensors":
                made = plant.create_sensor(session, **sensor_form_values(values)).tag
            else:
                made = materials.create_material(session, **{k: values.get(k, "") for k in MATERIAL_KEYS}).code
    except BatchlineError as exc:
        flash(str(exc), exc.flash_category)
        return _render_step(step, values, exc.status_code)
    flash(f"{made} added.", "ok")
    if step in ("site", "line"):  # one is enough to go on; more can be added from the plant pages
        return redirect(url_for("onboarding_flow.step", step=services.STEP_KEYS[services.STEP_KEYS.index(step) + 1]))
    keep = {"line_id": values.get("line_id")} if step == "equipment" else (
        {"equipment_id": values.get("equipment_id"), "sampling_period_s": values.get("sampling_period_s")}
        if step == "sensors" else {})
    return _render_step(step, {**STEP_DEFAULTS[step], **keep})


def _invite(values: dict[str, str]) -> Any:
    """Invite through the accounts area: a signed, expiring link goes out by mail (the outbox sends it)."""
    try:
        invitation = invite_member(tenant_id=g.tenant.id, email=values.get("email", ""),
                                   roles=[values.get("role", "")], by_user_id=current_user.id,
                                   by_permissions=frozenset(g.permissions))
    except BatchlineError as exc:
        flash(str(exc), exc.flash_category)
        return _render_step("users", values, exc.status_code)
    flash(f"Invitation sent to {invitation.email}.", "ok")
    return _render_step("users", STEP_DEFAULTS["users"])


@bp.post("/onboarding/<step>/skip")
@requires(MEMBER)
def skip(step: str) -> Any:
    """Skip a step for now (it stays on the checklist) and go to the next one."""
    if step not in STEP_TITLES:
        abort(404)
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        services.set_skipped(session, step=step, skipped=True)
    return _after(step)


@bp.post("/onboarding/<step>/continue")
@requires(MEMBER)
def proceed(step: str) -> Any:
    """Leave a step and go to the next one that is left."""
    if step not in STEP_TITLES:
        abort(404)
    return _after(step)


def _after(step: str) -> Any:
    following = services.next_step(_states(), after=step)
    if following is None:
        return redirect(url_for("onboarding_flow.start"))
    return redirect(url_for("onboarding_flow.step", step=following.key))


# --- imports ---

def _kind(kind: str) -> str:
    if kind not in imports.KINDS:
        abort(404)
    _need(imports.KIND_PERMISSION[kind])
    return kind


@bp.get("/onboarding/import/<kind>")
@requires(MEMBER)
def import_form(kind: str) -> Any:
    """Upload a CSV or XLSX file of one kind."""
    return render_template("onboarding/import_form.html", kind=_kind(kind), columns=imports.COLUMNS[kind])


@bp.get("/onboarding/import/<kind>/template.<ext>")
@requires(MEMBER)
def import_template(kind: str, ext: str) -> Any:
    """Download the template of one kind (CSV or XLSX)."""
    _kind(kind)
    if ext == "csv":
        return Response(imports.template_csv(kind), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="batchline-{kind}.csv"'})
    if ext == "xlsx":
        return Response(imports.template_xlsx(kind),
                        mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                        headers={"Content-Disposition": f'attachment; filename="batchline-{kind}.xlsx"'})
    abort(404)


@bp.post("/onboarding/import/<kind>")
@requires(MEMBER)
def import_upload(kind: str) -> Any:
    """Read the file and show the row-by-row preview; nothing is imported yet."""
    _kind(kind)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        flash("Choose a .csv or .xlsx file to upload.", "error")
        return render_template("onboarding/import_form.html", kind=kind, columns=imports.COLUMNS[kind]), 422
    data = upload.read(imports.MAX_BYTES + 1)
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            stored, _ = imports.preview_file(session, kind=kind, filename=upload.filename, data=data)
            import_id = stored.id
    except BatchlineError as exc:
        flash(str(exc), exc.flash_category)
        return render_template("onboarding/import_form.html", kind=kind, columns=imports.COLUMNS[kind]), \
            exc.status_code
    return redirect(url_for("onboarding_flow.import_preview", import_id=import_id), 303)


@bp.get("/onboarding/imports/<int:import_id>")
@requires(MEMBER)
def import_preview(import_id: int) -> Any:
    """The preview: every row with what will happen to it, and the errors with their reasons."""
    with tenant_transaction(g.tenant) as session:
        upload = session.get(DataImport, import_id)
        if upload is None:
            abort(404)
        _kind(upload.kind)
        preview = imports.preview_stored(session, upload) if upload.state == "previewed" else None
        return render_template("onboarding/import_preview.html", upload=upload, preview=preview,
                               columns=imports.COLUMNS[upload.kind]), _preview_status(preview)


def _preview_status(preview: imports.Preview | None) -> int:
    if preview is None or preview.clean:
        return 200
    return preview.refusal.status_code if preview.refusal is not None else 422


@bp.post("/onboarding/imports/<int:import_id>")
@requires(MEMBER)
def import_confirm(import_id: int) -> Any:
    """Import a clean file: every row in one audited transaction, or nothing."""
    with tenant_transaction(g.tenant) as session:
        upload = session.get(DataImport, import_id)
        if upload is None:
            raise NotFound(f"no import {import_id}")
        kind = _kind(upload.kind)
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            preview = imports.import_upload(session, import_id=import_id)
    except BatchlineError as exc:
        flash(str(exc), exc.flash_category)
        return redirect(url_for("onboarding_flow.import_preview", import_id=import_id), 303)
    flash(f"Imported {preview.count('new')} {kind}; {preview.count('present')} already present, skipped.", "ok")
    return redirect(url_for("onboarding_flow.import_preview", import_id=import_id), 303)
