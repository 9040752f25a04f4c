"""Audit: every create and status change of plant and material records lands in the tenant's chain."""

from __future__ import annotations

from sqlalchemy import select

from app.audit.models import AuditEvent
from app.audit.services import verify_chain
from app.core.tenancy import tenant_transaction
from app.materials.services import adjust_lot, change_lot_status, consume_lot, produce_lot
from app.plant.services import add_logbook_note, change_equipment_status, create_sensor
from tests.factories import admin_actor, credentials, make_equipment, make_line, make_lot, make_material


def test_every_create_and_status_change_is_in_the_audit_trail_with_its_reason(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        line = make_line(session)
        eq = make_equipment(session, line, status="dirty")
        sensor = create_sensor(
            session,
            tag="TT-1",
            equipment_id=eq.id,
            quantity_kind="temperature",
            unit="°C",
            range_low="-10",
            range_high="50",
            sampling_period_s="5",
        )
        change_equipment_status(session, equipment_id=eq.id, to_status="clean", reason="cleaned after use")
        add_logbook_note(session, equipment_id=eq.id, note="gasket replaced")
        material, product = make_material(session), make_material(session, material_type="product", unit="L")
        lot = make_lot(session, material, "5", release=False)
        change_lot_status(
            session, lot_id=lot.id, to_status="released", reason="CoA reviewed", credentials=credentials(session)
        )
        consume_lot(session, lot_id=lot.id, quantity="1", batch_number="B-7")
        adjust_lot(session, lot_id=lot.id, quantity="-0.5", reason="spill")
        out = produce_lot(session, material_id=product.id, lot_number="DS-7", quantity="1", batch_number="B-7")
    with tenant_transaction(tenant.ref) as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        seen = [(e.action, e.record_type, e.record_id, e.reason) for e in events]
        assert verify_chain(session).ok
    assert ("create", "site", str(line.site_id), None) in seen
    assert ("create", "line", str(line.id), None) in seen
    assert ("create", "equipment", str(eq.id), None) in seen
    assert ("create", "sensor", str(sensor.id), None) in seen
    assert ("status_change", "equipment", str(eq.id), "cleaned after use") in seen
    assert any(a == "create" and t == "equipment_log" for a, t, _, _ in seen)
    assert ("create", "material", str(material.id), None) in seen
    assert ("create", "lot", str(lot.id), None) in seen
    assert ("status_change", "lot", str(lot.id), "CoA reviewed") in seen
    assert [r for a, t, _, r in seen if t == "lot_movement"] == [None, "spill"]
    assert ("create", "lot", str(out.id), None) in seen
    actor = admin_actor(tenant)
    assert all(e.actor_label == actor.label and e.actor_member_id == actor.member_id for e in events)
