"""The RBE job: every check runs and is recorded with the rule-set version; clean batches yield no exception; each
class of off-script event yields exactly its exception with the right severity, step and evidence."""

from __future__ import annotations

from datetime import timedelta

from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import select, text

from app.batches import execution
from app.batches.execution import DeviceClock
from app.core.jobs import OutboxMessage, redis_connection
from app.core.validation import db_now
from app.review import engine, queries, rules, services
from app.review.models import RbeRun
from tests.review.conftest import review_recipe

ALL_CHECKS = [code for code, _, _ in engine.CHECKS]


def _burst_reports() -> None:
    conn = redis_connection()
    SimpleWorker([Queue("reports", connection=conn, serializer=JSONSerializer)], connection=conn,
                 serializer=JSONSerializer).work(burst=True)


def test_completion_queues_the_rbe_job_and_a_clean_batch_yields_zero_exceptions(make_review_floor) -> None:
    floor = make_review_floor()
    batch_id = floor.clean_batch()
    with floor.tx() as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.func == "app.review.jobs:run_rbe_job")).all()
        assert [r.kwargs for r in rows] == [{"batch_id": batch_id, "trigger": "completion"}]
    _burst_reports()  # the real RQ worker runs the job the completion queued
    with floor.tx() as s:
        run = s.scalars(select(RbeRun).where(RbeRun.batch_id == batch_id)).one()
        assert s.get(OutboxMessage, rows[0].id).finished_at is not None
    assert run.final and run.trigger == "completion"
    assert run.exception_ids == [] and run.counts["total"] == 0
    assert [c["code"] for c in run.checks] == ALL_CHECKS
    assert all(c["passed"] for c in run.checks), run.checks
    assert run.rule_set_version == rules.default_version()
    assert run.rule_set["classes"]["out_of_limit"]["severity"]["critical"] == "critical"
    for code in ALL_CHECKS:
        assert code in run.statement
    assert "No exceptions" in run.statement
    assert floor.batch_status(batch_id) == "in_review"
    assert floor.exception_rows(batch_id) == []


def test_rbe_is_idempotent_and_a_second_run_is_evidence_too(make_review_floor) -> None:
    floor = make_review_floor()
    batch_id = floor.clean_batch()
    first = floor.rbe(batch_id)
    second = floor.rbe(batch_id, who=floor.qa)
    assert second.id > first.id and second.new_exception_ids == []
    assert second.record_fingerprint == first.record_fingerprint
    assert second.actor_label.startswith("Quinn Quality")


def _each_class_batch(floor) -> int:
    """A batch with one off-script event of every class the batch record itself can show."""
    batch_id = floor.new_batch()
    override = floor.override("QA informed, deviation assessment at review")
    # equipment not ready at use (the reactor is dirty): only with a supervisor's override
    floor.start(batch_id, "clearance", override=override)
    # clock skew: the tablet's clock is 5 minutes ahead
    with floor.tx() as s:
        now = db_now(s)
    skewed = DeviceClock(entered_at=now + timedelta(minutes=5), sent_at=now + timedelta(minutes=5))
    floor.enter(batch_id, "clearance", "room_clear", {"value": True}, device=skewed)
    floor.sign_all(batch_id, "clearance")
    floor.complete(batch_id, "clearance")
    # hold time exceeded: the timer job looks two hours later
    with floor.tx() as s:
        assert execution.raise_due_hold_times(s, now=db_now(s) + timedelta(hours=2)) == 1
    floor.start(batch_id, "charge")
    # material: a lot still in quarantine, charged on a supervisor's override
    medium = floor.enter(batch_id, "charge", "medium", {"code": f"LOT:{floor.lots['MED-T-quarantine']}",
                                                        "quantity": "7.9", "unit": "L"},
                         override=floor.override("CoA received, QC release in progress"))
    # out of limit (critical parameter), acknowledged on the floor
    floor.enter(batch_id, "charge", "temp", {"value": "38.6", "unit": "degC"},
                acknowledgement="heater overshoot, back in range within 2 min")
    # re-weigh of the medium (from the released lot)
    floor.correct(batch_id, medium.entry.id, {"code": f"LOT:{floor.lots['MED-T']}", "quantity": "8", "unit": "L"},
                  "scale drifted, re-weighed", action="reweigh")
    floor.sign(batch_id, "charge", "performed")  # the recipe asks for no verification: the RBE will
    floor.complete(batch_id, "charge")
    # out-of-order execution: the sample starts before the bolus step, on a supervisor's override
    floor.start(batch_id, "sample", override=floor.override("sample window closing, bolus decided after"))
    floor.enter(batch_id, "sample", "sample_id", {"value": "S-0002"})
    ph = floor.enter(batch_id, "sample", "ph", {"value": "7.15"})  # alarm limit 7.1
    floor.enter(batch_id, "sample", "appearance", {"value": "Clear"})
    floor.correct(batch_id, ph.entry.id, {"value": "7.08"}, "transcription error, meter showed 7.08")
    floor.sign_all(batch_id, "sample")
    floor.complete(batch_id, "sample")  # min duration 1 h: completed early
    step = floor.step(batch_id, "bolus")
    with floor.tx() as s:
        execution.skip_step(s, batch_id=batch_id, step_id=step.id, reason="glucose in range, no bolus needed")
    with floor.tx() as s:
        services.flag_concern(s, batch_id=batch_id, step_id=floor.step(batch_id, "sample").id,
                              comment="foam on the surface, more than usual")
    floor.finish(batch_id)
    return batch_id


