"""Materials screens: materials, lots with their ledger and QA disposition, genealogy trace, lot labels."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user

from app import esign
from app.core.errors import BatchlineError, ValidationError
from app.core.tenancy import tenant_transaction
from app.core.validation import db_now
from app.core.web import request_actor, requires, tenant_blueprint
from app.materials import queries, services
from app.materials.models import LOT_STATUSES, LOT_TRANSITIONS, MATERIAL_TYPES, MOVEMENT_KINDS, Material
from app.materials.usability import lot_expired
from app.plant.labels import SYMBOLOGIES, Label, labels_pdf
from app.plant.scan import label_code
from app.plant.views import form, pdf_response

bp = tenant_blueprint("materials", __name__, template_folder="templates")

MATERIAL_KEYS = ("code", "name", "material_type", "unit", "storage_conditions", "shelf_life_days")
LOT_KEYS = ("lot_number", "quantity", "received_on", "supplier", "supplier_lot", "expiry_date", "retest_date")


@bp.get("/materials/")
@requires("materials.read")
def index() -> Any:
    """Materials and the latest lots."""
    with tenant_transaction(g.tenant) as session:
        today = db_now(session).date()
        materials = list(session.scalars(queries.materials_query()))
        lots = list(session.scalars(queries.lots_query(status=request.args.get("status") or None,
                                                       search=request.args.get("q") or None, limit=100)))
        return render_template("materials/index.html", materials=materials, lots=lots, today=today,
                               types=MATERIAL_TYPES, statuses=LOT_STATUSES, expired=lot_expired)


def render_material_form(values: dict[str, Any], status: int = 200, template: str = "materials/material_form.html",
                         **extra: Any) -> Any:
    """The material form (also used by the onboarding flow)."""
    return render_template(template, values=values, types=list(MATERIAL_TYPES.items()), **extra), status


@bp.route("/materials/new", methods=["GET", "POST"])
@requires("materials.manage")
def material_new() -> Any:
    """Create a material."""
    if request.method == "GET":
        return render_material_form({"material_type": "raw"})
    values = form()
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            material = services.create_material(session, **{k: values.get(k, "") for k in MATERIAL_KEYS})
    except BatchlineError as exc:
        flash(str(exc), "error")
        return render_material_form(values, exc.status_code)
    flash(f"Material {material.code} created.", "ok")
    return redirect(url_for("materials.material", material_id=material.id))


@bp.get("/materials/<int:material_id>")
@requires("materials.read")
def material(material_id: int) -> Any:
    """A material and its lots."""
    with tenant_transaction(g.tenant) as session:
        found = session.get(Material, material_id)
        if found is None:
            abort(404)
        lots = list(session.scalars(queries.lots_query(material_id=material_id)))
        return render_template("materials/material.html", material=found, lots=lots, types=MATERIAL_TYPES,
                               statuses=LOT_STATUSES, today=db_now(session).date(), expired=lot_expired)


def _materials(session: Any) -> list[tuple[str, str]]:
    return [(str(m.id), f"{m.code} — {m.name} ({m.unit})") for m in session.scalars(queries.materials_query())]


def _render_lot_form(values: dict[str, Any], status: int = 200, *, produced: bool = False) -> Any:
    with tenant_transaction(g.tenant) as session:
        materials = _materials(session)
    return render_template("materials/lot_form.html", values=values, materials=materials, produced=produced), status


@bp.route("/materials/lots/receive", methods=["GET", "POST"])
@requires("materials.manage")
def lot_receive() -> Any:
    """Receive a supplier lot into quarantine."""
    if request.method == "GET":
        return _render_lot_form({"material_id": request.args.get("material_id", "")})
    values = form()
    try:
        material_id = int(values.get("material_id") or 0)
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            lot = services.receive_lot(session, material_id=material_id, **{k: values.get(k, "") for k in LOT_KEYS})
    except BatchlineError as exc:
        flash(str(exc), "error")
        return _render_lot_form(values, exc.status_code)
    flash(f"Lot {lot.lot_number} received into quarantine.", "ok")
    return redirect(url_for("materials.lot", lot_id=lot.id))


@bp.route("/materials/lots/produced", methods=["GET", "POST"])
@requires("materials.manage")
def lot_produced() -> Any:
    """Record a lot produced by a batch."""
    if request.method == "GET":
        return _render_lot_form({}, produced=True)
    values = form()
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            lot = services.produce_lot(session, material_id=int(values.get("material_id") or 0),
                                       lot_number=values.get("lot_number", ""), quantity=values.get("quantity"),
                                       batch_number=values.get("batch_number", ""),
                                       produced_on=values.get("received_on"), expiry_date=values.get("expiry_date"))
    except BatchlineError as exc:
        flash(str(exc), "error")
        return _render_lot_form(values, exc.status_code, produced=True)
    flash(f"Lot {lot.lot_number} recorded as produced by batch {lot.produced_by_batch}.", "ok")
    return redirect(url_for("materials.lot", lot_id=lot.id))


@bp.get("/materials/lots/<int:lot_id>")
@requires("materials.read")
def lot(lot_id: int) -> Any:
    """A lot: status, balance, ledger, dispositions, actions."""
    with tenant_transaction(g.tenant) as session:
        found = queries.lot_with_material(session, lot_id)
        if found is None:
            abort(404)
        today = db_now(session).date()
        history = queries.lot_status_history(session, lot_id)
        return render_template(
            "materials/lot.html", lot=found, material=found.material, expired=lot_expired(found, today),
            movements=queries.lot_movements(session, lot_id), history=history,
            signatures=queries.disposition_signatures(session, history),
            require_user_id=esign.identification_required(), statuses=LOT_STATUSES, kinds=MOVEMENT_KINDS,
            next_statuses=[(s, LOT_STATUSES[s]) for s in sorted(LOT_TRANSITIONS[found.status])])


def _lot_action(lot_id: int, action: Any, done: str, *, signed: bool = False) -> Any:
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            action(session)
    except BatchlineError as exc:
        flash(str(exc), "error")
        return redirect(url_for("materials.lot", lot_id=lot_id)), 303
    if signed:
        esign.note_signature_made()
    flash(done, "ok")
    return redirect(url_for("materials.lot", lot_id=lot_id)), 303


@bp.post("/materials/lots/<int:lot_id>/status")
@requires("materials.disposition")
def lot_status(lot_id: int) -> Any:
    """QA disposition of the lot."""
    values = form()
    credentials = {"user_id": current_user.id, **esign.signing_credentials(request.form)}
    return _lot_action(lot_id, lambda s: services.change_lot_status(
        s, lot_id=lot_id, to_status=values.get("status", ""), reason=values.get("reason", ""),
        credentials=credentials), f"Lot status changed to {values.get('status', '')} (signed).", signed=True)


@bp.post("/materials/lots/<int:lot_id>/consume")
@requires("materials.manage")
def lot_consume(lot_id: int) -> Any:
    """Consume from the lot into a batch."""
    values = form()
    return _lot_action(lot_id, lambda s: services.consume_lot(
        s, lot_id=lot_id, quantity=values.get("quantity"), batch_number=values.get("batch_number", "")),
        "Consumption recorded.")


@bp.post("/materials/lots/<int:lot_id>/adjust")
@requires("materials.manage")
def lot_adjust(lot_id: int) -> Any:
    """Adjust the lot's balance with a reason."""
    values = form()
    return _lot_action(lot_id, lambda s: services.adjust_lot(
        s, lot_id=lot_id, quantity=values.get("quantity"), reason=values.get("reason", "")), "Adjustment recorded.")


