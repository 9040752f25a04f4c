"""JSON API of the materials area under `/t/<slug>/api/v1/materials/...` (same permissions as the screens)."""

from __future__ import annotations

from typing import Any

from flask import g, request
from flask_login import current_user

from app import esign
from app.audit.deletion import refuse_deletions
from app.core.api import one, page, parse_body, register_api_errors, signing_credentials
from app.core.errors import NotFound, ValidationError
from app.core.tenancy import tenant_transaction
from app.core.validation import clean_decimal, db_now
from app.core.web import request_actor, requires, tenant_blueprint
from app.materials import queries, services
from app.materials.models import Material
from app.materials.schemas import (
    LotIn,
    LotOut,
    LotStatusIn,
    LotStatusOut,
    MaterialIn,
    MaterialOut,
    MovementIn,
    MovementOut,
    ProducedLotIn,
    UsabilityOut,
)
from app.materials.usability import lot_expired, lot_usable

bp = tenant_blueprint("materials_api", __name__)
register_api_errors(bp)
PREFIX = "/api/v1/materials"


def lot_out(lot: Any, today: Any) -> dict[str, Any]:
    """A lot with its derived `expired` flag."""
    body = one(lot, LotOut)
    body["expired"] = lot_expired(lot, today)
    return body


@bp.get(f"{PREFIX}/materials")
@requires("materials.read")
def list_materials() -> Any:
    """List materials (filters: type, q)."""
    with tenant_transaction(g.tenant) as session:
        return page(list(session.scalars(queries.materials_query(
            material_type=request.args.get("type"), search=request.args.get("q")))), MaterialOut)


@bp.post(f"{PREFIX}/materials")
@requires("materials.manage")
def create_material() -> Any:
    """Create a material."""
    body = parse_body(MaterialIn)
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        return one(services.create_material(session, **body.model_dump()), MaterialOut), 201


@bp.get(f"{PREFIX}/materials/<int:material_id>")
@requires("materials.read")
def get_material(material_id: int) -> Any:
    """One material."""
    with tenant_transaction(g.tenant) as session:
        material = session.get(Material, material_id)
        if material is None:
            raise NotFound(f"no material {material_id}")
        return one(material, MaterialOut)


@bp.get(f"{PREFIX}/lots")
@requires("materials.read")
def list_lots() -> Any:
    """List lots, newest first (filters: material_id, status, q)."""
    with tenant_transaction(g.tenant) as session:
        today = db_now(session).date()
        lots = session.scalars(queries.lots_query(material_id=request.args.get("material_id", type=int),
                                                  status=request.args.get("status"), search=request.args.get("q")))
        items = [lot_out(lot, today) for lot in lots]
        return {"items": items, "count": len(items)}


@bp.post(f"{PREFIX}/lots")
@requires("materials.manage")
def receive_lot() -> Any:
    """Receive a supplier lot into quarantine."""
    body = parse_body(LotIn)
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        lot = services.receive_lot(session, **body.model_dump())
        return lot_out(lot, db_now(session).date()), 201


@bp.post(f"{PREFIX}/lots/produced")
@requires("materials.manage")
def produce_lot() -> Any:
    """Record a lot produced by a batch."""
    body = parse_body(ProducedLotIn)
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        lot = services.produce_lot(session, **body.model_dump())
        return lot_out(lot, db_now(session).date()), 201


def _lot(session: Any, lot_id: int) -> Any:
    lot = queries.lot_with_material(session, lot_id)
    if lot is None:
        raise NotFound(f"no lot {lot_id}")
    return lot


@bp.get(f"{PREFIX}/lots/<int:lot_id>")
@requires("materials.read")
def get_lot(lot_id: int) -> Any:
    """One lot."""
    with tenant_transaction(g.tenant) as session:
        return lot_out(_lot(session, lot_id), db_now(session).date())


@bp.get(f"{PREFIX}/lots/<int:lot_id>/movements")
@requires("materials.read")
def lot_movements(lot_id: int) -> Any:
    """The lot's ledger, oldest first."""
    with tenant_transaction(g.tenant) as session:
        _lot(session, lot_id)
        return page(queries.lot_movements(session, lot_id), MovementOut)


@bp.post(f"{PREFIX}/lots/<int:lot_id>/movements")
@requires("materials.manage")
def move_lot(lot_id: int) -> Any:
    """Consume from the lot into a batch, or adjust its balance with a reason."""
    body = parse_body(MovementIn)
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        if body.kind == "consume":
            if not body.batch_number:
                raise ValidationError("batch_number is required to consume a lot")
            movement = services.consume_lot(session, lot_id=lot_id, quantity=body.quantity,
                                            batch_number=body.batch_number, material_id=body.material_id)
        else:
            movement = services.adjust_lot(session, lot_id=lot_id, quantity=body.quantity, reason=body.reason)
        return one(movement, MovementOut), 201


@bp.post(f"{PREFIX}/lots/<int:lot_id>/status")
@requires("materials.disposition")
def change_status(lot_id: int) -> Any:
    """QA disposition: release, reject or put back into quarantine, with the reason."""
    body = parse_body(LotStatusIn)
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        change = services.change_lot_status(session, lot_id=lot_id, to_status=body.status, reason=body.reason,
                                            credentials=signing_credentials(body, current_user.id))
    esign.note_signature_made()
    return one(change, LotStatusOut), 201


@bp.get(f"{PREFIX}/lots/<int:lot_id>/usable")
@requires("materials.read")
def usable(lot_id: int) -> Any:
    """Whether `quantity` of the lot may be used now as `material_id` (defaults: the lot's material)."""
    quantity = clean_decimal(request.args.get("quantity"), "quantity", positive=True)
    with tenant_transaction(g.tenant) as session:
        lot = _lot(session, lot_id)
        material_id = request.args.get("material_id", type=int) or lot.material_id
        now = db_now(session)
        verdict = lot_usable(lot, material_id, quantity, now)  # type: ignore[arg-type]
        return UsabilityOut(usable=verdict.usable, at=now,
                            reasons=[{"code": r.code, "message": r.message} for r in verdict.reasons]
                            ).model_dump(mode="json")


@bp.get(f"{PREFIX}/lots/<int:lot_id>/trace")
@requires("materials.read")
def trace(lot_id: int) -> Any:
    """Forward and backward genealogy of the lot, with the recall impact (every finished lot and its status)."""
    with tenant_transaction(g.tenant) as session:
        found = queries.trace_lot(session, lot_id)
        if found is None:
            raise NotFound(f"no lot {lot_id}")
        return found.as_dict()


refuse_deletions(bp, permission="materials.manage", rules={f"{PREFIX}/<int:record_id>": "material",
                                                           f"{PREFIX}/lots/<int:record_id>": "lot"})
