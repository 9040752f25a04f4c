"""The lot gate the batch area calls before a step consumes a lot: usable, or every reason it is not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from app.materials.models import Lot, Material


@dataclass(frozen=True)
class Reason:
    """One reason a lot may not be used: a stable code for programs and a message for people."""

    code: str
    message: str


@dataclass(frozen=True)
class Usability:
    """Usable when there is no reason against it."""

    reasons: tuple[Reason, ...] = ()

    @property
    def usable(self) -> bool:
        """True when nothing stands against use."""
        return not self.reasons

    @property
    def codes(self) -> list[str]:
        """The reason codes, in the order found."""
        return [r.code for r in self.reasons]

    def __bool__(self) -> bool:
        return self.usable


def as_quantity(value: Decimal | int | str) -> Decimal:
    """Parse an exact quantity (never a float: balances must add up to the last digit)."""
    if isinstance(value, float):
        raise TypeError("quantities are exact decimals, not floats")
    try:
        quantity = Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"{value!r} is not a number") from exc
    if not quantity.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return quantity


def lot_expired(lot: Lot, on: date) -> bool:
    """Expired is derived from the date, never stored: past the expiry date the lot is expired."""
    return lot.expiry_date is not None and on > lot.expiry_date


def lot_usable(lot: Lot, material: Material | int, quantity: Decimal | int | str, at: datetime) -> Usability:
    """Return usable, or every reason `quantity` of `lot` may not be used as `material` at `at`."""
    if at.tzinfo is None:
        raise ValueError("usability is judged at a timezone-aware time")
    needed = as_quantity(quantity)
    if needed <= 0:
        raise ValueError("the quantity to use must be positive")
    material_id = material if isinstance(material, int) else material.id
    today = at.astimezone(UTC).date()  # lots belong to no site: their dates are read in UTC
    reasons: list[Reason] = []
    if lot.material_id != material_id:
        expected = material if isinstance(material, int) else f"{material.code} {material.name}"
        actual = f"{lot.material.code}" if lot.material is not None else str(lot.material_id)
        reasons.append(Reason("wrong_material", f"lot {lot.lot_number} is {actual}, not {expected}"))
    if lot.status == "quarantine":
        reasons.append(Reason("quarantined", f"lot {lot.lot_number} is in quarantine: QA has not released it"))
    elif lot.status == "rejected":
        reasons.append(Reason("rejected", f"lot {lot.lot_number} was rejected by QA"))
    if lot_expired(lot, today):
        reasons.append(Reason("expired", f"lot {lot.lot_number} expired on {lot.expiry_date}"))
    elif lot.retest_date is not None and today > lot.retest_date:
        reasons.append(Reason("retest_overdue", f"lot {lot.lot_number} passed its retest date {lot.retest_date}"))
    if lot.balance < needed:
        reasons.append(Reason("insufficient_quantity",
                              f"lot {lot.lot_number} holds {lot.balance.normalize():f} {lot.unit}, "
                              f"{needed.normalize():f} {lot.unit} needed"))
    return Usability(tuple(reasons))
