"""Equipment: status gates, logbook entries for every change, fixed master data."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from app import esign
from app.audit.models import AuditEvent
from app.audit.registry import RECORD_TYPES
from app.core.errors import Conflict, ValidationError
from app.core.tenancy import tenant_transaction
from app.esign import SignatureRefused
from app.plant import equipment_ready
from app.plant.models import Equipment, EquipmentLogEntry
from app.plant.services import change_equipment_status, record_calibration, record_qualification
from tests.factories import ALICE, admin_actor, credentials, make_equipment, make_line

NOW = datetime.now(UTC)
TODAY = NOW.date()


def test_clean_qualified_calibrated_equipment_is_ready(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        eq = make_equipment(session, make_line(session), clean_hold_hours=72,
                            calibration_due=TODAY + timedelta(days=30), qualified_until=TODAY + timedelta(days=300))
        verdict = equipment_ready(eq, NOW)
        assert verdict.ready and verdict.codes == []


@pytest.mark.parametrize("overrides, at_offset, code", [
    ({"status": "dirty"}, timedelta(0), "dirty"),
    ({"clean_hold_hours": 24}, timedelta(hours=25), "clean_hold_expired"),
    ({"calibration_due": TODAY - timedelta(days=1)}, timedelta(0), "calibration_overdue"),
    ({"qualified_until": TODAY - timedelta(days=1)}, timedelta(0), "qualification_expired"),
    ({"qualification_status": "in_qualification"}, timedelta(0), "not_qualified"),
    ({"status": "maintenance"}, timedelta(0), "under_maintenance"),
    ({"status": "out_of_service"}, timedelta(0), "out_of_service"),
])
def test_each_reason_against_use_is_detected(make_tenant, overrides, at_offset, code) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        eq = make_equipment(session, make_line(session), **overrides)
        verdict = equipment_ready(eq, datetime.now(UTC) + at_offset)
        assert not verdict.ready
        assert verdict.codes == [code]
        assert eq.tag in verdict.reasons[0].message


def test_clean_hold_is_within_limit_one_hour_before_it_expires(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        eq = make_equipment(session, make_line(session), clean_hold_hours=24)
        assert equipment_ready(eq, eq.cleaned_at + timedelta(hours=23)).ready
        assert equipment_ready(eq, eq.cleaned_at + timedelta(hours=24, seconds=1)).codes == ["clean_hold_expired"]


def test_several_reasons_are_all_listed(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        eq = make_equipment(session, make_line(session), status="dirty", calibration_due=TODAY - timedelta(days=3),
                            qualified_until=TODAY - timedelta(days=3))
        assert equipment_ready(eq, NOW).codes == ["dirty", "calibration_overdue", "qualification_expired"]


def test_due_dates_are_read_in_the_site_timezone(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        eq = make_equipment(session, make_line(session, timezone="Pacific/Auckland"),
                            calibration_due=date(2026, 3, 1))
        # 2026-03-01 12:00 UTC is already 2 March in Auckland (UTC+13): overdue there, not in UTC.
        assert equipment_ready(eq, datetime(2026, 3, 1, 12, tzinfo=UTC)).codes == ["calibration_overdue"]
        assert equipment_ready(eq, datetime(2026, 3, 1, 12, tzinfo=UTC), timezone="UTC").ready


def test_status_changes_are_logbook_entries_and_audit_events_with_reasons(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        eq = make_equipment(session, make_line(session), status="dirty")
        change_equipment_status(session, equipment_id=eq.id, to_status="clean", reason="Cleaned per SOP-CL-01")
        change_equipment_status(session, equipment_id=eq.id, to_status="in_use", reason="Batch B-001")
        change_equipment_status(session, equipment_id=eq.id, to_status="dirty", reason="Batch B-001 done")
        record_calibration(session, equipment_id=eq.id, next_due=TODAY + timedelta(days=180),
                           reason="Annual calibration", certificate="CAL-2026-17")
        record_qualification(session, equipment_id=eq.id, qualification_status="qualified",
                             qualified_until=TODAY + timedelta(days=365), reason="PQ passed")
    with tenant_transaction(tenant.ref) as session:
        log = session.scalars(select(EquipmentLogEntry).where(EquipmentLogEntry.equipment_id == eq.id)
                              .order_by(EquipmentLogEntry.id)).all()
        assert [(e.kind, e.from_status, e.to_status) for e in log] == [
            ("created", None, "dirty"), ("status_change", "dirty", "clean"), ("status_change", "clean", "in_use"),
            ("status_change", "in_use", "dirty"), ("calibration", None, None), ("qualification", None, None)]
        assert all(e.actor_label == ALICE.label and e.member_id == ALICE.member_id for e in log)
        events = session.scalars(select(AuditEvent).where(AuditEvent.record_type == "equipment",
                                                          AuditEvent.record_id == str(eq.id))
                                 .order_by(AuditEvent.seq)).all()
        assert [e.action for e in events] == ["create"] + ["status_change"] * 5
        assert [e.reason for e in events[1:]] == ["Cleaned per SOP-CL-01", "Batch B-001", "Batch B-001 done",
                                                  "Annual calibration", "PQ passed"]
        assert events[1].old_values["status"] == "dirty" and events[1].new_values["status"] == "clean"


def test_bad_transitions_and_missing_reasons_are_refused_and_change_nothing(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        eq = make_equipment(session, make_line(session), status="dirty")
    with pytest.raises(Conflict, match="cannot go from dirty to in use"), tenant_transaction(tenant.ref) as s:
        change_equipment_status(s, equipment_id=eq.id, to_status="in_use", reason="start batch")
    with pytest.raises(ValidationError, match="reason is required"), tenant_transaction(tenant.ref) as s:
        change_equipment_status(s, equipment_id=eq.id, to_status="clean", reason="  ")
    with tenant_transaction(tenant.ref) as session:
        assert session.get(Equipment, eq.id).status == "dirty"
        assert session.scalar(select(EquipmentLogEntry.id).where(EquipmentLogEntry.kind == "status_change")) is None


def test_site_signature_route_requires_a_signature_bound_to_the_logbook_entry(make_tenant) -> None:
    tenant = make_tenant()
    admin = admin_actor(tenant)
    with tenant_transaction(tenant.ref, actor=admin) as session:
        eq = make_equipment(session, make_line(session, signature_routes=("equipment.status_change",)),
                            status="dirty")
    with pytest.raises(ValidationError, match="requires an e-signature"), tenant_transaction(tenant.ref) as s:
        change_equipment_status(s, equipment_id=eq.id, to_status="clean", reason="cleaned")
    with pytest.raises(SignatureRefused), tenant_transaction(tenant.ref, actor=admin) as s:
        change_equipment_status(s, equipment_id=eq.id, to_status="clean", reason="cleaned",
                                credentials={**credentials(s), "password": "wrong password"})
    with tenant_transaction(tenant.ref, actor=admin) as session:
        entry = change_equipment_status(session, equipment_id=eq.id, to_status="clean", reason="cleaned SOP-CL-1",
                                        credentials=credentials(session))
    with tenant_transaction(tenant.ref) as session:
        assert session.get(Equipment, eq.id).status == "clean"
        [signature] = esign.signatures_of(session, record_type="equipment_log", record_id=entry.id)
        assert signature.id == entry.signature_id and signature.meaning == "performed"
        assert signature.reason == "cleaned SOP-CL-1" and signature.signer_email == tenant.admin_email
        content = RECORD_TYPES["equipment_log"].content(session, str(entry.id))
        assert esign.verify_signature(session, signature, content)
        assert not esign.verify_signature(session, signature, {**content, "to_status": "in_use"})
        # The refused attempt left nothing behind: one status change in the logbook.
        assert session.scalar(select(func.count()).select_from(EquipmentLogEntry)
                              .where(EquipmentLogEntry.kind == "status_change")) == 1


def test_master_data_and_logbook_cannot_be_rewritten_in_the_database(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        make_equipment(session, make_line(session))
    for statement, message in [("UPDATE equipment SET tag = 'X-1'", "not updated in place"),
                               ("UPDATE sites SET name = 'x'", "not updated in place"),
                               ("UPDATE equipment_log SET reason = 'x'", "permission denied"),
                               ("DELETE FROM equipment", "permission denied")]:
        with pytest.raises(DBAPIError, match=message), tenant_transaction(tenant.ref) as s:
            s.execute(text(statement))
