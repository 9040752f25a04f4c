"""Lots: the usability gate, exact balances that never go negative, QA dispositions in the audit trail."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.audit.models import AuditEvent
from app.core.errors import Conflict, ValidationError
from app.core.tenancy import tenant_transaction
from app.materials import lot_usable
from app.materials.models import Lot, LotMovement
from app.materials.queries import ledger_sum
from app.materials.services import adjust_lot, change_lot_status, consume_lot, receive_lot
from tests.factories import admin_actor, credentials, make_lot, make_material

NOW = datetime.now(UTC)


def test_released_lot_of_the_right_material_is_usable(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        material = make_material(session)
        lot = make_lot(session, material, "10", expiry_date=(NOW + timedelta(days=30)).date())
        verdict = lot_usable(lot, material, "10", NOW)
        assert verdict.usable and verdict.codes == []


@pytest.mark.parametrize(
    "case, code",
    [
        ("quarantined", "quarantined"),
        ("rejected", "rejected"),
        ("expired", "expired"),
        ("wrong_material", "wrong_material"),
        ("insufficient", "insufficient_quantity"),
    ],
)
def test_each_reason_against_use_is_detected(make_tenant, case, code) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        material, other = make_material(session), make_material(session)
        lot = make_lot(
            session,
            material,
            "5",
            release=case != "quarantined",
            expiry_date="2026-01-31" if case == "expired" else None,
        )
        if case == "rejected":
            change_lot_status(
                session, lot_id=lot.id, to_status="rejected", reason="OOS assay", credentials=credentials(session)
            )
        at = datetime(2026, 2, 1, 8, tzinfo=UTC) if case == "expired" else NOW
        verdict = lot_usable(
            lot, other if case == "wrong_material" else material, "5.000001" if case == "insufficient" else "1", at
        )
        assert verdict.codes == [code]
        assert lot.lot_number in verdict.reasons[0].message


def test_movements_keep_an_exact_balance(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        lot = make_lot(session, make_material(session), "1.000000")
        for _ in range(10):
            consume_lot(session, lot_id=lot.id, quantity="0.1", batch_number="B-1")
        assert lot.balance == Decimal("0")  # 10 x 0.1 is exactly 1 in NUMERIC (never 0.9999999)
        adjust_lot(session, lot_id=lot.id, quantity="0.333333", reason="recount after spill cleanup")
        assert ledger_sum(session, lot.id) == lot.balance == Decimal("0.333333")


def test_a_lot_never_goes_negative(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        lot = make_lot(session, make_material(session), "2")
    with pytest.raises(Conflict, match="holds 2 kg"), tenant_transaction(tenant.ref) as session:
        adjust_lot(session, lot_id=lot.id, quantity="-2.5", reason="count")
    with pytest.raises(Conflict, match=r"holds 2 kg, 3 kg needed"), tenant_transaction(tenant.ref) as session:
        consume_lot(session, lot_id=lot.id, quantity="3", batch_number="B-2")
    # Even SQL that bypasses the services is stopped by the CHECK constraint.
    with pytest.raises(DBAPIError, match="balance_not_negative"), tenant_transaction(tenant.ref) as session:
        session.execute(text("UPDATE lots SET balance = -1"))
    with tenant_transaction(tenant.ref) as session:
        assert session.get(Lot, lot.id).balance == Decimal("2")


def test_concurrent_consumptions_queue_on_the_row_lock_and_never_overdraw(app, make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        lot = make_lot(session, make_material(session), "10")
    outcomes: list[str] = []

    def take() -> None:
        with app.app_context():
            try:
                with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
                    consume_lot(session, lot_id=lot.id, quantity="3", batch_number="B-9")
                outcomes.append("ok")
            except Conflict:
                outcomes.append("refused")

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 3
    with tenant_transaction(tenant.ref) as session:
        assert session.get(Lot, lot.id).balance == Decimal("1") == ledger_sum(session, lot.id)


def test_consumption_is_gated_by_the_lot_status(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        lot = make_lot(session, make_material(session), "10", release=False)
    with pytest.raises(Conflict, match="quarantine"), tenant_transaction(tenant.ref) as session:
        consume_lot(session, lot_id=lot.id, quantity="1", batch_number="B-3")


def test_lot_dispositions_and_receipts_are_audited_with_reasons(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        lot = make_lot(session, make_material(session), "10", release=False)
        change_lot_status(
            session,
            lot_id=lot.id,
            to_status="released",
            reason="CoA and ID test passed",
            credentials=credentials(session),
        )
        change_lot_status(
            session, lot_id=lot.id, to_status="rejected", reason="supplier recall", credentials=credentials(session)
        )
    with pytest.raises(Conflict, match="rejection is final"), tenant_transaction(tenant.ref) as session:
        change_lot_status(session, lot_id=lot.id, to_status="released", reason="oops", credentials=credentials(session))
    with tenant_transaction(tenant.ref) as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.record_type == "lot").order_by(AuditEvent.seq)
        ).all()
        assert [(e.action, e.reason) for e in events] == [
            ("create", None),
            ("status_change", "CoA and ID test passed"),
            ("status_change", "supplier recall"),
        ]
        assert events[2].old_values == {"status": "released"} and events[2].new_values["status"] == "rejected"
        assert all(e.actor_label == admin_actor(tenant).label for e in events)


def test_bad_receipts_are_refused_with_the_reason(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        material = make_material(session, unit="kg", shelf_life_days=30)
        lot = receive_lot(
            session, material_id=material.id, lot_number="R-1", quantity="1", received_on="2026-03-01", supplier="S"
        )
        assert lot.expiry_date.isoformat() == "2026-03-31"  # from the shelf life
    for kwargs, message in [
        ({"quantity": "-1"}, "greater than zero"),
        ({"quantity": "abc"}, "not a number"),
        ({"unit": "L"}, "counted in kg"),
        ({"received_on": "1.3.2026"}, "YYYY-MM-DD"),
        ({"lot_number": "R-1"}, "already exists"),
        ({"lot_number": "has space"}, "no spaces"),
    ]:
        values = {
            "material_id": material.id,
            "lot_number": "R-2",
            "quantity": "1",
            "received_on": "2026-03-01",
            "supplier": "S",
            **kwargs,
        }
        with pytest.raises((ValidationError, Conflict), match=message), tenant_transaction(tenant.ref) as s:
            receive_lot(s, **values)
    with tenant_transaction(tenant.ref) as session:
        assert session.scalar(select(LotMovement.id).where(LotMovement.lot_id != lot.id)) is None
