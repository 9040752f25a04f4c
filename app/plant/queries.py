"""Read-side queries of the plant area: lists for pages and the API, logbooks, the status board."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, joinedload, selectinload

from app.core.validation import db_now
from app.plant.models import Equipment, EquipmentLogEntry, Line, Sensor, Site
from app.plant.readiness import Readiness, equipment_ready


def sites_query() -> Select[tuple[Site]]:
    """Sites with their lines, by code."""
    return select(Site).options(selectinload(Site.lines)).order_by(Site.code)


def lines_query(*, site_id: int | None = None) -> Select[tuple[Line]]:
    """Lines by code, optionally of one site."""
    query = select(Line).options(joinedload(Line.site)).order_by(Line.code)
    return query.where(Line.site_id == site_id) if site_id else query


def equipment_query(*, line_id: int | None = None, status: str | None = None) -> Select[tuple[Equipment]]:
    """Equipment by tag with line and site loaded (readiness needs the site timezone)."""
    query = select(Equipment).options(joinedload(Equipment.line).joinedload(Line.site)).order_by(Equipment.tag)
    if line_id:
        query = query.where(Equipment.line_id == line_id)
    if status:
        query = query.where(Equipment.status == status)
    return query


def sensors_query(*, equipment_id: int | None = None) -> Select[tuple[Sensor]]:
    """Sensors by tag with their equipment."""
    query = select(Sensor).options(joinedload(Sensor.equipment)).order_by(Sensor.tag)
    return query.where(Sensor.equipment_id == equipment_id) if equipment_id else query


def equipment_detail(session: Session, equipment_id: int) -> Equipment | None:
    """One item with line, site and sensors."""
    return session.scalar(
        select(Equipment).options(joinedload(Equipment.line).joinedload(Line.site), selectinload(Equipment.sensors))
        .where(Equipment.id == equipment_id))


def readiness_now(session: Session, equipment_id: int) -> tuple[Equipment, Readiness, datetime] | None:
    """An item, its readiness judged now (database clock, site timezone) and that moment; None if unknown."""
    equipment = equipment_detail(session, equipment_id)
    if equipment is None:
        return None
    now = db_now(session)
    return equipment, equipment_ready(equipment, now), now


def logbook_query(equipment_id: int) -> Select[tuple[EquipmentLogEntry]]:
    """An item's logbook entries (unordered: the page or the API orders them)."""
    return select(EquipmentLogEntry).where(EquipmentLogEntry.equipment_id == equipment_id)


def logbook(session: Session, equipment_id: int, *, limit: int = 500) -> list[EquipmentLogEntry]:
    """An item's logbook, newest first."""
    return list(session.scalars(logbook_query(equipment_id).order_by(EquipmentLogEntry.id.desc()).limit(limit)))


@dataclass(frozen=True)
class BoardTile:
    """One item on a line's status board."""

    equipment: Equipment
    readiness: Readiness


def status_board(session: Session, line_id: int, at: datetime) -> list[BoardTile]:
    """Every item of a line with its readiness at `at`, not-ready first so the eye finds them."""
    tiles = [BoardTile(e, equipment_ready(e, at)) for e in session.scalars(equipment_query(line_id=line_id))]
    return sorted(tiles, key=lambda t: (t.readiness.ready, t.equipment.tag))


def logbook_signatures(session: Session, entries: list[EquipmentLogEntry]) -> dict[int, str]:
    """Manifestation line of each signed logbook entry, verified against the entry as stored."""
    from app import esign
    from app.plant.models import _equipment_log_content

    lines = {}
    for entry in entries:
        if entry.signature_id is None:
            continue
        signatures = esign.signatures_of(session, record_type="equipment_log", record_id=entry.id)
        content = _equipment_log_content(session, str(entry.id))
        lines[entry.id] = "; ".join(esign.manifestation_text(c.signature, valid=c.valid)
                                    for c in esign.check_signatures(session, signatures, content))
    return lines
