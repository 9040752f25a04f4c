"""Liveness and readiness probes."""

from __future__ import annotations

import socket

from sqlalchemy import text

from app.factory import create_app


def test_healthz(client) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_reports_database_redis_and_migrations(client, make_tenant) -> None:
    make_tenant()
    response = client.get("/readyz")
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["checks"] == {"database": "ok", "public_migrations": "ok", "tenant_migrations": "ok", "redis": "ok"}


def test_readyz_is_not_ready_while_a_tenant_is_behind_head(db, client, make_tenant) -> None:
    tenant = make_tenant()
    with db.owner.begin() as conn:
        head = conn.execute(text("SELECT revision FROM public.tenants WHERE id = :i"), {"i": tenant.ref.id}).scalar()
        conn.execute(text("UPDATE public.tenants SET revision = 'older' WHERE id = :i"), {"i": tenant.ref.id})
    try:
        response = client.get("/readyz")
        body = response.get_json()
        assert response.status_code == 503 and body["status"] == "not ready", body
        assert body["checks"]["tenant_migrations"] == f"1 tenant(s) behind {head}"
        assert body["checks"]["database"] == "ok" and body["checks"]["redis"] == "ok"
    finally:
        with db.owner.begin() as conn:
            conn.execute(text("UPDATE public.tenants SET revision = :r WHERE id = :i"), {"r": head, "i": tenant.ref.id})
    assert client.get("/readyz").status_code == 200


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readyz_is_not_ready_without_redis_or_database(app) -> None:
    base = {"SECRET_KEY": "x" * 32, "TESTING": True, "PASSWORD_HASH_PROFILE": "fast_for_tests"}
    no_redis = create_app({**base, "DATABASE_URL": app.config["DATABASE_URL"],
                           "REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0"})
    no_db = create_app({**base, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere",
                        "REDIS_URL": app.config["REDIS_URL"]})
    try:
        response = no_redis.test_client().get("/readyz")
        body = response.get_json()
        assert response.status_code == 503 and body["checks"]["database"] == "ok", body
        assert body["checks"]["redis"].startswith("error: ")
        assert no_redis.test_client().get("/healthz").status_code == 200  # the process itself is up

        response = no_db.test_client().get("/readyz")
        body = response.get_json()
        assert response.status_code == 503 and body["checks"]["database"].startswith("error: "), body
        assert body["checks"]["redis"] == "ok"
    finally:
        for made in (no_redis, no_db):
            made.extensions["batchline.db"].dispose()
