"""The public API: tokens and scopes, OAuth2 client credentials, pagination, problems, rate limits, OpenAPI."""

from __future__ import annotations

import base64
import re
from datetime import timedelta

from sqlalchemy import func, update

from app.accounts.models import Membership, TenantRole
from app.accounts.services import create_custom_role
from app.api.models import ApiToken
from app.core.jobs import enqueue
from app.core.permissions import PERMISSIONS
from app.core.tenancy import control_session, tenant_transaction
from tests.conftest import csrf_token, sign_in
from tests.support_saas import run_jobs


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_or_bad_token_is_a_401_problem(client) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, _auth("blp_not-a-real-token")):
        response = client.get("/api/v1/tenant", headers=headers)
        assert response.status_code == 401 and response.mimetype == "application/problem+json"
        body = response.get_json()
        assert body["status"] == 401 and body["title"] == "Unauthorized" and body["detail"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_personal_token_is_bound_to_its_tenant(client, make_tenant, issue_token) -> None:
    a, b = make_tenant(), make_tenant()
    token = issue_token(a)
    body = client.get("/api/v1/tenant", headers=_auth(token)).get_json()
    assert body["slug"] == a.ref.slug and body["plan"] == "local"
    with tenant_transaction(b.ref) as session:
        other_job = enqueue(session, "app.core.jobs:whoami").id
    with tenant_transaction(a.ref) as session:
        own_job = enqueue(session, "app.core.jobs:whoami").id
    jobs = client.get("/api/v1/jobs", headers=_auth(token)).get_json()
    assert [j["id"] for j in jobs["items"]] == [own_job]  # ids are per tenant: equal ids never cross
    assert other_job == own_job
    members = client.get("/api/v1/members", headers=_auth(token)).get_json()["items"]
    assert [m["email"] for m in members] == [a.admin_email]


def test_scopes_limit_what_a_token_may_do(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    token = issue_token(tenant, ["jobs.read"])
    assert client.get("/api/v1/jobs", headers=_auth(token)).status_code == 200
    denied = client.get("/api/v1/members", headers=_auth(token))
    assert denied.status_code == 403 and "users.read" in denied.get_json()["detail"]
    assert client.get("/api/v1/token", headers=_auth(token)).get_json()["effective_permissions"] == ["jobs.read"]


def test_a_token_check_reads_one_row_and_stamps_its_use_at_most_once_a_minute(app, client, make_tenant,
                                                                             issue_token) -> None:
    from sqlalchemy import event

    tenant = make_tenant()
    token = issue_token(tenant, ["jobs.read"])
    assert client.get("/api/v1/token", headers=_auth(token)).status_code == 200
    with control_session() as session:
        first = session.query(ApiToken.last_used_at).filter(ApiToken.tenant_id == tenant.ref.id).scalar()
    assert first is not None
    statements: list[str] = []
    engine = app.extensions["batchline.db"].runtime
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert client.get("/api/v1/token", headers=_auth(token)).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    touching_tokens = [s for s in statements if "api_tokens" in s]
    assert len(touching_tokens) == 1 and touching_tokens[0].lstrip().upper().startswith("SELECT")
    with control_session() as session:
        assert session.query(ApiToken.last_used_at).filter(ApiToken.tenant_id == tenant.ref.id).scalar() == first
        session.execute(update(ApiToken).where(ApiToken.tenant_id == tenant.ref.id).values(
            last_used_at=func.now() - timedelta(minutes=2)))
    assert client.get("/api/v1/token", headers=_auth(token)).status_code == 200
    with control_session() as session:
        assert session.query(ApiToken.last_used_at).filter(ApiToken.tenant_id == tenant.ref.id).scalar() > first


def test_token_never_exceeds_its_owners_current_roles(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    token = issue_token(tenant, ["jobs.read", "users.read"])
    with control_session() as session:
        session.execute(update(Membership).where(Membership.tenant_id == tenant.ref.id).values(roles=["Operator"]))
    assert client.get("/api/v1/jobs", headers=_auth(token)).status_code == 403  # Operators lack jobs.read
    with control_session() as session:
        session.execute(update(Membership).where(Membership.tenant_id == tenant.ref.id).values(active=False))
    assert client.get("/api/v1/tenant", headers=_auth(token)).status_code == 401


def test_token_of_a_custom_role_holder_carries_that_roles_permissions(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    token = issue_token(tenant, ["jobs.read"])
    role_id = create_custom_role(tenant_id=tenant.ref.id, name="Job watcher", description="", permissions=["jobs.read"],
                                 by_user_id=1, by_permissions=frozenset(PERMISSIONS))
    with control_session() as session:
        session.execute(update(Membership).where(Membership.tenant_id == tenant.ref.id).values(roles=["Viewer"]))
    assert client.get("/api/v1/jobs", headers=_auth(token)).status_code == 403  # Viewers lack jobs.read
    with control_session() as session:
        session.execute(update(Membership).where(Membership.tenant_id == tenant.ref.id)
                        .values(roles=["Viewer", "Job watcher"]))
    assert client.get("/api/v1/jobs", headers=_auth(token)).status_code == 200
    with control_session() as session:
        session.execute(update(TenantRole).where(TenantRole.id == role_id).values(active=False))
    assert client.get("/api/v1/jobs", headers=_auth(token)).status_code == 403  # a retired role grants nothing


def test_tokens_are_hashed_revocable_and_expire(app, client, make_tenant) -> None:
    tenant = make_tenant()
    assert sign_in(client, tenant.admin_email).status_code == 302
    page = f"/t/{tenant.ref.slug}/settings/api"
    issued = client.post(f"{page}/tokens", data={"csrf_token": csrf_token(client, page), "name": "LIMS",
                                                 "scopes": ["jobs.read"], "expires_days": "30"})
    assert issued.status_code == 201
    secret = re.search(r'id="issued-secret">([^<]+)<', issued.get_data(as_text=True)).group(1)
    with control_session() as session:
        row = session.query(ApiToken).filter(ApiToken.tenant_id == tenant.ref.id).one()
        assert secret not in (row.token_hash, row.token_prefix) and len(row.token_hash) == 64
    assert client.get("/api/v1/jobs", headers=_auth(secret)).status_code == 200
    assert secret not in client.get(page).get_data(as_text=True)  # shown once only

    refused = client.post(f"{page}/tokens", data={"csrf_token": csrf_token(client, page), "name": "x",
                                                  "scopes": ["no.such.scope"]})
    assert refused.status_code == 422 and "unknown scopes" in refused.get_data(as_text=True)

    client.post(f"{page}/tokens/{row.id}/revoke", data={"csrf_token": csrf_token(client, page)})
    assert client.get("/api/v1/jobs", headers=_auth(secret)).status_code == 401

    with control_session() as session:
        from app.api.services import create_personal_token
        from app.core.permissions import BUILTIN_ROLES

        expiring = create_personal_token(session, tenant_id=tenant.ref.id, user_id=row.user_id, name="short",
                                         scopes=["jobs.read"], holder_permissions=BUILTIN_ROLES["Admin"],
                                         expires_days=1)
        session.execute(update(ApiToken).where(ApiToken.id == expiring.id).values(
            expires_at=func.now() - timedelta(seconds=1)))
    assert client.get("/api/v1/jobs", headers=_auth(expiring.secret)).status_code == 401


def test_oauth_client_credentials(app, client, make_tenant) -> None:
    tenant = make_tenant()
    assert sign_in(client, tenant.admin_email).status_code == 302
    page = f"/t/{tenant.ref.slug}/settings/api"
    made = client.post(f"{page}/clients", data={"csrf_token": csrf_token(client, page), "name": "Line 1 gateway",
                                                "scopes": ["jobs.read", "settings.manage"]})
    html = made.get_data(as_text=True)
    client_id = re.search(r'id="issued-client-id">([^<]+)<', html).group(1)
    secret = re.search(r'id="issued-secret">([^<]+)<', html).group(1)
    machine = app.test_client()
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    issued = machine.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "jobs.read"},
                          headers={"Authorization": f"Basic {basic}"})
    assert issued.status_code == 200, issued.get_data(as_text=True)
    token = issued.get_json()
    assert token["token_type"] == "Bearer" and token["scope"] == "jobs.read" and token["expires_in"] == 3600
    assert machine.get("/api/v1/jobs", headers=_auth(token["access_token"])).status_code == 200
    denied = machine.post("/api/v1/jobs/diagnostics", json={"check": "whoami"}, headers=_auth(token["access_token"]))
    assert denied.status_code == 403  # asked only for jobs.read
    full = machine.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                              "client_secret": secret}).get_json()
    queued = machine.post("/api/v1/jobs/diagnostics", json={"check": "whoami"}, headers=_auth(full["access_token"]))
    assert queued.status_code == 202 and queued.get_json()["func"] == "app.core.jobs:whoami"
    run_jobs()
    done = machine.get(f"/api/v1/jobs/{queued.get_json()['id']}", headers=_auth(full["access_token"])).get_json()
    assert done["status"] == "finished" and done["result"]["schema"] == tenant.ref.schema

    wrong = machine.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                               "client_secret": "wrong"})
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "invalid_client"
    with control_session() as session:
        from app.api.models import OAuthClient

        row_id = session.query(OAuthClient.id).filter(OAuthClient.client_id == client_id).scalar()
    client.post(f"{page}/clients/{row_id}/revoke", data={"csrf_token": csrf_token(client, page)})
    assert machine.get("/api/v1/jobs", headers=_auth(full["access_token"])).status_code == 401


