"""Server-side sessions: rotation at sign-in, sign-out, idle and absolute limits, deactivation, cookie flags."""

from __future__ import annotations

import time

from flask.sessions import TaggedJSONSerializer

from app.accounts.services import update_security_settings
from app.accounts.sessions import SESSION_PREFIX, _key
from app.core.jobs import redis_connection
from tests.accounts.conftest import admin_of, events, sign_out
from tests.conftest import csrf_token, sign_in

COOKIE = "batchline_session"
_serializer = TaggedJSONSerializer()


def _sid(client) -> str | None:
    cookie = client.get_cookie(COOKIE)
    return cookie.value if cookie else None


def _stored(sid: str) -> dict | None:
    raw = redis_connection().get(_key(sid))
    return _serializer.loads(raw.decode()) if raw else None


def _age_session(sid: str, **shift_s: float) -> None:
    """Move the stored timestamps back in time, as if the tablet had been left alone that long."""
    data = _stored(sid)
    for field, seconds in shift_s.items():
        data[field] -= seconds
    redis_connection().set(_key(sid), _serializer.dumps(data), keepttl=True)


def test_session_id_is_rotated_at_sign_in_and_the_old_one_is_dead(client, make_tenant) -> None:
    tenant = make_tenant()
    csrf_token(client)  # an anonymous session exists before sign-in (it holds the CSRF token)
    before = _sid(client)
    assert before and _stored(before) is not None
    sign_in(client, tenant.admin_email)
    after = _sid(client)
    assert after and after != before
    assert _stored(before) is None
    assert _stored(after)["_user_id"]
    # Nothing in Redis can be replayed as a cookie: keys are hashes of the ids.
    assert not redis_connection().exists(SESSION_PREFIX + after)


