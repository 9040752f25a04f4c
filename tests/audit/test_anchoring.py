"""External anchoring: RFC 3161 time-stamps of the chain head catch what the chain alone cannot."""

from __future__ import annotations

import pytest
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.audit.models import AuditAnchor
from app.audit.services import anchor_chain, record, request_anchor, verify_chain
from app.audit.tsa import TimestampError
from app.core.jobs import QUEUES, fan_out_periodic, periodic_job_id, redis_connection, run_periodic_job
from app.core.tenancy import Actor, tenant_transaction

ALICE = Actor(member_id=7, label="Alice Analyst <alice@example.com>", request_id="req-1", client_addr="10.0.0.5")

#: What a database superuser could do to hide an edit: change an event, then recompute every later hash and the
#: head, with triggers disabled. The chain then verifies on its own.
REWRITE_CHAIN = """
DO $$
DECLARE r audit_events; prev text := repeat('0', 64); h text;
BEGIN
  UPDATE audit_events SET new_values = '{"tag": "BR-FORGED"}' WHERE seq = 2;
  FOR r IN SELECT * FROM audit_events ORDER BY seq LOOP
    h := encode(sha256(convert_to(prev || audit_canonical(r), 'UTF8')), 'hex');
    UPDATE audit_events SET prev_hash = prev, hash = h WHERE seq = r.seq;
    prev := h;
  END LOOP;
  UPDATE audit_head SET seq = (SELECT max(seq) FROM audit_events), hash = prev;
END $$
"""


def _seed(tenant, n: int = 5, start: int = 0) -> None:
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        for i in range(start, start + n):
            record(session, action="create", record_type="equipment", record_id=i, new={"tag": f"BR-{i}"})


def _as_superuser(db, tenant, *statements: str) -> None:
    with db.owner.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f'SET LOCAL search_path TO "{tenant.ref.schema}"'))
        for statement in statements:
            conn.execute(text(statement))


def _verify(tenant):
    with tenant_transaction(tenant.ref) as session:
        return verify_chain(session)


def _anchor(tenant, **kwargs):
    with tenant_transaction(tenant.ref) as session:
        return anchor_chain(session, **kwargs)


def test_anchor_stores_a_verifiable_token_of_the_head(tsa, make_tenant) -> None:
    tenant = make_tenant()
    assert _anchor(tenant) is None  # empty trail: nothing to anchor
    _seed(tenant, 3)
    anchor = _anchor(tenant, reason="batch_release", record_type="batch", record_id=42)
    assert (anchor.seq, anchor.reason, anchor.record_id) == (3, "batch_release", "42")
    report = _verify(tenant)
    assert report.ok and report.anchors == 1 and report.anchored_seq == 3 and not report.warnings
    # anchors are append-only too
    with pytest.raises(DBAPIError, match="permission denied"), tenant_transaction(tenant.ref) as session:
        session.execute(text("DELETE FROM audit_anchors"))


def test_rewriting_the_whole_chain_is_caught_by_the_anchor(db, tsa, make_tenant) -> None:
    tenant = make_tenant()
    _seed(tenant, 3)
    _anchor(tenant)
    _seed(tenant, 2, start=3)
    _anchor(tenant)
    _as_superuser(db, tenant, REWRITE_CHAIN)
    with tenant_transaction(tenant.ref) as session:  # without anchors the forgery would pass:
        assert session.execute(text(
            "SELECT bool_and(hash = encode(sha256(convert_to(prev_hash || audit_canonical(e), 'UTF8')), 'hex')) "
            "FROM audit_events e")).scalar_one()
    report = _verify(tenant)
    assert not report.ok and report.first_broken_seq == 1
    assert "rewritten" in report.problem and "seq 1..3" in report.problem


def test_truncating_the_tail_and_the_head_is_caught_by_the_anchor(db, tsa, make_tenant) -> None:
    tenant = make_tenant()
    _seed(tenant, 5)
    _anchor(tenant)
    _as_superuser(db, tenant, "DELETE FROM audit_events WHERE seq > 3",
                  "UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_events WHERE seq = 3)")
    report = _verify(tenant)
    assert not report.ok and report.first_broken_seq == 4 and "proves seq 5 existed" in report.problem


def test_forged_or_foreign_anchor_tokens_do_not_verify(db, tsa, make_tenant) -> None:
    tenant, other = make_tenant(), make_tenant()
    _seed(tenant, 2)
    _seed(other, 2)
    _anchor(other)
    # Copy the other tenant's (genuine) anchor of the same seq over: it is bound to the other tenant.
    with db.owner.connect() as conn:
        token = conn.execute(text(f'SELECT token FROM "{other.ref.schema}".audit_anchors')).scalar_one()
    with tenant_transaction(tenant.ref) as session:
        head = session.execute(text("SELECT hash FROM audit_events WHERE seq = 2")).scalar_one()
        session.add(AuditAnchor(seq=2, head_hash=head, reason="periodic", tsa_url=tsa.url, token=token,
                                gen_time=session.execute(text("SELECT now()")).scalar_one(), tsa_serial="1"))
    report = _verify(tenant)
    assert not report.ok and "different chain head" in report.problem


def test_unreachable_tsa_stores_nothing(tsa, make_tenant) -> None:
    tenant = make_tenant()
    _seed(tenant, 1)
    tsa.fail = True
    with pytest.raises(TimestampError, match="did not answer"):
        _anchor(tenant)
    with tenant_transaction(tenant.ref) as session:
        assert session.scalars(select(AuditAnchor)).all() == []


def test_periodic_anchor_fans_out_once_per_tenant_and_slot(app, tsa, make_tenant) -> None:
    tenant, quiet = make_tenant(), make_tenant()
    _seed(tenant, 4)
    conn = redis_connection()
    func = "app.audit.jobs:anchor_audit_chain"
    slot_time = 1_700_000_000.0 + tenant.ref.id * 86400  # a slot no other test uses
    assert fan_out_periodic(app, func, 3600, now=slot_time) >= 2
    assert fan_out_periodic(app, func, 3600, now=slot_time) == 0  # same slot: deterministic ids, no duplicates
    assert conn.exists(f"rq:job:{periodic_job_id(tenant.ref.id, func, int(slot_time // 3600))}")
    SimpleWorker(list(QUEUES), connection=conn, serializer=JSONSerializer).work(burst=True)
    with tenant_transaction(tenant.ref) as session:
        anchors = session.scalars(select(AuditAnchor)).all()
        assert [(a.seq, a.reason) for a in anchors] == [(4, "periodic")]
    with tenant_transaction(quiet.ref) as session:
        assert session.scalars(select(AuditAnchor)).all() == []  # empty trail: nothing anchored
    # Running it again (a redelivery, the next slot without new events) anchors nothing new.
    requests = tsa.requests
    assert run_periodic_job(tenant_id=tenant.ref.id, func=func)["anchor_id"] == anchors[0].id
    assert tsa.requests == requests


def test_anchor_requested_in_a_transaction_runs_after_commit(tsa, make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        record(session, action="status_change", record_type="batch", record_id=9, old={"status": "in_review"},
               new={"status": "released"}, reason="all exceptions dispositioned")
        request_anchor(session, reason="batch_release", record_type="batch", record_id=9)
    SimpleWorker(list(QUEUES), connection=redis_connection(), serializer=JSONSerializer).work(burst=True)
    with tenant_transaction(tenant.ref) as session:
        anchor = session.scalars(select(AuditAnchor)).one()
        assert (anchor.seq, anchor.reason, anchor.record_type, anchor.record_id) == (1, "batch_release", "batch",
                                                                                      "9")
