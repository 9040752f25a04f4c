"""Batch step signatures and supervisor overrides by SSO accounts (21 CFR 11.200(a)): a forced login at the real
OIDC provider on loopback (`prompt=login`, `max_age=0`) replaces the password, and its single-use proof is bound
to the step (or override), the meaning and the content signed."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

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
