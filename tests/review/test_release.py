"""Release: refused in every blocking case and allowed once resolved; a clean batch in one signature; rejection;
produced lots follow; the release record is stamped with the audit chain head; a record changed after signing
shows up at review."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from app import esign
from app.core.errors import Conflict, ValidationError
from app.core.jobs import OutboxMessage
from app.core.tenancy import tenant_transaction
from app.core.validation import db_now
from app.esign.errors import SignatureRefused, SignerNotPermitted
from app.esign.models import Signature
from app.review import services
from app.review.models import BatchRelease, Deviation
from app.review.queries import release_readiness


def _blockers(floor, batch_id: int) -> list[str]:
    with floor.tx() as s:
        return release_readiness(s, batch_id).blockers


def _exceptions_by_type(floor, batch_id: int) -> dict[str, int]:
    return {r.type: r.id for r in floor.exception_rows(batch_id)}


def test_clean_batch_released_in_one_signature_lots_follow_and_head_is_stamped(make_review_floor) -> None:
    floor = make_review_floor()
    batch_id = floor.clean_batch()
    run = floor.rbe(batch_id)
    assert _blockers(floor, batch_id) == []
    release = floor.decide(batch_id)
    assert floor.batch_status(batch_id) == "released"
    assert floor.lot_status(f"OUT-{batch_id}-{floor.tenant.ref.id}") == "released"
    with floor.tx() as s:
        head = s.execute(text("SELECT seq, hash FROM audit_events WHERE seq = :q"), {"q": release.audit_head_seq}).one()
        assert head.hash == release.audit_head_hash
        sig = s.get(Signature, release.signature_id)
        assert sig.meaning == "released" and sig.printed_name == "Quinn Quality"
        assert esign.verify_signature(s, sig, services.stored_release_content(s, release))
        assert release.rbe_run_id == run.id and release.record_fingerprint == run.record_fingerprint
        # The chain head is anchored after commit through the outbox (the TSA job of the audit area).
        anchor_jobs = s.scalars(select(OutboxMessage).where(OutboxMessage.func == "app.audit.jobs:anchor_audit_chain")
                                ).all()
        assert [j.kwargs["record_id"] for j in anchor_jobs] == [str(release.id)]
    with pytest.raises(Conflict, match="already released"):
        floor.decide(batch_id)


def test_release_refused_in_each_blocking_case_and_allowed_once_resolved(make_review_floor) -> None:
    floor = make_review_floor()
    batch_id = floor.new_batch()
    floor.start(batch_id, "clearance")
    with pytest.raises(Conflict, match="only a completed batch"):
        floor.decide(batch_id)
    floor.enter(batch_id, "clearance", "room_clear", {"value": True})
    floor.enter(batch_id, "clearance", "vessel", {"code": f"EQ:{floor.reactor_tag}"})
    floor.sign_all(batch_id, "clearance")
    floor.complete(batch_id, "clearance")
    floor.start(batch_id, "charge")
    floor.enter(batch_id, "charge", "medium", {"code": f"LOT:{floor.lots['MED-T']}", "quantity": "8", "unit": "L"})
    floor.enter(batch_id, "charge", "temp", {"value": "38.8", "unit": "degC"}, acknowledgement="probe recalibrated")
    floor.sign_all(batch_id, "charge")
    floor.complete(batch_id, "charge")
    floor.start(batch_id, "bolus")
    floor.enter(batch_id, "bolus", "glucose", {"code": f"LOT:{floor.lots['GLC-T']}", "quantity": "0.5", "unit": "L"})
    floor.sign_all(batch_id, "bolus")
    floor.complete(batch_id, "bolus")
    floor.start(batch_id, "sample")
    floor.enter(batch_id, "sample", "sample_id", {"value": "S-0003"})
    floor.enter(batch_id, "sample", "ph", {"value": "7.12"})
    floor.enter(batch_id, "sample", "appearance", {"value": "Clear"})
    floor.sign_all(batch_id, "sample")
    floor.complete(batch_id, "sample")
    floor.finish(batch_id)
    out_lot = f"OUT-{batch_id}-{floor.tenant.ref.id}"

    # 1. the checks have not run on the completed record
    with pytest.raises(Conflict, match="checks have not run"):
        floor.decide(batch_id)
    floor.rbe(batch_id)
    found = _exceptions_by_type(floor, batch_id)
    assert set(found) == {"out_of_limit", "alarm_limit"}
    # 2. exceptions not dispositioned
    with pytest.raises(Conflict, match="2 exceptions not dispositioned"):
        floor.decide(batch_id)
    # a critical exception cannot simply be accepted
    with pytest.raises(Conflict, match="cannot simply be accepted"):
        floor.dispose(batch_id, [found["out_of_limit"]])
    floor.dispose(batch_id, [found["alarm_limit"]], justification="alarm band only, within the proven range")
    with pytest.raises(Conflict, match="already have a disposition"):
        floor.dispose(batch_id, [found["alarm_limit"]])
    # 3. a critical exception escalated to a deviation that is still open
    disposition = floor.dispose(batch_id, [found["out_of_limit"]], decision="escalated",
                                justification="temperature above the proven acceptable range",
                                new_deviation={"title": "Charge temperature 38.8 °C", "classification": "major",
                                               "description": "Temperature above the high limit during charge."})
    assert disposition.status == "complete"
    blockers = _blockers(floor, batch_id)
    assert len(blockers) == 1 and "needs deviation DEV-" in blockers[0] and "(it is open)" in blockers[0]
    with pytest.raises(Conflict, match="needs deviation"):
        floor.decide(batch_id)
    deviation_id = disposition.deviation_id
    with floor.tx(floor.qa) as s, pytest.raises(Conflict, match="root cause"):
        services.close_deviation(s, deviation_id=deviation_id, summary="done", user_id=floor.qa.user_id,
                                 credentials=floor.credentials(floor.qa))
    with floor.tx(floor.qa) as s:
        services.update_deviation(s, deviation_id=deviation_id, changes={
            "investigation": "Heater PID overshoot at charge; logger confirms 2 min above 38 °C.",
            "root_cause": "PID gain set too high after maintenance.",
            "product_impact": "None: within the validated excursion window (PV-2026-014)."})
    with floor.tx(floor.qa) as s, pytest.raises(ValidationError, match="reason is required"):
        services.update_deviation(s, deviation_id=deviation_id, changes={"root_cause": "something else"})
    with floor.tx(floor.qa) as s, pytest.raises(Conflict, match="CAPA"):
        services.close_deviation(s, deviation_id=deviation_id, summary="done", user_id=floor.qa.user_id,
                                 credentials=floor.credentials(floor.qa))
    with floor.tx(floor.qa) as s:
        due = (db_now(s) + timedelta(days=30)).date()
        services.add_capa(s, deviation_id=deviation_id, kind="corrective", description="Re-tune the heater PID",
                          owner_member_id=floor.supervisor.member_id, due_date=due.isoformat())
    with floor.tx(floor.qa) as s, pytest.raises(SignatureRefused):
        services.close_deviation(s, deviation_id=deviation_id, summary="closed", user_id=floor.qa.user_id,
                                 credentials={**floor.credentials(floor.qa), "password": "wrong password 123"})
    with floor.tx(floor.qa) as s:
        services.close_deviation(s, deviation_id=deviation_id, summary="Investigated; no product impact; CAPA open",
                                 user_id=floor.qa.user_id, credentials=floor.credentials(floor.qa))
        assert s.get(Deviation, deviation_id).status == "closed"
    assert _blockers(floor, batch_id) == []
    # 4. the record changed after the checks ran (a concern raised during review)
    with floor.tx(floor.operator2) as s:
        services.flag_concern(s, batch_id=batch_id, comment="label print was smudged on one container")
    blockers = _blockers(floor, batch_id)
    assert any("record changed since the checks ran" in b for b in blockers)
    assert any("1 exceptions not dispositioned (1 major)" in b for b in blockers)
    with pytest.raises(Conflict, match="record changed"):
        floor.decide(batch_id)
    floor.rbe(batch_id, who=floor.qa)
    # 5. a disposition that needs two signatures (the tenant's rules ask it for concerns) awaits the second
    with floor.tx(floor.qa) as s:
        services.update_rules(s, overrides={"operator_concern": {"signatures": 2}}, reason="SOP QA-012 rev 3")
    concern = _exceptions_by_type(floor, batch_id)["operator_concern"]
    second = floor.dispose(batch_id, [concern], justification="labels reprinted and checked before shipment")
    assert second.status == "awaiting_second_signature" and second.signatures_required == 2
    assert any(f"disposition #{second.id} awaits its second signature" in b for b in _blockers(floor, batch_id))
    with pytest.raises(Conflict, match="second signature"):
        floor.decide(batch_id)
    with floor.tx(floor.qa) as s, pytest.raises(SignerNotPermitted, match="separation of duties"):
        services.countersign_disposition(s, disposition_id=second.id, user_id=floor.qa.user_id,
                                         credentials=floor.credentials(floor.qa))
    with floor.tx(floor.qa2) as s:
        services.countersign_disposition(s, disposition_id=second.id, user_id=floor.qa2.user_id,
                                         credentials=floor.credentials(floor.qa2))
    # resolved: release; the operator who executed it could not have, the QA reviewer can
    assert _blockers(floor, batch_id) == []
    assert floor.lot_status(out_lot) == "quarantine"
    release = floor.decide(batch_id, reason="all exceptions dispositioned; DEV closed")
    assert release.decision == "released" and floor.batch_status(batch_id) == "released"
    assert floor.lot_status(out_lot) == "released"
    assert {r.status for r in floor.exception_rows(batch_id)} == {"closed"}
    assert release.lots[0]["lot_number"] == out_lot and release.lots[0]["status_change_id"]


def test_rejected_batch_and_its_lots_are_rejected(make_review_floor) -> None:
    floor = make_review_floor()
    batch_id = floor.clean_batch()
    floor.rbe(batch_id)
    with floor.tx(floor.operator) as s:
        services.flag_concern(s, batch_id=batch_id, comment="vessel seal found cracked after the run")
    with pytest.raises(ValidationError, match="reason is required"):
        floor.decide(batch_id, decision="rejected")
    release = floor.decide(batch_id, decision="rejected", reason="sterility assurance lost: cracked vessel seal")
    assert release.decision == "rejected" and floor.batch_status(batch_id) == "rejected"
    assert floor.lot_status(f"OUT-{batch_id}-{floor.tenant.ref.id}") == "rejected"
    with floor.tx() as s:
        assert s.get(Signature, release.signature_id).meaning == "rejected"
    with pytest.raises(Conflict, match="already rejected"):
        floor.decide(batch_id)


def test_people_who_executed_the_batch_cannot_release_it(make_review_floor, make_member) -> None:
    floor = make_review_floor()
    batch_id = floor.clean_batch()
    floor.rbe(batch_id)
    with pytest.raises(SignerNotPermitted, match="separation of duties"):
        floor.decide(batch_id, who=floor.operator)
    assert floor.batch_status(batch_id) == "in_review"


def test_signed_record_changed_after_signing_shows_up_at_review(make_review_floor, db) -> None:
    floor = make_review_floor()
    batch_id = floor.clean_batch()
    floor.rbe(batch_id)
    # Someone with database access edits a signed value outside the application (triggers bypassed).
    with db.owner.connect() as conn, conn.begin():
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f'UPDATE "{floor.tenant.ref.schema}".step_entries SET display = \'36.2 degC\' '
                          "WHERE batch_id = :b AND capture_key = 'temp'"), {"b": batch_id})
    blockers = _blockers(floor, batch_id)
    assert any("record changed since the checks ran" in b for b in blockers)
    run = floor.rbe(batch_id, who=floor.qa)
    rows = [r for r in floor.exception_rows(batch_id) if r.type == "signature_invalid"]
    assert [(r.severity, r.phase_key) for r in rows] == [("critical", "charge"), ("critical", "charge")]
    assert {r.evidence["meaning"] for r in rows} == {"performed", "verified"}
    assert not {c["code"]: c for c in run.checks}["signatures_valid"]["passed"]
    with pytest.raises(Conflict, match="not dispositioned"):
        floor.decide(batch_id)
    with pytest.raises(Conflict, match="cannot simply be accepted"):
        floor.dispose(batch_id, [rows[0].id])


def test_refusals_store_nothing(make_review_floor) -> None:
    floor = make_review_floor()
    batch_id = floor.clean_batch()
    floor.rbe(batch_id)
    with pytest.raises(ValidationError, match="choose at least one exception"):
        floor.dispose(batch_id, [])
    with pytest.raises(ValidationError, match="justification is required"):
        floor.dispose(batch_id, [1], justification=" ")
    with floor.tx(floor.qa) as s, pytest.raises(ValidationError, match="classification"):
        services.open_deviation(s, batch_id=batch_id, title="x", classification="urgent", description="y")
    with floor.tx(floor.qa) as s, pytest.raises(ValidationError, match="not an exception class"):
        services.update_rules(s, overrides={"nonsense": {"severity": "minor"}}, reason="test")
    with floor.tx(floor.qa) as s, pytest.raises(ValidationError, match="1 or 2 signatures"):
        services.update_rules(s, overrides={"reweigh": {"signatures": 3}}, reason="test")
    with tenant_transaction(floor.tenant.ref) as s:
        assert s.scalar(select(BatchRelease.id)) is None
        assert s.execute(text("SELECT count(*) FROM deviations")).scalar_one() == 0
        assert s.execute(text("SELECT count(*) FROM review_rule_sets")).scalar_one() == 0
        assert s.execute(text("SELECT count(*) FROM exception_dispositions")).scalar_one() == 0
