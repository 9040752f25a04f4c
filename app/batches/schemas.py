"""Request and response schemas of the batch JSON API (the tablet's live checks and entries use them too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pydantic

from app.core.api import ApiModel, OutModel


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("a time needs its zone (e.g. 2026-11-27T10:15:00Z)")
    return value


class OverrideIn(ApiModel):
    """A supervisor's override given on the tablet: their user ID, password and reason."""

    email: str = pydantic.Field(max_length=254)
    password: str = pydantic.Field(max_length=256)
    reason: str = pydantic.Field(max_length=2000)


class RawValue(ApiModel):
    """The value of a capture as the tablet sends it; the server parses it strictly by capture kind."""

    #: Number, text, choice, checkbox (true/false) or timestamp ("now" or ISO 8601).
    value: Any = None
    #: Unit of a number or of a scanned quantity (the capture's own when omitted).
    unit: str | None = pydantic.Field(default=None, max_length=40)
    #: Scanned label (material and equipment scans).
    code: str | None = pydantic.Field(default=None, max_length=200)
    #: Quantity of a material scan.
    quantity: Any = None

    def raw(self) -> dict[str, Any]:
        """The fields the engine reads."""
        return {k: v for k, v in self.model_dump().items() if k in ("value", "unit", "code", "quantity")}


class CheckIn(RawValue):
    """A live check: which capture, the value typed so far, and the entry a correction would replace."""

    capture: str = pydantic.Field(max_length=64)
    entry_id: int | None = None


class _Recording(RawValue):
    idempotency_key: str = pydantic.Field(max_length=64)
    control_recipe_hash: str = pydantic.Field(max_length=64)
    acknowledgement: str | None = pydantic.Field(default=None, max_length=2000)
    override: OverrideIn | None = None
    #: The device's clock when the operator entered the value.
    device_time: datetime | None = None
    #: The device's clock when the request was sent (clock skew is measured from it).
    device_sent_at: datetime | None = None

    _device_time = pydantic.field_validator("device_time", "device_sent_at")(_aware)


class EntryIn(_Recording):
    """A new entry of a step."""

    capture: str = pydantic.Field(max_length=64)


class CorrectionIn(_Recording):
    """A correction or re-weigh superseding an entry, with its reason."""

    reason: str = pydantic.Field(max_length=2000)
    action: str = "correction"


class StartIn(ApiModel):
    """Start a step; an override lets it start out of order or on equipment that is not ready."""

    override: OverrideIn | None = None


class SignIn(ApiModel):
    """Sign a step: meaning and password; a second person on a shared tablet gives their user ID too. An SSO
    member gives `sso_proof` (the token of their re-authentication at the provider) instead of the password."""

    meaning: str = pydantic.Field(max_length=40)
    password: str = pydantic.Field(default="", max_length=256)
    signer_email: str | None = pydantic.Field(default=None, max_length=254)
    sso_proof: str | None = pydantic.Field(default=None, max_length=200)
    reason: str | None = pydantic.Field(default=None, max_length=2000)


class ReasonIn(ApiModel):
    """An action that needs a reason (pause, hold, resume, abort, skip)."""

    reason: str = pydantic.Field(max_length=2000)


class OutputIn(ApiModel):
    """A lot the batch produced."""

    lot_number: str = pydantic.Field(max_length=60)
    quantity: Any
    unit: str | None = pydantic.Field(default=None, max_length=40)
    material_code: str | None = pydantic.Field(default=None, max_length=60)


class PlanIn(ApiModel):
    """Plan a batch from a master recipe's effective version."""

    master_recipe_id: int
    recipe_version_id: int | None = None
    batch_size: Any
    unit: str | None = pydantic.Field(default=None, max_length=40)
    line_id: int
    planned_start: datetime
    equipment: dict[str, int] = {}
    identity: dict[str, str] = {}

    _planned = pydantic.field_validator("planned_start")(_aware)


class DispatchIn(ApiModel):
    """Release a planned batch to the floor (an e-signature)."""

    password: str = pydantic.Field(max_length=256)
    reason: str | None = pydantic.Field(default=None, max_length=2000)
    signature_user_id: str | None = pydantic.Field(default=None, max_length=254)


class EntryOut(OutModel):
    """An entry as recorded."""

    id: int
    step_execution_id: int
    capture_key: str
    capture_kind: str
    action: str
    attempt: int
    supersedes_id: int | None
    display: str
    value: dict[str, Any]
    check_state: str
    check_message: str
    acknowledgement: str | None
    override_id: int | None
    recorded_at: datetime
    device_time: datetime | None
    clock_skew_ms: int | None
    actor_label: str
    idempotency_key: str


class StepOut(OutModel):
    """A step execution."""

    id: int
    seq: int
    phase_key: str
    phase_name: str
    status: str
    mandatory: bool
    started_at: datetime | None
    started_by_label: str | None
    ended_at: datetime | None
    ended_by_label: str | None
    equipment_id: int | None


class BatchOut(OutModel):
    """A batch."""

    id: int
    batch_number: str
    recipe_code: str
    recipe_version: int
    recipe_version_id: int
    product_code: str
    product_name: str
    batch_size: Any
    batch_unit: str
    line_id: int
    planned_start: datetime
    status: str
    status_reason: str | None
    dispatched_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


class ExceptionOut(OutModel):
    """A batch exception."""

    id: int
    step_execution_id: int | None
    entry_id: int | None
    capture_key: str | None
    type: str
    severity: str
    message: str
    status: str
    acknowledgement: str | None
    raised_at: datetime
    raised_by_label: str
