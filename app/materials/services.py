"""State changes of material records: materials, lots, movements, QA dispositions.

Keyword-only and typed; they flush and never commit. Every balance change locks the lot row first
(`SELECT ... FOR UPDATE`), so concurrent consumptions queue instead of overdrawing; the CHECK constraint on
the balance is the last line of defence.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app import esign
from app.audit.services import current_actor, record
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.validation import (
    clean_choice,
    clean_code,
    clean_date,
    clean_decimal,
    clean_int,
    clean_text,
    db_now,
)
from app.materials.models import (
    LOT_STATUSES,
    LOT_TRANSITIONS,
    MATERIAL_TYPES,
    Lot,
    LotMovement,
    LotStatusChange,
    Material,
    lot_status_change_content,
)
from app.materials.usability import lot_usable


def _actor(session: Session) -> tuple[int | None, str]:
    actor = current_actor(session)
    return actor.member_id, actor.label[:300]


def _fmt(quantity: Decimal) -> str:
    return f"{quantity.normalize():f}"


def create_material(session: Session, *, code: str, name: str, material_type: str, unit: str,
                    storage_conditions: str = "", shelf_life_days: Any = None) -> Material:
    """Create a material master record."""
    code = clean_code(code, "material code", max_len=60)
    material = Material(code=code, name=clean_text(name, "material name", max_len=200),
                        material_type=clean_choice(material_type, "material type", MATERIAL_TYPES),
                        unit=clean_text(unit, "unit of measure", max_len=20),
                        storage_conditions=clean_text(storage_conditions, "storage conditions", max_len=500,
                                                      required=False),
                        shelf_life_days=clean_int(shelf_life_days, "shelf life (days)"),
                        created_by=_actor(session)[0])
    if session.scalar(select(Material.id).where(Material.code == code)) is not None:
        raise Conflict(f"material {code!r} already exists")
    session.add(material)
    session.flush()
    record(session, action="create", record_type="material", record_id=material.id,
           new={"code": code, "name": material.name, "material_type": material.material_type, "unit": material.unit,
                "storage_conditions": material.storage_conditions, "shelf_life_days": material.shelf_life_days})
    return material


def _new_lot(session: Session, *, material: Material, lot_number: str, quantity: Any, unit: str | None,
             on: date, supplier: str, supplier_lot: str, expiry_date: date | None, retest_date: date | None,
             batch_number: str | None) -> Lot:
    lot_number = clean_code(lot_number, "lot number", max_len=60)
    qty = clean_decimal(quantity, "quantity", positive=True)
    assert qty is not None  # noqa: S101 (clean_decimal with required=True never returns None)
    if unit and unit.strip() and unit.strip() != material.unit:
        raise ValidationError(f"material {material.code} is counted in {material.unit}, not {unit.strip()}: "
                              f"give the quantity in {material.unit}")
    if expiry_date is None and material.shelf_life_days:
        expiry_date = on + timedelta(days=material.shelf_life_days)
    if expiry_date is not None and expiry_date < on:
        raise ValidationError(f"expiry date {expiry_date} is before the lot's date {on}")
    if session.scalar(select(Lot.id).where(Lot.lot_number == lot_number)) is not None:
        raise Conflict(f"lot {lot_number!r} already exists")
    member_id, label = _actor(session)
    lot = Lot(lot_number=lot_number, material_id=material.id, supplier=supplier, supplier_lot=supplier_lot,
              received_on=on, quantity=qty, unit=material.unit, expiry_date=expiry_date, retest_date=retest_date,
              status="quarantine", status_changed_at=db_now(session), balance=qty, produced_by_batch=batch_number,
              created_by=member_id)
    session.add(lot)
    session.flush()
    session.add(LotMovement(lot_id=lot.id, kind="produce" if batch_number else "receive", quantity=qty,
                            balance_after=qty, batch_number=batch_number, member_id=member_id, actor_label=label))
    session.flush()
    record(session, action="create", record_type="lot", record_id=lot.id,
           new={"lot_number": lot_number, "material": material.code, "supplier": supplier,
                "supplier_lot": supplier_lot, "received_on": on, "quantity": qty, "unit": material.unit,
                "expiry_date": expiry_date, "retest_date": retest_date, "status": "quarantine",
                "produced_by_batch": batch_number})
    return lot


def _material(session: Session, material_id: int) -> Material:
    material = session.get(Material, material_id)
    if material is None:
        raise NotFound(f"no material {material_id}")
    return material


def receive_lot(session: Session, *, material_id: int, lot_number: str, quantity: Any, received_on: Any,
                supplier: str, supplier_lot: str = "", expiry_date: Any = None, retest_date: Any = None,
                unit: str | None = None) -> Lot:
    """Receive a supplier lot into quarantine with its first movement (the expiry defaults from the shelf life)."""
    material = _material(session, material_id)
    return _new_lot(session, material=material, lot_number=lot_number, quantity=quantity, unit=unit,
                    on=clean_date(received_on, "received on", required=True),  # type: ignore[arg-type]
                    supplier=clean_text(supplier, "supplier", max_len=200),
                    supplier_lot=clean_text(supplier_lot, "supplier lot", max_len=100, required=False),
                    expiry_date=clean_date(expiry_date, "expiry date"),
                    retest_date=clean_date(retest_date, "retest date"), batch_number=None)


def produce_lot(session: Session, *, material_id: int, lot_number: str, quantity: Any, batch_number: str,
                produced_on: Any = None, expiry_date: Any = None, unit: str | None = None) -> Lot:
    """Record a lot produced by a batch (genealogy: batch -> lot), into quarantine until QA releases it."""
    material = _material(session, material_id)
    batch = clean_code(batch_number, "batch number", max_len=60)
    on = clean_date(produced_on, "produced on") or db_now(session).date()
    return _new_lot(session, material=material, lot_number=lot_number, quantity=quantity, unit=unit, on=on,
                    supplier="", supplier_lot="", expiry_date=clean_date(expiry_date, "expiry date"),
                    retest_date=None, batch_number=batch)


def locked_lot(session: Session, lot_id: int) -> Lot:
    """Load a lot and lock its row until the transaction ends (balance changes queue here)."""
    lot = session.scalar(select(Lot).where(Lot.id == lot_id).with_for_update())
    if lot is None:
        raise NotFound(f"no lot {lot_id}")
    session.refresh(lot)  # the balance as of the lock, not as of an earlier read in this session
    return lot


def _move(session: Session, lot: Lot, *, kind: str, quantity: Decimal, batch_number: str | None,
          reason: str) -> LotMovement:
    new_balance = lot.balance + quantity
    if new_balance < 0:
        raise Conflict(f"lot {lot.lot_number} holds {_fmt(lot.balance)} {lot.unit}; "
                       f"{_fmt(-quantity)} {lot.unit} cannot be taken from it")
    member_id, label = _actor(session)
    old_balance = lot.balance
    lot.balance = new_balance
    movement = LotMovement(lot_id=lot.id, kind=kind, quantity=quantity, balance_after=new_balance,
                           batch_number=batch_number, reason=reason, member_id=member_id, actor_label=label)
    session.add(movement)
    session.flush()
    record(session, action="create", record_type="lot_movement", record_id=movement.id,
           old={"lot": lot.lot_number, "balance": old_balance},
           new={"lot": lot.lot_number, "kind": kind, "quantity": quantity, "balance": new_balance,
                "batch_number": batch_number}, reason=reason or None)
    return movement


def consume_lot(session: Session, *, lot_id: int, quantity: Any, batch_number: str,
                material_id: int | None = None, override: bool = False) -> LotMovement:
    """Consume from a lot into a batch (genealogy: lot -> batch) after the lot gate says it is usable.

    `override=True` is for the batch engine once a supervisor has signed an override of the gate: the lot is
    consumed (so genealogy shows it) and the reasons are written on the movement; a balance can still never go
    negative.
    """
    qty = clean_decimal(quantity, "quantity", positive=True)
    assert qty is not None  # noqa: S101
    batch = clean_code(batch_number, "batch number", max_len=60)
    lot = locked_lot(session, lot_id)
    expected = _material(session, material_id) if material_id is not None else lot.material
    verdict = lot_usable(lot, expected, qty, db_now(session))
    blocking = [r for r in verdict.reasons if not override or r.code == "insufficient_quantity"]
    if blocking:
        raise Conflict("; ".join(r.message for r in blocking))
    reason = ("supervisor override: " + "; ".join(r.message for r in verdict.reasons)) if verdict.reasons else ""
    return _move(session, lot, kind="consume", quantity=-qty, batch_number=batch, reason=reason)


def adjust_lot(session: Session, *, lot_id: int, quantity: Any, reason: str) -> LotMovement:
    """Correct a lot's balance by a signed quantity (count, spill, sample), always with a reason."""
    qty = clean_decimal(quantity, "adjustment")
    assert qty is not None  # noqa: S101
    if qty == 0:
        raise ValidationError("an adjustment must change the balance (give a positive or negative quantity)")
    reason = clean_text(reason, "reason", max_len=2000)
    lot = locked_lot(session, lot_id)
    return _move(session, lot, kind="adjust", quantity=qty, batch_number=None, reason=reason)


