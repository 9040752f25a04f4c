"""Plan limits bite where they are used: inviting, reactivating, adding a line or a sensor, importing sensors,
the validation report and SSO. Each refusal says the limit, the usage and the upgrade path, stores nothing, and
lifts once the plan is upgraded; with billing off nothing is limited."""

from __future__ import annotations

import html
import io
import re
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.accounts import services as accounts
from app.accounts import sso
from app.accounts.models import Invitation, SecurityEvent, SsoProvider, User
from app.billing import services as billing
from app.billing.queries import billing_overview
from app.core.errors import Conflict, PaymentRequired
from app.core.permissions import permissions_of
from app.core.tenancy import control_session, tenant_transaction
from app.plant import services as plant
from app.plant.models import Line, Sensor
from app.recipes.models import ValidationRun
from tests.conftest import sign_in
from tests.factories import admin_actor, make_equipment, make_line
from tests.support_saas import put_on_plan, use_small_plans

ADMIN = frozenset(permissions_of(["Admin"]))


def _tenant_on_plan(app: Any, monkeypatch: Any, tmp_path: Any, make_tenant: Any, *, plan: str = "starter",
                    **starter_limits: Any) -> Any:
    """A new tenant on a trial of `plan`, billing on, the Starter plan shrunk to `starter_limits`."""
    use_small_plans(app, monkeypatch, tmp_path, **starter_limits)
    tenant = make_tenant()
    put_on_plan(tenant.ref.id, plan)
    return tenant


def _admin_id(tenant: Any) -> int:
    with control_session() as session:
        return session.scalar(select(User.id).where(User.email == tenant.admin_email))


def _invite(tenant: Any, email: str) -> Invitation:
    return accounts.invite_member(tenant_id=tenant.ref.id, email=email, roles=["Operator"],
                                  by_user_id=_admin_id(tenant), by_permissions=ADMIN)


def _open_invitations(tenant: Any) -> list[str]:
    with control_session() as session:
        return sorted(session.scalars(select(Invitation.email).where(
            Invitation.tenant_id == tenant.ref.id, Invitation.revoked_at.is_(None),
            Invitation.accepted_at.is_(None))))


def _invited_events(tenant: Any) -> int:
    with tenant_transaction(tenant.ref) as session:
        return session.scalar(select(func.count()).select_from(SecurityEvent)
                              .where(SecurityEvent.kind == "member.invited"))


def _count(tenant: Any, model: Any) -> int:
    with tenant_transaction(tenant.ref) as session:
        return session.scalar(select(func.count()).select_from(model))


