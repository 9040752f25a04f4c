"""The demo `make run` seeds: the fed-batch template imported and approved by three people's signatures, a 50 L
batch released to the floor; then the whole fed-batch executed through the engine to a completed batch record."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from app.batches import execution, services
from app.batches.demo import create_demo_people, seed_demo
from app.batches.models import Batch, BatchException, StepExecution
from app.core.tenancy import tenant_transaction
from app.esign.models import Signature
from app.recipes.document import (
    AttachmentCapture,
    CheckboxCapture,
    ChoiceCapture,
    EquipmentScanCapture,
    MaterialScanCapture,
    NumberCapture,
)
from app.recipes.limits import limits_for_capture
from app.recipes.models import RecipeVersion
from tests.batches.conftest import key

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
EQUIPMENT_FOR = {"SUB-50L": "BR-101", "CELL-COUNTER": "CC-01", "DEPTH-FILTER-SKID": "DF-01"}


def _from_pattern(pattern: str) -> str:
    """A value that matches a simple label pattern such as ^S-FB-\\d{4}$."""
    text = pattern.strip("^$")
    return re.sub(r"\\d\{(\d+)\}", lambda m: "1" * int(m.group(1)), text).replace("\\", "")


def _good_value(doc: Any, phase: Any, capture: Any, lots: dict[str, str]) -> tuple[dict[str, Any], Any]:
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


def test_the_demo_batch_is_seeded_and_the_fed_batch_runs_end_to_end(make_tenant) -> None:
    tenant = make_tenant()
    people, password = create_demo_people(tenant.ref, domain=f"{tenant.ref.slug}.example.com")
    with tenant_transaction(tenant.ref) as s:
        batch = seed_demo(s, people=people, password=password)
        batch_id = batch.id
    with tenant_transaction(tenant.ref) as s:
        assert seed_demo(s, people=people, password=password) is None  # idempotent
        batch = s.get(Batch, batch_id)
        version = s.get(RecipeVersion, batch.recipe_version_id)
        assert (batch.status, batch.batch_size, version.status, version.template_id) == (
            "dispatched", 50, "approved", "cho-fed-batch-sub50")
        signers = {(sig.meaning, sig.signer_member_id) for sig in s.scalars(
            select(Signature).where(Signature.record_type == "recipe_version",
                                    Signature.record_id == str(version.id)))}
        assert signers == {("authored", people["engineer"].member_id), ("reviewed", people["reviewer"].member_id),
                           ("approved", people["approver"].member_id)}
        lots = {m["code"]: f"{m['code']}-L001" for m in version.document["materials"]}

    operator, verifier = people["operator"], people["operator2"]
    with tenant_transaction(tenant.ref) as s:
        steps = s.scalars(select(StepExecution).where(StepExecution.batch_id == batch_id)
                          .order_by(StepExecution.seq)).all()
        control = services.control_recipe_of(s, s.get(Batch, batch_id))
        doc = services.control_document(control)
    for step in steps:
        phase = doc.phase_map()[step.phase_key]
        with tenant_transaction(tenant.ref, actor=operator.actor) as s:
            if not step.mandatory:
                execution.skip_step(s, batch_id=batch_id, step_id=step.id, reason="not needed in this run")
                continue
            execution.start_step(s, batch_id=batch_id, step_id=step.id)
        for capture in phase.captures:
            raw, upload = _good_value(doc, phase, capture, lots)
            with tenant_transaction(tenant.ref, actor=operator.actor) as s:
                execution.record_entry(s, batch_id=batch_id, step_id=step.id, capture_key=capture.key, raw=raw,
                                       idempotency_key=key(), control_recipe_hash=control.content_hash,
                                       upload=upload, acknowledgement="within the ranges of this run")
        for requirement in phase.signatures:
            who = verifier if requirement.independent else operator
            with tenant_transaction(tenant.ref, actor=who.actor) as s:
                signer = services.member_signer(tenant.ref, user_id=who.user_id, actor=who.actor, email=who.email)
                execution.sign_step(s, batch_id=batch_id, step_id=step.id, meaning=requirement.meaning,
                                    password=password, signer=signer, identification=who.email,
                                    identification_required=True)
        with tenant_transaction(tenant.ref, actor=operator.actor) as s:
            execution.complete_step(s, batch_id=batch_id, step_id=step.id)
    with tenant_transaction(tenant.ref, actor=people["supervisor"].actor) as s:
        services.record_output(s, batch_id=batch_id, lot_number="HCCF-000001", quantity="47.5")
        completed = services.complete_batch(s, batch_id=batch_id)
        assert completed.status == "completed"
        raised = {(x.type, x.step_execution_id) for x in s.scalars(
            select(BatchException).where(BatchException.batch_id == batch_id))}
    # Only what a fast test run must raise: conditioning is completed before its four-hour minimum.
    condition = next(st.id for st in steps if st.phase_key == "condition_medium")
    assert raised == {("duration_out_of_range", condition)}
