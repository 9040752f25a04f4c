"""Drive the demo fed-batch (`app.batches.demo`) through the engine as its people would on the floor: every
mandatory step started, recorded with in-range values, signed and completed; optional steps skipped with a reason.
Shared by the batch area's demo test and the review area's demo-to-release test."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from app.batches import execution, services
from app.batches.demo import DemoPerson
from app.batches.models import Batch, StepExecution
from app.core.tenancy import TenantRef, tenant_transaction
from app.recipes.document import (
    AttachmentCapture,
    CheckboxCapture,
    ChoiceCapture,
    EquipmentScanCapture,
    MaterialScanCapture,
    NumberCapture,
)
from app.recipes.limits import limits_for_capture
from tests.batches.conftest import key

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
EQUIPMENT_FOR = {"SUB-50L": "BR-101", "CELL-COUNTER": "CC-01", "DEPTH-FILTER-SKID": "DF-01"}


def _from_pattern(pattern: str) -> str:
    """A value that matches a simple label pattern such as ^S-FB-\\d{4}$."""
    text = pattern.strip("^$")
    return re.sub(r"\\d\{(\d+)\}", lambda m: "1" * int(m.group(1)), text).replace("\\", "")


def good_value(doc: Any, phase: Any, capture: Any, lots: dict[str, str]) -> tuple[dict[str, Any], Any]:
    """An in-range raw value for a capture (and the upload of an attachment capture)."""
    if isinstance(capture, NumberCapture):
        spec = limits_for_capture(doc, capture)
        if spec is None:
            return {"value": "1", "unit": capture.unit}, None
        low = spec.alarm_low if spec.alarm_low is not None else spec.low
        high = spec.alarm_high if spec.alarm_high is not None else spec.high
        value = spec.target if spec.target is not None else (
            (low + high) / 2 if low is not None and high is not None else (low or 0) + 1 if low is not None
            else (high or 2) - 1)
        return {"value": str(value), "unit": spec.unit}, None
    if isinstance(capture, MaterialScanCapture):
        from app.batches.checks import required_amount

        needed = required_amount(doc, phase, capture)
        quantity, unit = (needed[0].value, needed[0].unit) if needed else (1, None)
        return {"code": f"LOT:{lots[capture.material]}", "quantity": str(quantity), "unit": unit}, None
    if isinstance(capture, EquipmentScanCapture):
        return {"code": f"EQ:{EQUIPMENT_FOR[capture.equipment_class]}"}, None
    if isinstance(capture, ChoiceCapture):
        return {"value": (capture.acceptable or capture.options)[0]}, None
    if isinstance(capture, CheckboxCapture):
        return {"value": True}, None
    if isinstance(capture, AttachmentCapture):
        return {}, ("pressure-trend.pdf", "application/pdf", PDF)
    if capture.kind == "timestamp":
        return {"value": "now"}, None
    return {"value": _from_pattern(capture.pattern) if getattr(capture, "pattern", None) else "ok"}, None


def execute_demo_steps(tenant: TenantRef, people: dict[str, DemoPerson], password: str, batch_id: int,
                       lots: dict[str, str], *, stop_on_equipment: int | None = None) -> list[StepExecution]:
    """Execute every step of the demo batch (operator records and signs, the second operator verifies).

    With `stop_on_equipment`, stop as soon as a step has started on that equipment: it is the last step returned,
    left running (the sensor feed's test posts readings into it).
    """
    operator, verifier = people["operator"], people["operator2"]
    with tenant_transaction(tenant) as s:
        steps = s.scalars(select(StepExecution).where(StepExecution.batch_id == batch_id)
                          .order_by(StepExecution.seq)).all()
        control = services.control_recipe_of(s, s.get(Batch, batch_id))
        doc = services.control_document(control)
    for index, step in enumerate(steps):
        phase = doc.phase_map()[step.phase_key]
        with tenant_transaction(tenant, actor=operator.actor) as s:
            if not step.mandatory:
                execution.skip_step(s, batch_id=batch_id, step_id=step.id, reason="not needed in this run")
                continue
            started = execution.start_step(s, batch_id=batch_id, step_id=step.id)
            if stop_on_equipment is not None and started.equipment_id == stop_on_equipment:
                return list(steps[:index + 1])
        for capture in phase.captures:
            raw, upload = good_value(doc, phase, capture, lots)
            with tenant_transaction(tenant, actor=operator.actor) as s:
                execution.record_entry(s, batch_id=batch_id, step_id=step.id, capture_key=capture.key, raw=raw,
                                       idempotency_key=key(), control_recipe_hash=control.content_hash,
                                       upload=upload, acknowledgement="within the ranges of this run")
        for requirement in phase.signatures:
            who = verifier if requirement.independent else operator
            with tenant_transaction(tenant, actor=who.actor) as s:
                signer = services.member_signer(tenant, user_id=who.user_id, actor=who.actor, email=who.email)
                execution.sign_step(s, batch_id=batch_id, step_id=step.id, meaning=requirement.meaning,
                                    password=password, signer=signer, identification=who.email,
                                    identification_required=True)
        with tenant_transaction(tenant, actor=operator.actor) as s:
            execution.complete_step(s, batch_id=batch_id, step_id=step.id)
    if stop_on_equipment is not None:
        raise AssertionError(f"no step of the demo batch runs on equipment {stop_on_equipment}")
    return list(steps)
