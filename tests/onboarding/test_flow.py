"""The guided flow: checklist on the home page, skippable and resumable steps, invitations."""

from __future__ import annotations

import html
import re

from sqlalchemy import select

from app.accounts.models import Invitation
from app.accounts.services import accept_invitation, invitation_link_token
from app.core.tenancy import control_session
from tests.conftest import TEST_PASSWORD, sign_in
from tests.plant.test_api_and_screens import _token


def _checklist(client, slug: str) -> dict[str, str]:
    page = client.get(f"/t/{slug}/").get_data(as_text=True)
    return dict(re.findall(r'<li class="(\w+)" data-step="(\w+)"', page)[i][::-1] for i in range(6))


def test_steps_are_skippable_resumable_and_shown_on_the_home_page(client, make_tenant) -> None:
    tenant = make_tenant()
    slug = tenant.ref.slug
    sign_in(client, tenant.admin_email)
    assert set(_checklist(client, slug).values()) == {"todo"}
    assert client.get(f"/t/{slug}/onboarding/").headers["Location"].endswith("/onboarding/site")
    token = _token(client, slug)
    response = client.post(f"/t/{slug}/onboarding/site", data={"csrf_token": token, "code": "ZH1", "name": "Zurich",
                                                               "timezone": "Europe/Zurich"})
    assert response.headers["Location"].endswith("/onboarding/line")
    client.post(f"/t/{slug}/onboarding/line/skip", data={"csrf_token": token})
    assert _checklist(client, slug) == {"site": "done", "line": "skipped", "equipment": "todo", "sensors": "todo",
                                        "materials": "todo", "users": "todo"}
    # Resuming goes to the first step left (equipment); the skipped line can be taken up again from the checklist.
    assert client.get(f"/t/{slug}/onboarding/").headers["Location"].endswith("/onboarding/equipment")
    page = client.get(f"/t/{slug}/onboarding/line").get_data(as_text=True)
    site_id = re.search(r'<option value="(\d+)"', page).group(1)
    client.post(f"/t/{slug}/onboarding/line", data={"csrf_token": token, "site_id": site_id, "code": "USP1",
                                                     "name": "Upstream"})
    assert _checklist(client, slug)["line"] == "done"
    bad = client.post(f"/t/{slug}/onboarding/equipment", data={"csrf_token": token, "tag": "BR-1", "name": "",
                                                                "equipment_class": "bioreactor", "line_id": "999"})
    assert bad.status_code == 404 and "no line 999" in bad.get_data(as_text=True)
    for step in ("equipment", "sensors", "materials", "users"):
        client.post(f"/t/{slug}/onboarding/{step}/skip", data={"csrf_token": token})
    finished = client.get(f"/t/{slug}/onboarding/")
    assert finished.status_code == 200 and "nothing left to do" in finished.get_data(as_text=True)


def test_invite_step_sends_an_invitation_that_becomes_a_member(client, db, make_tenant) -> None:
    tenant = make_tenant()
    slug = tenant.ref.slug
    sign_in(client, tenant.admin_email)
    email = f"operator.{slug}@example.com"
    response = client.post(f"/t/{slug}/onboarding/users", data={
        "csrf_token": _token(client, slug), "email": email, "role": "Operator"})
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 200 and f"Invitation sent to {email}." in page
    assert f"{email}: invited as Operator" in page
    bad = client.post(f"/t/{slug}/onboarding/users", data={"csrf_token": _token(client, slug), "email": "nope",
                                                            "role": "Operator"})
    assert bad.status_code == 422 and "not a valid email" in html.unescape(bad.get_data(as_text=True))
    assert _checklist(client, slug)["users"] == "done"
    with control_session(db=db) as session:
        invitation = session.scalar(select(Invitation).where(Invitation.email == email))
        assert invitation.roles == ["Operator"] and invitation.tenant_id == tenant.ref.id
        token = invitation_link_token(invitation)
    accept_invitation(token=token, signed_in_user_id=None, name="Olga Operator", password=TEST_PASSWORD)
    client.post("/logout", data={"csrf_token": _token(client, slug)})
    assert sign_in(client, email).status_code == 302
    assert client.get(f"/t/{slug}/plant/").status_code == 200
    assert client.get(f"/t/{slug}/onboarding/site").status_code == 403  # an operator cannot onboard the plant
