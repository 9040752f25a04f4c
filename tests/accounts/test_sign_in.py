"""Minimal sign-in (the accounts issue extends it)."""

from __future__ import annotations

from tests.conftest import TEST_PASSWORD, csrf_token, sign_in


def test_sign_in_lands_in_the_tenant(client, make_tenant) -> None:
    tenant = make_tenant()
    response = sign_in(client, tenant.admin_email)
    assert response.status_code == 302
    follow = client.get(response.headers["Location"])
    assert follow.status_code == 302 and follow.headers["Location"].endswith(f"/t/{tenant.ref.slug}/")
    assert client.get(f"/t/{tenant.ref.slug}/").status_code == 200


def test_wrong_password_is_refused(client, make_tenant) -> None:
    tenant = make_tenant()
    response = sign_in(client, tenant.admin_email, "wrong password 123")
    assert response.status_code == 401
    assert "not correct" in response.get_data(as_text=True)
    assert client.get(f"/t/{tenant.ref.slug}/").status_code == 302


def test_post_without_csrf_token_is_refused(client, make_tenant) -> None:
    tenant = make_tenant()
    response = client.post("/login", data={"email": tenant.admin_email, "password": TEST_PASSWORD})
    assert response.status_code == 400
    assert csrf_token(client)


def test_open_redirect_after_sign_in_is_refused(client, make_tenant) -> None:
    tenant = make_tenant()
    token = csrf_token(client)
    response = client.post("/login?next=//evil.example.com/x",
                           data={"email": tenant.admin_email, "password": TEST_PASSWORD, "csrf_token": token})
    assert "evil" not in response.headers["Location"]
