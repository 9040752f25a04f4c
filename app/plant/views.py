"""Plant screens: sites, lines with their status boards, equipment with logbooks, sensors, labels, scanning."""

from __future__ import annotations

from typing import Any

from flask import Response, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user

from app import esign
from app.core.errors import BatchlineError, NotFound
from app.core.tenancy import tenant_transaction
from app.core.validation import db_now
from app.core.web import MEMBER, request_actor, requires, tenant_blueprint
from app.plant import queries, services
from app.plant.labels import SYMBOLOGIES, Label, labels_pdf
from app.plant.models import (
    EQUIPMENT_CLASSES,
    EQUIPMENT_STATUSES,
    QUALIFICATION_STATUSES,
    SIGNATURE_ROUTES,
    STATUS_TRANSITIONS,
    Line,
    Sensor,
    Site,
)
from app.plant.readiness import equipment_ready
from app.plant.scan import label_code, resolve_scan

bp = tenant_blueprint("plant", __name__, template_folder="templates")

COMMON_TIMEZONES = ["Europe/Zurich", "Europe/Berlin", "Europe/Paris", "Europe/London", "Europe/Dublin",
                    "America/New_York", "America/Chicago", "America/Los_Angeles", "Asia/Singapore", "Asia/Tokyo",
                    "Australia/Sydney", "UTC"]
SENSOR_KINDS = ["temperature", "pH", "dissolved oxygen", "pressure", "agitation", "mass", "flow", "conductivity",
                "level", "CO2", "humidity", "differential pressure"]


def form() -> dict[str, str]:
    """The posted form as plain strings (CSRF token dropped)."""
    return {k: v for k, v in request.form.items() if k != "csrf_token"}


def choices(mapping: dict[str, str]) -> list[tuple[str, str]]:
    """(value, text) pairs for a select."""
    return list(mapping.items())


@bp.get("/plant/")
@requires("plant.read")
def index() -> Any:
    """Sites and their lines."""
    with tenant_transaction(g.tenant) as session:
        sites = list(session.scalars(queries.sites_query()))
        counts = {line.id: len(line.equipment) for site in sites for line in site.lines}
        return render_template("plant/index.html", sites=sites, counts=counts)


def site_form_values(values: dict[str, str]) -> dict[str, Any]:
    return {"code": values.get("code", ""), "name": values.get("name", ""), "timezone": values.get("timezone", ""),
            "address": values.get("address", ""), "regulatory_profile": values.get("regulatory_profile", ""),
            "signature_routes": request.form.getlist("signature_routes"),
            "sop_references": [s for s in values.get("sop_references", "").splitlines() if s.strip()]}


def render_site_form(values: dict[str, Any], status: int = 200, template: str = "plant/site_form.html",
                     **extra: Any) -> Any:
    """The site form (also used by the onboarding flow)."""
    return render_template(template, values=values, timezones=COMMON_TIMEZONES,
                           routes=choices(SIGNATURE_ROUTES), **extra), status


@bp.route("/plant/sites/new", methods=["GET", "POST"])
@requires("plant.manage")
def site_new() -> Any:
    """Create a site."""
    if request.method == "GET":
        return render_site_form({"timezone": "Europe/Zurich"})
    values = form()
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            site = services.create_site(session, **site_form_values(values))
    except BatchlineError as exc:
        flash(str(exc), "error")
        return render_site_form(values, exc.status_code)
    flash(f"Site {site.code} created.", "ok")
    return redirect(url_for("plant.site", site_id=site.id))


@bp.get("/plant/sites/<int:site_id>")
@requires("plant.read")
def site(site_id: int) -> Any:
    """A site with its lines."""
    return _site_page(site_id, {"kind": "line"})


def _site_page(site_id: int, line_values: dict[str, str], status: int = 200) -> Any:
    with tenant_transaction(g.tenant) as session:
        found = session.get(Site, site_id)
        if found is None:
            abort(404)
        return render_template("plant/site.html", site=found, lines=found.lines, routes=SIGNATURE_ROUTES,
                               line_values=line_values), status


@bp.post("/plant/sites/<int:site_id>/lines")
@requires("plant.manage")
def line_new(site_id: int) -> Any:
    """Add a line or area to a site."""
    values = form()
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            line = services.create_line(session, site_id=site_id, code=values.get("code", ""),
                                        name=values.get("name", ""), kind=values.get("kind", "line"))
    except BatchlineError as exc:
        flash(str(exc), exc.flash_category)
        return _site_page(site_id, values, exc.status_code)  # the form keeps what was typed
    flash(f"Line {line.code} created.", "ok")
    return redirect(url_for("plant.line", line_id=line.id))


@bp.get("/plant/lines/<int:line_id>")
@requires("plant.read")
def line(line_id: int) -> Any:
    """The line's status board: one tile per item, red/amber/green at a glance."""
    with tenant_transaction(g.tenant) as session:
        found = session.get(Line, line_id)
        if found is None:
            abort(404)
        now = db_now(session)
        tiles = queries.status_board(session, line_id, now)
        return render_template("plant/board.html", line=found, site=found.site, tiles=tiles, now=now,
                               statuses=EQUIPMENT_STATUSES, classes=EQUIPMENT_CLASSES)


