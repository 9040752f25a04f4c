"""Plant records: sites, lines, equipment (status + logbook) and sensors.

Master data (tags, classes, ranges) is never updated in place; the only mutable columns are the status fields of
equipment, and a trigger refuses any other change. Every status change is a logbook row and an audit event.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    DDL,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Numeric,
    String,
    Text,
    event,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.audit.registry import gmp_table_info, protect_gmp_table, register_record_type
from app.core.db import CreatedAt, TenantBase

EQUIPMENT_CLASSES = {
    "bioreactor": "Bioreactor",
    "balance": "Balance",
    "bsc": "Biosafety cabinet",
    "chromatography_skid": "Chromatography skid",
    "freezer": "Freezer",
    "fridge": "Refrigerator",
    "incubator": "Incubator",
    "centrifuge": "Centrifuge",
    "filter_skid": "Filtration skid (TFF/UF)",
    "mixer": "Mixer / buffer tank",
    "filler": "Filling machine",
    "ph_meter": "pH meter",
    "other": "Other",
}
EQUIPMENT_STATUSES = {
    "clean": "Clean",
    "dirty": "Dirty",
    "in_use": "In use",
    "maintenance": "Under maintenance",
    "out_of_service": "Out of service",
}
#: Allowed status transitions (re-cleaning a clean item restarts its clean-hold time).
STATUS_TRANSITIONS: dict[str, frozenset[str]] = {
    "clean": frozenset({"clean", "in_use", "dirty", "maintenance", "out_of_service"}),
    "dirty": frozenset({"clean", "maintenance", "out_of_service"}),
    "in_use": frozenset({"dirty", "maintenance", "out_of_service"}),
    "maintenance": frozenset({"dirty", "out_of_service"}),
    "out_of_service": frozenset({"maintenance", "dirty"}),
}
QUALIFICATION_STATUSES = {
    "qualified": "Qualified (IQ/OQ/PQ complete)",
    "in_qualification": "In qualification",
    "not_qualified": "Not qualified",
}
#: Actions a site's regulatory profile may route through an e-signature.
SIGNATURE_ROUTES = {
    "equipment.status_change": "Equipment status changes",
    "equipment.calibration": "Calibration records",
    "equipment.qualification": "Qualification records",
}


def _in(values: dict[str, str] | frozenset[str]) -> str:
    return ", ".join(f"'{v}'" for v in sorted(values))


class Site(CreatedAt, TenantBase):
    """A manufacturing site with its timezone and regulatory profile."""

    __tablename__ = "sites"
    __table_args__ = {"info": gmp_table_info("site")}

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Short code, unique in the tenant (used by imports and labels).
    code: Mapped[str] = mapped_column(String(40), unique=True)
    #: Name as shown in the product.
    name: Mapped[str] = mapped_column(String(200))
    #: Postal address.
    address: Mapped[str] = mapped_column(Text, default="")
    #: IANA timezone of the site (dates such as calibration due are read in it).
    timezone: Mapped[str] = mapped_column(String(64))
    #: Regulatory frame, e.g. "21 CFR Part 11", "EU GMP Annex 11".
    regulatory_profile: Mapped[str] = mapped_column(String(200), default="")
    #: Actions (keys of SIGNATURE_ROUTES) that need an e-signature at this site.
    signature_routes: Mapped[list[str]] = mapped_column(JSONB, default=list)
    #: Local SOP references that apply (e.g. "SOP-EQ-001 Equipment cleaning").
    sop_references: Mapped[list[str]] = mapped_column(JSONB, default=list)
    #: Membership that created it.
    created_by: Mapped[int | None]

    lines: Mapped[list[Line]] = relationship(back_populates="site", order_by="Line.code")


class Line(CreatedAt, TenantBase):
    """An area or production line of a site (ISA-95 area / work centre)."""

    __tablename__ = "lines"
    __table_args__ = (CheckConstraint("kind IN ('area', 'line')", name="kind"), {"info": gmp_table_info("line")})

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The site.
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    #: Short code, unique in the tenant.
    code: Mapped[str] = mapped_column(String(40), unique=True)
    #: Name as shown in the product.
    name: Mapped[str] = mapped_column(String(200))
    #: `area` (e.g. a cleanroom suite) or `line`.
    kind: Mapped[str] = mapped_column(String(10), default="line")
    #: Membership that created it.
    created_by: Mapped[int | None]

    site: Mapped[Site] = relationship(back_populates="lines")
    equipment: Mapped[list[Equipment]] = relationship(back_populates="line", order_by="Equipment.tag")


class Equipment(CreatedAt, TenantBase):
    """A piece of equipment: identity and class are fixed; status, cleaning, calibration, qualification move."""

    __tablename__ = "equipment"
    __table_args__ = (
        CheckConstraint(f"equipment_class IN ({_in(EQUIPMENT_CLASSES)})", name="equipment_class"),
        CheckConstraint(f"status IN ({_in(EQUIPMENT_STATUSES)})", name="status"),
        CheckConstraint(f"qualification_status IN ({_in(QUALIFICATION_STATUSES)})", name="qualification_status"),
        CheckConstraint("capacity IS NULL OR capacity > 0", name="capacity_positive"),
        CheckConstraint("clean_hold_hours IS NULL OR clean_hold_hours > 0", name="clean_hold_positive"),
        {"info": gmp_table_info("equipment")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Equipment id / tag as painted on it, unique in the tenant (labels and scans use it).
    tag: Mapped[str] = mapped_column(String(60), unique=True)
    #: Descriptive name.
    name: Mapped[str] = mapped_column(String(200))
    #: Class (keys of EQUIPMENT_CLASSES).
    equipment_class: Mapped[str] = mapped_column(String(40))
    #: The line or area it belongs to.
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"), index=True)
    #: Working capacity (None: not applicable).
    capacity: Mapped[Decimal | None] = mapped_column(Numeric(18, 6))
    #: Unit of the capacity (L, kg, ...).
    capacity_unit: Mapped[str] = mapped_column(String(20), default="")
    #: Single-use (disposable) rather than reusable.
    single_use: Mapped[bool] = mapped_column(default=False)
    #: Hours a clean item stays clean before it counts as dirty (None: no limit).
    clean_hold_hours: Mapped[int | None]
    #: Current status (keys of EQUIPMENT_STATUSES); changed only through the logbook.
    status: Mapped[str] = mapped_column(String(20), default="dirty")
    #: When the status last changed (database clock).
    status_changed_at: Mapped[datetime | None]
    #: When it was last cleaned (the clean-hold time runs from here).
    cleaned_at: Mapped[datetime | None]
    #: Calibration due date (None: no calibration needed).
    calibration_due: Mapped[date | None]
    #: Qualification status (keys of QUALIFICATION_STATUSES).
    qualification_status: Mapped[str] = mapped_column(String(20), default="not_qualified")
    #: Qualification (requalification) expiry date (None: no expiry).
    qualified_until: Mapped[date | None]
    #: Membership that created it.
    created_by: Mapped[int | None]

    line: Mapped[Line] = relationship(back_populates="equipment")
    sensors: Mapped[list[Sensor]] = relationship(back_populates="equipment", order_by="Sensor.tag")


class EquipmentLogEntry(TenantBase):
    """One logbook entry of an equipment item: a status change, calibration, qualification or note."""

    __tablename__ = "equipment_log"
    __table_args__ = (
        CheckConstraint("kind IN ('created', 'status_change', 'calibration', 'qualification', 'note')",
                        name="kind"),
        Index("ix_equipment_log_equipment_id_id", "equipment_id", "id"),
        {"info": gmp_table_info("equipment_log", privileges="append_only")},
    )

    #: Never reused; orders the logbook.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The equipment.
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"))
    #: created / status_change / calibration / qualification / note.
    kind: Mapped[str] = mapped_column(String(20))
    #: Status before (status changes).
    from_status: Mapped[str | None] = mapped_column(String(20))
    #: Status after (status changes).
    to_status: Mapped[str | None] = mapped_column(String(20))
    #: Why (required for everything but the creation entry).
    reason: Mapped[str] = mapped_column(Text, default="")
    #: Further facts: new calibration due date, certificate, qualification expiry...
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    #: When, by the database clock.
    occurred_at: Mapped[datetime] = mapped_column(server_default=func.now())
    #: Membership that made the entry (None: the system).
    member_id: Mapped[int | None]
    #: Who, as a person reads it, frozen at the time.
    actor_label: Mapped[str] = mapped_column(String(300))
    #: E-signature that signed the entry, where the site requires one.
    signature_id: Mapped[int | None]


class Sensor(CreatedAt, TenantBase):
    """A sensor on an equipment item: what it measures, in which unit, its valid range and sampling period."""

    __tablename__ = "sensors"
    __table_args__ = (
        CheckConstraint("range_low < range_high", name="range_ordered"),
        CheckConstraint("sampling_period_s > 0", name="sampling_period_positive"),
        {"info": gmp_table_info("sensor")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Tag as the gateway reports it, unique in the tenant.
    tag: Mapped[str] = mapped_column(String(80), unique=True)
    #: Equipment it is mounted on.
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"), index=True)
    #: Quantity kind (temperature, pH, dissolved oxygen, pressure, mass, ...).
    quantity_kind: Mapped[str] = mapped_column(String(60))
    #: Engineering unit (°C, pH, %, bar, g, ...).
    unit: Mapped[str] = mapped_column(String(20))
    #: Lowest valid reading (outside the range a reading is a sensor fault, not a process value).
    range_low: Mapped[Decimal] = mapped_column(Numeric(18, 6))
    #: Highest valid reading.
    range_high: Mapped[Decimal] = mapped_column(Numeric(18, 6))
    #: Expected seconds between readings (gaps longer than this are data gaps).
    sampling_period_s: Mapped[Decimal] = mapped_column(Numeric(12, 3))
    #: Membership that created it.
    created_by: Mapped[int | None]

    equipment: Mapped[Equipment] = relationship(back_populates="sensors")


#: Identity, class and placement of equipment are fixed once created: only the status columns may change.
EQUIPMENT_GUARD_SQL = """
CREATE FUNCTION equipment_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.tag, NEW.name, NEW.equipment_class, NEW.line_id, NEW.capacity, NEW.capacity_unit,
      NEW.single_use, NEW.clean_hold_hours, NEW.created_at, NEW.created_by)
     IS DISTINCT FROM
     (OLD.id, OLD.tag, OLD.name, OLD.equipment_class, OLD.line_id, OLD.capacity, OLD.capacity_unit,
      OLD.single_use, OLD.clean_hold_hours, OLD.created_at, OLD.created_by) THEN
    RAISE EXCEPTION 'equipment % master data is not updated in place; only status fields change', OLD.tag
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""
EQUIPMENT_GUARD_TRIGGER = ("CREATE TRIGGER equipment_guard BEFORE UPDATE ON equipment FOR EACH ROW "
                           "EXECUTE FUNCTION equipment_guard()")

