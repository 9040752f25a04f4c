"""JSON API of the plant area under `/t/<slug>/api/v1/plant/...` (same permissions as the screens)."""

from __future__ import annotations

from typing import Any

from flask import g, url_for
from flask_login import current_user
from pydantic import BaseModel

from app import esign
from app.audit.deletion import refuse_deletions
from app.core.api import one, page, parse_body, register_api_errors, signing_credentials
from app.core.errors import NotFound
from app.core.tenancy import tenant_transaction
from app.core.validation import db_now
from app.core.web import MEMBER, problem, request_actor, requires, tenant_blueprint
from app.plant import queries, services
from app.plant.models import Equipment, Line, Sensor, Site
from app.plant.scan import resolve_scan
from app.plant.schemas import (
    CalibrationIn,
    EquipmentIn,
    EquipmentOut,
    LineIn,
    LineOut,
    LogEntryOut,
    QualificationIn,
    ReadinessOut,
    ScanOut,
    SensorIn,
    SensorOut,
    SiteIn,
    SiteOut,
    StatusChangeIn,
)

bp = tenant_blueprint("plant_api", __name__)
register_api_errors(bp)
PREFIX = "/api/v1/plant"


def _get(session: Any, model: type, record_id: int, what: str) -> Any:
    found = session.get(model, record_id)
    if found is None:
        raise NotFound(f"no {what} {record_id}")
    return found


def _created(body: dict[str, Any]) -> Any:
    return body, 201


def _signed(body: dict[str, Any], entry: Any) -> Any:
    if entry.signature_id is not None:
        esign.note_signature_made()
    return body, 201


def _write(fn: Any, body: BaseModel, out: type[BaseModel], **extra: Any) -> Any:
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        created = fn(session, **body.model_dump(), **extra)
        return _created(one(created, out))


@bp.get(f"{PREFIX}/sites")
@requires("plant.read")
def list_sites() -> Any:
    """List sites."""
    with tenant_transaction(g.tenant) as session:
        return page(list(session.scalars(queries.sites_query())), SiteOut)


@bp.post(f"{PREFIX}/sites")
@requires("plant.manage")
def create_site() -> Any:
    """Create a site."""
    return _write(services.create_site, parse_body(SiteIn), SiteOut)


@bp.get(f"{PREFIX}/sites/<int:site_id>")
@requires("plant.read")
def get_site(site_id: int) -> Any:
    """One site."""
    with tenant_transaction(g.tenant) as session:
        return one(_get(session, Site, site_id, "site"), SiteOut)


@bp.get(f"{PREFIX}/lines")
@requires("plant.read")
def list_lines() -> Any:
    """List lines and areas."""
    with tenant_transaction(g.tenant) as session:
        return page(list(session.scalars(queries.lines_query())), LineOut)


@bp.post(f"{PREFIX}/lines")
@requires("plant.manage")
def create_line() -> Any:
    """Create a line or area in a site."""
    return _write(services.create_line, parse_body(LineIn), LineOut)


@bp.get(f"{PREFIX}/lines/<int:line_id>")
@requires("plant.read")
def get_line(line_id: int) -> Any:
    """One line."""
    with tenant_transaction(g.tenant) as session:
        return one(_get(session, Line, line_id, "line"), LineOut)


@bp.get(f"{PREFIX}/lines/<int:line_id>/board")
@requires("plant.read")
def line_board(line_id: int) -> Any:
    """The line's status board: every item with its status and readiness now."""
    with tenant_transaction(g.tenant) as session:
        _get(session, Line, line_id, "line")
        now = db_now(session)
        return {"line_id": line_id, "at": now.isoformat(), "items": [
            {"equipment": one(t.equipment, EquipmentOut),
             "readiness": ReadinessOut(ready=t.readiness.ready, reasons=list(t.readiness.reasons), at=now)
             .model_dump(mode="json")}
            for t in queries.status_board(session, line_id, now)]}


@bp.get(f"{PREFIX}/equipment")
@requires("plant.read")
def list_equipment() -> Any:
    """List equipment (filters: line_id, status)."""
    from flask import request

    with tenant_transaction(g.tenant) as session:
        return page(list(session.scalars(queries.equipment_query(
            line_id=request.args.get("line_id", type=int), status=request.args.get("status") or None))),
            EquipmentOut)


@bp.post(f"{PREFIX}/equipment")
@requires("plant.manage")
def create_equipment() -> Any:
    """Register an equipment item."""
    return _write(services.create_equipment, parse_body(EquipmentIn), EquipmentOut)


@bp.get(f"{PREFIX}/equipment/<int:equipment_id>")
@requires("plant.read")
def get_equipment(equipment_id: int) -> Any:
    """One equipment item."""
    with tenant_transaction(g.tenant) as session:
        return one(_get(session, Equipment, equipment_id, "equipment"), EquipmentOut)


