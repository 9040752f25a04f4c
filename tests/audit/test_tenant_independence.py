"""Two tenants never wait on each other's audit chain; writers in one tenant queue on its chain head."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.audit.services import record, verify_chain
from app.core.tenancy import tenant_transaction


def _write(tenant, record_id: str) -> None:
    with tenant_transaction(tenant.ref) as session:
        # A writer that would have to wait for another transaction fails fast instead of hanging the test.
        session.execute(text("SET LOCAL lock_timeout = '1s'"))
        record(session, action="create", record_type="entry", record_id=record_id, new={"v": 1})


def test_an_open_audit_transaction_in_one_tenant_does_not_block_another(make_tenant) -> None:
    tenant, other = make_tenant(), make_tenant()
    with tenant_transaction(tenant.ref) as holding:
        record(holding, action="create", record_type="entry", record_id="held", new={"v": 0})
        # The first tenant's transaction is still open and holds its chain head: the other tenant writes freely.
        _write(other, "free")
        # The control: a second writer of the same tenant does wait for the head (and times out here).
        with pytest.raises(DBAPIError, match="lock timeout"):
            _write(tenant, "queued")
    for t, events in ((tenant, 1), (other, 1)):
        with tenant_transaction(t.ref) as session:
            report = verify_chain(session)
            assert report.ok and report.events == events
