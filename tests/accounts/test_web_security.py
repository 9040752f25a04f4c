"""CSRF on every form, security headers, rate limits, quick user switch on shared tablets, the JSON API."""

from __future__ import annotations

import re

from app.accounts.sessions import _key
from app.core.jobs import redis_connection
from app.factory import CSRF_EXEMPT
from tests.accounts.conftest import admin_of, events
from tests.conftest import TEST_PASSWORD, csrf_token, sign_in


def test_every_post_route_refuses_a_request_without_csrf_token(app, client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    rules = [r for r in app.url_map.iter_rules() if "POST" in r.methods]
    assert len(rules) > 10
    for rule in rules:
        url = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: tenant.ref.slug if m.group(1) == "tenant_slug" else "1",
                     rule.rule)
        response = client.post(url, data={"email": "x@example.com", "roles": ["Admin"]})
        if rule.endpoint.split(".")[0] in CSRF_EXEMPT:
            # Authenticated by a bearer token, a client secret or a Stripe signature instead: the cookie
            # session alone must not get through.
            assert response.status_code in (400, 401, 403, 404), f"POST {rule} answered {response.status_code}"
            continue
        assert response.status_code == 400, f"POST {rule} without a CSRF token answered {response.status_code}"
        assert "CSRF" in response.get_data(as_text=True)
    assert events(tenant, "member.invited") == []


def test_signed_in_responses_are_not_cached_and_signed_out_ones_may_be(client, make_tenant) -> None:
    tenant = make_tenant()
    assert "no-store" not in client.get("/login").headers.get("Cache-Control", "")
    sign_in(client, tenant.admin_email)
    for url in (f"/t/{tenant.ref.slug}/", "/healthz"):
        assert client.get(url).headers["Cache-Control"] == "no-store", url
    static = client.get("/static/batchline.css")
    static.close()  # the file is streamed
    assert static.status_code == 200 and "no-store" not in static.headers.get("Cache-Control", "")


def test_security_headers(app, client) -> None:
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP: no HSTS
    secure = app.test_client().get("/login", base_url="https://localhost")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    # No inline script anywhere in the templates: the CSP would block it.
    assert "<script>" not in response.get_data(as_text=True)


def test_templates_carry_no_inline_script_or_style(app) -> None:
    from pathlib import Path

    root = Path(app.root_path)
    for path in root.rglob("templates/**/*.html"):
        html = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), f"inline script in {path}"
        if "pdf" not in path.parent.parts:  # templates/<area>/pdf/ are rendered to PDF, never served to a browser
            assert " style=" not in html and "<style" not in html, f"inline style in {path}"
        assert not re.search(r"\son[a-z]+=", html), f"inline event handler in {path}"