def equipment_form_values(values: dict[str, str]) -> dict[str, Any]:
    keys = ("tag", "name", "equipment_class", "capacity", "capacity_unit", "clean_hold_hours", "calibration_due",
            "qualification_status", "qualified_until", "status")
    out: dict[str, Any] = {k: values.get(k, "") for k in keys}
    out["single_use"] = values.get("single_use", "")
    out["line_id"] = int(values["line_id"]) if values.get("line_id", "").isdigit() else 0
    return out


def render_equipment_form(values: dict[str, Any], status: int = 200,
                          template: str = "plant/equipment_form.html", **extra: Any) -> Any:
    """The equipment form (also used by the onboarding flow)."""
    with tenant_transaction(g.tenant) as session:
        lines = [(str(ln.id), f"{ln.code} — {ln.name} ({ln.site.code})")
                 for ln in session.scalars(queries.lines_query())]
    return render_template(template, values=values, lines=lines, classes=choices(EQUIPMENT_CLASSES),
                           qualifications=choices(QUALIFICATION_STATUSES),
                           initial=[(s, EQUIPMENT_STATUSES[s]) for s in services.INITIAL_STATUSES], **extra), status


@bp.route("/plant/equipment/new", methods=["GET", "POST"])
@requires("plant.manage")
def equipment_new() -> Any:
    """Register an equipment item."""
    if request.method == "GET":
        return render_equipment_form({"line_id": request.args.get("line_id", ""), "qualification_status": "qualified",
                                      "status": "dirty", "equipment_class": "bioreactor"})
    values = form()
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            equipment = services.create_equipment(session, **equipment_form_values(values))
    except BatchlineError as exc:
        flash(str(exc), "error")
        return render_equipment_form(values, exc.status_code)
    flash(f"Equipment {equipment.tag} registered.", "ok")
    return redirect(url_for("plant.equipment", equipment_id=equipment.id))


@bp.get("/plant/equipment/<int:equipment_id>")
@requires("plant.read")
def equipment(equipment_id: int) -> Any:
    """An item: readiness, status actions, logbook, sensors."""
    with tenant_transaction(g.tenant) as session:
        found = queries.equipment_detail(session, equipment_id)
        if found is None:
            abort(404)
        now = db_now(session)
        log = queries.logbook(session, equipment_id)
        return render_template(
            "plant/equipment.html", eq=found, readiness=equipment_ready(found, now), now=now,
            log=log, signatures=queries.logbook_signatures(session, log), statuses=EQUIPMENT_STATUSES,
            classes=EQUIPMENT_CLASSES, require_user_id=esign.identification_required(),
            routed={action: services.signature_required(session, found, action)
                    for action in services.SIGNATURE_MEANINGS},
            next_statuses=[(s, EQUIPMENT_STATUSES[s]) for s in sorted(STATUS_TRANSITIONS[found.status])],
            qualifications=choices(QUALIFICATION_STATUSES))


def credentials() -> dict[str, Any] | None:
    """The signing credentials of a posted form that carries the signature fields (else None)."""
    if "signature_password" not in request.form:
        return None
    return {"user_id": current_user.id, **esign.signing_credentials(request.form)}


def _equipment_action(equipment_id: int, action: Any, done: str) -> Any:
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            entry = action(session)
    except BatchlineError as exc:
        flash(str(exc), "error")
        return redirect(url_for("plant.equipment", equipment_id=equipment_id)), 303
    if getattr(entry, "signature_id", None):
        esign.note_signature_made()
    flash(done, "ok")
    return redirect(url_for("plant.equipment", equipment_id=equipment_id)), 303


@bp.post("/plant/equipment/<int:equipment_id>/status")
@requires("plant.manage")
def equipment_status(equipment_id: int) -> Any:
    """Change the status (logbook entry with reason)."""
    values = form()
    return _equipment_action(equipment_id, lambda s: services.change_equipment_status(
        s, equipment_id=equipment_id, to_status=values.get("status", ""), reason=values.get("reason", ""),
        credentials=credentials()),
        f"Status changed to {EQUIPMENT_STATUSES.get(values.get('status', ''), '?').lower()}.")


@bp.post("/plant/equipment/<int:equipment_id>/calibration")
@requires("plant.manage")
def equipment_calibration(equipment_id: int) -> Any:
    """Record a calibration."""
    values = form()
    return _equipment_action(equipment_id, lambda s: services.record_calibration(
        s, equipment_id=equipment_id, next_due=values.get("next_due"), reason=values.get("reason", ""),
        certificate=values.get("certificate", ""), credentials=credentials()), "Calibration recorded.")


@bp.post("/plant/equipment/<int:equipment_id>/qualification")
@requires("plant.manage")
def equipment_qualification(equipment_id: int) -> Any:
    """Record a qualification outcome."""
    values = form()
    return _equipment_action(equipment_id, lambda s: services.record_qualification(
        s, equipment_id=equipment_id, qualification_status=values.get("qualification_status", ""),
        qualified_until=values.get("qualified_until"), reason=values.get("reason", ""), credentials=credentials()),
        "Qualification recorded.")


