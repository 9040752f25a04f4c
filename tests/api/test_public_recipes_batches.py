"""Recipes (read) and batches (read, plan) through the public API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.core.tenancy import tenant_transaction
from tests.api.conftest import admin_token, all_pages, audit_events, bearer, make_read_only, seed_every_kind
from tests.batches.conftest import SHORT_RECIPE, make_recipe_version
from tests.factories import admin_actor


def _plan(seeded, **changes):
    return {"master_recipe_id": seeded.master_recipe_id, "batch_size": "12", "unit": "L", "line_id": seeded.line_id,
            "planned_start": datetime.now(UTC).isoformat(), "equipment": {"bioreactor": seeded.equipment_id},
            **changes}


def test_recipes_read_with_versions_documents_and_the_effective_one(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    seeded = seed_every_kind(tenant)
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        draft_only = make_recipe_version(session, SHORT_RECIPE, effective=False)
    token = issue_token(tenant, ["recipes.read"])
    recipes = all_pages(client, "/api/v1/recipes", token)
    assert [r["id"] for r in recipes] == [seeded.master_recipe_id, draft_only.master_recipe_id]
    effective = client.get("/api/v1/recipes?effective=true", headers=bearer(token)).get_json()["items"]
    assert [r["effective"]["id"] for r in effective] == [seeded.version_id]
    without = client.get("/api/v1/recipes?effective=false", headers=bearer(token)).get_json()["items"]
    assert [r["id"] for r in without] == [draft_only.master_recipe_id] and without[0]["effective"] is None
    by_code = client.get(f"/api/v1/recipes?q={draft_only.recipe_code.lower()}", headers=bearer(token))
    assert [r["id"] for r in by_code.get_json()["items"]] == [draft_only.master_recipe_id]

    one = client.get(f"/api/v1/recipes/{seeded.master_recipe_id}", headers=bearer(token)).get_json()
    assert one["latest"]["id"] == one["effective"]["id"] == seeded.version_id
    versions = client.get(f"/api/v1/recipes/{seeded.master_recipe_id}/versions", headers=bearer(token)).get_json()
    assert [v["id"] for v in versions["items"]] == [seeded.version_id]
    version = client.get(f"/api/v1/recipes/versions/{seeded.version_id}", headers=bearer(token)).get_json()
    assert version["status"] == "approved" and version["messages"] == []
    phases = version["document"]["procedure"]["unit_procedures"][0]["operations"][0]["phases"]
    assert [p["key"] for p in phases] == ["clearance", "charge", "bolus", "sample"]
    now = client.get(f"/api/v1/recipes/{seeded.master_recipe_id}/effective", headers=bearer(token)).get_json()
    assert now["id"] == seeded.version_id and now["content_hash"] == version["content_hash"]
    before = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    past = client.get(f"/api/v1/recipes/{seeded.master_recipe_id}/effective", query_string={"at": before},
                      headers=bearer(token))
    assert past.status_code == 404 and "effective" in past.get_json()["detail"]
    naive = client.get(f"/api/v1/recipes/{seeded.master_recipe_id}/effective?at=2026-01-01T10:00:00",
                       headers=bearer(token))
    assert naive.status_code == 422 and "timezone" in naive.get_json()["detail"].lower()
    assert client.get(f"/api/v1/recipes/{draft_only.master_recipe_id}/effective",
                      headers=bearer(token)).status_code == 404
    assert client.get("/api/v1/recipes", headers=bearer(issue_token(tenant, ["plant.read"]))).status_code == 403


def test_batches_read_with_steps_and_filters(client, world) -> None:
    token, seeded = world.token_a, world.seeded_a
    batch = client.get(f"/api/v1/batches/{seeded.batch_id}", headers=bearer(token)).get_json()
    assert batch["status"] == "planned" and batch["recipe_version_id"] == seeded.version_id
    assert batch["open_exceptions"] == 1 and batch["steps"] == [] and batch["current_step_id"] is None
    planned = client.get(f"/api/v1/batches?status=planned&line_id={seeded.line_id}", headers=bearer(token))
    assert [b["id"] for b in planned.get_json()["items"]] == [seeded.batch_id]
    assert client.get("/api/v1/batches?status=released", headers=bearer(token)).get_json()["items"] == []
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert client.get("/api/v1/batches", query_string={"planned_from": later},
                      headers=bearer(token)).get_json()["items"] == []
    mine = {b["recipe_code"] for b in all_pages(client, "/api/v1/batches", token)}
    theirs = {b["recipe_code"] for b in all_pages(client, "/api/v1/batches", admin_token(world.b))}
    assert mine and theirs and not mine & theirs  # each token sees its own tenant's batches only
    assert client.get("/api/v1/batches/999999", headers=bearer(token)).status_code == 404


def test_planning_a_batch_uses_the_effective_version_and_is_audited(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    seeded = seed_every_kind(tenant)
    token = issue_token(tenant, ["batches.plan", "batches.read"])
    planned = client.post("/api/v1/batches", json=_plan(seeded), headers=bearer(token))
    assert planned.status_code == 201, planned.get_json()
    batch = planned.get_json()
    assert batch["status"] == "planned" and batch["recipe_version_id"] == seeded.version_id
    assert batch["batch_size"] == "12.000000" and batch["batch_number"]
    (event,) = audit_events(tenant, "batch", batch["id"])
    assert event.action == "create" and event.new_values["recipe_content_hash"]
    assert event.actor_label.endswith(f"<{tenant.admin_email}> via API token 'test'")
    detail = client.get(f"/api/v1/batches/{batch['id']}", headers=bearer(token)).get_json()
    assert detail["batch_number"] == batch["batch_number"] and detail["open_exceptions"] == 0

    stale = client.post("/api/v1/batches", json=_plan(seeded, recipe_version_id=seeded.version_id + 100),
                        headers=bearer(token))
    assert stale.status_code == 409 and "not the effective version" in stale.get_json()["detail"]
    too_big = client.post("/api/v1/batches", json=_plan(seeded, batch_size="500"), headers=bearer(token))
    assert too_big.status_code == 422 and "maximum 20 L" in too_big.get_json()["detail"]
    no_recipe = client.post("/api/v1/batches", json=_plan(seeded, master_recipe_id=99999), headers=bearer(token))
    assert no_recipe.status_code == 404
    naive = client.post("/api/v1/batches", json=_plan(seeded, planned_start="2026-12-01T08:00:00"),
                        headers=bearer(token))
    assert naive.status_code == 422
    assert len(all_pages(client, "/api/v1/batches", token, limit=10)) == 2  # the seeded one and ours

    reader = issue_token(tenant, ["batches.read"])
    denied = client.post("/api/v1/batches", json=_plan(seeded), headers=bearer(reader))
    assert denied.status_code == 403 and "batches.plan" in denied.get_json()["detail"]
    make_read_only(tenant)
    refused = client.post("/api/v1/batches", json=_plan(seeded), headers=bearer(token))
    assert refused.status_code == 402 and "read-only" in refused.get_json()["detail"]
    assert len(all_pages(client, "/api/v1/batches", token, limit=10)) == 2
