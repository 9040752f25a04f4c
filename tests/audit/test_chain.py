"""The audit trail: append-only by privilege and trigger, hash-chained, tamper-evident."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.orm import Session

from app.audit.models import GENESIS_HASH
from app.audit.services import record, record_many, verify_chain
from app.core.errors import ValidationError
from app.core.tenancy import Actor, tenant_ref, tenant_transaction
from app.tenancy.schema import alembic_config, create_tenant_role, migrate_tenant_schema

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


def test_the_tenant_role_cannot_write_the_chains_own_columns(make_tenant) -> None:
    """Seq, time and hashes are the database's: naming one is refused; an insert of the content gets them."""
    tenant = make_tenant()
    _seed(tenant, 1)
    for column, value in (("seq", "99"), ("hash", "'f00'"), ("prev_hash", "'bar'"), ("occurred_at", "'2000-01-01'")):
        with pytest.raises(ProgrammingError, match="permission denied"), tenant_transaction(tenant.ref) as session:
            session.execute(text(f"INSERT INTO audit_events (actor_label, action, record_type, record_id, {column}) "
                                 f"VALUES ('x', 'create', 'lot', '1', {value})"))
    with tenant_transaction(tenant.ref) as session:
        session.execute(text("INSERT INTO audit_events (actor_label, action, record_type, record_id) "
                             "VALUES ('x', 'create', 'lot', '1')"))
        row = session.execute(text("SELECT seq, hash, occurred_at FROM audit_events ORDER BY seq DESC")).first()
        assert row.seq == 2 and len(row.hash) == 64 and row.occurred_at.year > 2000
        assert verify_chain(session).ok


def _batch(n: int, tag: str) -> list[dict]:
    return [{"action": "create", "record_type": "lot", "record_id": f"{tag}-{i}", "new": {"n": i}} for i in range(n)]


def test_batches_and_single_events_continue_one_chain_in_and_across_transactions(make_tenant) -> None:
    """`audit_append` (record_many) and the row trigger (record) hand the head to each other in any order."""
    tenant = make_tenant()
    _seed(tenant, 1)
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        assert record_many(session, _batch(3, "a")) == [2, 3, 4]
        assert record(session, action="create", record_type="lot", record_id="b").seq == 5
        assert record_many(session, _batch(2, "c")) == [6, 7]
        assert record_many(session, []) == []
        assert session.scalars(text("SELECT * FROM audit_append('[]')")).all() == []  # moves nothing
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        assert record_many(session, _batch(2, "d")) == [8, 9]
        assert record(session, action="create", record_type="lot", record_id="e").seq == 10
    with tenant_transaction(tenant.ref) as session:
        assert session.execute(text("SELECT seq, hash FROM audit_head")).one() == session.execute(
            text("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")).one()
        report = verify_chain(session)
        assert report.ok and report.events == 10