def test_sign_in_is_rate_limited_per_address_and_name(app, make_tenant) -> None:
    tenant = make_tenant()
    app.config["RATELIMIT_SIGNIN"] = "3 per minute"
    try:
        c = app.test_client()
        c.environ_base["REMOTE_ADDR"] = "198.51.100.7"
        codes = [sign_in(c, tenant.admin_email, "wrong guess at the password").status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        limited = sign_in(c, tenant.admin_email)
        assert limited.status_code == 429 and "Too many attempts" in limited.get_data(as_text=True)
        # Another person behind the same plant NAT is not blocked by it.
        other = make_member_email(tenant)
        assert sign_in(c, other).status_code == 302
    finally:
        app.config["RATELIMIT_SIGNIN"] = "10 per minute"


def make_member_email(tenant) -> str:
    from app.accounts.models import Membership, User
    from app.accounts.passwords import hash_password
    from app.core.tenancy import control_session

    with control_session() as s:
        user = User(email=f"nat-{tenant.ref.id}@example.com", name="NAT neighbour", password_hash=hash_password(
            TEST_PASSWORD))
        s.add(user)
        s.flush()
        s.add(Membership(user_id=user.id, tenant_id=tenant.ref.id, roles=["Viewer"]))
        return user.email


def test_password_reset_requests_are_rate_limited(app) -> None:
    app.config["RATELIMIT_RESET"] = "2 per hour"
    try:
        c = app.test_client()
        c.environ_base["REMOTE_ADDR"] = "198.51.100.9"
        codes = [c.post("/password/forgot", data={"email": "a@example.com",
                                                  "csrf_token": csrf_token(c, "/password/forgot")}).status_code
                 for _ in range(3)]
        assert codes == [302, 302, 429]
    finally:
        app.config["RATELIMIT_RESET"] = "100000 per hour"


def test_quick_switch_by_badge_ends_the_previous_users_session(app, make_tenant, make_person) -> None:
    tenant = make_tenant()
    first = make_person(tenant, ["Operator"])
    second = make_person(tenant, ["Operator"], name="Second Operator")
    tablet = app.test_client()
    sign_in(tablet, first.email)
    old_sid = tablet.get_cookie("batchline_session").value
    assert tablet.get(f"/t/{tenant.ref.slug}/").status_code == 200
    page = f"/switch?tenant={tenant.ref.slug}"
    html = tablet.get(page).get_data(as_text=True)
    assert 'id="badge"' in html and "switch.js" in html
    response = tablet.post("/switch", data={"tenant": tenant.ref.slug, "badge": second.user_code.lower(),
                                            "password": TEST_PASSWORD, "csrf_token": csrf_token(tablet, page)})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/t/{tenant.ref.slug}/")
    assert redis_connection().get(_key(old_sid)) is None  # the previous session no longer exists anywhere
    assert "Second Operator" in tablet.get(f"/t/{tenant.ref.slug}/").get_data(as_text=True)
    replay = app.test_client()
    replay.set_cookie("batchline_session", old_sid)
    assert replay.get(f"/t/{tenant.ref.slug}/").status_code == 302
    (switched,) = events(tenant, "user.switched", second.user_id)
    assert switched.detail["previous_user_id"] == first.user_id and switched.source == "switch"
    # No badge at hand: the next person types their user name (email) instead.
    second_sid = tablet.get_cookie("batchline_session").value
    response = tablet.post("/switch", data={"tenant": tenant.ref.slug, "badge": f"  {first.email.upper()} ",
                                            "password": TEST_PASSWORD, "csrf_token": csrf_token(tablet, page)})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/t/{tenant.ref.slug}/")
    assert redis_connection().get(_key(second_sid)) is None
    assert "Second Operator" not in tablet.get(f"/t/{tenant.ref.slug}/").get_data(as_text=True)
    (back,) = events(tenant, "user.switched", first.user_id)
    assert back.detail["previous_user_id"] == second.user_id


def test_a_failed_switch_still_ends_the_previous_session(app, make_tenant, make_person) -> None:
    tenant = make_tenant()
    first = make_person(tenant, ["Operator"])
    second = make_person(tenant, ["Operator"])
    tablet = app.test_client()
    sign_in(tablet, first.email)
    response = tablet.post("/switch", data={"badge": second.user_code, "password": "not it at all",
                                            "csrf_token": csrf_token(tablet, "/switch")})
    assert response.status_code == 401
    assert tablet.get(f"/t/{tenant.ref.slug}/").status_code == 302
    assert events(tenant, "password.failure", second.user_id)[0].source == "switch"


def test_api_lists_members_and_events_as_json(app, client, make_tenant, make_person) -> None:
    tenant = make_tenant()
    make_person(tenant, ["Operator"])
    sign_in(client, tenant.admin_email)
    members = client.get(f"/t/{tenant.ref.slug}/api/v1/accounts/members").get_json()
    assert {m["email"] for m in members} >= {admin_of(tenant).email}
    assert all(re.fullmatch(r"U\d{6,}", m["user_code"]) for m in members)
    evts = client.get(f"/t/{tenant.ref.slug}/api/v1/accounts/security-events?kind=signin").get_json()
    assert evts and evts[0]["kind"] == "signin.success" and evts[0]["ip"] == "127.0.0.1"
    roles = client.get(f"/t/{tenant.ref.slug}/api/v1/accounts/roles").get_json()
    assert {r["name"] for r in roles} >= {"Admin", "Supervisor", "Process Engineer", "Operator", "QA", "Viewer"}
    anonymous = app.test_client().get(f"/t/{tenant.ref.slug}/api/v1/accounts/members")
    assert anonymous.status_code == 401 and anonymous.mimetype == "application/problem+json"
