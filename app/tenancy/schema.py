"""Build, migrate and grant tenant schemas and the runtime role (the owner connection does all of this)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from app.core.db import TENANT_PRIVILEGES, RoleNames, quote_ident
from app.core.errors import ConfigurationError
from app.core.tenancy import TenantRef
from app.models import TenantBase

REPO_ROOT = Path(__file__).resolve().parents[2]
FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d_%%(hour).2d%%(minute).2d_%%(rev)s_%%(slug)s"


def alembic_config(tree: str, *, directory: str = "", connection: Connection | None = None,
                   schema: str | None = None) -> Config:
    """Return an Alembic config for the `public` or `tenant` tree, optionally bound to a connection."""
    if tree not in ("public", "tenant"):
        raise ValueError(tree)
    cfg = Config()
    cfg.set_main_option("script_location", directory or str(REPO_ROOT / "migrations" / tree))
    cfg.set_main_option("file_template", FILE_TEMPLATE)
    cfg.attributes["connection"] = connection
    cfg.attributes["schema"] = schema
    return cfg


_scripts: dict[tuple[str, int], ScriptDirectory] = {}


def script_directory(cfg: Config) -> ScriptDirectory:
    """The parsed scripts of a migration tree, read again only when a revision file is added or removed.

    Reading a tree imports every revision module (tens of milliseconds, hundreds under load), and provisioning a
    tenant and every `/readyz` probe need the head.
    """
    location = cfg.get_main_option("script_location") or ""
    versions = Path(location) / "versions"
    key = (location, versions.stat().st_mtime_ns if versions.is_dir() else 0)
    scripts = _scripts.get(key)
    if scripts is None:
        scripts = _scripts[key] = ScriptDirectory.from_config(cfg)
    return scripts


def head_revision(cfg: Config) -> str:
    """Return the single head of a tree; several heads is a release blocker."""
    heads = script_directory(cfg).get_heads()
    if len(heads) != 1:
        raise ConfigurationError(f"migration tree must have exactly one head, found {heads}")
    return heads[0]


def current_revision(conn: Connection, schema: str) -> str | None:
    """Read the Alembic revision recorded inside a schema."""
    return MigrationContext.configure(conn, opts={"version_table_schema": schema}).get_current_revision()


def _require_revision(conn: Connection, schema: str) -> str:
    revision = current_revision(conn, schema)
    if revision is None:
        raise ConfigurationError(f"schema {schema} has no recorded migration revision")
    return revision


def ensure_runtime_role(conn: Connection, roles: RoleNames, *, password: str = "") -> None:
    """Create or align the NOINHERIT runtime login role and its control-plane grants (idempotent)."""
    role = quote_ident(roles.runtime)
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": roles.runtime}).first()
    if not exists:
        conn.execute(text(f"CREATE ROLE {role} LOGIN NOINHERIT"))
    conn.execute(text(f"ALTER ROLE {role} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE"))
    if password:
        # Identifiers cannot be bound; a password literal can be quoted safely by the server.
        quoted = conn.execute(text("SELECT quote_literal(:p)"), {"p": password}).scalar_one()
        conn.execute(text(f"ALTER ROLE {role} PASSWORD {quoted}"))
    dbname = conn.execute(text("SELECT current_database()")).scalar_one()
    conn.execute(text(f'GRANT CONNECT ON DATABASE "{dbname}" TO {role}'))
    conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
    conn.execute(text(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role}"))
    conn.execute(text(f"REVOKE INSERT, UPDATE ON public.alembic_version FROM {role}"))
    conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"))


def apply_tenant_grants(conn: Connection, ref: TenantRef) -> None:
    """Grant the tenant role exactly its privileges on each table of its schema, nothing more."""
    schema, role = quote_ident(ref.schema), quote_ident(ref.role)
    conn.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
    conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}"))
    profiles = {t.name: t.info.get("privileges", "read_write") for t in TenantBase.metadata.tables.values()}
    profiles["alembic_version"] = "read_only"
    # A table may narrow INSERT to some columns (the audit trail: the chain's own columns are the database's).
    insert_columns = {t.name: t.info["insert_columns"] for t in TenantBase.metadata.tables.values()
                      if "insert_columns" in t.info}
    # Partitions get nothing: the tenant reaches their rows through the partitioned parent, whose privileges
    # PostgreSQL checks, so a partition made later (by a SECURITY DEFINER function) needs no grant of its own.
    tables = conn.execute(
        text("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
             "WHERE n.nspname = :s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname"),
        {"s": ref.schema},
    ).scalars()
    for table in tables:
        privileges = TENANT_PRIVILEGES[profiles.get(table, "read_write")]
        if table in insert_columns:
            columns = ", ".join(quote_ident(c) for c in insert_columns[table])
            privileges = privileges.replace("INSERT", f"INSERT ({columns})")
        conn.execute(text(f"GRANT {privileges} ON {schema}.{quote_ident(table)} TO {role}"))
    conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"))


def create_tenant_role(conn: Connection, ref: TenantRef, roles: RoleNames) -> None:
    """Create the tenant's NOLOGIN role and let the runtime role SET ROLE to it (not inherit it)."""
    role = quote_ident(ref.role)
    conn.execute(text(f"CREATE ROLE {role} NOLOGIN NOINHERIT"))
    conn.execute(text(f"GRANT {role} TO {quote_ident(roles.runtime)}"))


