"""Request and response schemas of the materials API (pydantic); quantities travel as exact decimal strings."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from app.core.api import ApiModel, OutModel


class MaterialIn(ApiModel):
    code: str = Field(max_length=60)
    name: str = Field(max_length=200)
    material_type: Literal["raw", "intermediate", "product", "consumable"]
    unit: str = Field(max_length=20)
    storage_conditions: str = ""
    shelf_life_days: int | None = None


class MaterialOut(OutModel):
    id: int
    code: str
    name: str
    material_type: str
    unit: str
    storage_conditions: str
    shelf_life_days: int | None
    created_at: datetime


class LotIn(ApiModel):
    """Receive a supplier lot (into quarantine)."""

    material_id: int
    lot_number: str = Field(max_length=60)
    quantity: Decimal
    unit: str | None = None
    received_on: date
    supplier: str = Field(max_length=200)
    supplier_lot: str = ""
    expiry_date: date | None = None
    retest_date: date | None = None


class ProducedLotIn(ApiModel):
    """A lot produced by a batch (into quarantine)."""

    material_id: int
    lot_number: str = Field(max_length=60)
    quantity: Decimal
    unit: str | None = None
    batch_number: str = Field(max_length=60)
    produced_on: date | None = None
    expiry_date: date | None = None


class LotOut(OutModel):
    id: int
    lot_number: str
    material_id: int
    supplier: str
    supplier_lot: str
    received_on: date
    quantity: Decimal
    unit: str
    expiry_date: date | None
    retest_date: date | None
    status: str
    expired: bool = False
    status_changed_at: datetime | None
    balance: Decimal
    produced_by_batch: str | None
    created_at: datetime


class LotStatusIn(ApiModel):
    """A QA disposition, signed: the password (and the user ID after a fresh sign-in or an idle period)."""

    status: Literal["released", "rejected", "quarantine"]
    reason: str = Field(min_length=1, max_length=2000)
    signature_password: str = Field(min_length=1, repr=False)
    signature_user_id: str | None = None


class LotStatusOut(OutModel):
    id: int
    lot_id: int
    from_status: str
    to_status: str
    reason: str
    occurred_at: datetime
    actor_label: str
    signature_id: int | None


class MovementIn(ApiModel):
    """Consume into a batch (positive quantity) or adjust (signed quantity, with a reason)."""

    kind: Literal["consume", "adjust"]
    quantity: Decimal
    batch_number: str | None = None
    material_id: int | None = None
    reason: str = ""


class MovementOut(OutModel):
    id: int
    lot_id: int
    kind: str
    quantity: Decimal
    balance_after: Decimal
    batch_number: str | None
    reason: str
    occurred_at: datetime
    actor_label: str


class UsabilityOut(OutModel):
    usable: bool
    reasons: list[dict[str, Any]]
    at: datetime