def test_sign_out_deletes_the_server_side_session(app, client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    sid = _sid(client)
    sign_out(client)
    assert _stored(sid) is None
    replay = app.test_client()
    replay.set_cookie(COOKIE, sid)
    response = replay.get(f"/t/{tenant.ref.slug}/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert events(tenant, "signout")


def test_idle_timeout_ends_the_session(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    sid = _sid(client)
    data = _stored(sid)
    assert data["_bl_idle"] == 15 * 60  # the default
    assert 0 < redis_connection().ttl(_key(sid)) <= 15 * 60
    _age_session(sid, _bl_l=14 * 60)
    assert client.get(f"/t/{tenant.ref.slug}/").status_code == 200  # activity within the limit keeps it alive
    _age_session(sid, _bl_l=15 * 60 + 1)
    response = client.get(f"/t/{tenant.ref.slug}/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert _stored(sid) is None
    assert "Your session has ended" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_idle_timeout_is_a_tenant_setting(client, make_tenant) -> None:
    tenant = make_tenant()
    admin = admin_of(tenant)
    update_security_settings(tenant_id=tenant.ref.id, by_user_id=admin.user_id,
                             values={"lockout_threshold": 5, "idle_timeout_min": 5, "session_max_hours": 8,
                                     "password_min_length": 12})
    sign_in(client, tenant.admin_email)
    sid = _sid(client)
    assert _stored(sid)["_bl_idle"] == 300 and _stored(sid)["_bl_abs"] == 8 * 3600
    _age_session(sid, _bl_l=301)
    assert client.get(f"/t/{tenant.ref.slug}/").status_code == 302
    (changed,) = events(tenant, "settings.changed")
    assert changed.detail["changed"]["idle_timeout_min"] == {"before": 15, "after": 5}


def test_absolute_lifetime_ends_even_an_active_session(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    sid = _sid(client)
    _age_session(sid, _bl_c=12 * 3600 + 1)
    assert client.get(f"/t/{tenant.ref.slug}/").status_code == 302


def test_deactivated_users_live_session_stops_on_the_next_request(app, client, make_tenant, make_person) -> None:
    tenant = make_tenant()
    operator = make_person(tenant, ["Operator"])
    tablet = app.test_client()
    sign_in(tablet, operator.email)
    assert tablet.get(f"/t/{tenant.ref.slug}/").status_code == 200
    sign_in(client, tenant.admin_email)
    url = f"/t/{tenant.ref.slug}/admin/users/{operator.user_id}"
    response = client.post(f"{url}/deactivate", data={"csrf_token": csrf_token(client, url)})
    assert response.status_code == 302
    response = tablet.get(f"/t/{tenant.ref.slug}/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    # Signing in again gets the person nowhere in this tenant, and the user row stays with its id.
    sign_in(tablet, operator.email)
    assert tablet.get(f"/t/{tenant.ref.slug}/").status_code == 404
    page = client.get(f"/t/{tenant.ref.slug}/admin/users").get_data(as_text=True)
    assert operator.email in page and "deactivated" in page
    (event,) = events(tenant, "member.deactivated", operator.user_id)
    assert event.actor_user_id == admin_of(tenant).user_id and event.membership_id == operator.membership_id


def test_cookie_is_httponly_samesite_and_secure_over_https(app, make_tenant) -> None:
    tenant = make_tenant()
    plain = app.test_client()
    response = sign_in(plain, tenant.admin_email)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert "Expires" not in cookie  # a browser session cookie: closing the browser ends it
    tls = app.test_client()
    tls.get("/login", base_url="https://localhost")
    token = csrf_token_https(tls)
    response = tls.post("/login", base_url="https://localhost", headers={"Referer": "https://localhost/login"},
                        data={"email": tenant.admin_email, "password": "correct horse battery staple 42",
                              "csrf_token": token})
    assert response.status_code == 302
    assert "Secure" in response.headers["Set-Cookie"]


def csrf_token_https(client) -> str:
    import re

    html = client.get("/login", base_url="https://localhost").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_no_remember_me_for_gmp_roles(app, make_tenant, make_person) -> None:
    tenant = make_tenant()
    operator = make_person(tenant, ["Operator"])
    viewer = make_person(tenant, ["Viewer"])
    for person, persistent in ((operator, False), (viewer, True)):
        c = app.test_client()
        response = c.post("/login", data={"email": person.email, "password": person.password, "remember": "on",
                                          "csrf_token": csrf_token(c)})
        assert response.status_code == 302
        assert ("Expires" in response.headers["Set-Cookie"]) is persistent, person
        assert bool(_stored(_sid(c)).get("_bl_persist")) is persistent
    c = app.test_client()
    c.post("/login", data={"email": operator.email, "password": operator.password, "remember": "on",
                           "csrf_token": csrf_token(c)})
    assert "not available to accounts that record GMP data" in c.get("/account").get_data(as_text=True)


def test_password_change_ends_other_sessions_and_keeps_this_one(app, make_tenant, make_person) -> None:
    tenant = make_tenant()
    person = make_person(tenant, ["Operator"])
    desk, tablet = app.test_client(), app.test_client()
    sign_in(desk, person.email)
    sign_in(tablet, person.email)
    new = "a brand new passphrase for the suite"
    response = desk.post("/account/password", data={
        "current_password": person.password, "new_password": new, "confirm_password": new,
        "csrf_token": csrf_token(desk, "/account")})
    assert response.status_code == 302
    assert desk.get(f"/t/{tenant.ref.slug}/").status_code == 200
    assert tablet.get(f"/t/{tenant.ref.slug}/").status_code == 302
    assert sign_in(app.test_client(), person.email, new).status_code == 302
    assert events(tenant, "password.changed", person.user_id)


def test_session_ttl_in_redis_never_exceeds_the_idle_limit(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    sid = _sid(client)
    time.sleep(0.01)
    client.get(f"/t/{tenant.ref.slug}/")
    assert 0 < redis_connection().ttl(_key(sid)) <= 900


def test_a_request_that_changes_nothing_does_not_rewrite_a_fresh_session(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    sid = _sid(client)
    client.get(f"/t/{tenant.ref.slug}/")  # shows (and so removes) the sign-in notice: a change, written back
    _age_session(sid, _bl_l=5)  # seen 5 s ago: within the 30 s touch interval
    seen = _stored(sid)["_bl_l"]
    response = client.get(f"/t/{tenant.ref.slug}/")
    assert response.status_code == 200
    assert _stored(sid)["_bl_l"] == seen  # nothing written back
    assert "Set-Cookie" not in response.headers and "Cookie" in response.headers.get("Vary", "")
    assert _sid(client) == sid


def test_a_session_last_seen_longer_ago_than_the_touch_interval_is_refreshed(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    sid = _sid(client)
    _age_session(sid, _bl_l=31)
    redis_connection().expire(_key(sid), 15 * 60 - 31)  # as the TTL would be after 31 s without a write
    assert client.get(f"/t/{tenant.ref.slug}/").status_code == 200
    assert abs(_stored(sid)["_bl_l"] - time.time()) < 5
    assert redis_connection().ttl(_key(sid)) > 15 * 60 - 10  # the idle timeout counts from now again