def _csrf(client: Any, path: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


# --- users ------------------------------------------------------------------------------------------------------


def test_inviting_beyond_the_plan_is_refused_with_the_upgrade_path_and_stores_nothing(
        app, make_tenant, make_member, tmp_path, monkeypatch) -> None:
    tenant = _tenant_on_plan(app, monkeypatch, tmp_path, make_tenant, users=3)
    slug = tenant.ref.slug
    _invite(tenant, "first@example.com")   # admin + 1 open invitation
    make_member(tenant)                     # + 1 member = 3: the plan is full
    with pytest.raises(PaymentRequired) as refused:
        _invite(tenant, "second@example.com")
    assert str(refused.value) == (
        "Your Starter plan includes 3 users (members plus open invitations); you have 3. The Growth plan includes "
        f"50. Upgrade your plan at /t/{slug}/billing to add more.")
    assert refused.value.status_code == 402
    assert refused.value.problem_extra == {"upgrade_url": f"/t/{slug}/billing", "entitlement": "users",
                                           "limit": 3, "used": 3, "adding": 1}
    assert _open_invitations(tenant) == ["first@example.com"] and _invited_events(tenant) == 1  # nothing stored

    # Inviting the same address again replaces its open invitation: it takes no new place.
    _invite(tenant, "first@example.com")
    assert _open_invitations(tenant) == ["first@example.com"]

    # An expired invitation holds no place any more.
    with control_session() as session:
        session.execute(update(Invitation).where(Invitation.tenant_id == tenant.ref.id)
                        .values(expires_at=func.now() - timedelta(seconds=1)))
    _invite(tenant, "second@example.com")
    with pytest.raises(PaymentRequired):
        _invite(tenant, "third@example.com")

    put_on_plan(tenant.ref.id, "growth")
    _invite(tenant, "third@example.com")
    assert "third@example.com" in _open_invitations(tenant)


def test_reactivating_a_member_takes_a_place_too(app, make_tenant, make_member, tmp_path, monkeypatch) -> None:
    tenant = _tenant_on_plan(app, monkeypatch, tmp_path, make_tenant, users=2)
    member = make_member(tenant)
    admin = _admin_id(tenant)
    accounts.deactivate_member(tenant_id=tenant.ref.id, user_id=member.user_id, by_user_id=admin)
    invitation = _invite(tenant, "newcomer@example.com")  # the freed place is taken by an invitation
    with pytest.raises(PaymentRequired, match=r"includes 2 users .*; you have 2"):
        accounts.reactivate_member(tenant_id=tenant.ref.id, user_id=member.user_id, by_user_id=admin,
                                   by_permissions=ADMIN)
    with control_session() as session:
        assert billing.usage_of(session, tenant.ref.id, "users") == 2
    accounts.revoke_invitation(tenant_id=tenant.ref.id, invitation_id=invitation.id, by_user_id=admin)
    accounts.reactivate_member(tenant_id=tenant.ref.id, user_id=member.user_id, by_user_id=admin,
                               by_permissions=ADMIN)


def test_two_concurrent_invitations_cannot_both_take_the_last_place(app, make_tenant, tmp_path,
                                                                   monkeypatch) -> None:
    tenant = _tenant_on_plan(app, monkeypatch, tmp_path, make_tenant, users=2)
    admin = _admin_id(tenant)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def invite(email: str) -> None:
        with app.app_context():
            barrier.wait()
            try:
                accounts.invite_member(tenant_id=tenant.ref.id, email=email, roles=["Operator"], by_user_id=admin,
                                       by_permissions=ADMIN)
                outcomes.append("invited")
            except PaymentRequired:
                outcomes.append("refused")

    threads = [threading.Thread(target=invite, args=(f"racer{n}@example.com",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["invited", "refused"]
    assert len(_open_invitations(tenant)) == 1


def test_the_invite_screen_shows_the_limit_keeps_the_input_and_links_to_billing(
        app, client, make_tenant, tmp_path, monkeypatch) -> None:
    tenant = _tenant_on_plan(app, monkeypatch, tmp_path, make_tenant, users=1)
    sign_in(client, tenant.admin_email)
    path = f"/t/{tenant.ref.slug}/admin/users"
    response = client.post(path + "/invite", data={"csrf_token": _csrf(client, path), "email": "qa@example.com",
                                                   "roles": ["QA"]})
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 402
    assert "Your Starter plan includes 1 users (members plus open invitations); you have 1." in page
    assert f'href="/t/{tenant.ref.slug}/billing"' in page  # the upgrade path, one click away
    assert 'value="qa@example.com"' in page and 'value="QA" checked' in page  # what was typed is kept
    assert _open_invitations(tenant) == []
    # The onboarding flow's invite step goes through the same service.
    onboarding = f"/t/{tenant.ref.slug}/onboarding/users"
    response = client.post(onboarding, data={"csrf_token": _csrf(client, onboarding), "email": "op@example.com",
                                             "role": "Operator"})
    assert response.status_code == 402 and "includes 1 users" in html.unescape(response.get_data(as_text=True))


# --- lines and sensors ------------------------------------------------------------------------------------------


def test_adding_a_line_beyond_the_plan_is_refused_on_every_entry_point(app, client, make_tenant, tmp_path,
                                                                       monkeypatch) -> None:
    tenant = _tenant_on_plan(app, monkeypatch, tmp_path, make_tenant, lines=1)
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        site_id = make_line(session).site_id
    slug = tenant.ref.slug
    with pytest.raises(PaymentRequired, match=r"includes 1 lines; you have 1\. The Growth plan includes "
                                              rf"5\. Upgrade your plan at /t/{slug}/billing"), \
            tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        plant.create_line(session, site_id=site_id, code="USP-2", name="Upstream two", kind="line")
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:  # areas group rooms: not counted
        plant.create_line(session, site_id=site_id, code="AREA-2", name="Buffer prep", kind="area")

    sign_in(client, tenant.admin_email)
    site_page = f"/t/{slug}/plant/sites/{site_id}"
    screen = client.post(f"{site_page}/lines", data={"csrf_token": _csrf(client, site_page), "code": "USP2",
                                                     "name": "Upstream two", "kind": "line"})
    page = html.unescape(screen.get_data(as_text=True))
    assert screen.status_code == 402 and "includes 1 lines" in page
    assert 'value="USP2"' in page and 'value="Upstream two"' in page and f'href="/t/{slug}/billing"' in page

    token = _csrf(client, site_page)
    refused = client.post(f"/t/{slug}/api/v1/plant/lines", headers={"X-CSRFToken": token},
                          json={"site_id": site_id, "code": "USP2", "name": "Upstream two"})
    assert refused.status_code == 402 and refused.mimetype == "application/problem+json"
    problem = refused.get_json()
    assert problem["upgrade_url"] == f"/t/{slug}/billing" and (problem["limit"], problem["used"]) == (1, 1)
    assert "includes 1 lines" in problem["detail"]
    assert _count(tenant, Line) == 2

    put_on_plan(tenant.ref.id, "growth")
    made = client.post(f"/t/{slug}/api/v1/plant/lines", headers={"X-CSRFToken": token},
                       json={"site_id": site_id, "code": "USP2", "name": "Upstream two"})
    assert made.status_code == 201 and _count(tenant, Line) == 3


def test_adding_a_sensor_beyond_the_plan_is_refused(app, client, make_tenant, tmp_path, monkeypatch) -> None:
    tenant = _tenant_on_plan(app, monkeypatch, tmp_path, make_tenant, sensors=1)
    values = {"quantity_kind": "temperature", "unit": "degC", "range_low": "0", "range_high": "50",
              "sampling_period_s": "10"}
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        equipment_id = make_equipment(session, make_line(session)).id
        plant.create_sensor(session, tag="TT-1", equipment_id=equipment_id, **values)
    sign_in(client, tenant.admin_email)
    form = f"/t/{tenant.ref.slug}/plant/sensors/new"
    screen = client.post(form, data={"csrf_token": _csrf(client, form), "tag": "TT-2",
                                     "equipment_id": str(equipment_id), **values})
    page = html.unescape(screen.get_data(as_text=True))
    assert screen.status_code == 402 and "Your Starter plan includes 1 sensors; you have 1." in page
    assert 'value="TT-2"' in page and _count(tenant, Sensor) == 1
    put_on_plan(tenant.ref.id, "growth")
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        plant.create_sensor(session, tag="TT-2", equipment_id=equipment_id, **values)
    assert _count(tenant, Sensor) == 2


def _sensor_csv(equipment_tag: str, tags: list[str]) -> bytes:
    rows = ["tag,equipment_tag,quantity_kind,unit,range_low,range_high,sampling_period_s"]
    rows += [f"{tag},{equipment_tag},temperature,degC,0,50,10" for tag in tags]
    return "\n".join(rows).encode()


def test_a_sensor_import_beyond_the_plan_is_refused_whole_with_the_count(app, client, make_tenant, tmp_path,
                                                                          monkeypatch) -> None:
    tenant = _tenant_on_plan(app, monkeypatch, tmp_path, make_tenant, sensors=3)
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        equipment = make_equipment(session, make_line(session))
        plant.create_sensor(session, tag="TT-0", equipment_id=equipment.id, quantity_kind="temperature", unit="degC",
                            range_low="0", range_high="50", sampling_period_s="10")
    slug = tenant.ref.slug
    sign_in(client, tenant.admin_email)
    form = f"/t/{slug}/onboarding/import/sensors"
    # TT-0 is already there (skipped); three new sensors, room for two.
    upload = client.post(form, data={"csrf_token": _csrf(client, form),
                                     "file": (io.BytesIO(_sensor_csv(equipment.tag, ["TT-0", "TT-1", "TT-2", "TT-3"])),
                                              "sensors.csv")}, content_type="multipart/form-data")
    assert upload.status_code == 303
    preview_url = upload.headers["Location"]
    preview = client.get(preview_url)
    page = html.unescape(preview.get_data(as_text=True))
    assert preview.status_code == 402
    assert ("This would add 3 sensors; your Starter plan includes 3 sensors and you have 1, so there is room for 2: "
            "1 too many.") in page
    assert "Nothing will be imported." in page and f'href="/t/{slug}/billing"' in page
    assert "Import 3 rows" not in page

    confirm = client.post(preview_url, data={"csrf_token": _csrf(client, preview_url)})
    assert confirm.status_code == 303
    assert "This would add 3 sensors" in html.unescape(client.get(preview_url).get_data(as_text=True))
    assert _count(tenant, Sensor) == 1  # nothing of the file was stored

    put_on_plan(tenant.ref.id, "growth")
    preview = client.get(preview_url)
    assert preview.status_code == 200 and "Import 3 rows" in preview.get_data(as_text=True)
    client.post(preview_url, data={"csrf_token": _csrf(client, preview_url)})
    assert _count(tenant, Sensor) == 4


# --- features -----------------------------------------------------------------------------------------------------


def test_the_validation_report_needs_a_plan_that_includes_it(app, client, make_tenant, tmp_path,
                                                             monkeypatch) -> None:
    tenant = _tenant_on_plan(app, monkeypatch, tmp_path, make_tenant)
    slug = tenant.ref.slug
    sign_in(client, tenant.admin_email)
    index = f"/t/{slug}/recipes/validation"
    refused = client.post(index + "/run", data={"csrf_token": _csrf(client, index)})
    page = html.unescape(refused.get_data(as_text=True))
    assert refused.status_code == 402
    assert ("The validation report is not included in your Starter plan. It is part of the Growth and Scale plans. "
            f"Upgrade at /t/{slug}/billing.") in page
    assert f'href="/t/{slug}/billing"' in page
    cli = app.test_cli_runner().invoke(args=["validation", "report", "--tenant", slug])
    assert cli.exit_code == 2 and "validation report is not included in your Starter plan" in cli.output
    assert _count(tenant, ValidationRun) == 0


def test_sso_needs_a_plan_that_includes_it_and_can_always_be_switched_off(app, make_tenant, tmp_path,
                                                                          monkeypatch) -> None:
    tenant = _tenant_on_plan(app, monkeypatch, tmp_path, make_tenant, plan="growth")
    settings = {"tenant_id": tenant.ref.id, "issuer": "http://127.0.0.1:9", "client_id": "batchline",
                "client_secret": "s3cret", "allowed_domains": "", "default_roles": [],
                "by_user_id": _admin_id(tenant), "by_permissions": ADMIN}
    with pytest.raises(PaymentRequired, match=r"Single sign-on is not included in your Growth plan\. It is part "
                                              r"of the Scale plan"):
        accounts.configure_sso(enabled=True, **settings)
    with control_session() as session:
        assert session.get(SsoProvider, tenant.ref.id) is None
    with pytest.raises(PaymentRequired, match="Single sign-on is not included"):
        sso.start(tenant_id=tenant.ref.id, redirect_uri="http://127.0.0.1/sso/callback")
    accounts.configure_sso(enabled=False, **settings)  # stored, off: allowed on any plan

    put_on_plan(tenant.ref.id, "scale")
    accounts.configure_sso(enabled=True, **settings)
    # Going back to a plan without SSO while it is on would lock its users out: refused with what to do.
    with control_session() as session, pytest.raises(Conflict, match="single sign-on switched on"):
        billing.change_plan(session, tenant_id=tenant.ref.id, plan="growth", operation_id="op-downgrade-1")


# --- billing off, and the billing page --------------------------------------------------------------------------


def test_with_billing_off_nothing_is_limited(app, make_tenant, tmp_path, monkeypatch) -> None:
    tenant = _tenant_on_plan(app, monkeypatch, tmp_path, make_tenant, users=1, lines=1, sensors=1,
                             validation_report=False, sso=False)
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "")  # no key: billing off, the local plan
    _invite(tenant, "one@example.com")
    _invite(tenant, "two@example.com")
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        line = make_line(session)
        plant.create_line(session, site_id=line.site_id, code="L-OFF-2", name="Second")
        equipment = make_equipment(session, line)
        for tag in ("T-OFF-1", "T-OFF-2"):
            plant.create_sensor(session, tag=tag, equipment_id=equipment.id, quantity_kind="pH", unit="pH",
                                range_low="0", range_high="14", sampling_period_s="5")
    accounts.configure_sso(tenant_id=tenant.ref.id, issuer="http://127.0.0.1:9", client_id="c", client_secret="s",
                           allowed_domains="", default_roles=[], enabled=True, by_user_id=_admin_id(tenant),
                           by_permissions=ADMIN)
    with control_session() as session:
        overview = billing_overview(session, tenant.ref.id)
    assert overview["plan"]["key"] == "local"
    assert {u["entitlement"]: (u["used"], u["limit"]) for u in overview["usage"] if u["included"] and
            u["entitlement"] != "validation_report" and u["entitlement"] != "sso"} == {
        "users": (3, None), "lines": (2, None), "sensors": (2, None), "readings_per_month": (0, None)}


def test_the_billing_page_shows_usage_against_every_limit(app, client, make_tenant, tmp_path, monkeypatch) -> None:
    tenant = _tenant_on_plan(app, monkeypatch, tmp_path, make_tenant, users=4, lines=2, sensors=1,
                             readings_per_month=100)
    _invite(tenant, "someone@example.com")
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        plant.create_sensor(session, tag="TT-P", equipment_id=make_equipment(session, make_line(session)).id,
                            quantity_kind="temperature", unit="degC", range_low="0", range_high="50",
                            sampling_period_s="10")
    with control_session() as session:
        billing.meter_usage(session, tenant_id=tenant.ref.id, metric="readings_per_month", amount=130)
    sign_in(client, tenant.admin_email)
    page = client.get(f"/t/{tenant.ref.slug}/billing").get_data(as_text=True)
    rows = {m.group(1): " ".join(re.sub(r"<[^>]+>", " ", m.group(2)).split())
            for m in re.finditer(r"<tr><td>([a-z ]+)</td>(.*?)</tr>", page, re.S)}
    assert rows["users"] == "2 4"
    assert rows["lines"] == "1 2"
    assert rows["sensors"] == "1 1 limit reached"
    assert rows["readings per month"] == "130 (30 over the allowance, kept) 100 limit reached"
    assert rows["validation report"] == "not included" and rows["sso"] == "not included"
    with control_session() as session:  # the API's /billing and /tenant read the same overview
        readings = next(u for u in billing_overview(session, tenant.ref.id, with_invoice=False)["usage"]
                        if u["entitlement"] == "readings_per_month")
    assert (readings["used"], readings["over_allowance"], readings["limit"]) == (130, 30, 100)