#: The signature meaning of each QA disposition.
DISPOSITION_MEANINGS = {"released": "released", "rejected": "rejected", "quarantine": "reviewed"}


def change_lot_status(session: Session, *, lot_id: int, to_status: str, reason: str,
                      credentials: dict[str, Any] | None) -> LotStatusChange:
    """QA disposition of a lot (release, reject, put back on hold): signed by QA, with the reason."""
    to_status = clean_choice(to_status, "lot status", LOT_STATUSES)
    reason = clean_text(reason, "reason", max_len=2000)
    if not credentials or not credentials.get("password"):
        raise ValidationError("a lot disposition is signed by QA: enter your password to sign")
    lot = locked_lot(session, lot_id)
    if to_status not in LOT_TRANSITIONS[lot.status]:
        allowed = ", ".join(sorted(LOT_TRANSITIONS[lot.status])) or "nothing (rejection is final)"
        raise Conflict(f"lot {lot.lot_number} is {lot.status}; it can go to {allowed}")
    old = lot.status
    # The change's id is taken first so the signature binds to this very disposition.
    change_id = session.execute(
        text("SELECT nextval(pg_get_serial_sequence('lot_status_changes', 'id'))")).scalar_one()
    content = lot_status_change_content(lot=lot, material_code=lot.material.code, from_status=old,
                                        to_status=to_status, reason=reason)
    signature = esign.sign(session, record_type="lot_status_change", record_id=change_id, content=content,
                           meaning=DISPOSITION_MEANINGS[to_status], actor=current_actor(session), reason=reason,
                           **credentials)
    member_id, label = _actor(session)
    lot.status, lot.status_changed_at = to_status, db_now(session)
    change = LotStatusChange(id=change_id, lot_id=lot.id, from_status=old, to_status=to_status, reason=reason,
                             member_id=member_id, actor_label=label, signature_id=signature.id)
    session.add(change)
    session.flush()
    record(session, action="status_change", record_type="lot", record_id=lot.id, old={"status": old},
           new={"status": to_status, "status_change": change.id, "signature_id": signature.id}, reason=reason)
    return change
