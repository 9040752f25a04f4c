"""`batchline audit verify` and `batchline audit selftest` as an operator runs them."""

from __future__ import annotations

import json

from sqlalchemy import text

from app.audit.services import record
from app.core.tenancy import tenant_transaction


def _seed(tenant, n: int) -> None:
    with tenant_transaction(tenant.ref) as session:
        for i in range(n):
            record(session, action="create", record_type="equipment", record_id=i, new={"i": i})


def test_verify_reports_ok_then_the_first_broken_seq(app, db, make_tenant) -> None:
    tenant = make_tenant()
    _seed(tenant, 4)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["audit", "verify", "--tenant", tenant.ref.slug, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["events"] == 4 and report["first_broken_seq"] is None
    assert "no time-stamp anchor" in report["warnings"][0]
    with db.owner.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f'UPDATE "{tenant.ref.schema}".audit_events SET reason = \'x\' WHERE seq = 3'))
    result = runner.invoke(args=["audit", "verify", "--tenant", tenant.ref.slug])
    assert result.exit_code == 1 and "BROKEN at seq 3" in result.output
    result = runner.invoke(args=["audit", "verify", "--tenant", tenant.ref.slug, "--json"])
    assert json.loads(result.output)["first_broken_seq"] == 3
    result = runner.invoke(args=["audit", "verify", "--tenant", "no-such-tenant"])
    assert result.exit_code == 2 and "no tenant" in result.output


def test_selftest_makes_a_known_change_and_finds_it_in_the_trail(app, make_tenant) -> None:
    tenant = make_tenant()
    _seed(tenant, 2)
    result = app.test_cli_runner().invoke(args=["audit", "selftest", "--tenant", tenant.ref.slug])
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output and result.output.count("PASS") == 8
    assert "selftest passed: audit_selftest #1, event seq 3" in result.output
    with tenant_transaction(tenant.ref) as session:
        row = session.execute(text("SELECT action, actor_label, new_values FROM audit_events WHERE seq = 3")).one()
        assert row.action == "create" and row.actor_label == "system:batchline audit selftest"
        assert len(row.new_values["nonce"]) == 32


def test_selftest_fails_when_the_trail_is_broken(app, db, make_tenant) -> None:
    tenant = make_tenant()
    _seed(tenant, 2)
    with db.owner.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f'DELETE FROM "{tenant.ref.schema}".audit_events WHERE seq = 1'))
    result = app.test_cli_runner().invoke(args=["audit", "selftest", "--tenant", tenant.ref.slug])
    assert result.exit_code == 1 and "FAIL  the chain verifies" in result.output
