"""Isolation is enforced by PostgreSQL roles, not by application discipline."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from app.core.jobs import OutboxMessage, enqueue
from app.core.tenancy import tenant_transaction
from app.models import TenantBase
from tests.conftest import TEST_PASSWORD, csrf_token, sign_in

#: Relation kinds of a tenant schema that hold data: tables, partitions, sequences, views, materialized views.
_DATA_RELKINDS = ("r", "p", "S", "v", "m", "f")


def _tenant_tables(db, schema: str) -> list[str]:
    """Every data-holding relation of the schema, read from the catalog (not from our models): a partition or a
    sequence that only a migration creates is walked as well."""
    with db.owner.connect() as conn:
        return sorted(conn.execute(
            text("SELECT relname FROM pg_class WHERE relnamespace = CAST(:s AS regnamespace) "
                 "AND relkind = ANY(:k)"), {"s": schema, "k": list(_DATA_RELKINDS)}).scalars())


def test_every_tenant_table_is_covered(db, make_tenant) -> None:
    # Guard: the walk below sees every model table and more (alembic_version, partitions, sequences).
    relations = set(_tenant_tables(db, make_tenant().ref.schema))
    assert {*TenantBase.metadata.tables, "alembic_version", "outbox_id_seq", "sensor_readings_default"} <= relations


def test_runtime_user_without_tenant_role_reads_no_tenant_table(db, make_tenant) -> None:
    tenant = make_tenant()
    for table in _tenant_tables(db, tenant.ref.schema):
        with db.runtime.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text(f'SELECT * FROM "{tenant.ref.schema}"."{table}"'))


def test_runtime_user_is_noinherit_and_not_privileged(db) -> None:
    with db.owner.connect() as conn:
        row = conn.execute(
            text("SELECT rolinherit, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = :r"),
            {"r": db.roles.runtime},
        ).one()
    assert tuple(row) == (False, False, False, False)


def test_tenant_transaction_cannot_read_another_tenant(db, make_tenant) -> None:
    a, b = make_tenant(), make_tenant()
    for table in _tenant_tables(db, b.ref.schema):
        with pytest.raises(ProgrammingError, match="permission denied"), tenant_transaction(a.ref) as session:
            session.execute(text(f'SELECT * FROM "{b.ref.schema}"."{table}"'))
    with pytest.raises(ProgrammingError, match="permission denied"), tenant_transaction(a.ref) as session:
        session.execute(text(f"SELECT nextval('\"{b.ref.schema}\".outbox_id_seq')"))  # nor move B's counters
    with tenant_transaction(a.ref) as session:
        assert session.execute(text("SELECT current_user, current_schema()")).one() == (a.ref.role, a.ref.schema)


def test_tenant_role_cannot_touch_control_plane(db, make_tenant) -> None:
    tenant = make_tenant()
    for table in ("tenants", "users", "memberships"):
        with pytest.raises(ProgrammingError, match="permission denied"), tenant_transaction(tenant.ref) as s:
            s.execute(text(f"SELECT * FROM public.{table}"))


def test_role_is_reset_after_the_transaction(db, make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref) as session:
        session.execute(text("SELECT 1"))
    # The same pooled connection goes back to the runtime user with no tenant privileges.
    with db.runtime.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar() == db.roles.runtime
        with pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text(f'SELECT * FROM "{tenant.ref.schema}".outbox'))


def _tenant_get_rules(app) -> list[str]:
    rules = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/t/<tenant_slug>") and "GET" in rule.methods:
            if set(rule.arguments) == {"tenant_slug"}:
                rules.append(rule.rule)
            else:  # fill other arguments with an id that exists in both tenants
                rules.append(re.sub(r"<(?:int:)?(\w+)>", lambda m: m.group(0) if m.group(1) == "tenant_slug" else "1",
                                    rule.rule))
    assert rules, "no tenant routes found"
    return rules


def test_member_of_a_gets_404_on_every_tenant_b_url(app, client, make_tenant) -> None:
    a, b = make_tenant(), make_tenant()
    assert sign_in(client, a.admin_email).status_code == 302
    for rule in _tenant_get_rules(app):
        own = client.get(rule.replace("<tenant_slug>", a.ref.slug))
        assert own.status_code != 404 or rule.count("/") > 3, rule
        other = client.get(rule.replace("<tenant_slug>", b.ref.slug))
        assert other.status_code == 404, f"{rule} answered {other.status_code} for another tenant"
    assert client.get("/t/no-such-tenant/").status_code == 404


def _row_counts(db, schema: str) -> dict[str, int]:
    with db.owner.connect() as conn:
        tables = conn.execute(text("SELECT relname FROM pg_class WHERE relnamespace = CAST(:s AS regnamespace) "
                                   "AND relkind = 'r'"), {"s": schema}).scalars().all()
        return {t: conn.execute(text(f'SELECT count(*) FROM "{schema}"."{t}"')).scalar_one() for t in tables}


def test_member_of_a_gets_404_for_every_writing_method_on_tenant_b(app, client, make_tenant) -> None:
    """POST/PUT/PATCH/DELETE too, with a valid CSRF token (so the CSRF check is not what stops them)."""
    a, b = make_tenant(), make_tenant()
    assert sign_in(client, a.admin_email).status_code == 302  # the admin of A holds every permission there
    token = csrf_token(client, f"/t/{a.ref.slug}/admin/users")
    before = _row_counts(app.extensions["batchline.db"], b.ref.schema)
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/t/<tenant_slug>"):
            continue
        url = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: b.ref.slug if m.group(1) == "tenant_slug" else "1", rule.rule)
        for method in sorted(rule.methods - {"GET", "HEAD", "OPTIONS"}):
            response = client.open(url, method=method, headers={"X-CSRFToken": token},
                                   data={"csrf_token": token, "email": "x@example.com", "roles": ["Admin"]})
            assert response.status_code == 404, f"{method} {rule} answered {response.status_code} for another tenant"
            checked += 1
    assert checked > 20, "the walk found too few writing routes"
    assert _row_counts(app.extensions["batchline.db"], b.ref.schema) == before


def test_anonymous_is_sent_to_sign_in(client, make_tenant) -> None:
    tenant = make_tenant()
    response = client.get(f"/t/{tenant.ref.slug}/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_equal_primary_keys_never_cross_tenants(app, client, make_tenant, redis_url) -> None:
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    from app.core.jobs import QUEUES, redis_connection

    a, b = make_tenant(), make_tenant()
    for t in (a, b):
        with tenant_transaction(t.ref) as session:
            assert enqueue(session, "app.core.jobs:whoami").id == 1  # equal keys in both tenants
    SimpleWorker(list(QUEUES), connection=redis_connection(), serializer=JSONSerializer).work(burst=True)

    # Through the jobs: each ran under its own role and schema.
    for t in (a, b):
        with tenant_transaction(t.ref) as session:
            row = session.get(OutboxMessage, 1)
            assert row is not None and row.result == {"role": t.ref.role, "schema": t.ref.schema}

    # Through the app: tenant A's jobs page shows only A's row.
    sign_in(client, a.admin_email)
    page = client.get(f"/t/{a.ref.slug}/admin/jobs").get_data(as_text=True)
    assert a.ref.schema in page and b.ref.schema not in page

    # Through the CLI.
    runner = CliRunner()
    from app.cli import cli

    result = runner.invoke(cli, ["jobs", "list", "--tenant", b.ref.slug, "--json"], obj=_script_info(app))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["id"] for r in rows] == [1]
    assert rows[0]["result"]["schema"] == b.ref.schema


def _script_info(app):
    from flask.cli import ScriptInfo

    return ScriptInfo(create_app=lambda *_: app)


def test_subdomain_routing_when_server_name_is_set(app, make_tenant, monkeypatch) -> None:
    from app.factory import create_app

    a, b = make_tenant(), make_tenant()
    # As an operator configures it: BATCHLINE_SERVER_NAME in the environment of a fresh app.
    monkeypatch.setenv("BATCHLINE_SERVER_NAME", "batchline.test")
    hosted = create_app({key: app.config[key] for key in (
        "DATABASE_URL", "REDIS_URL", "TESTING", "SECRET_KEY", "PASSWORD_HASH_PROFILE", "RATELIMIT_SIGNIN_PER_IP")})
    try:
        assert hosted.config["SERVER_NAME"] == "batchline.test"
        client = hosted.test_client()
        # Session cookies stay host-only: sign in on the tenant's own host, as a user there would.
        host = f"http://{a.ref.slug}.batchline.test"
        html = client.get("/login", base_url=host).get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
        client.post("/login", base_url=host,
                    data={"email": a.admin_email, "password": TEST_PASSWORD, "csrf_token": token})
        home = client.get("/", base_url=host)
        assert home.status_code == 200 and f"Welcome to {a.ref.slug}" in home.get_data(as_text=True)
        assert client.get("/admin/jobs", base_url=host).status_code == 200
        assert client.get(f"/t/{a.ref.slug}/", base_url=host).status_code == 200  # path routing still works
        assert client.get(f"/t/{b.ref.slug}/", base_url=host).status_code == 404
        assert client.get("/healthz", base_url=host).status_code == 200
        # Tenant B's own host: the session of A's host is not sent there, so it is a sign-in, never B's page.
        other = client.get("/", base_url=f"http://{b.ref.slug}.batchline.test")
        assert other.status_code == 302 and "/login" in other.headers["Location"]
    finally:
        hosted.extensions["batchline.db"].dispose()
