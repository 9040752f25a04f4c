"""State changes of plant records. Keyword-only, typed; they flush and never commit (the caller's transaction
holds the record, its logbook entry and its audit event together)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app import esign
from app.audit.services import current_actor, record
from app.billing.services import register_usage_counter, require_capacity
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.validation import (
    clean_bool,
    clean_choice,
    clean_code,
    clean_date,
    clean_decimal,
    clean_int,
    clean_text,
    clean_timezone,
    db_now,
)
from app.plant.models import (
    EQUIPMENT_CLASSES,
    EQUIPMENT_STATUSES,
    QUALIFICATION_STATUSES,
    SIGNATURE_ROUTES,
    STATUS_TRANSITIONS,
    Equipment,
    EquipmentLogEntry,
    Line,
    Sensor,
    Site,
    equipment_log_content,
)

#: Statuses a new item may start in (in use is only ever set by a batch).
INITIAL_STATUSES = ("dirty", "clean", "maintenance", "out_of_service")


def count_lines(session: Session, _tenant_id: int) -> int:
    """Production lines of the tenant (what the plan sells; areas that group rooms are not counted)."""
    return session.scalar(select(func.count()).select_from(Line).where(Line.kind == "line")) or 0


def count_sensors(session: Session, _tenant_id: int) -> int:
    """Sensors of the tenant."""
    return session.scalar(select(func.count()).select_from(Sensor)) or 0


# Plant owns lines and sensors: billing counts them with these, inside the tenant's transaction.
register_usage_counter("lines", count_lines, plane="tenant")
register_usage_counter("sensors", count_sensors, plane="tenant")


def _tenant_id(session: Session) -> int:
    return session.info["tenant"].id


def _actor(session: Session) -> tuple[int | None, str]:
    actor = current_actor(session)
    return actor.member_id, actor.label[:300]


def _unique(session: Session, column: Any, value: str, what: str) -> None:
    if session.scalar(select(column.class_.id).where(column == value)) is not None:
        raise Conflict(f"{what} {value!r} already exists")


def _snapshot(obj: Any, *fields: str) -> dict[str, Any]:
    return {f: getattr(obj, f) for f in fields}


def create_site(session: Session, *, code: str, name: str, timezone: str, address: str = "",
                regulatory_profile: str = "", signature_routes: Iterable[str] = (),
                sop_references: Iterable[str] = ()) -> Site:
    """Create a site with its timezone and regulatory profile (which actions need an e-signature)."""
    code = clean_code(code, "site code", max_len=40)
    routes = sorted({clean_choice(r, "signature route", SIGNATURE_ROUTES) for r in signature_routes})
    sops = [clean_text(s, "SOP reference", max_len=200) for s in sop_references if str(s).strip()]
    site = Site(code=code, name=clean_text(name, "site name", max_len=200), timezone=clean_timezone(timezone),
                address=clean_text(address, "address", max_len=2000, required=False),
                regulatory_profile=clean_text(regulatory_profile, "regulatory profile", max_len=200, required=False),
                signature_routes=routes, sop_references=sops, created_by=_actor(session)[0])
    _unique(session, Site.code, code, "site")
    session.add(site)
    session.flush()
    record(session, action="create", record_type="site", record_id=site.id,
           new=_snapshot(site, "code", "name", "timezone", "address", "regulatory_profile", "signature_routes",
                         "sop_references"))
    return site


def create_line(session: Session, *, site_id: int, code: str, name: str, kind: str = "line") -> Line:
    """Create an area or line in a site."""
    site = session.get(Site, site_id)
    if site is None:
        raise NotFound(f"no site {site_id}")
    code = clean_code(code, "line code", max_len=40)
    name = clean_text(name, "line name", max_len=200)
    kind = clean_choice(kind, "kind", ("line", "area"))
    _unique(session, Line.code, code, "line")
    if kind == "line":
        require_capacity(session, tenant_id=_tenant_id(session), entitlement="lines")
    line = Line(site_id=site.id, code=code, name=name, kind=kind, created_by=_actor(session)[0])
    session.add(line)
    session.flush()
    record(session, action="create", record_type="line", record_id=line.id,
           new={"site": site.code, **_snapshot(line, "code", "name", "kind")})
    return line


def create_equipment(session: Session, *, tag: str, name: str, equipment_class: str, line_id: int,
                     capacity: Any = None, capacity_unit: str = "", single_use: Any = False,
                     clean_hold_hours: Any = None, calibration_due: Any = None,
                     qualification_status: str = "not_qualified", qualified_until: Any = None,
                     status: str = "dirty") -> Equipment:
    """Register an equipment item on a line; its first logbook entry records the initial status."""
    line = session.get(Line, line_id)
    if line is None:
        raise NotFound(f"no line {line_id}")
    tag = clean_code(tag, "equipment tag", max_len=60)
    capacity_value = clean_decimal(capacity, "capacity", required=False, positive=True)
    unit = clean_text(capacity_unit, "capacity unit", max_len=20, required=False)
    if capacity_value is not None and not unit:
        raise ValidationError("capacity unit is required when a capacity is given (e.g. L, kg)")
    initial = clean_choice(status or "dirty", "initial status", INITIAL_STATUSES)
    now = db_now(session)
    member_id, label = _actor(session)
    equipment = Equipment(
        tag=tag, name=clean_text(name, "equipment name", max_len=200),
        equipment_class=clean_choice(equipment_class, "equipment class", EQUIPMENT_CLASSES),
        line_id=line.id, capacity=capacity_value, capacity_unit=unit,
        single_use=clean_bool(single_use, "single use"),
        clean_hold_hours=clean_int(clean_hold_hours, "clean-hold hours"),
        calibration_due=clean_date(calibration_due, "calibration due"),
        qualification_status=clean_choice(qualification_status or "not_qualified", "qualification status",
                                          QUALIFICATION_STATUSES),
        qualified_until=clean_date(qualified_until, "qualified until"),
        status=initial, status_changed_at=now, cleaned_at=now if initial == "clean" else None,
        created_by=member_id,
    )
    _unique(session, Equipment.tag, tag, "equipment")
    session.add(equipment)
    session.flush()
    session.add(EquipmentLogEntry(equipment_id=equipment.id, kind="created", to_status=initial,
                                  reason="registered", details={"line": line.code}, member_id=member_id,
                                  actor_label=label))
    record(session, action="create", record_type="equipment", record_id=equipment.id,
           new={"line": line.code, **_snapshot(
               equipment, "tag", "name", "equipment_class", "capacity", "capacity_unit", "single_use",
               "clean_hold_hours", "calibration_due", "qualification_status", "qualified_until", "status")})
    return equipment


def _locked_equipment(session: Session, equipment_id: int) -> Equipment:
    equipment = session.scalar(select(Equipment).where(Equipment.id == equipment_id).with_for_update())
    if equipment is None:
        raise NotFound(f"no equipment {equipment_id}")
    return equipment


def signature_required(session: Session, equipment: Equipment, action: str) -> bool:
    """True when the equipment's site routes `action` through an e-signature."""
    site = session.get(Site, session.get(Line, equipment.line_id).site_id)  # type: ignore[union-attr]
    return site is not None and action in (site.signature_routes or [])


