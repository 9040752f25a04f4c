"""Batch step signatures and supervisor overrides by SSO accounts (21 CFR 11.200(a)): a forced login at the real
OIDC provider on loopback (`prompt=login`, `max_age=0`) replaces the password, and its single-use proof is bound
to the step (or override), the meaning and the content signed."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select, text

from app.accounts.services import configure_sso
from app.audit.models import AuditEvent
from app.batches.models import BatchOverride
from app.core.permissions import BUILTIN_ROLES
from app.core.tenancy import tenant_transaction
from app.esign.models import Signature
from tests.accounts.conftest import admin_of
from tests.accounts.oidc_provider import running_provider
from tests.conftest import Member, csrf_token, sign_in
from tests.esign.test_sso_reauth import CALLBACK, _person, _sso_sign_in, _through_provider


@pytest.fixture
def provider():
    with running_provider() as p:
        p.register("batchline-client", "client-secret-42", CALLBACK)
        yield p


def _sso_member(tenant, provider, subject: str, name: str, roles: tuple[str, ...]) -> tuple[Member, dict]:
    """A member who signs in only through the provider (no password)."""
    person = _person(tenant, provider, subject, name=name, roles=roles)
    return Member(person["user_id"], person["member_id"], person["email"], name, roles), person["claims"]


def _floor_with_sso(make_floor, provider):
    floor = make_floor()
    configure_sso(tenant_id=floor.tenant.ref.id, issuer=provider.issuer, client_id="batchline-client",
                  client_secret="client-secret-42", allowed_domains="", default_roles=[], enabled=True,
                  by_user_id=admin_of(floor.tenant).user_id, by_permissions=BUILTIN_ROLES["Admin"])
    return floor


def _hidden(page: str) -> dict[str, str]:
    return {name: html.unescape(value)
            for name, value in re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', page)}


def _sso_form(page: str, form_id: str) -> dict[str, str]:
    match = re.search(rf'<form [^>]*id="{form_id}">(.*?)</form>', page, re.S)
    assert match, f"no form {form_id} on the page"
    return _hidden(match.group(1))


def test_an_sso_operator_signs_a_step_after_a_forced_login_and_the_proof_works_once(client, make_floor,
                                                                                     provider) -> None:
    floor = _floor_with_sso(make_floor, provider)
    olga, claims = _sso_member(floor.tenant, provider, "idp-olga", "Olga SSO", ("Operator",))
    batch_id = floor.new_batch()
    floor.start(batch_id, "clearance", who=olga)
    floor.enter(batch_id, "clearance", "room_clear", {"value": True}, who=olga)
    floor.enter(batch_id, "clearance", "vessel", {"code": f"EQ:{floor.reactor_tag}"}, who=olga)
    step_id = floor.step(batch_id, "clearance").id
    provider.next_user = claims
    _sso_sign_in(client, floor.tenant, provider, {"claims": claims})
    step_url = f"/t/{floor.tenant.ref.slug}/batches/{batch_id}/steps/{step_id}"
    host = urlsplit(provider.issuer).netloc

    page = client.get(step_url).get_data(as_text=True)
    assert f"Re-authenticate with {host}" in page
    # A password typed in place of the re-authentication is refused: SSO accounts sign only through the provider.
    refused = client.post(f"{step_url}/sign", data={"csrf_token": csrf_token(client, step_url), "meaning": "performed",
                                                    "signature_password": "a guess"})
    assert refused.status_code == 303
    assert "not with a password" in client.get(step_url).get_data(as_text=True)

    start = client.post(f"{step_url}/sign", data={"csrf_token": csrf_token(client, step_url), "meaning": "performed",
                                                  "reason": "line clear, vessel scanned", "esign_reauth": "sso"})
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    assert query["prompt"] == ["login"] and query["max_age"] == ["0"]
    provider.next_user = claims
    back = _through_provider(client, start)
    assert back.status_code == 302 and back.headers["Location"].endswith(f"{step_url}#signatures")
    assert provider.authorize_requests[-1]["prompt"] == "login" and provider.authorize_requests[-1]["max_age"] == "0"

    page = client.get(step_url).get_data(as_text=True)
    form = _sso_form(page, "sso-sign-performed")
    assert form["signature_sso_proof"] and form["meaning"] == "performed"
    assert 'value="line clear, vessel scanned"' in page  # the comment typed before the detour is kept
    signed = client.post(f"{step_url}/sign", data={**form, "reason": "line clear, vessel scanned"})
    assert signed.status_code == 303
    assert "Signed:" in client.get(step_url).get_data(as_text=True)
    with tenant_transaction(floor.tenant.ref) as session:
        signature = session.scalars(select(Signature).where(Signature.record_type == "step_execution",
                                                            Signature.record_id == str(step_id))).one()
        how = session.get_one(AuditEvent, signature.audit_seq).new_values["reauthentication"]
    assert (signature.meaning, signature.printed_name, signature.signer_user_id) == ("performed", "Olga SSO",
                                                                                    olga.user_id)
    assert (how["method"], how["issuer"], how["subject"]) == ("sso", provider.issuer, "idp-olga")

    # The proof is spent: the same form cannot sign again (nothing more is stored).
    again = client.post(f"{step_url}/sign", data={**form, "meaning": "verified"})
    assert again.status_code == 303
    with tenant_transaction(floor.tenant.ref) as session:
        assert len(session.scalars(select(Signature).where(Signature.record_type == "step_execution")).all()) == 1

    # The second person verifies with a password on the same tablet; an SSO operator cannot verify their own step.
    floor.sign(batch_id, "clearance", "verified", who=floor.operator2)
    floor.complete(batch_id, "clearance")
    assert floor.step(batch_id, "clearance").status == "completed"


def test_an_sso_supervisor_signs_an_out_of_order_override_after_a_forced_login(client, make_floor, provider) -> None:
    floor = _floor_with_sso(make_floor, provider)
    sam, claims = _sso_member(floor.tenant, provider, "idp-sam", "Sam SSO", ("Supervisor",))
    batch_id = floor.new_batch()
    step_id = floor.step(batch_id, "charge").id  # waits for the line clearance
    provider.next_user = claims
    _sso_sign_in(client, floor.tenant, provider, {"claims": claims})
    step_url = f"/t/{floor.tenant.ref.slug}/batches/{batch_id}/steps/{step_id}"
    page = client.get(step_url).get_data(as_text=True)
    assert 'id="sso-override"' in page

    start = client.post(f"{step_url}/start", data={"csrf_token": csrf_token(client, step_url), "esign_reauth": "sso",
                                                   "override_reason": "clearance done on paper, QA informed"})
    provider.next_user = claims
    back = _through_provider(client, start)
    assert back.status_code == 302 and back.headers["Location"].endswith(f"{step_url}#override")
    page = client.get(step_url).get_data(as_text=True)
    form = _hidden(page)
    assert form["override_sso_proof"] and form["override_reason"] == "clearance done on paper, QA informed"
    started = client.post(f"{step_url}/start", data={"csrf_token": form["csrf_token"],
                                                     "override_sso_proof": form["override_sso_proof"],
                                                     "override_reason": form["override_reason"]})
    assert started.status_code == 303
    assert floor.step(batch_id, "charge").status == "in_progress"
    with tenant_transaction(floor.tenant.ref) as session:
        override = session.scalars(select(BatchOverride).where(BatchOverride.batch_id == batch_id)).one()
        signature = session.get_one(Signature, override.signature_id)
        how = session.get_one(AuditEvent, signature.audit_seq).new_values["reauthentication"]
    assert (override.kind, override.supervisor_member_id) == ("out_of_order", sam.member_id)
    assert (signature.record_type, signature.record_id) == ("batch_override", str(override.id))
    assert (how["method"], how["subject"]) == ("sso", "idp-sam")
    assert ("out_of_order", "major", "charge") in floor.exceptions(batch_id)


def test_a_password_operator_still_signs_with_the_password_when_the_tenant_has_sso(client, make_floor,
                                                                                     provider) -> None:
    floor = _floor_with_sso(make_floor, provider)
    batch_id = floor.new_batch()
    floor.start(batch_id, "clearance")
    step_id = floor.step(batch_id, "clearance").id
    sign_in(client, floor.operator.email)
    page = client.get(f"/t/{floor.tenant.ref.slug}/batches/{batch_id}/steps/{step_id}").get_data(as_text=True)
    assert "Re-authenticate with" not in page and 'name="signature_password"' in page


def _quarantined_lot(floor, number: str = "MED-Q") -> str:
    from app.materials import services as materials
    from app.materials.models import Material

    with floor.tx(floor.supervisor) as s:
        material = s.scalar(select(Material).where(Material.code == "MED-T"))
        return materials.receive_lot(s, material_id=material.id, lot_number=number, quantity="50",
                                     received_on="2026-01-05", supplier="Acme").lot_number


def _sso_supervisor_at_the_charge(client, make_floor, provider):
    """An SSO supervisor signed in on the tablet at the charge step (in progress), with a quarantined lot."""
    floor = _floor_with_sso(make_floor, provider)
    lot = _quarantined_lot(floor)
    sam, claims = _sso_member(floor.tenant, provider, "idp-sam", "Sam SSO", ("Supervisor",))
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.start(batch_id, "charge")
    provider.next_user = claims
    _sso_sign_in(client, floor.tenant, provider, {"claims": claims})
    step_url = f"/t/{floor.tenant.ref.slug}/batches/{batch_id}/steps/{floor.step(batch_id, 'charge').id}"
    return floor, sam, claims, batch_id, step_url, lot


def test_an_sso_supervisor_overrides_a_blocked_scan_after_a_forced_login_and_the_value_waits(client, make_floor,
                                                                                            provider) -> None:
    floor, sam, claims, batch_id, step_url, lot = _sso_supervisor_at_the_charge(client, make_floor, provider)
    host = urlsplit(provider.issuer).netloc
    assert f"Re-authenticate with {host} to override" in client.get(step_url).get_data(as_text=True)

    typed = {"capture": "medium", "code": f"LOT:{lot}", "quantity": "8", "unit": "L",
             "control_recipe_hash": floor.control_hash(batch_id), "idempotency_key": "tablet-key-0001",
             "override_reason": "QA released under deviation DEV-12, paperwork pending"}
    # A value that is not blocked needs no override: refused before any trip to the provider.
    not_blocked = client.post(f"{step_url}/entries", data={**typed, "code": f"LOT:{floor.lots['MED-T']}",
                                                           "csrf_token": csrf_token(client, step_url),
                                                           "esign_reauth": "sso"})
    assert not_blocked.status_code == 303 and "#c-medium" in not_blocked.headers["Location"]
    assert "no supervisor override is needed" in client.get(step_url).get_data(as_text=True)

    start = client.post(f"{step_url}/entries", data={**typed, "csrf_token": csrf_token(client, step_url),
                                                     "esign_reauth": "sso"})
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    assert query["prompt"] == ["login"] and query["max_age"] == ["0"]
    provider.next_user = claims
    back = _through_provider(client, start)
    assert back.status_code == 302 and back.headers["Location"].endswith(f"{step_url}#c-medium")
    with tenant_transaction(floor.tenant.ref) as session:  # nothing recorded yet: the value waits on the page
        assert session.scalars(select(BatchOverride).where(BatchOverride.batch_id == batch_id)).all() == []

    page = client.get(step_url).get_data(as_text=True)
    form = _sso_form(page, "sso-override-medium")
    assert form["override_sso_proof"] and (form["code"], form["quantity"], form["unit"]) == (f"LOT:{lot}", "8", "L")
    assert form["override_reason"] == typed["override_reason"] and form["idempotency_key"] == "tablet-key-0001"
    saved = client.post(f"{step_url}/entries", data=form)
    assert saved.status_code == 303
    assert "Saved:" in client.get(step_url).get_data(as_text=True)
    with tenant_transaction(floor.tenant.ref) as session:
        override = session.scalars(select(BatchOverride).where(BatchOverride.batch_id == batch_id)).one()
        signature = session.get_one(Signature, override.signature_id)
        how = session.get_one(AuditEvent, signature.audit_seq).new_values["reauthentication"]
    assert (override.kind, override.capture_key, override.supervisor_member_id) == ("hard_block", "medium",
                                                                                   sam.member_id)
    assert [b["code"] for b in override.blocked_by] and "quarantine" in override.blocked_by[0]["message"]
    assert (signature.record_type, signature.record_id, signature.meaning) == ("batch_override", str(override.id),
                                                                              "approved")
    assert (how["method"], how["issuer"], how["subject"]) == ("sso", provider.issuer, "idp-sam")
    found = floor.exceptions(batch_id)
    assert ("material_not_usable", "major", "charge") in found and ("override", "critical", "charge") in found
    assert floor.lot_balance(lot) == 42

    # Resubmitting the same form (flaky Wi-Fi) records nothing more: same key, and the proof is spent.
    assert client.post(f"{step_url}/entries", data=form).status_code == 303
    with tenant_transaction(floor.tenant.ref) as session:
        assert len(session.scalars(select(BatchOverride).where(BatchOverride.batch_id == batch_id)).all()) == 1


def test_a_spent_or_foreign_override_proof_records_nothing(client, make_floor, provider) -> None:
    floor, _sam, claims, batch_id, step_url, lot = _sso_supervisor_at_the_charge(client, make_floor, provider)
    typed = {"capture": "medium", "code": f"LOT:{lot}", "quantity": "8", "unit": "L",
             "control_recipe_hash": floor.control_hash(batch_id), "idempotency_key": "tablet-key-0002",
             "override_reason": "QA released under deviation DEV-12"}
    start = client.post(f"{step_url}/entries", data={**typed, "csrf_token": csrf_token(client, step_url),
                                                     "esign_reauth": "sso"})
    provider.next_user = claims
    _through_provider(client, start)
    form = _sso_form(client.get(step_url).get_data(as_text=True), "sso-override-medium")
    # The proof is bound to the value's override: another lot (other content) under it is refused and spends it.
    other = _quarantined_lot(floor, "MED-Q2")
    refused = client.post(f"{step_url}/entries", data={**form, "code": f"LOT:{other}",
                                                       "idempotency_key": "tablet-key-0003"})
    assert refused.status_code == 303
    assert "its content no longer matches" in client.get(step_url).get_data(as_text=True)
    again = client.post(f"{step_url}/entries", data=form)
    assert again.status_code == 303
    assert "already used" in client.get(step_url).get_data(as_text=True)
    with tenant_transaction(floor.tenant.ref) as session:
        assert session.scalars(select(BatchOverride).where(BatchOverride.batch_id == batch_id)).all() == []
        assert session.execute(text("SELECT count(*) FROM step_entries WHERE capture_key = 'medium'")).scalar() == 0


def test_the_tablet_json_api_signs_a_step_with_an_sso_proof_once(client, make_floor, provider) -> None:
    floor = _floor_with_sso(make_floor, provider)
    olga, claims = _sso_member(floor.tenant, provider, "idp-olga", "Olga SSO", ("Operator",))
    batch_id = floor.new_batch()
    floor.start(batch_id, "clearance", who=olga)
    floor.enter(batch_id, "clearance", "room_clear", {"value": True}, who=olga)
    vessel = floor.enter(batch_id, "clearance", "vessel", {"code": f"EQ:{floor.reactor_tag}"}, who=olga).entry
    step_id = floor.step(batch_id, "clearance").id
    provider.next_user = claims
    _sso_sign_in(client, floor.tenant, provider, {"claims": claims})
    step_url = f"/t/{floor.tenant.ref.slug}/batches/{batch_id}/steps/{step_id}"
    api_url = f"/t/{floor.tenant.ref.slug}/api/v1/batches/{batch_id}/steps/{step_id}/signatures"
    headers = {"X-CSRFToken": csrf_token(client, step_url)}

    # Without a proof an SSO account cannot sign through the API with a password either.
    refused = client.post(api_url, json={"meaning": "performed", "password": "a guess"}, headers=headers)
    assert refused.status_code in (401, 403) and "not with a password" in refused.get_json()["detail"]

    start = client.post(f"{step_url}/sign", data={"csrf_token": csrf_token(client, step_url), "meaning": "performed",
                                                  "esign_reauth": "sso"})
    provider.next_user = claims
    _through_provider(client, start)
    token = _sso_form(client.get(step_url).get_data(as_text=True), "sso-sign-performed")["signature_sso_proof"]
    # Bound to the content: once an entry of the step changed, the proof signs nothing (and is spent).
    floor.correct(batch_id, vessel.id, {"code": f"EQ:{floor.reactor_tag}"}, "scanned again", who=olga)
    stale = client.post(api_url, json={"meaning": "performed", "sso_proof": token}, headers=headers)
    assert stale.status_code == 403 and "no longer matches" in stale.get_json()["detail"], stale.get_json()
    spent = client.post(api_url, json={"meaning": "performed", "sso_proof": token}, headers=headers)
    assert spent.status_code == 403 and "already used" in spent.get_json()["detail"]

    start = client.post(f"{step_url}/sign", data={"csrf_token": csrf_token(client, step_url), "meaning": "performed",
                                                  "esign_reauth": "sso"})
    provider.next_user = claims
    _through_provider(client, start)
    token = _sso_form(client.get(step_url).get_data(as_text=True), "sso-sign-performed")["signature_sso_proof"]
    signed = client.post(api_url, json={"meaning": "performed", "sso_proof": token, "reason": "line clear"},
                         headers=headers)
    assert signed.status_code == 201, signed.get_json()
    assert (signed.get_json()["meaning"], signed.get_json()["by"]) == ("performed", "Olga SSO")
    again = client.post(api_url, json={"meaning": "performed", "sso_proof": token}, headers=headers)
    assert again.status_code in (403, 409)
    with tenant_transaction(floor.tenant.ref) as session:
        rows = session.scalars(select(Signature).where(Signature.record_type == "step_execution")).all()
        how = session.get_one(AuditEvent, rows[0].audit_seq).new_values["reauthentication"]
    assert [(r.meaning, r.signer_user_id) for r in rows] == [("performed", olga.user_id)]
    assert (how["method"], how["subject"]) == ("sso", "idp-olga")
