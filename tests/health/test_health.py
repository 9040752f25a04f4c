"""Liveness and readiness probes."""

from __future__ import annotations


def test_healthz(client) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_reports_database_redis_and_migrations(client, make_tenant) -> None:
    make_tenant()
    response = client.get("/readyz")
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["checks"] == {"database": "ok", "public_migrations": "ok", "tenant_migrations": "ok", "redis": "ok"}
