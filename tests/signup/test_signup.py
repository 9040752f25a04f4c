"""Self-serve sign-up: form, email verification, provisioning job with progress, onboarding, races, expiry."""

from __future__ import annotations

import re
import threading
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select, text

from app.accounts.models import Membership, User
from app.core.jobs import ControlOutboxMessage, run_control_job
from app.core.tenancy import control_session, tenant_transaction
from app.signup.models import Signup
from app.tenancy.models import Tenant
from tests.conftest import csrf_token, sign_in
from tests.support_saas import last_verification_link, mails, run_jobs

PASSWORD = "a long enough founder password"


@pytest.fixture
def mailbox(app, tmp_path, monkeypatch):
    directory = tmp_path / "mail"
    monkeypatch.setitem(app.config, "MAIL_DIR", str(directory))
    return directory


_n = iter(range(1, 10_000))


def _form(**overrides: str) -> dict[str, str]:
    n = next(_n)
    return {"company_name": f"Helix Bio {n}", "slug": f"helix-{n}-{time.time_ns() % 10**6}",
            "admin_name": "Dana Founder", "email": f"dana{n}.{time.time_ns()}@helix.example.com",
            "password": PASSWORD, "plan": "starter", **overrides}


def _submit(client, **overrides: str):
    data = _form(**overrides)
    data["csrf_token"] = csrf_token(client, "/signup")
    return data, client.post("/signup", data=data)


def _signups(slug: str) -> int:
    with control_session() as session:
        return session.scalar(select(func.count()).select_from(Signup).where(Signup.slug == slug))


def _path(link: str) -> str:
    return urlsplit(link).path


def test_visitor_signs_up_verifies_and_lands_in_onboarding(app, client, mailbox) -> None:
    data, response = _submit(client)
    assert response.status_code == 201
    assert "Check your inbox" in response.get_data(as_text=True)
    link = last_verification_link(mailbox, data["email"])

    page = client.get(_path(link))
    assert page.status_code == 200 and "Creating your workspace" in page.get_data(as_text=True)
    signup_id = int(re.search(r'data-status-url="/signup/(\d+)/status"', page.get_data(as_text=True)).group(1))
    status = client.get(f"/signup/{signup_id}/status").get_json()
    assert status["status"] == "verified"
    assert status["steps"][0]["state"] == "done"

    run_jobs()  # the provisioning job, through a real RQ worker

    status = client.get(f"/signup/{signup_id}/status").get_json()
    assert status["status"] == "ready", status
    assert all(s["state"] == "done" for s in status["steps"])
    entered = client.get(status["enter_url"])
    assert entered.status_code == 302 and entered.headers["Location"].endswith(f"/t/{data['slug']}/welcome")
    welcome = client.get(entered.headers["Location"])
    body = welcome.get_data(as_text=True)
    assert welcome.status_code == 200 and f"Welcome to {data['slug']}" in body
    assert "Local (unlimited)" in body  # billing is off: unlimited local plan

    # The link signs in once; afterwards it is email and password, which work.
    assert client.get(status["enter_url"]).status_code == 404  # consumed: the session no longer holds it
    other = app.test_client()
    assert sign_in(other, data["email"], PASSWORD).status_code == 302
    assert other.get(f"/t/{data['slug']}/").status_code == 200
    with control_session() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.slug == data["slug"]))
        assert tenant.status == "active" and tenant.name == data["company_name"]
        roles = session.scalar(select(Membership.roles).join(User, User.id == Membership.user_id)
                               .where(User.email == data["email"]))
        assert roles == ["Admin"]
    with tenant_transaction(tenant.id) as session:  # the schema is there and usable under the tenant role
        assert session.execute(text("SELECT current_schema()")).scalar() == f"t_{tenant.id}"


def test_second_click_on_the_link_changes_nothing(app, client, mailbox) -> None:
    data, _ = _submit(client)
    link = _path(last_verification_link(mailbox, data["email"]))
    client.get(link)
    client.get(link)
    with control_session() as session:
        signup_id = session.scalar(select(Signup.id).where(Signup.slug == data["slug"]))
        jobs = session.scalars(select(ControlOutboxMessage).where(
            ControlOutboxMessage.kwargs["signup_id"].as_integer() == signup_id)).all()
    assert len(jobs) == 1
    run_jobs()
    assert run_control_job(outbox_id=jobs[0].id)["slug"] == data["slug"]  # redelivery: same result, no 2nd tenant
    with control_session() as session:
        assert session.scalar(select(func.count()).select_from(Tenant).where(Tenant.slug == data["slug"])) == 1