def _each_class_recipe() -> dict:
    """The recipe `_each_class_batch` runs: a capture, a signature, timing limits and a dependency to break."""
    return review_recipe(clearance={"captures": [{"kind": "checkbox", "key": "room_clear", "label": "Room clear"}]},
                         charge={"signatures": [{"meaning": "performed"}]},
                         sample={"timing": {"expected_duration": "PT15M", "min_duration": "PT1H"},
                                 "depends_on": ["bolus"]})


def test_each_class_yields_exactly_its_exception_with_severity_step_and_evidence(make_review_floor) -> None:
    floor = make_review_floor(_each_class_recipe(), reactor_status="dirty")
    batch_id = _each_class_batch(floor)
    run = floor.rbe(batch_id)
    rows = floor.exception_rows(batch_id)
    rule_set = rules.build_rule_set()
    got = sorted((rule_set.class_of(r.type), r.type, r.severity, r.phase_key) for r in rows)
    with floor.tx() as s:  # the review judges each exception as the floor raised it (same default tables)
        views = queries.exception_views(s, floor.batch(batch_id), rule_set)
    assert sorted((v.exception_class, v.exception.type, v.severity) for v in views) == sorted(g[:3] for g in got)
    assert got == sorted([
        ("equipment_not_ready", "equipment_not_ready", "major", "clearance"),
        ("out_of_order", "override", "critical", "clearance"),
        ("clock_skew", "clock_skew", "minor", "clearance"),
        ("hold_time_exceeded", "hold_time_exceeded", "major", "clearance"),
        ("material_issue", "material_not_usable", "major", "charge"),
        ("out_of_order", "override", "critical", "charge"),
        ("out_of_limit", "out_of_limit", "critical", "charge"),
        ("reweigh", "reweigh", "minor", "charge"),
        ("missing_signature", "missing_signature", "major", "charge"),
        ("out_of_order", "out_of_order", "major", "sample"),
        ("alarm_limit", "alarm_limit", "minor", "sample"),
        ("data_correction", "data_correction", "minor", "sample"),
        ("step_timing", "duration_out_of_range", "major", "sample"),
        ("operator_concern", "operator_concern", "major", "sample"),
        ("skipped_step", "skipped_step", "minor", "bolus"),
    ]), got
    by_type = {r.type: r for r in rows}
    assert by_type["out_of_limit"].acknowledgement == "heater overshoot, back in range within 2 min"
    assert by_type["out_of_limit"].evidence["crossed"] == "high"
    assert by_type["skipped_step"].evidence["reason"] == "glucose in range, no bolus needed"
    assert by_type["missing_signature"].evidence["captures"] == ["medium", "temp"]
    assert by_type["clock_skew"].evidence["clock_skew_ms"] >= 299_000
    assert by_type["operator_concern"].acknowledgement == "foam on the surface, more than usual"
    assert by_type["data_correction"].evidence["reason"] == "transcription error, meter showed 7.08"
    # Each class the record shows is covered; the run lists every check and what each raised.
    assert {c for c, *_ in got} == {"equipment_not_ready", "out_of_order", "clock_skew", "hold_time_exceeded",
                                    "material_issue", "out_of_limit", "reweigh", "missing_signature", "alarm_limit",
                                    "data_correction", "step_timing", "operator_concern", "skipped_step"}
    checks = {c["code"]: c for c in run.checks}
    assert [c["code"] for c in run.checks] == ALL_CHECKS
    assert not checks["signatures_valid"]["passed"] and not checks["optional_steps"]["passed"]
    assert checks["steps_complete"]["passed"] and checks["materials_reconciled"]["passed"], checks
    assert checks["genealogy_complete"]["passed"] and checks["audit_chain"]["passed"]
    assert sorted(run.exception_ids) == sorted(r.id for r in rows)
    assert run.counts["by_severity"] == {"critical": 3, "major": 7, "minor": 5}
    # The out-of-limit severity follows the crossed parameter's criticality in the tenant's rules.
    with floor.tx(floor.qa) as s:
        services.update_rules(s, overrides={"out_of_limit": {"severity": {"critical": "major"}}},
                              reason="harmonised with the site SOP")
    again = floor.rbe(batch_id, who=floor.qa)
    assert again.rule_set_version == f"{rules.default_version()}+t1" and again.new_exception_ids == []
    assert again.counts["by_severity"]["critical"] == 2  # the two overrides stay critical


