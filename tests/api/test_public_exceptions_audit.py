"""Exceptions (per batch and tenant-wide) and the audit trail through the public API."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from app.batches import services as batch_services
from app.core.tenancy import tenant_transaction
from tests.api.conftest import admin_token, all_pages, bearer, seed_every_kind
from tests.factories import admin_actor


def test_exceptions_listed_per_batch_and_tenant_wide_with_filters(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    seeded = seed_every_kind(tenant)
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        batch = batch_services.get_batch(session, seeded.batch_id)
        override = batch_services.raise_exception(session, batch=batch, finding=batch_services.finding(
            "override", "Supervisor override of a hard block", {"reason": "QA agreed"}))
    token = issue_token(tenant, ["batches.read"])
    everything = all_pages(client, "/api/v1/exceptions", token)
    assert [e["id"] for e in everything] == [seeded.exception_id, override.id]
    assert {e["batch_id"] for e in everything} == {seeded.batch_id}
    overrides = client.get("/api/v1/exceptions?type=override", headers=bearer(token)).get_json()["items"]
    assert [e["id"] for e in overrides] == [override.id] and overrides[0]["evidence"] == {"reason": "QA agreed"}
    severity = overrides[0]["severity"]
    same = client.get(f"/api/v1/exceptions?severity={severity}&status=open", headers=bearer(token)).get_json()
    assert override.id in [e["id"] for e in same["items"]]
    assert client.get("/api/v1/exceptions?status=closed", headers=bearer(token)).get_json()["items"] == []
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert client.get("/api/v1/exceptions", query_string={"raised_from": tomorrow},
                      headers=bearer(token)).get_json()["items"] == []
    per_batch = client.get(f"/api/v1/batches/{seeded.batch_id}/exceptions?limit=1", headers=bearer(token))
    assert [e["id"] for e in per_batch.get_json()["items"]] == [seeded.exception_id]
    assert per_batch.get_json()["next_after"] == seeded.exception_id
    one = client.get(f"/api/v1/exceptions/{override.id}", headers=bearer(token)).get_json()
    assert one["type"] == "override" and one["batch_number"] == batch.batch_number
    assert client.get("/api/v1/exceptions/999999", headers=bearer(token)).status_code == 404
    assert client.get("/api/v1/batches/999999/exceptions", headers=bearer(token)).status_code == 404
    assert client.get("/api/v1/exceptions?batch_id=999999", headers=bearer(token)).get_json()["items"] == []
    assert client.get("/api/v1/exceptions?type=bogus", headers=bearer(token)).status_code == 422
    assert client.get("/api/v1/exceptions", headers=bearer(issue_token(tenant, ["plant.read"]))).status_code == 403


def test_exceptions_never_cross_tenants(client, world) -> None:
    a = {(e["batch_number"], e["message"], e["raised_at"]) for e in all_pages(client, "/api/v1/exceptions",
                                                                              world.token_a)}
    b = {(e["batch_number"], e["message"], e["raised_at"]) for e in all_pages(client, "/api/v1/exceptions",
                                                                              admin_token(world.b))}
    assert len(a) >= 1 and len(b) >= 1 and not a & b


def test_audit_trail_read_with_filters_and_paging(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    seeded = seed_every_kind(tenant)
    token = issue_token(tenant, ["audit.read"])
    trail = all_pages(client, "/api/v1/audit/events", token, limit=7)
    seqs = [e["seq"] for e in trail]
    assert seqs == list(range(1, len(seqs) + 1))  # gapless, oldest first, every event once
    assert all(e["prev_hash"] == p["hash"] for p, e in itertools.pairwise(trail))
    lot = client.get(f"/api/v1/audit/events?record_type=lot&record_id={seeded.lot_id}", headers=bearer(token))
    assert [e["action"] for e in lot.get_json()["items"]] == ["create", "status_change"]
    assert lot.get_json()["items"][1]["new_values"]["status"] == "released"
    admin = admin_actor(tenant)
    by_member = client.get(f"/api/v1/audit/events?actor={admin.member_id}&record_type=batch", headers=bearer(token))
    assert [e["record_id"] for e in by_member.get_json()["items"]] == [str(seeded.batch_id)]
    by_name = client.get("/api/v1/audit/events", query_string={"actor": tenant.admin_email.split("@")[0]},
                         headers=bearer(token)).get_json()["items"]
    assert by_name and all(tenant.admin_email in e["actor_label"] for e in by_name)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert client.get("/api/v1/audit/events", query_string={"since": future},
                      headers=bearer(token)).get_json()["items"] == []
    until_first = client.get("/api/v1/audit/events", query_string={"until": trail[0]["occurred_at"]},
                             headers=bearer(token)).get_json()["items"]
    assert trail[0]["seq"] in [e["seq"] for e in until_first]
    one = client.get(f"/api/v1/audit/events/{seqs[-1]}", headers=bearer(token)).get_json()
    assert one == trail[-1]
    assert client.get("/api/v1/audit/events/999999", headers=bearer(token)).status_code == 404
    naive = client.get("/api/v1/audit/events?since=2026-01-01T00:00:00", headers=bearer(token))
    assert naive.status_code == 422 and naive.mimetype == "application/problem+json"
    assert client.get("/api/v1/audit/events?since=1700000000", headers=bearer(token)).status_code == 422
    denied = client.get("/api/v1/audit/events", headers=bearer(issue_token(tenant, ["batches.read"])))
    assert denied.status_code == 403 and "audit.read" in denied.get_json()["detail"]


def test_audit_trail_never_crosses_tenants(client, world) -> None:
    a = {e["hash"] for e in all_pages(client, "/api/v1/audit/events", world.token_a, limit=200)}
    b = {e["hash"] for e in all_pages(client, "/api/v1/audit/events", admin_token(world.b), limit=200)}
    assert a and b and not a & b