@bp.get(f"{PREFIX}/equipment/<int:equipment_id>/readiness")
@requires("plant.read")
def equipment_readiness(equipment_id: int) -> Any:
    """Ready now, or every reason the item may not be used."""
    with tenant_transaction(g.tenant) as session:
        found = queries.readiness_now(session, equipment_id)
        if found is None:
            raise NotFound(f"no equipment {equipment_id}")
        _, verdict, now = found
        return ReadinessOut(ready=verdict.ready, reasons=list(verdict.reasons), at=now).model_dump(mode="json")


@bp.get(f"{PREFIX}/equipment/<int:equipment_id>/logbook")
@requires("plant.read")
def equipment_logbook(equipment_id: int) -> Any:
    """The item's logbook, newest first."""
    with tenant_transaction(g.tenant) as session:
        _get(session, Equipment, equipment_id, "equipment")
        return page(queries.logbook(session, equipment_id), LogEntryOut)


@bp.post(f"{PREFIX}/equipment/<int:equipment_id>/status")
@requires("plant.manage")
def change_status(equipment_id: int) -> Any:
    """Change the item's status (a logbook entry with the reason)."""
    body = parse_body(StatusChangeIn)
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        entry = services.change_equipment_status(session, equipment_id=equipment_id, to_status=body.status,
                                                 reason=body.reason,
                                                 credentials=signing_credentials(body, current_user.id))
    return _signed(one(entry, LogEntryOut), entry)


@bp.post(f"{PREFIX}/equipment/<int:equipment_id>/calibration")
@requires("plant.manage")
def calibration(equipment_id: int) -> Any:
    """Record a calibration and the next due date."""
    body = parse_body(CalibrationIn)
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        entry = services.record_calibration(session, equipment_id=equipment_id, next_due=body.next_due,
                                            reason=body.reason, certificate=body.certificate,
                                            credentials=signing_credentials(body, current_user.id))
    return _signed(one(entry, LogEntryOut), entry)


@bp.post(f"{PREFIX}/equipment/<int:equipment_id>/qualification")
@requires("plant.manage")
def qualification(equipment_id: int) -> Any:
    """Record a qualification outcome and its expiry."""
    body = parse_body(QualificationIn)
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        entry = services.record_qualification(session, equipment_id=equipment_id,
                                              qualification_status=body.qualification_status,
                                              qualified_until=body.qualified_until, reason=body.reason,
                                              credentials=signing_credentials(body, current_user.id))
    return _signed(one(entry, LogEntryOut), entry)


@bp.get(f"{PREFIX}/sensors")
@requires("plant.read")
def list_sensors() -> Any:
    """List sensors (filter: equipment_id)."""
    from flask import request

    with tenant_transaction(g.tenant) as session:
        return page(list(session.scalars(queries.sensors_query(
            equipment_id=request.args.get("equipment_id", type=int)))), SensorOut)


@bp.post(f"{PREFIX}/sensors")
@requires("plant.manage")
def create_sensor() -> Any:
    """Register a sensor on an equipment item."""
    return _write(services.create_sensor, parse_body(SensorIn), SensorOut)


@bp.get(f"{PREFIX}/sensors/<int:sensor_id>")
@requires("plant.read")
def get_sensor(sensor_id: int) -> Any:
    """One sensor."""
    with tenant_transaction(g.tenant) as session:
        return one(_get(session, Sensor, sensor_id, "sensor"), SensorOut)


SCAN_ENDPOINTS = {"equipment": ("plant.equipment", "equipment_id"), "lot": ("materials.lot", "lot_id"),
                  "sensor": ("plant.sensor", "sensor_id"), "material": ("materials.material", "material_id"),
                  "line": ("plant.line", "line_id")}


def scan_target(kind: str, record_id: int) -> str:
    """The page of a scanned record."""
    endpoint, arg = SCAN_ENDPOINTS[kind]
    return url_for(endpoint, **{arg: record_id})


@bp.get("/api/v1/scan")
@requires(MEMBER)
def scan() -> Any:
    """Resolve a scanned label or typed code to the record it names."""
    from flask import request

    code = request.args.get("code", "")
    if not code.strip():
        return problem(422, "ValidationError", "give the scanned text as ?code=...")
    with tenant_transaction(g.tenant) as session:
        found = resolve_scan(session, code)
    if found is None:
        return problem(404, "Not Found", f"nothing in this tenant is labelled {code.strip()[:100]!r}")
    kind, record_id = found
    return ScanOut(kind=kind, id=record_id, label=code.strip(), url=scan_target(kind, record_id)).model_dump()


refuse_deletions(bp, permission="plant.manage", rules={f"{PREFIX}/sites/<int:record_id>": "site",
                                                       f"{PREFIX}/lines/<int:record_id>": "line",
                                                       f"{PREFIX}/equipment/<int:record_id>": "equipment",
                                                       f"{PREFIX}/sensors/<int:record_id>": "sensor"})