def build_tenant_schema(conn: Connection, ref: TenantRef, *, migrations_dir: str = "") -> str:
    """Create the tenant schema directly at head (no replay of history) and stamp it; return the revision."""
    schema = quote_ident(ref.schema)
    cfg = alembic_config("tenant", directory=migrations_dir)
    head = head_revision(cfg)
    conn.execute(text(f"CREATE SCHEMA {schema}"))
    # pg_temp last: a SECURITY DEFINER function made here pins this path (`SET search_path FROM CURRENT`), and
    # a caller's temporary table must never stand in for one of the schema's.
    conn.execute(text(f"SET LOCAL search_path TO {schema}, public, pg_temp"))
    # Schema-less tables land in the first schema of the search_path. (No schema_translate_map here:
    # `Connection.execution_options` changes the caller's connection in place.)
    TenantBase.metadata.create_all(conn, checkfirst=False)
    ctx = MigrationContext.configure(conn, opts={"version_table_schema": ref.schema})
    ctx.stamp(script_directory(cfg), head)
    apply_tenant_grants(conn, ref)
    return head


def _upgrade(cfg: Config, target: str) -> None:
    """`alembic upgrade <target>` on the tree's cached scripts: `command.upgrade` would read (import) every
    revision module again for each of the fleet's tenants."""
    scripts = script_directory(cfg)

    def steps(revision: Any, _context: Any) -> Any:
        return scripts._upgrade_revs(target, revision)  # what command.upgrade runs

    with EnvironmentContext(cfg, scripts, fn=steps, destination_rev=target):
        scripts.run_env()


def migrate_tenant_schema(conn: Connection, ref: TenantRef, *, migrations_dir: str = "",
                          target: str = "head") -> str:
    """Run the tenant tree's migrations on one schema inside the caller's transaction; return the revision."""
    conn.execute(text(f"SET LOCAL search_path TO {quote_ident(ref.schema)}, public, pg_temp"))
    cfg = alembic_config("tenant", directory=migrations_dir, connection=conn, schema=ref.schema)
    _upgrade(cfg, target)
    apply_tenant_grants(conn, ref)
    return _require_revision(conn, ref.schema)


def upgrade_public(conn: Connection, roles: RoleNames, *, migrations_dir: str = "", password: str = "") -> str:
    """Migrate the control plane to head and align the runtime role's grants; return the revision."""
    cfg = alembic_config("public", directory=migrations_dir, connection=conn, schema="public")
    command.upgrade(cfg, "head")
    ensure_runtime_role(conn, roles, password=password)
    return _require_revision(conn, "public")