#: The signature meaning of each routed action.
SIGNATURE_MEANINGS = {"equipment.status_change": "performed", "equipment.calibration": "verified",
                      "equipment.qualification": "approved"}


def _log_entry(session: Session, equipment: Equipment, *, action: str, kind: str, reason: str,
               details: dict[str, Any], credentials: dict[str, Any] | None, from_status: str | None = None,
               to_status: str | None = None) -> EquipmentLogEntry:
    """Write a logbook entry, signed first where the site routes the action through an e-signature."""
    signature_id = None
    entry_id = None
    if signature_required(session, equipment, action):
        if not credentials or not credentials.get("password"):
            raise ValidationError(f"the site of {equipment.tag} requires an e-signature for "
                                  f"{SIGNATURE_ROUTES[action].lower()}: enter your password to sign")
        # The entry's id is taken first so the signature binds to this very entry's content.
        entry_id = session.execute(text("SELECT nextval(pg_get_serial_sequence('equipment_log', 'id'))")).scalar_one()
        content = equipment_log_content(tag=equipment.tag, kind=kind, from_status=from_status, to_status=to_status,
                                        reason=reason, details=details)
        signature = esign.sign(session, record_type="equipment_log", record_id=entry_id, content=content,
                               meaning=SIGNATURE_MEANINGS[action], actor=current_actor(session), reason=reason,
                               **credentials)
        signature_id = signature.id
    member_id, label = _actor(session)
    entry = EquipmentLogEntry(id=entry_id, equipment_id=equipment.id, kind=kind, from_status=from_status,
                              to_status=to_status, reason=reason, details=details, member_id=member_id,
                              actor_label=label, signature_id=signature_id)
    session.add(entry)
    session.flush()
    return entry


def change_equipment_status(session: Session, *, equipment_id: int, to_status: str, reason: str,
                            credentials: dict[str, Any] | None = None) -> EquipmentLogEntry:
    """Move an item to a new status: a logbook entry and an audit event with the reason, signed where routed."""
    to_status = clean_choice(to_status, "status", EQUIPMENT_STATUSES)
    reason = clean_text(reason, "reason", max_len=2000)
    equipment = _locked_equipment(session, equipment_id)
    allowed = STATUS_TRANSITIONS[equipment.status]
    if to_status not in allowed:
        raise Conflict(f"{equipment.tag} cannot go from {EQUIPMENT_STATUSES[equipment.status].lower()} to "
                       f"{EQUIPMENT_STATUSES[to_status].lower()}; allowed: "
                       f"{', '.join(EQUIPMENT_STATUSES[s].lower() for s in sorted(allowed))}")
    old = {"status": equipment.status, "cleaned_at": equipment.cleaned_at}
    entry = _log_entry(session, equipment, action="equipment.status_change", kind="status_change", reason=reason,
                       details={}, credentials=credentials, from_status=old["status"], to_status=to_status)
    now = db_now(session)
    equipment.status, equipment.status_changed_at = to_status, now
    if to_status == "clean":
        equipment.cleaned_at = now
    session.flush()
    record(session, action="status_change", record_type="equipment", record_id=equipment.id, old=old,
           new={"status": to_status, "cleaned_at": equipment.cleaned_at, "logbook_entry": entry.id,
                "signature_id": entry.signature_id}, reason=reason)
    return entry