def test_pagination_filtering_and_validation_problems(client, make_tenant, issue_token) -> None:
    tenant = make_tenant()
    token = issue_token(tenant)
    with tenant_transaction(tenant.ref) as session:
        ids = [enqueue(session, "app.core.jobs:whoami").id for _ in range(5)]
    seen, after = [], None
    while True:
        query = "?limit=2" + (f"&after={after}" if after else "")
        page = client.get(f"/api/v1/jobs{query}", headers=_auth(token)).get_json()
        seen += [j["id"] for j in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == ids
    run_jobs()
    finished = client.get("/api/v1/jobs?status=finished", headers=_auth(token)).get_json()["items"]
    assert len(finished) == 5
    assert client.get("/api/v1/jobs?status=waiting", headers=_auth(token)).get_json()["items"] == []
    for bad, fragment in (("?limit=0", "limit"), ("?limit=abc", "limit"), ("?status=lost", "status"),
                          ("?colour=red", "colour")):
        response = client.get(f"/api/v1/jobs{bad}", headers=_auth(token))
        assert response.status_code == 422 and response.mimetype == "application/problem+json", bad
        assert fragment in response.get_json()["detail"], response.get_json()
    missing = client.get("/api/v1/jobs/999999", headers=_auth(token))
    assert missing.status_code == 404 and "no job 999999" in missing.get_json()["detail"]
    not_json = client.post("/api/v1/jobs/diagnostics", data="check=whoami", headers=_auth(token))
    assert not_json.status_code == 415
    extra = client.post("/api/v1/jobs/diagnostics", json={"check": "whoami", "x": 1}, headers=_auth(token))
    assert extra.status_code == 422 and extra.get_json()["errors"][0]["loc"] == "x"


def test_rate_limit_answers_429_problem(app, client, make_tenant, issue_token, monkeypatch) -> None:
    monkeypatch.setitem(app.config, "API_RATE_LIMIT", "3 per minute")
    token = issue_token(make_tenant())
    codes = [client.get("/api/v1/token", headers=_auth(token)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/api/v1/token", headers=_auth(token))
    assert limited.mimetype == "application/problem+json" and "Retry-After" in limited.headers
    other = issue_token(make_tenant())  # limits are per credential
    assert client.get("/api/v1/token", headers=_auth(other)).status_code == 200


def test_openapi_document_and_reference_page(client) -> None:
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/members", "/api/v1/tenant", "/api/v1/billing"} \
        <= set(doc["paths"])
    jobs = doc["paths"]["/api/v1/jobs"]["get"]
    assert {p["name"] for p in jobs["parameters"]} == {"after", "limit", "status"}
    status = next(p for p in jobs["parameters"] if p["name"] == "status")
    assert status["schema"]["enum"] == ["waiting", "queued", "failing", "finished"]  # from the pydantic model
    assert doc["components"]["schemas"]["DiagnosticsIn"]["additionalProperties"] is False
    assert doc["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]["tokenUrl"] == "/oauth/token"
    page = client.get("/api/docs")
    assert page.status_code == 200 and "GET /api/v1/jobs" in page.get_data(as_text=True)


def test_every_operation_is_documented_for_integrators(client) -> None:
    from app.api.registry import OPERATIONS

    doc = client.get("/api/openapi.json").get_json()
    for resource in ("/api/v1/sites", "/api/v1/lines", "/api/v1/equipment/{equipment_id}/readiness",
                     "/api/v1/sensors/{sensor_id}", "/api/v1/lots/{lot_id}", "/api/v1/materials",
                     "/api/v1/recipes/{master_id}/effective", "/api/v1/recipes/versions/{version_id}",
                     "/api/v1/batches/{batch_id}", "/api/v1/exceptions", "/api/v1/batches/{batch_id}/exceptions",
                     "/api/v1/audit/events"):
        assert resource in doc["paths"], resource
    for op in OPERATIONS:
        assert op.summary and len(op.description) > 20 and op.tags, op.endpoint
    receive = doc["paths"]["/api/v1/lots"]["post"]
    assert receive["responses"]["409"]["description"] == "A lot with this number exists already"
    assert {"201", "402", "403", "404", "409", "422"} <= set(receive["responses"])
    assert receive["x-permission"] == "materials.manage"
    quantity = doc["components"]["schemas"]["LotIn"]["properties"]["quantity"]["anyOf"][1]
    assert quantity["type"] == "string" and quantity["pattern"]  # what a decimal string may look like
    page = client.get("/api/docs").get_data(as_text=True)
    assert "POST /api/v1/batches" in page and "Plan a batch from the effective recipe version" in page


def test_two_schemas_with_one_name_are_refused() -> None:
    import pydantic
    import pytest

    from app.api.openapi import _component

    def model(field_type):
        return pydantic.create_model("Clash", value=(field_type, ...))

    components: dict = {}
    _component(model(int), components)
    _component(model(int), components)  # the same schema again is fine
    with pytest.raises(ValueError, match="Clash"):
        _component(model(str), components)