@bp.post("/plant/equipment/<int:equipment_id>/notes")
@requires("plant.manage")
def equipment_note(equipment_id: int) -> Any:
    """Add a logbook note."""
    values = form()
    return _equipment_action(equipment_id, lambda s: services.add_logbook_note(
        s, equipment_id=equipment_id, note=values.get("note", "")), "Note added to the logbook.")


def render_sensor_form(values: dict[str, Any], status: int = 200, template: str = "plant/sensor_form.html",
                       **extra: Any) -> Any:
    """The sensor form (also used by the onboarding flow)."""
    with tenant_transaction(g.tenant) as session:
        equipment = [(str(e.id), f"{e.tag} — {e.name}") for e in session.scalars(queries.equipment_query())]
    return render_template(template, values=values, equipment=equipment, kinds=SENSOR_KINDS, **extra), status


def sensor_form_values(values: dict[str, str]) -> dict[str, Any]:
    """Service arguments from the sensor form."""
    keys = ("tag", "quantity_kind", "unit", "range_low", "range_high", "sampling_period_s")
    out: dict[str, Any] = {k: values.get(k, "") for k in keys}
    out["equipment_id"] = int(values["equipment_id"]) if values.get("equipment_id", "").isdigit() else 0
    return out


@bp.route("/plant/sensors/new", methods=["GET", "POST"])
@requires("plant.manage")
def sensor_new() -> Any:
    """Register a sensor."""
    if request.method == "GET":
        return render_sensor_form({"equipment_id": request.args.get("equipment_id", ""), "sampling_period_s": "10"})
    values = form()
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            sensor = services.create_sensor(session, **sensor_form_values(values))
    except BatchlineError as exc:
        flash(str(exc), exc.flash_category)
        return render_sensor_form(values, exc.status_code)
    flash(f"Sensor {sensor.tag} registered.", "ok")
    return redirect(url_for("plant.equipment", equipment_id=sensor.equipment_id))


@bp.get("/plant/sensors/<int:sensor_id>")
@requires("plant.read")
def sensor(sensor_id: int) -> Any:
    """One sensor."""
    with tenant_transaction(g.tenant) as session:
        found = session.get(Sensor, sensor_id)
        if found is None:
            abort(404)
        return render_template("plant/sensor.html", sensor=found, eq=found.equipment)


def _symbology() -> str:
    symbology = request.args.get("symbology", "qr")
    if symbology not in SYMBOLOGIES:
        raise NotFound(f"unknown symbology {symbology!r}; use one of {', '.join(SYMBOLOGIES)}")
    return symbology


def pdf_response(pdf: bytes, filename: str) -> Response:
    """A PDF shown inline (the browser's print dialog sends it to the label printer)."""
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{filename}"', "Cache-Control": "no-store"})


def equipment_label(eq: Any) -> Label:
    """The label of an equipment item."""
    return Label(title=eq.tag, code=label_code("equipment", eq.tag),
                 lines=[eq.name, f"{EQUIPMENT_CLASSES.get(eq.equipment_class, eq.equipment_class)} · {eq.line.code}"])


@bp.get("/plant/equipment/<int:equipment_id>/label.pdf")
@requires("plant.read")
def equipment_label_pdf(equipment_id: int) -> Any:
    """Printable label of one item."""
    symbology = _symbology()
    with tenant_transaction(g.tenant) as session:
        found = queries.equipment_detail(session, equipment_id)
        if found is None:
            abort(404)
        label = equipment_label(found)
    return pdf_response(labels_pdf([label], symbology), f"{found.tag}.pdf")


@bp.get("/plant/lines/<int:line_id>/labels.pdf")
@requires("plant.read")
def line_labels_pdf(line_id: int) -> Any:
    """Labels of every item of a line (and its sensors)."""
    symbology = _symbology()
    with tenant_transaction(g.tenant) as session:
        found = session.get(Line, line_id)
        if found is None:
            abort(404)
        items = list(session.scalars(queries.equipment_query(line_id=line_id)))
        labels = [equipment_label(e) for e in items]
        labels += [Label(title=s.tag, code=label_code("sensor", s.tag), lines=[f"{s.quantity_kind} ({s.unit})",
                                                                               f"on {e.tag}"])
                   for e in items for s in e.sensors]
    if not labels:
        raise NotFound(f"line {found.code} has no equipment to label yet")
    return pdf_response(labels_pdf(labels, symbology), f"{found.code}-labels.pdf")


@bp.get("/scan")
@requires(MEMBER)
def scan() -> Any:
    """The scan field's target: go to the record a scanned label names."""
    from app.plant.api import scan_target

    code = request.args.get("code", "")
    if not code.strip():
        return render_template("plant/scan.html", code="")
    with tenant_transaction(g.tenant) as session:
        found = resolve_scan(session, code)
    if found is None:
        flash(f"Nothing in this tenant is labelled {code.strip()[:100]!r}.", "error")
        return render_template("plant/scan.html", code=code), 404
    return redirect(scan_target(*found))