def test_bad_input_gets_a_clear_message_and_stores_nothing(client, mailbox) -> None:
    cases = [({"slug": "X!"}, 422, "invalid"), ({"slug": "admin"}, 422, "reserved"),
             ({"password": "short"}, 422, "at least 12"), ({"email": "not-an-email"}, 422, "not a valid email"),
             ({"company_name": ""}, 422, "Company name is required"), ({"plan": "gold"}, 422, "unknown plan")]
    for overrides, status, message in cases:
        data, response = _submit(client, **overrides)
        assert response.status_code == status, overrides
        body = response.get_data(as_text=True)
        assert message in body, (overrides, body[:500])
        assert data["company_name"] in body or not data["company_name"]  # the form keeps what was typed
        assert _signups(data["slug"]) == 0
    assert mails(mailbox) == []


def test_slug_check_answers_live(client, make_tenant, mailbox) -> None:
    taken = make_tenant()
    answer = client.get(f"/signup/slug?slug={taken.ref.slug}").get_json()
    assert answer["available"] is False and "already taken" in answer["message"]
    assert client.get("/signup/slug?slug=fresh-name-42").get_json()["available"] is True
    bad = client.get("/signup/slug?slug=9lives").get_json()
    assert bad["available"] is False and "starting with a letter" in bad["message"]
    data, _ = _submit(client)
    pending = client.get(f"/signup/slug?slug={data['slug']}").get_json()
    assert pending["available"] is False and "being claimed" in pending["message"]


def test_two_signups_race_for_one_slug_one_wins(app, mailbox) -> None:
    slug = f"race-{time.time_ns() % 10**8}"
    clients = [app.test_client() for _ in range(2)]
    tokens = [csrf_token(c, "/signup") for c in clients]
    barrier = threading.Barrier(2)
    results: list[tuple[int, str]] = []

    def sign_up(i: int) -> None:
        data = _form(slug=slug)
        data["csrf_token"] = tokens[i]
        with app.app_context():
            barrier.wait()
            response = clients[i].post("/signup", data=data)
        results.append((response.status_code, response.get_data(as_text=True)))

    threads = [threading.Thread(target=sign_up, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(code for code, _ in results)
    assert codes == [201, 409], codes
    loser = next(body for code, body in results if code == 409)
    assert "being claimed by another sign-up" in loser
    assert _signups(slug) == 1


def test_expired_link_is_refused_and_a_fresh_one_works(app, client, mailbox, monkeypatch) -> None:
    monkeypatch.setitem(app.config, "SIGNUP_VERIFY_MAX_AGE_S", 1)
    data, _ = _submit(client)
    old_link = _path(last_verification_link(mailbox, data["email"]))
    time.sleep(2.1)
    expired = client.get(old_link)
    assert expired.status_code == 410 and "expired" in expired.get_data(as_text=True)
    assert client.get(f"/signup/slug?slug={data['slug']}").get_json()["available"] is True  # reservation lapsed

    monkeypatch.setitem(app.config, "SIGNUP_VERIFY_MAX_AGE_S", 3600)
    resent = client.post("/signup/resend", data={"email": data["email"],
                                                 "csrf_token": csrf_token(client, "/signup")})
    assert resent.status_code == 200 and "sent a new link" in resent.get_data(as_text=True)
    new_link = _path(last_verification_link(mailbox, data["email"]))
    assert new_link != old_link
    assert client.get(old_link).status_code == 410  # the old link stays dead
    assert client.get(new_link).status_code == 200
    run_jobs()
    with control_session() as session:
        assert session.scalar(select(Signup.status).where(Signup.slug == data["slug"])) == "ready"


def test_forged_link_is_refused(client) -> None:
    response = client.get("/signup/verify/eyJzIjoxfQ.forged.signature")
    assert response.status_code == 400 and "not valid" in response.get_data(as_text=True)


def test_slug_taken_before_provisioning_fails_with_a_message(app, client, mailbox, make_tenant) -> None:
    data, _ = _submit(client)
    client.get(_path(last_verification_link(mailbox, data["email"])))
    make_tenant(data["slug"])  # an operator created the slug by hand between verification and the job
    run_jobs()
    with control_session() as session:
        signup = session.scalar(select(Signup).where(Signup.slug == data["slug"]))
    assert signup.status == "failed" and "already exists" in signup.error and "another workspace name" in signup.error


def test_status_of_someone_elses_signup_is_hidden(app, client, mailbox) -> None:
    data, _ = _submit(client)
    client.get(_path(last_verification_link(mailbox, data["email"])))
    with control_session() as session:
        signup_id = session.scalar(select(Signup.id).where(Signup.slug == data["slug"]))
    stranger = app.test_client()
    assert stranger.get(f"/signup/{signup_id}/status").status_code == 404
    assert stranger.get(f"/signup/{signup_id}/enter").status_code == 404
