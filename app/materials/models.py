"""Material records: materials, lots, movements (the ledger behind every balance) and lot status changes.

A lot's balance is the sum of its movements, kept on the lot under a row lock and guarded by a CHECK so it
never goes negative. Movements and status changes are append-only; a lot's identity is fixed (trigger).
Genealogy needs no table of its own: a `consume` movement links a lot to the batch that consumed it and a
`produce` movement links the batch to the lot it made; traces walk those two edges with a recursive CTE.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DDL, CheckConstraint, ForeignKey, Identity, Index, Numeric, String, Text, event, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.audit.registry import gmp_table_info, protect_gmp_table, register_record_type
from app.core.db import CreatedAt, TenantBase

MATERIAL_TYPES = {
    "raw": "Raw material",
    "intermediate": "Intermediate",
    "product": "Finished product",
    "consumable": "Consumable",
}
LOT_STATUSES = {"quarantine": "Quarantine", "released": "Released", "rejected": "Rejected"}
#: QA disposition transitions; rejected is final.
LOT_TRANSITIONS: dict[str, frozenset[str]] = {
    "quarantine": frozenset({"released", "rejected"}),
    "released": frozenset({"quarantine", "rejected"}),
    "rejected": frozenset(),
}
MOVEMENT_KINDS = {"receive": "Received", "consume": "Consumed", "produce": "Produced", "adjust": "Adjusted"}

QTY = Numeric(18, 6)


def _in(values: dict[str, str]) -> str:
    return ", ".join(f"'{v}'" for v in sorted(values))


class Material(CreatedAt, TenantBase):
    """A material master record (specification reference, unit, storage, shelf life)."""

    __tablename__ = "materials"
    __table_args__ = (
        CheckConstraint(f"material_type IN ({_in(MATERIAL_TYPES)})", name="material_type"),
        CheckConstraint("shelf_life_days IS NULL OR shelf_life_days > 0", name="shelf_life_positive"),
        {"info": gmp_table_info("material")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Material code, unique in the tenant.
    code: Mapped[str] = mapped_column(String(60), unique=True)
    #: Name.
    name: Mapped[str] = mapped_column(String(200))
    #: raw / intermediate / product / consumable.
    material_type: Mapped[str] = mapped_column(String(20))
    #: Unit of measure every lot of it is counted in (kg, g, L, mL, ea, ...).
    unit: Mapped[str] = mapped_column(String(20))
    #: Storage conditions (e.g. "2-8 °C, protect from light").
    storage_conditions: Mapped[str] = mapped_column(Text, default="")
    #: Shelf life in days from receipt or manufacture (None: not set); proposes a lot's expiry date.
    shelf_life_days: Mapped[int | None]
    #: Membership that created it.
    created_by: Mapped[int | None]

    lots: Mapped[list[Lot]] = relationship(back_populates="material")


class Lot(CreatedAt, TenantBase):
    """A lot of a material: identity fixed; status and balance move (balance only through movements)."""

    __tablename__ = "lots"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(LOT_STATUSES)})", name="status"),
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        Index("ix_lots_material_id", "material_id"),
        {"info": gmp_table_info("lot")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Internal lot number, unique in the tenant (labels and scans use it).
    lot_number: Mapped[str] = mapped_column(String(60), unique=True)
    #: The material.
    material_id: Mapped[int] = mapped_column(ForeignKey("materials.id"))
    #: Supplier (received lots) or empty (produced lots).
    supplier: Mapped[str] = mapped_column(String(200), default="")
    #: The supplier's own lot number.
    supplier_lot: Mapped[str] = mapped_column(String(100), default="")
    #: Date received or manufactured.
    received_on: Mapped[date]
    #: Quantity received or produced (the first movement).
    quantity: Mapped[Decimal] = mapped_column(QTY)
    #: Unit (always the material's unit).
    unit: Mapped[str] = mapped_column(String(20))
    #: Expiry date (None: does not expire); the lot counts as expired after it.
    expiry_date: Mapped[date | None]
    #: Retest date (None: none); after it the lot needs a retest before use.
    retest_date: Mapped[date | None]
    #: quarantine / released / rejected; changed only by QA disposition (LotStatusChange).
    status: Mapped[str] = mapped_column(String(20), default="quarantine")
    #: When the status last changed.
    status_changed_at: Mapped[datetime | None]
    #: Current balance = sum of movements; never negative.
    balance: Mapped[Decimal] = mapped_column(QTY)
    #: Batch number that produced it (produced lots), for display; genealogy uses the movements.
    produced_by_batch: Mapped[str | None] = mapped_column(String(60))
    #: Membership that created it.
    created_by: Mapped[int | None]

    material: Mapped[Material] = relationship(back_populates="lots")


class LotMovement(TenantBase):
    """One entry of a lot's ledger: receive, consume (into a batch), produce (by a batch) or adjust."""

    __tablename__ = "lot_movements"
    __table_args__ = (
        CheckConstraint(f"kind IN ({_in(MOVEMENT_KINDS)})", name="kind"),
        CheckConstraint("(kind IN ('consume', 'produce')) = (batch_number IS NOT NULL)", name="batch_link"),
        CheckConstraint("(kind = 'consume' AND quantity < 0) OR (kind IN ('receive', 'produce') AND quantity > 0) "
                        "OR (kind = 'adjust' AND quantity <> 0)", name="quantity_sign"),
        CheckConstraint("balance_after >= 0", name="balance_after_not_negative"),
        Index("ix_lot_movements_lot_id_id", "lot_id", "id"),
        # Genealogy edges, both directions: lot -> batch that consumed it -> lots that batch produced, and back.
        Index("ix_lot_movements_consumed_by", "lot_id", "batch_number", postgresql_where=text("kind = 'consume'")),
        Index("ix_lot_movements_batch_inputs", "batch_number", "lot_id", postgresql_where=text("kind = 'consume'")),
        Index("ix_lot_movements_produced_by", "lot_id", "batch_number", postgresql_where=text("kind = 'produce'")),
        Index("ix_lot_movements_batch_outputs", "batch_number", "lot_id", postgresql_where=text("kind = 'produce'")),
        {"info": gmp_table_info("lot_movement", privileges="append_only")},
    )

    #: Never reused; orders the ledger.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The lot.
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    #: receive / consume / produce / adjust.
    kind: Mapped[str] = mapped_column(String(10))
    #: Signed change of the balance, in the lot's unit (consume < 0).
    quantity: Mapped[Decimal] = mapped_column(QTY)
    #: Balance after this movement.
    balance_after: Mapped[Decimal] = mapped_column(QTY)
    #: Batch that consumed or produced the lot (consume / produce only).
    batch_number: Mapped[str | None] = mapped_column(String(60))
    #: Why (required for adjustments).
    reason: Mapped[str] = mapped_column(Text, default="")
    #: When, by the database clock.
    occurred_at: Mapped[datetime] = mapped_column(server_default=func.now())
    #: Membership that recorded it (None: the system).
    member_id: Mapped[int | None]
    #: Who, as a person reads it, frozen at the time.
    actor_label: Mapped[str] = mapped_column(String(300))


