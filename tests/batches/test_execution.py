"""Execution rules: order and overrides, mandatory steps, live limits, lot and equipment gates, contemporaneous
entries, hold times, idempotent resubmission, corrections and re-weighs, signatures, completion and the lifecycle."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from app.batches import execution, services
from app.batches.errors import AcknowledgementRequired, OverrideRequired
from app.batches.models import BatchOverride, EquipmentUse, StepEntry
from app.batches.queries import running_step_at
from app.core.errors import Conflict, ValidationError
from app.esign import SignatureRefused, SignerNotPermitted
from app.esign.models import Signature
from app.materials import services as materials
from app.plant import services as plant
from tests.batches.conftest import SHORT_RECIPE, key, short_recipe


def _entries(floor, batch_id) -> int:
    with floor.tx() as s:
        return s.scalar(select(func.count()).select_from(StepEntry).where(StepEntry.batch_id == batch_id))


def test_steps_run_in_order_unless_a_supervisor_signs_an_override(make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    with pytest.raises(OverrideRequired, match="cannot start before Line clearance"):
        floor.start(batch_id, "charge")
    operator_as_supervisor = floor.override()
    operator_as_supervisor = execution.OverrideRequest(email=floor.operator.email,
                                                       password=operator_as_supervisor.password, reason="hurry")
    with pytest.raises(SignerNotPermitted, match="may not override"):
        floor.start(batch_id, "charge", override=operator_as_supervisor)
    with pytest.raises(SignatureRefused):
        floor.start(batch_id, "charge", override=execution.OverrideRequest(
            email=floor.supervisor.email, password="wrong", reason="hurry"))
    assert floor.step(batch_id, "charge").status == "pending"
    step = floor.start(batch_id, "charge", override=floor.override("clearance paper copy signed, transcribing"))
    assert step.status == "in_progress" and step.override_id is not None
    assert ("out_of_order", "major", "charge") in floor.exceptions(batch_id)
    with floor.tx() as s:
        override = s.get(BatchOverride, step.override_id)
        signature = s.get(Signature, override.signature_id)
        assert (override.kind, signature.signer_member_id, signature.record_type) == (
            "out_of_order", floor.supervisor.member_id, "batch_override")
    # An optional step may be skipped, a mandatory one never.
    with pytest.raises(Conflict, match="mandatory and cannot be skipped"), floor.tx() as s:
        execution.skip_step(s, batch_id=batch_id, step_id=floor.step(batch_id, "sample").id, reason="not needed")
    with floor.tx() as s:
        execution.skip_step(s, batch_id=batch_id, step_id=floor.step(batch_id, "bolus").id, reason="glucose fine")
    assert floor.step(batch_id, "bolus").status == "skipped"


def test_numbers_are_checked_live_against_the_control_recipe(make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    step = floor.start(batch_id, "charge")
    with floor.tx() as s:
        check = lambda value, unit="degC": execution.check_entry(  # noqa: E731
            s, batch_id=batch_id, step_id=step.id, capture_key="temp", raw={"value": value, "unit": unit})
        assert check("37.1")["state"] == "green"
        assert check("37.8")["state"] == "amber"
        assert check("98.6", "degF")["state"] == "green"  # converted to 37 degC first
        red = check("39")
        assert red["state"] == "red" and red["needs_acknowledgement"] and "above the high limit 38" in red["message"]
    with pytest.raises(AcknowledgementRequired, match="above the high limit"):
        floor.enter(batch_id, "charge", "temp", {"value": "39", "unit": "degC"})
    assert _entries(floor, batch_id) == 2  # only clearance's two entries: nothing was recorded
    result = floor.enter(batch_id, "charge", "temp", {"value": "39", "unit": "degC"},
                         acknowledgement="probe drift suspected, second probe reads 37.2")
    assert result.entry.check_state == "red"
    assert ("out_of_limit", "critical", "charge") in floor.exceptions(batch_id)


def test_material_scans_pass_the_lot_gate_and_post_consumption(make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.start(batch_id, "charge")
    lot = floor.lots["MED-T"]
    with pytest.raises(ValidationError, match="no lot matches the code 'LOT:NOPE'"):
        floor.enter(batch_id, "charge", "medium", {"code": "LOT:NOPE", "quantity": "8"})
    with pytest.raises(ValidationError, match="label of a equipment, not of a lot"):
        floor.enter(batch_id, "charge", "medium", {"code": f"EQ:{floor.reactor_tag}", "quantity": "8"})
    with pytest.raises(OverrideRequired, match="is GLC-T, not MED-T"):
        floor.enter(batch_id, "charge", "medium", {"code": f"LOT:{floor.lots['GLC-T']}", "quantity": "8"})
    with pytest.raises(AcknowledgementRequired, match=r"\+25.00% from required 8 L"):
        floor.enter(batch_id, "charge", "medium", {"code": f"LOT:{lot}", "quantity": "10", "unit": "L"})
    assert floor.lot_balance(lot) == Decimal("100")
    result = floor.enter(batch_id, "charge", "medium", {"code": f"LOT:{lot}", "quantity": "8100", "unit": "mL"},
                         acknowledgement="bag volume rounded up")
    assert result.entry.check_state == "green"  # 8.1 L is within 8 L ± 2 %
    assert floor.lot_balance(lot) == Decimal("91.9")
    with floor.tx() as s:
        movement = s.execute(text("SELECT kind, quantity, batch_number FROM lot_movements WHERE id = :m"),
                             {"m": result.entry.movement_ids[0]}).one()
    assert (movement.kind, movement.quantity, movement.batch_number) == (
        "consume", Decimal("-8.1"), floor.batch(batch_id).batch_number)


def test_a_quarantined_lot_is_a_hard_block_only_a_signed_override_lifts(make_floor) -> None:
    floor = make_floor()
    with floor.tx(floor.supervisor) as s:
        from app.materials.models import Material

        material = s.scalar(select(Material).where(Material.code == "MED-T"))
        held = materials.receive_lot(s, material_id=material.id, lot_number="MED-Q", quantity="50",
                                     received_on="2026-01-05", supplier="Acme")
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.start(batch_id, "charge")
    with pytest.raises(OverrideRequired, match="in quarantine") as refused:
        floor.enter(batch_id, "charge", "medium", {"code": "LOT:MED-Q", "quantity": "8"},
                    acknowledgement="I know")  # a comment is not enough for a hard block
    assert refused.value.check["needs_override"] is True
    result = floor.enter(batch_id, "charge", "medium", {"code": "LOT:MED-Q", "quantity": "8"},
                         override=floor.override("QA released under deviation DEV-12, paperwork pending"))
    assert result.entry.override_id is not None
    found = floor.exceptions(batch_id)
    assert ("material_not_usable", "major", "charge") in found and ("override", "critical", "charge") in found
    assert floor.lot_balance(held.lot_number) == Decimal("42")


def test_equipment_gate_at_step_start_and_on_scans(make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    with floor.tx(floor.supervisor) as s:
        plant.change_equipment_status(s, equipment_id=floor.reactor_id, to_status="dirty", reason="spill")
    with pytest.raises(OverrideRequired, match="is dirty"):
        floor.start(batch_id, "clearance")
    floor.start(batch_id, "clearance", override=floor.override("cleaning record signed on paper"))
    assert {("equipment_not_ready", "major", "clearance"), ("override", "critical", "clearance")} <= set(
        floor.exceptions(batch_id))
    with floor.tx(floor.supervisor) as s:
        from app.plant.models import Line
        from tests.factories import make_equipment

        other = make_equipment(s, s.get(Line, floor.line_id), equipment_class="bioreactor")
    with pytest.raises(OverrideRequired, match="is not the bioreactor assigned"):
        floor.enter(batch_id, "clearance", "vessel", {"code": f"EQ:{other.tag}"})
    with pytest.raises(OverrideRequired, match="is dirty"):  # the override was for the start, not for this scan
        floor.enter(batch_id, "clearance", "vessel", {"code": f"EQ:{floor.reactor_tag}"})


def test_equipment_is_occupied_while_the_batch_needs_it_and_the_sensor_path_finds_the_step(make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    with floor.tx() as s:
        assert s.execute(text("SELECT status FROM equipment WHERE id = :e"), {"e": floor.reactor_id}).scalar() == \
            "in_use"
        use = s.scalars(select(EquipmentUse).where(EquipmentUse.batch_id == batch_id)).one()
        assert use.status_at_use["status"] == "clean" and use.ended_at is None
        now = s.execute(text("SELECT now()")).scalar_one()
        clearance = floor.step(batch_id, "clearance")
        assert running_step_at(s, floor.reactor_id, now) == (batch_id, clearance.id)
        assert running_step_at(s, floor.reactor_id, now - timedelta(days=1)) is None
    floor.do_charge(batch_id)
    with floor.tx() as s:
        now = s.execute(text("SELECT now()")).scalar_one()
        assert running_step_at(s, floor.reactor_id, now) == (batch_id, floor.step(batch_id, "charge").id)
    floor.do_sample(batch_id)
    with floor.tx() as s:  # the optional bolus may still run in the bioreactor
        assert s.execute(text("SELECT status FROM equipment WHERE id = :e"), {"e": floor.reactor_id}).scalar() == \
            "in_use"
        execution.skip_step(s, batch_id=batch_id, step_id=floor.step(batch_id, "bolus").id, reason="glucose fine")
    with floor.tx() as s:
        assert s.execute(text("SELECT status FROM equipment WHERE id = :e"), {"e": floor.reactor_id}).scalar() == \
            "dirty"
        assert s.scalars(select(EquipmentUse).where(EquipmentUse.batch_id == batch_id)).one().ended_at is not None
        later = s.execute(text("SELECT now() + interval '1 minute'")).scalar_one()
        assert running_step_at(s, floor.reactor_id, later) is None


def test_resubmitting_an_entry_with_the_same_key_records_it_once(make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.start(batch_id, "charge")
    entry_key = key()
    raw = {"code": f"LOT:{floor.lots['MED-T']}", "quantity": "8"}
    first = floor.enter(batch_id, "charge", "medium", raw, idempotency_key=entry_key)
    again = floor.enter(batch_id, "charge", "medium", raw, idempotency_key=entry_key)
    assert (first.replayed, again.replayed, again.entry.id) == (False, True, first.entry.id)
    assert floor.lot_balance(floor.lots["MED-T"]) == Decimal("92")
    with pytest.raises(Conflict, match="already used for another entry"):
        floor.enter(batch_id, "charge", "temp", {"value": "37"}, idempotency_key=entry_key)
    with pytest.raises(Conflict, match="already recorded"):
        floor.enter(batch_id, "charge", "medium", raw)  # a new key for the same capture is not a silent overwrite


def test_corrections_and_reweighs_keep_every_attempt_and_net_the_lot(make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.start(batch_id, "charge")
    lot = floor.lots["MED-T"]
    first = floor.enter(batch_id, "charge", "medium", {"code": f"LOT:{lot}", "quantity": "7.9"})
    second = floor.correct(batch_id, first.entry.id, {"code": f"LOT:{lot}", "quantity": "8.05"},
                           "re-weighed after tare check", action="reweigh")
    assert floor.lot_balance(lot) == Decimal("91.95")
    third = floor.correct(batch_id, second.entry.id, {"code": f"LOT:{lot}", "quantity": "7.95"},
                          "scale display misread")
    assert floor.lot_balance(lot) == Decimal("92.05")
    with floor.tx() as s:
        chain = s.scalars(select(StepEntry).where(StepEntry.capture_key == "medium", StepEntry.batch_id == batch_id)
                          .order_by(StepEntry.id)).all()
    assert [(e.action, e.attempt, e.supersedes_id) for e in chain] == [
        ("entry", 1, None), ("reweigh", 2, first.entry.id), ("correction", 3, second.entry.id)]
    assert [t for t, _, _ in floor.exceptions(batch_id)] == ["reweigh", "data_correction"]
    with pytest.raises(Conflict, match="already replaced"):
        floor.correct(batch_id, first.entry.id, {"code": f"LOT:{lot}", "quantity": "8"}, "again")
    with pytest.raises(ValidationError, match="reason for the change is required"):
        floor.correct(batch_id, third.entry.id, {"code": f"LOT:{lot}", "quantity": "8"}, " ")
    with floor.tx() as s, pytest.raises(Exception, match=r"permission denied|never deleted or overwritten"):
        s.execute(text("UPDATE step_entries SET display = 'x' WHERE id = :e"), {"e": first.entry.id})


def test_signatures_need_complete_data_and_a_second_person_to_verify(make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.start(batch_id, "clearance")
    floor.enter(batch_id, "clearance", "room_clear", {"value": True})
    with pytest.raises(Conflict, match="Bioreactor still missing"):
        floor.sign(batch_id, "clearance", "performed")
    floor.enter(batch_id, "clearance", "vessel", {"code": f"EQ:{floor.reactor_tag}"})
    with pytest.raises(Conflict, match="must be signed 'performed' before 'verified'"):
        floor.sign(batch_id, "clearance", "verified", who=floor.operator2)
    with pytest.raises(SignatureRefused):
        floor.sign(batch_id, "clearance", "performed", password="nope")
    floor.sign(batch_id, "clearance", "performed")
    with pytest.raises(SignerNotPermitted, match="needs a second person"):
        floor.sign(batch_id, "clearance", "verified")
    with pytest.raises(Conflict, match="still needs a verified signature"):
        floor.complete(batch_id, "clearance")
    floor.sign(batch_id, "clearance", "verified", who=floor.operator2)
    assert floor.complete(batch_id, "clearance").status == "completed"


def test_a_correction_after_signing_voids_the_signature_until_re_signed(make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.do_charge(batch_id)
    floor.do_sample(batch_id)
    with floor.tx() as s:
        ph = s.scalars(select(StepEntry).where(StepEntry.batch_id == batch_id, StepEntry.capture_key == "ph")).one()
    floor.correct(batch_id, ph.id, {"value": "7.05"}, "transcription error, meter printout shows 7.05")
    with floor.tx(floor.supervisor) as s, pytest.raises(Conflict, match="Sample lacks a valid performed signature"):
        services.complete_batch(s, batch_id=batch_id)
    floor.sign(batch_id, "sample", "performed")
    with floor.tx(floor.supervisor) as s:
        assert services.complete_batch(s, batch_id=batch_id).status == "completed"


def test_completion_is_blocked_while_a_mandatory_step_or_signature_is_missing(make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.start(batch_id, "charge")
    with floor.tx(floor.supervisor) as s, pytest.raises(Conflict) as blocked:
        services.complete_batch(s, batch_id=batch_id)
    assert "Charge medium is still in progress" in str(blocked.value)
    assert "mandatory step Sample was not executed" in str(blocked.value)
    assert "Glucose bolus" not in str(blocked.value)  # optional
    floor.enter(batch_id, "charge", "medium", {"code": f"LOT:{floor.lots['MED-T']}", "quantity": "8"})
    with pytest.raises(Conflict, match="Temperature missing"):
        floor.complete(batch_id, "charge")


def test_pause_hold_resume_and_abort_with_reasons(make_floor) -> None:
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    with floor.tx() as s, pytest.raises(ValidationError, match="reason is required"):
        services.pause_batch(s, batch_id=batch_id, reason="")
    with floor.tx() as s:
        services.pause_batch(s, batch_id=batch_id, reason="fire alarm drill")
    with pytest.raises(Conflict, match="paused: fire alarm drill"):
        floor.start(batch_id, "charge")
    with floor.tx() as s:
        services.resume_batch(s, batch_id=batch_id, reason="drill over", may_release_hold=False)
    with floor.tx(floor.supervisor) as s:
        services.hold_batch(s, batch_id=batch_id, reason="QA query on the medium lot")
    with floor.tx() as s, pytest.raises(Conflict, match="only a supervisor can release the hold"):
        services.resume_batch(s, batch_id=batch_id, reason="ok", may_release_hold=False)
    with floor.tx(floor.supervisor) as s:
        services.abort_batch(s, batch_id=batch_id, reason="medium lot recalled by supplier")
    batch = floor.batch(batch_id)
    assert (batch.status, batch.status_reason) == ("aborted", "medium lot recalled by supplier")
    assert ("batch_aborted", "critical", None) in floor.exceptions(batch_id)
    # Review by exception sees each mandatory step the batch ended without (charge and sample; the bolus is optional).
    missing = [(t, sev, step) for t, sev, step in floor.exceptions(batch_id) if t == "missing_mandatory_step"]
    assert missing == [("missing_mandatory_step", "critical", "charge"),
                       ("missing_mandatory_step", "critical", "sample")]
    with floor.tx() as s:
        assert s.execute(text("SELECT status FROM equipment WHERE id = :e"), {"e": floor.reactor_id}).scalar() == \
            "dirty"
        events = [r.kind for r in s.execute(text("SELECT kind FROM batch_events WHERE batch_id = :b ORDER BY id"),
                                            {"b": batch_id})]
    assert events[-4:] == ["paused", "resumed", "held", "aborted"]


def _timed_recipe(**timing) -> dict:
    doc = copy.deepcopy(SHORT_RECIPE)
    phases = doc["procedure"]["unit_procedures"][0]["operations"][0]["phases"]
    for phase_key, values in timing.items():
        next(p for p in phases if p["key"] == phase_key)["timing"] = values
    return doc


def test_hold_time_duration_late_entries_and_clock_skew_raise_exceptions(make_floor) -> None:
    floor = make_floor(_timed_recipe(clearance={"expected_duration": "PT1S", "max_hold_time": "PT1S"},
                                     charge={"expected_duration": "PT1H", "min_duration": "PT1H"}))
    with floor.tx(floor.supervisor) as s:
        services.update_settings(s, late_entry_grace_s=0, clock_skew_tolerance_s=60, reason="test tolerances")
    batch_id = floor.new_batch()
    floor.start(batch_id, "clearance")
    time.sleep(1.2)
    now = datetime.now(UTC)
    skewed = execution.DeviceClock(entered_at=now + timedelta(minutes=10), sent_at=now + timedelta(minutes=10))
    floor.enter(batch_id, "clearance", "room_clear", {"value": True}, device=skewed)
    floor.enter(batch_id, "clearance", "vessel", {"code": f"EQ:{floor.reactor_tag}"},
                device=execution.DeviceClock(entered_at=now, sent_at=now))
    floor.sign(batch_id, "clearance", "performed")
    floor.sign(batch_id, "clearance", "verified", who=floor.operator2)
    floor.complete(batch_id, "clearance")
    time.sleep(1.2)
    floor.do_charge(batch_id)
    found = floor.exceptions(batch_id)
    assert found.count(("clock_skew", "minor", "clearance")) == 1
    assert found.count(("late_entry", "minor", "clearance")) == 1  # once per step, however many late values
    assert ("hold_time_exceeded", "major", "clearance") in found  # reported on the step whose result waited
    assert ("duration_out_of_range", "major", "charge") in found  # completed before its minimum duration


def test_the_hold_time_timer_raises_before_anyone_starts_the_next_step(make_floor, app) -> None:
    from redis import Redis
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    from app.batches import jobs
    from app.core.jobs import enqueue

    floor = make_floor(_timed_recipe(clearance={"expected_duration": "PT1S", "max_hold_time": "PT1S"}))
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    with floor.tx() as s:
        assert jobs.check_hold_times(s) == {"raised": 0}
    time.sleep(1.2)
    with floor.tx() as s:
        enqueue(s, "app.batches.jobs:check_hold_times")
    connection = Redis.from_url(app.config["REDIS_URL"])
    worker = SimpleWorker([Queue("default", connection=connection, serializer=JSONSerializer)],
                          connection=connection, serializer=JSONSerializer)
    worker.work(burst=True)
    assert floor.exceptions(batch_id).count(("hold_time_exceeded", "major", "clearance")) == 1
    with floor.tx() as s:
        assert jobs.check_hold_times(s) == {"raised": 0}  # idempotent: reported once
    floor.start(batch_id, "charge")
    assert floor.exceptions(batch_id).count(("hold_time_exceeded", "major", "clearance")) == 1


def test_outputs_post_genealogy_and_yields_are_computed(make_floor) -> None:
    from app.batches.queries import batch_yields

    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.do_charge(batch_id)
    floor.do_sample(batch_id)
    with floor.tx(floor.supervisor) as s, pytest.raises(ValidationError, match="material NOPE is not registered"):
        services.record_output(s, batch_id=batch_id, lot_number="OUT-1", quantity="9", material_code="NOPE")
    with floor.tx(floor.supervisor) as s:
        lot = services.record_output(s, batch_id=batch_id, lot_number="OUT-1", quantity="9200", unit="mL")
        assert (lot.quantity, lot.status, lot.produced_by_batch) == (Decimal("9.2"), "quarantine",
                                                                     floor.batch(batch_id).batch_number)
        yields = batch_yields(s, batch_id)
    assert yields["overall"]["actual"] == pytest.approx(9.2)
    assert yields["overall"]["theoretical"] == pytest.approx(10)
    assert yields["overall"]["percent"] == pytest.approx(92.0)
    charge = next(p for p in yields["phases"] if p["phase"] == "charge")
    assert (charge["actual"], charge["theoretical"], charge["percent"]) == (pytest.approx(8), pytest.approx(8),
                                                                            pytest.approx(100))
    culture = yields["unit_procedures"][0]
    assert culture["unit_procedure"] == "culture" and culture["percent"] == pytest.approx(100)


def test_a_chain_of_identity_mismatch_is_recorded_with_a_comment_and_a_critical_exception(make_floor) -> None:
    document = short_recipe()
    sample = document["procedure"]["unit_procedures"][0]["operations"][0]["phases"][3]
    sample["captures"].append({"kind": "text", "key": "patient", "label": "Patient ID", "identity": "patient_id"})
    floor = make_floor(document)
    batch_id = floor.plan("10", identity={"patient_id": "PT-0001"})
    floor.dispatch(batch_id)
    floor.do_clearance(batch_id)
    floor.do_charge(batch_id)
    floor.start(batch_id, "sample")
    with pytest.raises(AcknowledgementRequired, match="does not match the batch's patient_id 'PT-0001'") as refused:
        floor.enter(batch_id, "sample", "patient", {"value": "PT-0002"})
    assert refused.value.check["needs_override"] is False  # the operator's comment records it, no override
    assert floor.exceptions(batch_id) == []
    result = floor.enter(batch_id, "sample", "patient", {"value": "PT-0002"},
                         acknowledgement="label on the bag reads PT-0002; bag quarantined, QA called")
    assert result.entry.check_state == "blocked" and result.entry.value == {"text": "PT-0002"}
    assert ("identity_mismatch", "critical", "sample") in floor.exceptions(batch_id)


def test_a_scan_that_checks_identity_only_needs_no_quantity(make_floor) -> None:
    document = short_recipe()
    sample = document["procedure"]["unit_procedures"][0]["operations"][0]["phases"][3]
    sample["captures"].append({"kind": "material_scan", "key": "glucose_lot", "label": "Glucose lot confirmed",
                               "material": "GLC-T"})
    floor = make_floor(document)
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.do_charge(batch_id)
    floor.start(batch_id, "sample")
    before = floor.lot_balance(floor.lots["GLC-T"])
    result = floor.enter(batch_id, "sample", "glucose_lot", {"code": f"LOT:{floor.lots['GLC-T']}"})
    assert result.entry.display == f"lot {floor.lots['GLC-T']} (identity checked)"
    assert result.entry.value["lot_number"] == floor.lots["GLC-T"] and result.entry.movement_ids == []
    assert floor.lot_balance(floor.lots["GLC-T"]) == before
    # The lot gate still runs: the wrong material is a hard block.
    with pytest.raises(OverrideRequired):
        floor.correct(batch_id, result.entry.id, {"code": f"LOT:{floor.lots['MED-T']}"}, "rescanned")
    # Where the control recipe requires an amount, the quantity stays mandatory.
    floor.start(batch_id, "bolus")
    with pytest.raises(ValidationError, match="quantity"):
        floor.enter(batch_id, "bolus", "glucose", {"code": f"LOT:{floor.lots['GLC-T']}"})
