"""Alembic environment of the `tenant` tree.

Batchline runs migrations through `app.tenancy.schema`, which passes an open connection (and, for the tenant
tree, the schema) in `config.attributes`; the migration runs inside the caller's transaction. Run by hand
with `batchline db upgrade` / `batchline tenants upgrade`, not the bare `alembic` command.
"""

from alembic import context
from sqlalchemy import text

from app.models import TenantBase

config = context.config
connection = config.attributes.get("connection")
schema = config.attributes.get("schema")
if connection is None:
    raise SystemExit("run migrations with 'batchline db upgrade' or 'batchline tenants upgrade'")
if schema and schema != "public":
    # pg_temp last, as when a schema is built at head: SECURITY DEFINER functions pin this path (FROM CURRENT).
    connection.execute(text(f'SET LOCAL search_path TO "{schema}", public, pg_temp'))

context.configure(
    connection=connection,
    target_metadata=TenantBase.metadata,
    version_table_schema=schema,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
