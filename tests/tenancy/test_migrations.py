"""Migrations: one head per tree, built == migrated, fleet upgrades that survive a failing tenant."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from flask.cli import ScriptInfo
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.cli import cli
from app.core.tenancy import tenant_ref
from app.factory import create_app
from app.tenancy.migrate import upgrade_all_tenants
from app.tenancy.schema import (
    alembic_config,
    build_tenant_schema,
    create_tenant_role,
    head_revision,
    migrate_tenant_schema,
    upgrade_public,
)
from app.tenancy.services import create_tenant, drop_tenant
from tests.conftest import TEST_PASSWORD
from tests.support import recreate_database

CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity,
               character_maximum_length, numeric_precision
        FROM information_schema.columns WHERE table_schema = :s""",
    "constraints": """
        SELECT rel.relname, con.conname, con.contype, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
        JOIN pg_namespace ns ON ns.oid = rel.relnamespace WHERE ns.nspname = :s""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = :s",
    "triggers": """
        SELECT event_object_table, trigger_name, event_manipulation, action_timing, action_statement
        FROM information_schema.triggers WHERE trigger_schema = :s""",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
        JOIN pg_namespace ns ON ns.oid = p.pronamespace WHERE ns.nspname = :s""",
    "privileges": """
        SELECT table_name, privilege_type FROM information_schema.role_table_grants
        WHERE table_schema = :s AND grantee = :r""",
    "storage": """
        SELECT c.relname, a.attname, a.attstorage, a.attcompression FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace ns ON ns.oid = c.relnamespace
        WHERE ns.nspname = :s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped""",
    "column_privileges": """
        SELECT table_name, column_name, privilege_type FROM information_schema.column_privileges
        WHERE table_schema = :s AND grantee = :r""",
}


def _snapshot(conn, schema: str, role: str) -> dict[str, list[tuple]]:
    def norm(value):
        # Catalog text qualifies names outside the current search_path: drop the qualifier, then the name.
        if not isinstance(value, str):
            return value
        return value.replace(f"{schema}.", "").replace(schema, "<schema>").replace(role, "<role>")

    # Catalog functions print names relative to the search_path (a trigger's function shows unqualified
    # while its schema is first): read both schemas from the same, neutral search_path.
    conn.execute(text("SET LOCAL search_path TO public"))

    return {
        name: sorted(tuple(norm(v) for v in row) for row in conn.execute(text(q), {"s": schema, "r": role}))
        for name, q in CATALOG_QUERIES.items()
    }


@pytest.mark.parametrize("tree", ["public", "tenant"])
def test_single_head_per_tree(tree: str) -> None:
    assert len(ScriptDirectory.from_config(alembic_config(tree)).get_heads()) == 1


def test_tenant_schema_built_at_head_equals_migrated_from_base(db) -> None:
    built, migrated = tenant_ref(900001, db=db), tenant_ref(900002, db=db)
    with db.owner.connect() as conn:
        trans = conn.begin()
        try:
            for ref in (built, migrated):
                create_tenant_role(conn, ref, db.roles)
            build_tenant_schema(conn, built)
            conn.execute(text(f'CREATE SCHEMA "{migrated.schema}"'))
            migrate_tenant_schema(conn, migrated)
            a = _snapshot(conn, built.schema, built.role)
            b = _snapshot(conn, migrated.schema, migrated.role)
        finally:
            trans.rollback()  # roles and schemas are transactional: nothing is left behind
    assert a["columns"], "snapshot saw no tables"
    for key in CATALOG_QUERIES:
        assert a[key] == b[key], f"built and migrated schemas differ in {key}"


def _migrations_with_new_revision(tmp_path: Path, body: str) -> str:
    directory = tmp_path / "tenant-migrations"
    shutil.copytree(Path(__file__).resolve().parents[2] / "migrations" / "tenant", directory)
    head = ScriptDirectory.from_config(alembic_config("tenant")).get_current_head()
    (directory / "versions" / "20991231_2359_t9999_probe.py").write_text(textwrap.dedent(f'''
        """Test-only revision."""
        import sqlalchemy as sa
        from alembic import op

        revision = "t9999"
        down_revision = "{head}"
        branch_labels = None
        depends_on = None


        def upgrade() -> None:
        {textwrap.indent(textwrap.dedent(body), "    ")}


        def downgrade() -> None:
            op.drop_table("upgrade_probe")
    '''))
    return str(directory)


@pytest.fixture(scope="module")
def fleet_db(database_url, redis_url):
    """A database of its own: `upgrade --all` must see exactly this fleet and leave no other tenant at t9999."""
    url = recreate_database(make_url(database_url).set(database=make_url(database_url).database + "_fleet")
                            .render_as_string(hide_password=False))
    fleet_app = create_app({"DATABASE_URL": url, "REDIS_URL": redis_url, "SECRET_KEY": "x" * 32})
    db = fleet_app.extensions["batchline.db"]
    with db.owner.connect() as conn, conn.begin():
        upgrade_public(conn, db.roles)
    yield fleet_app
    db.dispose()


