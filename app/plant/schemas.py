"""Request and response schemas of the plant API (pydantic); the API never returns ORM objects."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from app.core.api import ApiModel, OutModel

EquipmentStatus = Literal["clean", "dirty", "in_use", "maintenance", "out_of_service"]


class SiteIn(ApiModel):
    code: str = Field(max_length=40)
    name: str = Field(max_length=200)
    timezone: str = Field(max_length=64, examples=["Europe/Zurich"])
    address: str = ""
    regulatory_profile: str = ""
    signature_routes: list[str] = []
    sop_references: list[str] = []


class SiteOut(OutModel):
    id: int
    code: str
    name: str
    timezone: str
    address: str
    regulatory_profile: str
    signature_routes: list[str]
    sop_references: list[str]
    created_at: datetime


class LineIn(ApiModel):
    site_id: int
    code: str = Field(max_length=40)
    name: str = Field(max_length=200)
    kind: Literal["line", "area"] = "line"


class LineOut(OutModel):
    id: int
    site_id: int
    code: str
    name: str
    kind: str
    created_at: datetime


class EquipmentIn(ApiModel):
    tag: str = Field(max_length=60)
    name: str = Field(max_length=200)
    equipment_class: str
    line_id: int
    capacity: Decimal | None = None
    capacity_unit: str = ""
    single_use: bool = False
    clean_hold_hours: int | None = None
    calibration_due: date | None = None
    qualification_status: Literal["qualified", "in_qualification", "not_qualified"] = "not_qualified"
    qualified_until: date | None = None
    status: Literal["dirty", "clean", "maintenance", "out_of_service"] = "dirty"


class ReasonOut(OutModel):
    code: str
    message: str


class ReadinessOut(OutModel):
    ready: bool
    reasons: list[ReasonOut]
    at: datetime


class EquipmentOut(OutModel):
    id: int
    tag: str
    name: str
    equipment_class: str
    line_id: int
    capacity: Decimal | None
    capacity_unit: str
    single_use: bool
    clean_hold_hours: int | None
    status: str
    status_changed_at: datetime | None
    cleaned_at: datetime | None
    calibration_due: date | None
    qualification_status: str
    qualified_until: date | None
    created_at: datetime


class SignedIn(ApiModel):
    """Signature fields, needed where the site routes the action through an e-signature."""

    signature_password: str | None = Field(default=None, repr=False)
    signature_user_id: str | None = None


class StatusChangeIn(SignedIn):
    status: EquipmentStatus
    reason: str = Field(min_length=1, max_length=2000)


class CalibrationIn(SignedIn):
    next_due: date
    reason: str = Field(min_length=1, max_length=2000)
    certificate: str = ""


class QualificationIn(SignedIn):
    qualification_status: Literal["qualified", "in_qualification", "not_qualified"]
    qualified_until: date | None = None
    reason: str = Field(min_length=1, max_length=2000)


class LogEntryOut(OutModel):
    id: int
    equipment_id: int
    kind: str
    from_status: str | None
    to_status: str | None
    reason: str
    details: dict
    occurred_at: datetime
    member_id: int | None
    actor_label: str
    signature_id: int | None


class SensorIn(ApiModel):
    tag: str = Field(max_length=80)
    equipment_id: int
    quantity_kind: str
    unit: str
    range_low: Decimal
    range_high: Decimal
    sampling_period_s: Decimal


class SensorOut(OutModel):
    id: int
    tag: str
    equipment_id: int
    quantity_kind: str
    unit: str
    range_low: Decimal
    range_high: Decimal
    sampling_period_s: Decimal
    created_at: datetime


class ScanOut(OutModel):
    kind: str
    id: int
    label: str
    url: str
