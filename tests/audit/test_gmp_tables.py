"""Every GMP table is covered by the audit convention; no tenant table can skip the decision."""

from __future__ import annotations

from sqlalchemy import text

from app.audit.registry import RECORD_TYPES
from app.models import TenantBase

#: Every tenant table that holds GMP records, listed by hand: a new table, or one whose `info["gmp"]` flips, fails
#: the test below until someone decides here, in review, whether it is audited.
GMP_TABLES = {
    # audit, esign
    "audit_reviews", "audit_selftests", "signatures", "signature_meanings", "signature_routes",
    "signature_route_runs",
    # plant
    "sites", "lines", "equipment", "equipment_log", "sensors",
    # materials
    "materials", "lots", "lot_movements", "lot_status_changes",
    # recipes
    "master_recipes", "recipe_versions", "recipe_version_revisions", "recipe_version_diffs", "recipe_attachments",
    "recipe_validation_runs",
    # batches
    "batches", "batch_settings", "control_recipes", "batch_equipment", "step_executions", "step_entries",
    "batch_attachments", "batch_overrides", "batch_exceptions", "batch_events", "equipment_uses",
    # review
    "exception_dispositions", "exception_disposition_items", "deviations", "deviation_capas", "batch_releases",
    "review_rule_sets", "rbe_runs",
    # sensors
    "sensor_ingests", "sensor_episodes", "sensor_pca_models",
}

#: Tenant tables that are not GMP records, each with why (the trail itself, plumbing, derived or bulk data).
NOT_GMP_TABLES = {
    "audit_events": "the audit trail itself (append-only, hash-chained)",
    "audit_head": "the chain head the insert trigger maintains",
    "audit_anchors": "RFC 3161 tokens of the chain head (append-only by privilege)",
    "batch_number_counters": "the counter behind batch numbers; each number is audited with its batch",
    "data_imports": "staged import files; the records they create are audited",
    "onboarding_steps": "progress of the onboarding checklist",
    "outbox": "job plumbing",
    "security_events": "sign-in security log, not a manufacturing record",
    "sensor_analysis_state": "detector state, derived from the readings",
    "sensor_pca_state": "detector state, derived from the readings",
    "sensor_readings": "bulk raw readings; each ingest that stores them is a GMP record (sensor_ingests)",
    "sensor_reading_buckets": "coverage summary the readings loader derives, for the review's gap check",
}


def _gmp_tables() -> dict[str, str]:
    return {t.name: t.info.get("audit_record_type") for t in TenantBase.metadata.tables.values() if t.info["gmp"]}


def test_every_tenant_table_declares_whether_it_holds_gmp_records() -> None:
    undeclared = sorted(t.name for t in TenantBase.metadata.tables.values() if not isinstance(t.info.get("gmp"), bool))
    assert not undeclared, (f"tenant tables {undeclared} must declare info['gmp']: use "
                            "app.audit.registry.gmp_table_info(...) or NOT_GMP")


def test_every_tenant_table_is_listed_here_as_gmp_or_not() -> None:
    declared = set(_gmp_tables())
    not_gmp = {t.name for t in TenantBase.metadata.tables.values() if t.info.get("gmp") is False}
    assert not GMP_TABLES & set(NOT_GMP_TABLES)
    assert declared - GMP_TABLES == set(), "new GMP tables: add them to GMP_TABLES"
    assert GMP_TABLES - declared == set(), "tables listed as GMP no longer declare info['gmp'] = True (or are gone)"
    assert not_gmp - set(NOT_GMP_TABLES) == set(), "new non-GMP tables: list them in NOT_GMP_TABLES with why"
    assert set(NOT_GMP_TABLES) - not_gmp == set(), "tables listed as not GMP now declare otherwise (or are gone)"


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