#: Sites, lines and sensors are fixed once created (a change is a new record); UPDATE is refused outright.
FIXED_RECORD_SQL = """
CREATE FUNCTION refuse_fixed_record_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% records are not updated in place', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END
$$
"""
FIXED_TRIGGERS = {
    table: f"CREATE TRIGGER {table}_fixed BEFORE UPDATE ON {table} FOR EACH ROW "
           "EXECUTE FUNCTION refuse_fixed_record_update()"
    for table in ("sites", "lines", "sensors")
}

# `create_all` builds new tenants at head with the same DDL as the migration.
event.listen(Site.__table__, "before_create", DDL(FIXED_RECORD_SQL.replace("%", "%%")))
for _table in (Site.__table__, Line.__table__, Sensor.__table__):
    event.listen(_table, "after_create", DDL(FIXED_TRIGGERS[_table.name]))
event.listen(Equipment.__table__, "after_create", DDL(EQUIPMENT_GUARD_SQL.replace("%", "%%")))
event.listen(Equipment.__table__, "after_create", DDL(EQUIPMENT_GUARD_TRIGGER))
for _table in (Site.__table__, Line.__table__, Equipment.__table__, EquipmentLogEntry.__table__, Sensor.__table__):
    protect_gmp_table(_table)


def equipment_log_content(*, tag: str, kind: str, from_status: str | None, to_status: str | None, reason: str,
                          details: dict[str, Any]) -> dict[str, Any]:
    """What a signature on a logbook entry attests to (the entry is append-only, so this never changes)."""
    return {"equipment": tag, "kind": kind, "from_status": from_status, "to_status": to_status, "reason": reason,
            "details": details}


def _equipment_log_content(session: Any, record_id: str) -> dict[str, Any] | None:
    entry = session.get(EquipmentLogEntry, int(record_id)) if str(record_id).isdigit() else None
    if entry is None:
        return None
    equipment = session.get(Equipment, entry.equipment_id)
    return equipment_log_content(tag=equipment.tag, kind=entry.kind, from_status=entry.from_status,
                                 to_status=entry.to_status, reason=entry.reason, details=entry.details)


register_record_type("site", label="Site", table="sites", endpoint="plant.site", id_arg="site_id")
register_record_type("line", label="Line / area", table="lines", endpoint="plant.line", id_arg="line_id")
register_record_type("equipment", label="Equipment", table="equipment", endpoint="plant.equipment",
                     id_arg="equipment_id")
register_record_type("equipment_log", label="Equipment logbook entry", table="equipment_log",
                     content=_equipment_log_content)
register_record_type("sensor", label="Sensor", table="sensors", endpoint="plant.sensor", id_arg="sensor_id")