def test_a_run_audits_each_exception_then_the_move_to_review_then_itself(make_review_floor) -> None:
    """The run writes its audit events in one statement: one per exception raised (in id order, with what was
    raised), the batch's move to review, the run; a second run under the same rules, reading the exceptions back,
    counts them exactly as the first counted those it raised."""
    floor = make_review_floor(_each_class_recipe(), reactor_status="dirty")
    batch_id = _each_class_batch(floor)
    run = floor.rbe(batch_id)
    assert run.new_exception_ids
    with floor.tx() as s:
        number = floor.batch(batch_id).batch_number
        raised = {r.id: r for r in s.execute(text(
            "SELECT id, type, severity, message, step_execution_id FROM batch_exceptions WHERE id = ANY(:ids)"),
            {"ids": run.new_exception_ids})}
        events = list(s.execute(text(
            "SELECT seq, action, record_type, record_id, old_values, new_values, reason, actor_label FROM audit_events "
            "WHERE seq >= (SELECT min(seq) FROM audit_events WHERE record_type = 'batch_exception' "
            "AND record_id = :first) ORDER BY seq"), {"first": str(run.new_exception_ids[0])}))
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))
    creates = events[:len(run.new_exception_ids)]
    assert [int(e.record_id) for e in creates] == sorted(run.new_exception_ids)
    for event in creates:
        exc = raised[int(event.record_id)]
        assert (event.action, event.record_type, event.old_values) == ("create", "batch_exception", None)
        assert event.new_values == {"batch": number, "type": exc.type, "severity": exc.severity,
                                    "message": exc.message, "step_execution_id": exc.step_execution_id,
                                    "rbe_run_id": run.id}
    move, itself = events[len(creates):]
    assert (move.action, move.record_type, move.record_id) == ("status_change", "batch", str(batch_id))
    assert move.old_values == {"status": "completed"}
    assert move.new_values == {"status": "in_review", "rbe_run_id": run.id}
    assert move.reason == f"review by exception: checks ran on the completed record (RBE run #{run.id})"
    assert (itself.action, itself.record_type, itself.record_id) == ("create", "rbe_run", str(run.id))
    assert itself.new_values["fingerprint"] == run.record_fingerprint
    assert itself.new_values["exceptions"] == run.counts["total"] == len(run.exception_ids)
    assert itself.new_values["new_exceptions"] == len(run.new_exception_ids)
    again = floor.rbe(batch_id, who=floor.qa)
    assert again.new_exception_ids == [] and again.exception_ids == run.exception_ids
    assert again.counts == run.counts
    assert [c["exception_ids"] for c in again.checks] == [c["exception_ids"] for c in run.checks]


def test_running_batch_is_checked_without_premature_exceptions(make_review_floor) -> None:
    floor = make_review_floor()
    batch_id = floor.new_batch()
    floor.start(batch_id, "clearance")
    run = floor.rbe(batch_id, who=floor.qa)
    assert not run.final and floor.batch_status(batch_id) == "in_progress"
    steps = {c["code"]: c for c in run.checks}["steps_complete"]
    assert not steps["passed"] and steps["pending"] and steps["exception_ids"] == []
    assert floor.exception_rows(batch_id) == []
    assert "still running" in run.statement


def test_refuses_to_run_on_a_released_or_planned_batch(make_review_floor) -> None:
    floor = make_review_floor()
    batch_id = floor.plan()
    import pytest

    from app.core.errors import Conflict

    with pytest.raises(Conflict, match="release it to the floor first"):
        floor.rbe(batch_id, who=floor.qa)
    with floor.tx() as s:
        assert s.execute(text("SELECT count(*) FROM rbe_runs")).scalar_one() == 0