def _upgrade_cli(app, migrations: str, jobs: int):
    """`batchline tenants upgrade --all --jobs N`, as an operator types it, against the given migration tree."""
    app.config["TENANT_MIGRATIONS_DIR"] = migrations
    try:  # the app's own context: the suite's app context is pushed for the whole session
        with app.app_context():
            return CliRunner().invoke(cli, ["tenants", "upgrade", "--all", "--jobs", str(jobs)],
                                      obj=ScriptInfo(create_app=lambda *_: app))
    finally:
        app.config["TENANT_MIGRATIONS_DIR"] = ""


def _listed(app) -> dict[str, dict]:
    """`batchline tenants list --json`, by slug."""
    with app.app_context():
        result = CliRunner().invoke(cli, ["tenants", "list", "--json"], obj=ScriptInfo(create_app=lambda *_: app))
    assert result.exit_code == 0, result.output
    return {row["slug"]: row for row in map(json.loads, result.stdout.splitlines())}


def test_upgrade_all_survives_a_failing_tenant_and_resumes(fleet_db, tmp_path) -> None:
    app = fleet_db
    db = app.extensions["batchline.db"]
    tenants = [create_tenant(db, slug=f"fleet-{i:02d}", name=f"Fleet {i}", admin_email=f"a{i}@fleet.example.com",
                             admin_password=TEST_PASSWORD) for i in range(50)]
    broken = tenants[17]
    fleet = {t.ref.slug for t in tenants}
    migrations = _migrations_with_new_revision(
        tmp_path, 'op.create_table("upgrade_probe", sa.Column("id", sa.BigInteger, primary_key=True))'
    )
    try:
        with db.owner.begin() as conn:  # make one tenant fail: the table the migration creates already exists
            conn.execute(text(f'CREATE TABLE "{broken.ref.schema}".upgrade_probe (x int)'))
        result = _upgrade_cli(app, migrations, jobs=4)
        assert result.exit_code == 1, result.output  # a failure is an error for scripts and CI
        progress = [line for line in result.stdout.splitlines() if line.startswith("[")]
        assert len(progress) == 50 and progress[-1].startswith("[50/50]")  # one line per tenant, as it goes
        assert {line.split()[1].rstrip(":") for line in progress if line.endswith(": t9999")} == \
            fleet - {broken.ref.slug}
        assert "upgraded 49, skipped 0, failed 1" in result.stdout
        assert f"FAILED {broken.ref.slug}: " in result.stderr and "upgrade_probe" in result.stderr
        rows = _listed(app)
        assert rows[broken.ref.slug]["revision"] != "t9999"
        assert "upgrade_probe" in rows[broken.ref.slug]["last_migration_error"]
        assert all(rows[s]["revision"] == "t9999" and rows[s]["last_migration_error"] is None
                   for s in fleet - {broken.ref.slug})
        with db.owner.connect() as conn:  # the failed tenant's transaction left nothing half-done
            assert conn.execute(text(
                "SELECT version_num FROM " + f'"{broken.ref.schema}".alembic_version')).scalar() != "t9999"

        with db.owner.begin() as conn:  # the fix
            conn.execute(text(f'DROP TABLE "{broken.ref.schema}".upgrade_probe'))
        rerun = _upgrade_cli(app, migrations, jobs=4)
        assert rerun.exit_code == 0, rerun.output
        assert "1 to upgrade, 49 already at t9999" in rerun.stdout
        assert "upgraded 1, skipped 49, failed 0" in rerun.stdout
        rows = _listed(app)
        assert rows[broken.ref.slug]["revision"] == "t9999"
        assert rows[broken.ref.slug]["last_migration_error"] is None

        again = upgrade_all_tenants(db, jobs=4, migrations_dir=migrations)  # a third run has nothing to do
        assert again.ok and again.upgraded == [] and set(again.skipped) == fleet
    finally:
        for t in tenants:  # leave no tenant at a revision the real tree does not know
            drop_tenant(db, slug=t.ref.slug)


def test_db_upgrade_cli_is_idempotent(app) -> None:
    head = ScriptDirectory.from_config(alembic_config("public")).get_current_head()
    obj = ScriptInfo(create_app=lambda *_: app)
    for _ in range(2):
        result = CliRunner().invoke(cli, ["db", "upgrade"], obj=obj)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"public at {head}; runtime role ")


def test_the_cached_head_follows_a_revision_added_to_the_tree(tmp_path) -> None:
    directory = tmp_path / "tenant"
    shutil.copytree(Path(__file__).resolve().parents[2] / "migrations" / "tenant", directory)
    head = head_revision(alembic_config("tenant", directory=str(directory)))
    assert head_revision(alembic_config("tenant", directory=str(directory))) == head  # read once, then cached
    (directory / "versions" / "20991231_2359_t9998_probe.py").write_text(
        f'revision = "t9998"\ndown_revision = "{head}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade() -> None:\n    pass\n")
    assert head_revision(alembic_config("tenant", directory=str(directory))) == "t9998"
