"""Every GMP table is covered by the audit convention; no tenant table can skip the decision."""

from __future__ import annotations

from sqlalchemy import text

from app.audit.registry import RECORD_TYPES
from app.models import TenantBase

#: Tables known to hold GMP records today (the derived set must contain them; new areas add theirs).
KNOWN_GMP_TABLES = {"signatures", "signature_meanings", "signature_routes", "signature_route_runs",
                    "audit_selftests"}


def _gmp_tables() -> dict[str, str]:
    return {t.name: t.info.get("audit_record_type") for t in TenantBase.metadata.tables.values() if t.info["gmp"]}


def test_every_tenant_table_declares_whether_it_holds_gmp_records() -> None:
    undeclared = sorted(t.name for t in TenantBase.metadata.tables.values() if not isinstance(t.info.get("gmp"), bool))
    assert not undeclared, (f"tenant tables {undeclared} must declare info['gmp']: use "
                            "app.audit.registry.gmp_table_info(...) or NOT_GMP")
    assert set(_gmp_tables()) >= KNOWN_GMP_TABLES


def test_every_gmp_table_maps_to_a_registered_audit_record_type() -> None:
    for table, record_type in sorted(_gmp_tables().items()):
        assert record_type, f"{table}: gmp_table_info(record_type) names no audit record type"
        assert record_type in RECORD_TYPES, f"{table}: record type {record_type!r} is not registered"
        assert RECORD_TYPES[record_type].table == table, f"{record_type} is registered for another table"


def test_every_gmp_table_refuses_delete_and_truncate_in_the_database(make_tenant) -> None:
    tenant = make_tenant()
    from app.core.tenancy import tenant_transaction

    with tenant_transaction(tenant.ref) as session:
        rows = session.execute(text("""
            SELECT c.relname, t.tgtype, p.proname FROM pg_trigger t
            JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid
            WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal""")).all()
        grants = session.execute(text("""
            SELECT table_name, privilege_type FROM information_schema.role_table_grants
            WHERE table_schema = current_schema() AND grantee = current_user""")).all()
    refusing = {}
    for table, tgtype, function in rows:
        if function == "gmp_refuse_change":
            # tgtype bits: 2 BEFORE, 8 DELETE, 32 TRUNCATE (pg_trigger.h)
            refusing.setdefault(table, set()).update({"DELETE"} if tgtype & 8 else set())
            refusing[table].update({"TRUNCATE"} if tgtype & 32 else set())
    for table in sorted(_gmp_tables()):
        assert refusing.get(table, set()) >= {"DELETE", "TRUNCATE"}, f"{table} lacks the delete-refusing triggers"
    assert not [g for g in grants if g.privilege_type in ("DELETE", "TRUNCATE")], "tenant role may delete"
