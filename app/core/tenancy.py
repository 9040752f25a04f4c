"""Tenant context: the one way any unit of work (request, job, CLI command) touches tenant data.

`tenant_transaction(tenant)` opens a transaction on the runtime engine, switches it to the tenant's role and
schema (the equivalent of `SET LOCAL ROLE` and `SET LOCAL search_path`, in one statement), and maps schema-less
tenant models to that schema. Both settings are transaction-scoped, so nothing leaks through the connection pool
(or PgBouncer in transaction mode), and code that forgets the tenant gets "permission denied" instead of another
customer's rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from app.core.db import Database, quote_ident, tenant_schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who acts in a unit of work, and from where (audit events and signatures are attributed to it)."""

    member_id: int | None
    label: str
    request_id: str | None = None
    client_addr: str | None = None


SYSTEM_ACTOR = Actor(member_id=None, label="system")


@dataclass(frozen=True)
class TenantRef:
    """Where a tenant lives: its id, schema and role (the tenant directory entry)."""

    id: int
    schema: str
    role: str
    slug: str = ""


def current_db() -> Database:
    """Return the Database bound to the current Flask app."""
    return current_app.extensions["batchline.db"]


def tenant_ref(tenant_id: int, *, db: Database | None = None, slug: str = "") -> TenantRef:
    """Build the directory entry of a tenant; names derive from the id, never from user input."""
    db = db or current_db()
    return TenantRef(id=int(tenant_id), schema=tenant_schema(tenant_id), role=db.roles.tenant(tenant_id), slug=slug)


#: Role and schema of a tenant, set for the current transaction only (`is_local`: exactly `SET LOCAL ROLE` and
#: `SET LOCAL search_path`, with the same privilege check), in one round trip and one prepared statement for
#: every tenant.
_ENTER_TENANT = text("SELECT set_config('role', :role, true), set_config('search_path', :path, true)")


def enter_tenant_schema(conn: Connection, ref: TenantRef) -> None:
    """Switch the connection's current transaction to the tenant's role and schema."""
    quote_ident(ref.role)  # refuses a name outside our own alphabet (the role is a parameter, not SQL text)
    conn.execute(_ENTER_TENANT, {"role": ref.role, "path": f"{quote_ident(ref.schema)}, public"})


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the tenant transaction that owns `session` has committed (never on rollback)."""
    session.info.setdefault("after_commit", []).append(callback)


@contextmanager
def tenant_transaction(tenant: TenantRef | int, *, db: Database | None = None,
                       actor: Actor | None = None) -> Iterator[Session]:
    """Open a session bound to one tenant, in one transaction; commit on success, roll back on error."""
    db = db or current_db()
    ref = tenant if isinstance(tenant, TenantRef) else tenant_ref(tenant, db=db)
    with db.runtime.connect() as conn:
        conn = conn.execution_options(schema_translate_map={None: ref.schema})
        session = Session(bind=conn, expire_on_commit=False, autoflush=True)
        session.info["tenant"] = ref
        session.info["actor"] = actor or SYSTEM_ACTOR
        try:
            with conn.begin():
                enter_tenant_schema(conn, ref)
                yield session
                session.flush()
        finally:
            callbacks = session.info.pop("after_commit", [])
            committed = not conn.in_transaction()
            session.close()
    if committed:
        for callback in callbacks:
            try:
                callback()
            except Exception:  # an after-commit hook (e.g. enqueue to Redis) must not undo the commit
                log.exception("after-commit callback failed for tenant %s", ref.id)


@contextmanager
def control_session(*, db: Database | None = None) -> Iterator[Session]:
    """Open a session on the control plane (`public`) as the runtime user, in one transaction.

    Callbacks registered with `after_commit` run once the transaction has committed (never on rollback).
    """
    db = db or current_db()
    session = Session(db.runtime, expire_on_commit=False)
    committed = False
    try:
        with session.begin():
            yield session
        committed = True
    finally:
        callbacks = session.info.pop("after_commit", [])
        session.close()
    if committed:
        for callback in callbacks:
            try:
                callback()
            except Exception:  # an after-commit hook (e.g. enqueue to Redis) must not undo the commit
                log.exception("after-commit callback failed in the control plane")


@contextmanager
def control_lookup(*, db: Database | None = None) -> Iterator[Session]:
    """A read-only control-plane session in autocommit, for the lookups every request makes (who is signed in,
    their membership): one SELECT is one round trip, with no BEGIN and COMMIT around it.

    A single statement reads one snapshot anyway; never write through this session.
    """
    db = db or current_db()
    with db.runtime.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")  # the pool restores the default on check-in
        session = Session(bind=conn, expire_on_commit=False, autoflush=False)
        try:
            yield session
        finally:
            session.close()


@contextmanager
def control_then_tenant_transaction(
    tenant: TenantRef | int, *, db: Database | None = None
) -> Iterator[tuple[Session, Callable[[], Session]]]:
    """One transaction for a control-plane change and the tenant's record of it (a role change and its event).

    Yields `(control, enter_tenant)`: use `control` (public, as the runtime user) first; `enter_tenant()` flushes
    it, switches the same transaction to the tenant's role and schema and returns the tenant session. After
    that the control session must not be used (the tenant role cannot read `public`). Both commit together.
    """
    db = db or current_db()
    ref = tenant if isinstance(tenant, TenantRef) else tenant_ref(tenant, db=db)
    with db.runtime.connect() as conn:
        conn = conn.execution_options(schema_translate_map={None: ref.schema})  # public models name their schema
        control = Session(bind=conn, expire_on_commit=False, autoflush=True)
        tenant_session: Session | None = None

        def enter_tenant() -> Session:
            nonlocal tenant_session
            if tenant_session is None:
                control.flush()
                enter_tenant_schema(conn, ref)
                tenant_session = Session(bind=conn, expire_on_commit=False, autoflush=True)
                tenant_session.info["tenant"] = ref
            return tenant_session

        try:
            with conn.begin():
                yield control, enter_tenant
                if tenant_session is None:
                    control.flush()
                else:
                    tenant_session.flush()
        finally:
            callbacks = tenant_session.info.pop("after_commit", []) if tenant_session is not None else []
            committed = not conn.in_transaction()
            control.close()
            if tenant_session is not None:
                tenant_session.close()
    if committed:
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback failed for tenant %s", ref.id)