class LotStatusChange(TenantBase):
    """A QA disposition of a lot: from, to, why, who, when, and the signature."""

    __tablename__ = "lot_status_changes"
    __table_args__ = (
        Index("ix_lot_status_changes_lot_id_id", "lot_id", "id"),
        {"info": gmp_table_info("lot_status_change", privileges="append_only")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The lot.
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    #: Status before.
    from_status: Mapped[str] = mapped_column(String(20))
    #: Status after.
    to_status: Mapped[str] = mapped_column(String(20))
    #: Why.
    reason: Mapped[str] = mapped_column(Text)
    #: When, by the database clock.
    occurred_at: Mapped[datetime] = mapped_column(server_default=func.now())
    #: Membership that changed it.
    member_id: Mapped[int | None]
    #: Who, as a person reads it, frozen at the time.
    actor_label: Mapped[str] = mapped_column(String(300))
    #: E-signature of the QA decision.
    signature_id: Mapped[int | None]


#: A lot's identity is fixed; only status, status time and balance move (balance only with a movement).
LOT_GUARD_SQL = """
CREATE FUNCTION lot_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.lot_number, NEW.material_id, NEW.supplier, NEW.supplier_lot, NEW.received_on, NEW.quantity,
      NEW.unit, NEW.expiry_date, NEW.retest_date, NEW.produced_by_batch, NEW.created_at, NEW.created_by)
     IS DISTINCT FROM
     (OLD.id, OLD.lot_number, OLD.material_id, OLD.supplier, OLD.supplier_lot, OLD.received_on, OLD.quantity,
      OLD.unit, OLD.expiry_date, OLD.retest_date, OLD.produced_by_batch, OLD.created_at, OLD.created_by) THEN
    RAISE EXCEPTION 'lot % master data is not updated in place', OLD.lot_number
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""
LOT_GUARD_TRIGGER = "CREATE TRIGGER lot_guard BEFORE UPDATE ON lots FOR EACH ROW EXECUTE FUNCTION lot_guard()"
#: A material master record is fixed once created (a new specification is a new material code).
MATERIAL_FIXED_SQL = """
CREATE FUNCTION materials_refuse_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'material % is not updated in place', OLD.code USING ERRCODE = 'insufficient_privilege';
END
$$
"""
MATERIAL_FIXED_TRIGGER = ("CREATE TRIGGER materials_fixed BEFORE UPDATE ON materials FOR EACH ROW "
                          "EXECUTE FUNCTION materials_refuse_update()")

event.listen(Lot.__table__, "after_create", DDL(LOT_GUARD_SQL.replace("%", "%%")))
event.listen(Lot.__table__, "after_create", DDL(LOT_GUARD_TRIGGER))
event.listen(Material.__table__, "after_create", DDL(MATERIAL_FIXED_SQL.replace("%", "%%")))
event.listen(Material.__table__, "after_create", DDL(MATERIAL_FIXED_TRIGGER))
for _table in (Material.__table__, Lot.__table__, LotMovement.__table__, LotStatusChange.__table__):
    protect_gmp_table(_table)


def lot_status_change_content(*, lot: Lot, material_code: str, from_status: str, to_status: str,
                              reason: str) -> dict[str, Any]:
    """What QA's signature on a disposition attests to: which lot (identity) went from what to what, and why."""
    return {"lot_number": lot.lot_number, "material": material_code, "supplier": lot.supplier,
            "supplier_lot": lot.supplier_lot, "received_on": lot.received_on.isoformat(),
            "quantity": f"{lot.quantity.normalize():f}", "unit": lot.unit,
            "expiry_date": lot.expiry_date.isoformat() if lot.expiry_date else None,
            "from_status": from_status, "to_status": to_status, "reason": reason}


def _lot_status_change_content(session: Any, record_id: str) -> dict[str, Any] | None:
    change = session.get(LotStatusChange, int(record_id)) if str(record_id).isdigit() else None
    if change is None:
        return None
    lot = session.get(Lot, change.lot_id)
    return lot_status_change_content(lot=lot, material_code=session.get(Material, lot.material_id).code,
                                     from_status=change.from_status, to_status=change.to_status,
                                     reason=change.reason)


register_record_type("material", label="Material", table="materials", endpoint="materials.material",
                     id_arg="material_id")
register_record_type("lot", label="Lot", table="lots", endpoint="materials.lot", id_arg="lot_id")
register_record_type("lot_movement", label="Lot movement", table="lot_movements")
register_record_type("lot_status_change", label="Lot disposition", table="lot_status_changes",
                     content=_lot_status_change_content)