def record_calibration(session: Session, *, equipment_id: int, next_due: Any, reason: str,
                       certificate: str = "", credentials: dict[str, Any] | None = None) -> EquipmentLogEntry:
    """Record a calibration and the next due date (a logbook entry and an audit event), signed where routed."""
    due = clean_date(next_due, "next calibration due", required=True)
    assert due is not None  # noqa: S101 (required=True never returns None)
    reason = clean_text(reason, "reason", max_len=2000)
    certificate = clean_text(certificate, "certificate", max_len=200, required=False)
    equipment = _locked_equipment(session, equipment_id)
    old = {"calibration_due": equipment.calibration_due}
    entry = _log_entry(session, equipment, action="equipment.calibration", kind="calibration", reason=reason,
                       details={"calibration_due": due.isoformat(), "certificate": certificate},
                       credentials=credentials)
    equipment.calibration_due = due
    session.flush()
    record(session, action="status_change", record_type="equipment", record_id=equipment.id, old=old,
           new={"calibration_due": due, "logbook_entry": entry.id, "signature_id": entry.signature_id},
           reason=reason)
    return entry


def record_qualification(session: Session, *, equipment_id: int, qualification_status: str, qualified_until: Any,
                         reason: str, credentials: dict[str, Any] | None = None) -> EquipmentLogEntry:
    """Record a (re)qualification outcome and its expiry (a logbook entry and an audit event), signed where routed."""
    status = clean_choice(qualification_status, "qualification status", QUALIFICATION_STATUSES)
    until = clean_date(qualified_until, "qualified until")
    reason = clean_text(reason, "reason", max_len=2000)
    equipment = _locked_equipment(session, equipment_id)
    old = {"qualification_status": equipment.qualification_status, "qualified_until": equipment.qualified_until}
    entry = _log_entry(session, equipment, action="equipment.qualification", kind="qualification", reason=reason,
                       details={"qualification_status": status,
                                "qualified_until": until.isoformat() if until else None},
                       credentials=credentials)
    equipment.qualification_status, equipment.qualified_until = status, until
    session.flush()
    record(session, action="status_change", record_type="equipment", record_id=equipment.id, old=old,
           new={"qualification_status": status, "qualified_until": until, "logbook_entry": entry.id,
                "signature_id": entry.signature_id}, reason=reason)
    return entry


def add_logbook_note(session: Session, *, equipment_id: int, note: str) -> EquipmentLogEntry:
    """Add a free-text note to an item's logbook (use, observation, minor intervention)."""
    note = clean_text(note, "note", max_len=4000)
    equipment = session.get(Equipment, equipment_id)
    if equipment is None:
        raise NotFound(f"no equipment {equipment_id}")
    member_id, label = _actor(session)
    entry = EquipmentLogEntry(equipment_id=equipment.id, kind="note", reason=note, member_id=member_id,
                              actor_label=label)
    session.add(entry)
    session.flush()
    record(session, action="create", record_type="equipment_log", record_id=entry.id,
           new={"equipment": equipment.tag, "note": note})
    return entry


def create_sensor(session: Session, *, tag: str, equipment_id: int, quantity_kind: str, unit: str,
                  range_low: Any, range_high: Any, sampling_period_s: Any) -> Sensor:
    """Register a sensor on an equipment item with its unit, valid range and sampling period."""
    equipment = session.get(Equipment, equipment_id)
    if equipment is None:
        raise NotFound(f"no equipment {equipment_id}")
    tag = clean_code(tag, "sensor tag", max_len=80)
    low = clean_decimal(range_low, "range low")
    high = clean_decimal(range_high, "range high")
    if low is not None and high is not None and low >= high:
        raise ValidationError(f"range low ({low}) must be below range high ({high})")
    sensor = Sensor(tag=tag, equipment_id=equipment.id,
                    quantity_kind=clean_text(quantity_kind, "quantity kind", max_len=60),
                    unit=clean_text(unit, "unit", max_len=20), range_low=low, range_high=high,
                    sampling_period_s=clean_decimal(sampling_period_s, "sampling period (s)", positive=True),
                    created_by=_actor(session)[0])
    _unique(session, Sensor.tag, tag, "sensor")
    require_capacity(session, tenant_id=_tenant_id(session), entitlement="sensors")
    session.add(sensor)
    session.flush()
    record(session, action="create", record_type="sensor", record_id=sensor.id,
           new={"equipment": equipment.tag, **_snapshot(sensor, "tag", "quantity_kind", "unit", "range_low",
                                                        "range_high", "sampling_period_s")})
    return sensor
