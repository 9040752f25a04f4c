"""The audit trail: append-only by privilege and trigger, hash-chained, tamper-evident."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from app.audit.services import record, verify_chain
from app.core.errors import ValidationError
from app.core.tenancy import Actor, tenant_transaction

ALICE = Actor(member_id=7, label="Alice Analyst <alice@example.com>", request_id="req-1", client_addr="10.0.0.5")


def _seed(tenant, n: int = 5) -> None:
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        for i in range(n):
            record(session, action="create", record_type="equipment", record_id=i, new={"tag": f"BR-{i}", "n": i})


def test_events_are_chained_with_gapless_sequence_and_database_time(make_tenant) -> None:
    tenant = make_tenant()
    _seed(tenant, 3)
    with tenant_transaction(tenant.ref) as session:
        rows = session.execute(text("SELECT seq, prev_hash, hash, actor_label, occurred_at FROM audit_events "
                                    "ORDER BY seq")).all()
        now = session.execute(text("SELECT now()")).scalar_one()
        assert [r.seq for r in rows] == [1, 2, 3]
        assert rows[0].prev_hash == "0" * 64
        assert rows[1].prev_hash == rows[0].hash and rows[2].prev_hash == rows[1].hash
        assert all(r.actor_label == ALICE.label and r.occurred_at <= now for r in rows)
        assert verify_chain(session).ok


def test_reason_is_required_for_corrections_and_status_changes(make_tenant) -> None:
    tenant = make_tenant()
    for action in ("correct", "status_change"):
        with pytest.raises(ValidationError, match="reason is required"), tenant_transaction(tenant.ref) as s:
            record(s, action=action, record_type="lot", record_id=1, old={"q": 1}, new={"q": 2}, reason="  ")
    with tenant_transaction(tenant.ref) as session:
        assert session.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 0


def test_runtime_tenant_role_may_only_insert_and_select(make_tenant) -> None:
    tenant = make_tenant()
    _seed(tenant, 1)
    for statement in ("UPDATE audit_events SET reason = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events"):
        with pytest.raises(ProgrammingError, match="permission denied"), tenant_transaction(tenant.ref) as s:
            s.execute(text(statement))


def test_trigger_refuses_update_delete_truncate_even_for_the_owner(db, make_tenant) -> None:
    tenant = make_tenant()
    _seed(tenant, 2)
    for statement in ("UPDATE audit_events SET reason = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), db.owner.begin() as conn:
            conn.execute(text(f'SET LOCAL search_path TO "{tenant.ref.schema}"'))
            conn.execute(text(statement))


def test_forged_hash_or_sequence_on_insert_is_overwritten_by_the_database(make_tenant) -> None:
    tenant = make_tenant()
    _seed(tenant, 1)
    with tenant_transaction(tenant.ref) as session:
        session.execute(text("INSERT INTO audit_events (seq, actor_label, action, record_type, record_id, hash, "
                             "prev_hash, occurred_at) VALUES (99, 'x', 'create', 'lot', '1', 'f00', 'bar', "
                             "'2000-01-01')"))
        row = session.execute(text("SELECT seq, hash, occurred_at FROM audit_events ORDER BY seq DESC")).first()
        assert row.seq == 2 and row.hash != "f00" and row.occurred_at.year > 2000
        assert verify_chain(session).ok


def _tamper(db, tenant, *statements: str) -> None:
    """As a superuser with triggers disabled: what an attacker with database access could do."""
    with db.owner.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f'SET LOCAL search_path TO "{tenant.ref.schema}"'))
        for statement in statements:
            conn.execute(text(statement))


@pytest.mark.parametrize("statements, first_broken", [
    (["UPDATE audit_events SET new_values = '{\"tag\": \"BR-X\", \"n\": 2}' WHERE seq = 3"], 3),
    (["UPDATE audit_events SET occurred_at = occurred_at - interval '1 day' WHERE seq = 4"], 4),
    (["UPDATE audit_events SET actor_label = 'Mallory' WHERE seq = 2"], 2),
    (["DELETE FROM audit_events WHERE seq = 3"], 4),
    (["DELETE FROM audit_events WHERE seq = 5"], 5),
    (["UPDATE audit_events SET seq = 100 WHERE seq = 2", "UPDATE audit_events SET seq = 2 WHERE seq = 3",
      "UPDATE audit_events SET seq = 3 WHERE seq = 100"], 2),
    (["INSERT INTO audit_events (seq, actor_label, action, record_type, record_id, prev_hash, hash) "
      "SELECT 6, 'x', 'create', 'lot', '9', hash, repeat('a', 64) FROM audit_events WHERE seq = 5",
      "UPDATE audit_head SET seq = 6, hash = repeat('a', 64)"], 6),
])
def test_tampering_is_caught_at_the_first_broken_sequence(db, make_tenant, statements, first_broken) -> None:
    tenant = make_tenant()
    _seed(tenant, 5)
    _tamper(db, tenant, *statements)
    with tenant_transaction(tenant.ref) as session:
        report = verify_chain(session)
    assert not report.ok
    assert report.first_broken_seq == first_broken, report


def test_eight_concurrent_writers_in_one_tenant_produce_a_valid_chain(app, make_tenant) -> None:
    tenant, other = make_tenant(), make_tenant()
    errors: list[BaseException] = []

    def writer(i: int, target) -> None:
        try:
            with app.app_context():
                for j in range(25):
                    with tenant_transaction(target.ref) as session:
                        record(session, action="create", record_type="entry", record_id=f"{i}-{j}", new={"v": j})
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i, tenant)) for i in range(8)]
    threads.append(threading.Thread(target=writer, args=(99, other)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with tenant_transaction(tenant.ref) as session:
        report = verify_chain(session)
    assert report.ok and report.events == 200 and report.head_seq == 200


def test_many_events_in_one_transaction_keep_one_chain(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref) as session:
        session.execute(text("INSERT INTO audit_events (actor_label, action, record_type, record_id) "
                             "SELECT 'bulk', 'create', 'reading', g::text FROM generate_series(1, 500) g"))
        record(session, action="create", record_type="entry", record_id="after-bulk")
    with tenant_transaction(tenant.ref) as session:
        report = verify_chain(session)
        assert report.ok and report.head_seq == 501
        assert session.execute(text("SELECT seq FROM audit_head")).scalar_one() == 501


def test_rolled_back_events_leave_no_gap(make_tenant) -> None:
    tenant = make_tenant()
    _seed(tenant, 2)
    with pytest.raises(RuntimeError), tenant_transaction(tenant.ref) as session:
        record(session, action="create", record_type="lot", record_id=1)
        raise RuntimeError("abort")
    _seed(tenant, 1)
    with tenant_transaction(tenant.ref) as session:
        report = verify_chain(session)
        assert report.ok and report.head_seq == 3
