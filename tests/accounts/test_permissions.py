"""Every route declares its permission, and each role reaches exactly what its permissions allow."""

from __future__ import annotations

import re

import pytest

from app.accounts.services import create_custom_role
from app.core.permissions import BUILTIN_ROLES, PERMISSIONS
from app.core.web import MEMBER, PUBLIC, view_permission
from tests.accounts.conftest import admin_of
from tests.conftest import csrf_token, sign_in

MISSING_ID = "987654321"


def _routes(app) -> list[tuple[str, str, str]]:
    """(rule, method, endpoint) of every route of the app."""
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.rule, method, rule.endpoint))
    return out


def test_every_route_html_or_json_declares_a_permission(app) -> None:
    routes = _routes(app)
    assert len(routes) > 30, "the URL map looks empty"
    undeclared = [f"{m} {r}" for r, m, e in routes if view_permission(app.view_functions[e]) is None]
    assert undeclared == [], f"routes without @requires(...): {undeclared}"
    unknown = {view_permission(app.view_functions[e]) for _r, _m, e in routes} - set(PERMISSIONS) - {PUBLIC, MEMBER}
    assert unknown == set(), f"routes declare permissions that do not exist: {unknown}"
    assert any("/api/v1/" in r for r, _m, _e in routes), "the walk must cover JSON routes too"


def test_only_sign_in_pages_are_public(app) -> None:
    public = {e for _r, _m, e in _routes(app) if view_permission(app.view_functions[e]) == PUBLIC}
    tenant_public = {e for r, _m, e in _routes(app) if r.startswith("/t/") and e in public}
    assert tenant_public == set(), "no tenant route may be public"


def test_an_undeclared_route_is_refused_not_served(app, client) -> None:
    # A view registered without @requires on the real app answers 500, never its content.
    app.view_functions["accounts.index"], original = (lambda: "leak"), app.view_functions["accounts.index"]
    try:
        response = client.get("/")
        assert response.status_code == 500 and b"leak" not in response.data
    finally:
        app.view_functions["accounts.index"] = original


def _fill(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: m.group(0) if m.group(1) == "tenant_slug" else MISSING_ID, rule)


@pytest.mark.parametrize("role", sorted(BUILTIN_ROLES))
def test_each_builtin_role_reaches_exactly_its_permissions(app, make_tenant, make_person, role) -> None:
    tenant = make_tenant()
    person = make_person(tenant, [role])
    client = app.test_client()
    assert sign_in(client, person.email).status_code == 302
    token = csrf_token(client, "/account")
    granted = BUILTIN_ROLES[role]
    checked = 0
    for rule, method, endpoint in _routes(app):
        if not rule.startswith("/t/<tenant_slug>"):
            continue
        needed = view_permission(app.view_functions[endpoint])
        url = _fill(rule).replace("<tenant_slug>", tenant.ref.slug)
        response = client.open(url, method=method, data={"csrf_token": token} if method == "POST" else None,
                               headers={"X-CSRFToken": token} if method == "DELETE" else None)  # JSON API style
        allowed = needed in (MEMBER, PUBLIC) or needed in granted
        if allowed:
            assert response.status_code not in (401, 403, 500), f"{role} refused {method} {rule}: {response.status}"
        else:
            assert response.status_code == 403, f"{role} reached {method} {rule} ({needed}): {response.status}"
        checked += 1
    assert checked > 15


def test_custom_role_grants_exactly_its_permissions(app, make_tenant, make_person) -> None:
    tenant = make_tenant()
    admin = admin_of(tenant)
    create_custom_role(tenant_id=tenant.ref.id, name="Inspector Desk", description="Reads the audit trail",
                       permissions=["audit.read"], by_user_id=admin.user_id, by_permissions=BUILTIN_ROLES["Admin"])
    person = make_person(tenant, ["Inspector Desk"])
    client = app.test_client()
    sign_in(client, person.email)
    slug = tenant.ref.slug
    assert client.get(f"/t/{slug}/admin/security").status_code == 200
    assert client.get(f"/t/{slug}/api/v1/accounts/security-events").status_code == 200
    assert client.get(f"/t/{slug}/admin/users").status_code == 403
    assert client.get(f"/t/{slug}/admin/jobs").status_code == 403
    api = client.get(f"/t/{slug}/api/v1/accounts/members")
    assert api.status_code == 403 and api.mimetype == "application/problem+json"


def test_retired_or_changed_custom_roles_take_effect_on_the_next_request(app, make_tenant, make_person) -> None:
    from app.accounts.services import update_custom_role

    tenant = make_tenant()
    admin = admin_of(tenant)
    role_id = create_custom_role(tenant_id=tenant.ref.id, name="Job Watcher", description="",
                                 permissions=["jobs.read"], by_user_id=admin.user_id,
                                 by_permissions=BUILTIN_ROLES["Admin"])
    person = make_person(tenant, ["Job Watcher"])
    client = app.test_client()
    sign_in(client, person.email)
    assert client.get(f"/t/{tenant.ref.slug}/admin/jobs").status_code == 200
    update_custom_role(tenant_id=tenant.ref.id, role_id=role_id, description="", permissions=["audit.read"],
                       by_user_id=admin.user_id, by_permissions=BUILTIN_ROLES["Admin"])
    assert client.get(f"/t/{tenant.ref.slug}/admin/jobs").status_code == 403


def test_custom_role_input_is_validated(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    url = f"/t/{tenant.ref.slug}/admin/roles"
    cases = [
        ({"name": "Admin", "permissions": ["audit.read"]}, "built-in"),
        ({"name": "Ghost", "permissions": ["batches.teleport"]}, "unknown permission"),
        ({"name": "Empty", "permissions": []}, "at least one permission"),
        ({"name": "x" * 61, "permissions": ["audit.read"]}, "too long"),
        ({"name": "QA\u202eAdmin", "permissions": ["audit.read"]}, "invisible or control"),
        ({"name": "<script>", "permissions": ["audit.read"]}, "a role name is"),
    ]
    for form, message in cases:
        response = client.post(url, data={**form, "csrf_token": csrf_token(client, url)})
        assert response.status_code == 422, form
        assert message in response.get_data(as_text=True).lower(), (form, message)
    assert "No custom roles yet" in client.get(url).get_data(as_text=True)


def test_member_pages_outside_a_tenant_need_a_signed_in_account(app) -> None:
    anonymous = app.test_client()
    for path in ("/account", "/tenants"):
        response = anonymous.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path