@bp.get("/materials/lots/<int:lot_id>/trace")
@requires("materials.read")
def lot_trace(lot_id: int) -> Any:
    """Forward and backward genealogy with the recall impact, on one screen."""
    with tenant_transaction(g.tenant) as session:
        found = queries.trace_lot(session, lot_id)
        if found is None:
            abort(404)
        return render_template("materials/trace.html", trace=found.as_dict(), statuses=LOT_STATUSES,
                               types=MATERIAL_TYPES)


@bp.get("/materials/lots/<int:lot_id>/labels.pdf")
@requires("materials.read")
def lot_labels_pdf(lot_id: int) -> Any:
    """Lot label, or one label per container (`?containers=N`), as a PDF."""
    symbology = request.args.get("symbology", "qr")
    if symbology not in SYMBOLOGIES:
        raise ValidationError(f"unknown symbology {symbology!r}; use one of {', '.join(SYMBOLOGIES)}")
    containers = request.args.get("containers", "0")
    if not containers.isdigit() or int(containers) > 500:
        raise ValidationError("containers must be a whole number from 0 to 500")
    with tenant_transaction(g.tenant) as session:
        found = queries.lot_with_material(session, lot_id)
        if found is None:
            abort(404)
        material = found.material
        base = [f"{material.code} {material.name}", f"Exp {found.expiry_date or '—'} · {found.supplier or 'produced'}"]
        count = int(containers)
        if count:
            labels = [Label(title=found.lot_number, code=label_code("lot", found.lot_number, container=(i, count)),
                            lines=[*base, f"Container {i} of {count}"]) for i in range(1, count + 1)]
        else:
            labels = [Label(title=found.lot_number, code=label_code("lot", found.lot_number), lines=base)]
    return pdf_response(labels_pdf(labels, symbology), f"{found.lot_number}-labels.pdf")