def test_a_batch_rolled_back_to_a_savepoint_leaves_no_gap(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        record_many(session, _batch(2, "a"))
        with pytest.raises(RuntimeError), session.begin_nested():
            record_many(session, _batch(3, "b"))
            raise RuntimeError("undo the batch")
        assert record_many(session, _batch(2, "c")) == [3, 4]
    with tenant_transaction(tenant.ref) as session:
        assert verify_chain(session).ok


def test_a_temporary_table_of_the_caller_cannot_stand_in_for_the_chain_head(make_tenant) -> None:
    """`audit_append` runs as the schema's owner with its search_path pinned, pg_temp last."""
    tenant = make_tenant()
    _seed(tenant, 2)
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        session.execute(text("CREATE TEMP TABLE audit_head (id int, seq bigint, hash text) ON COMMIT DROP"))
        session.execute(text("INSERT INTO audit_head VALUES (1, 500, repeat('f', 64))"))
        assert record_many(session, _batch(2, "a")) == [3, 4]
    with tenant_transaction(tenant.ref) as session:
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
    """Writers of single events (the row trigger) and of batches (`audit_append`) queue on one head."""
    tenant, other = make_tenant(), make_tenant()
    errors: list[BaseException] = []

    def writer(i: int, target) -> None:
        try:
            with app.app_context():
                for j in range(25):
                    with tenant_transaction(target.ref) as session:
                        if i % 2:
                            record_many(session, _batch(2, f"{i}-{j}"))
                        else:
                            record(session, action="create", record_type="entry", record_id=f"{i}-{j}",
                                   new={"v": j})
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
    assert report.ok and report.events == 300 and report.head_seq == 300  # 4 x 25 single events, 4 x 25 pairs


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


#: Text the canonical form prints as it is, and text jsonb must escape (quote, backslash, every control
#: character): the trigger writes the first kind out itself and leaves the second to jsonb_build_object.
AWKWARD_TEXTS = ["plain", "Zoë Ünal <zoë@例え.jp> 😀", "O'Brien; --", "{\"not\": \"json\"}", 'say "hi"', "back\\slash",
                 "line\u2028separator", "del\x7f", ":", "", "tab\there", *(f"c{chr(i)}c" for i in range(1, 32))]

#: The canonical text as it was first defined: PostgreSQL's jsonb rendering of the event's fields.
JSONB_CANONICAL = """jsonb_build_object(
    'seq', e.seq,
    'occurred_at', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'actor_member_id', e.actor_member_id, 'actor_label', e.actor_label, 'action', e.action,
    'record_type', e.record_type, 'record_id', e.record_id, 'old', e.old_values, 'new', e.new_values,
    'reason', e.reason, 'request_id', e.request_id, 'client_addr', e.client_addr)::text"""

#: Events whose hash is not SHA-256(prev_hash + jsonb text), or whose audit_canonical differs from that text.
OFF_DEFINITION_SQL = f"""
SELECT e.seq FROM audit_events e
WHERE e.hash <> encode(sha256(convert_to(e.prev_hash || {JSONB_CANONICAL}, 'UTF8')), 'hex')
   OR audit_canonical(e) <> {JSONB_CANONICAL}
"""

INSERT_SQL = text("""
INSERT INTO audit_events (actor_member_id, actor_label, action, record_type, record_id, old_values, new_values,
                          reason, request_id, client_addr)
VALUES (:actor_member_id, :actor_label, :action, :record_type, :record_id, CAST(:old AS jsonb),
        CAST(:new AS jsonb), :reason, :request_id, :client_addr)
""")


def _awkward_events() -> list[dict]:
    """One event per awkward text in each text field in turn, with optional fields null or set."""
    fields = ("actor_label", "action", "record_type", "record_id", "reason", "request_id", "client_addr")
    events = []
    for i, value in enumerate(AWKWARD_TEXTS):
        event = {"actor_member_id": None if i % 3 else i, "actor_label": "Alice", "action": "create",
                 "record_type": "lot", "record_id": str(i), "reason": None if i % 2 else "why",
                 "request_id": None if i % 4 else "req", "client_addr": None if i % 5 else "10.0.0.1",
                 "old": None if i % 2 else json.dumps({"q": 1.50, "s": value}),
                 "new": json.dumps({value: value, "n": [i, -0.0, 1e3, None, True], "nested": {"b": 2, "a": 1}})}
        event[fields[i % len(fields)]] = value
        events.append(event)
    return events


def test_hash_is_sha256_of_previous_hash_and_jsonb_text_whatever_the_field_values(make_tenant) -> None:
    tenant = make_tenant()
    events = _awkward_events()
    with tenant_transaction(tenant.ref) as session:
        session.execute(INSERT_SQL, events)
        record_many(session, [{"action": e["action"], "record_type": e["record_type"], "record_id": e["record_id"],
                               "reason": e["reason"] or "why", "old": json.loads(e["old"] or "null"),
                               "new": json.loads(e["new"])} for e in events], actor=ALICE)
    with tenant_transaction(tenant.ref) as session:
        assert session.execute(text(OFF_DEFINITION_SQL)).all() == []
        report = verify_chain(session)
        assert report.ok and report.events == 2 * len(events)


def test_hash_of_a_plain_event_is_the_sha256_of_its_canonical_json(make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        event = record(session, action="create", record_type="equipment", record_id=7,
                       new={"tag": "BR-7", "volume_l": Decimal("2.50"), "n": 3})
    when = event.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    canonical = ('{"new": {"n": 3, "tag": "BR-7", "volume_l": "2.50"}, "old": null, "seq": 1, "action": "create", '
                 '"reason": null, "record_id": "7", "request_id": "req-1", "actor_label": "Alice Analyst '
                 f'<alice@example.com>", "client_addr": "10.0.0.5", "occurred_at": "{when}", '
                 '"record_type": "equipment", "actor_member_id": 7}')
    assert event.hash == hashlib.sha256((GENESIS_HASH + canonical).encode()).hexdigest()


def test_chains_written_before_and_after_the_cheaper_canonical_text_verify_as_one(db) -> None:
    ref = tenant_ref(900003, db=db)
    events = _awkward_events()
    functions = text("SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace ns "
                     "ON ns.oid = p.pronamespace WHERE ns.nspname = :s AND p.proname LIKE 'audit_c%' ORDER BY 1")
    with db.owner.connect() as conn:
        trans = conn.begin()
        session = Session(bind=conn, info={"tenant": ref})

        def write_and_verify() -> None:
            written = conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one()  # migrations audit too
            conn.execute(INSERT_SQL, events)
            assert conn.execute(text(OFF_DEFINITION_SQL)).all() == []
            report = verify_chain(session)
            assert report.ok and report.events == report.head_seq == written + len(events), report

        try:
            create_tenant_role(conn, ref, db.roles)
            conn.execute(text(f'CREATE SCHEMA "{ref.schema}"'))
            migrate_tenant_schema(conn, ref, target="ingest1")  # the trigger that built the jsonb object
            before = conn.execute(functions, {"s": ref.schema}).all()
            write_and_verify()
            migrate_tenant_schema(conn, ref, target="audit2")
            write_and_verify()
            command.downgrade(alembic_config("tenant", connection=conn, schema=ref.schema), "ingest1")
            assert conn.execute(functions, {"s": ref.schema}).all() == before
            write_and_verify()
        finally:
            session.close()
            trans.rollback()  # roles and schemas are transactional: nothing is left behind


def test_another_tenant_cannot_append_to_a_tenants_chain(make_tenant) -> None:
    """`audit_append` runs as the schema's owner: only the schema's own tenant may reach it."""
    tenant, other = make_tenant(), make_tenant()
    with pytest.raises(ProgrammingError, match="permission denied"), tenant_transaction(other.ref) as session:
        session.execute(text(f'SELECT * FROM "{tenant.ref.schema}".audit_append(\'[{{"actor_label": "x", '
                             f'"action": "create", "record_type": "lot", "record_id": "1"}}]\')'))
    with tenant_transaction(tenant.ref) as session:
        assert session.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 0
