"""E-signatures of SSO accounts (21 CFR 11.200(a)): re-authentication at the real OIDC provider on loopback with
`prompt=login` / `max_age=0`, and the single-use proof bound to record, meaning and content."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select, text

from app import esign
from app.accounts.models import Membership, SsoIdentity, SsoProvider, User
from app.accounts.passwords import hash_password
from app.accounts.reauth import SsoProof
from app.accounts.services import configure_sso, update_security_settings
from app.audit.models import AuditEvent
from app.audit.services import record
from app.core.permissions import BUILTIN_ROLES
from app.core.tenancy import Actor, control_session, tenant_transaction
from app.esign.models import Signature
from tests.accounts.conftest import Mailbox, admin_of, events, run_jobs
from tests.accounts.oidc_provider import running_provider
from tests.conftest import TEST_PASSWORD, csrf_token, sign_in

CALLBACK = "http://localhost/sso/callback"
BOB = Actor(member_id=41, label="Bob Builder <bob@example.com>", request_id="r-1", client_addr="10.0.0.1")


@pytest.fixture
def provider():
    with running_provider() as p:
        p.register("batchline-client", "client-secret-42", CALLBACK)
        yield p


def _tenant(make_tenant, provider, *, sso_required: bool = False):
    """A tenant with SSO at the loopback provider and a few audit events to review."""
    tenant = make_tenant()
    configure_sso(tenant_id=tenant.ref.id, issuer=provider.issuer, client_id="batchline-client",
                  client_secret="client-secret-42", allowed_domains="", default_roles=[], enabled=True,
                  by_user_id=admin_of(tenant).user_id, by_permissions=BUILTIN_ROLES["Admin"],
                  sso_required=sso_required)
    with tenant_transaction(tenant.ref, actor=BOB) as session:
        record(session, action="create", record_type="lot", record_id="L-1", new={"qty": "10"})
        record(session, action="correct", record_type="lot", record_id="L-1", old={"qty": "10"}, new={"qty": "12"},
               reason="typo at receipt")
    return tenant


def _person(tenant, provider, subject: str, *, name: str, password: str | None = None,
            roles: tuple[str, ...] = ("QA",)) -> dict:
    """An account linked to `subject` at the provider (no password unless given), member of `tenant`."""
    email = f"{subject}@{tenant.ref.slug}.example.com"
    with control_session() as session:
        user = User(email=email, name=name, password_hash=hash_password(password) if password else None)
        session.add(user)
        session.flush()
        membership = Membership(user_id=user.id, tenant_id=tenant.ref.id, roles=list(roles))
        session.add_all([membership, SsoIdentity(issuer=provider.issuer, subject=subject, user_id=user.id,
                                                 tenant_id=tenant.ref.id)])
        session.flush()
        return {"user_id": user.id, "member_id": membership.id, "email": email, "name": name, "sub": subject,
                "claims": {"sub": subject, "email": email, "email_verified": True, "name": name}}


def _through_provider(client, response):
    """Follow our redirect to the provider (real HTTP) and the provider's redirect back to our callback."""
    assert response.status_code == 302, response.get_data(as_text=True)
    at_provider = requests.get(response.headers["Location"], allow_redirects=False, timeout=10)
    assert at_provider.status_code == 302, at_provider.text
    back = urlsplit(at_provider.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    return client.get(f"{back.path}?{back.query}")


def _sso_sign_in(client, tenant, provider, person) -> None:
    provider.next_user = person["claims"]
    response = _through_provider(client, client.get(f"/sso/{tenant.ref.slug}/start"))
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/t/{tenant.ref.slug}/")


def _audit(tenant) -> str:
    return f"/t/{tenant.ref.slug}/audit"


def _start_reauth(client, tenant, conclusion: str = "corrections justified"):
    """Press "Re-authenticate with <provider>" on the review form; return our redirect to the provider."""
    token = csrf_token(client, f"{_audit(tenant)}?record_type=lot")
    return client.post(f"{_audit(tenant)}/reviews", data={"record_type": "lot", "conclusion": conclusion,
                                                          "reason": "weekly review", "esign_reauth": "sso",
                                                          "csrf_token": token})


def _reauthenticate(client, tenant, provider, person, **kwargs) -> dict:
    """Re-authenticate at the provider as `person`; return the refilled signing form as the page shows it."""
    provider.next_user = person["claims"]
    back = _through_provider(client, _start_reauth(client, tenant, **kwargs))
    assert back.status_code == 302, back.get_data(as_text=True)
    assert back.headers["Location"] == f"{_audit(tenant)}?record_type=lot#signature"
    return _signing_form(client, tenant)


def _signing_form(client, tenant) -> dict:
    page = client.get(f"{_audit(tenant)}?record_type=lot").get_data(as_text=True)
    form = {name: html.unescape(value) for name, value in
            re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', page)}
    conclusion = re.search(r'<textarea name="conclusion"[^>]*>([^<]*)</textarea>', page)
    reason = re.search(r'<textarea name="reason"[^>]*>([^<]*)</textarea>', page)
    form.update(conclusion=html.unescape(conclusion.group(1)), reason=html.unescape(reason.group(1)))
    reserved = re.search(r"Audit trail review #(\d+)", page)
    form["_review_id"] = reserved.group(1) if reserved else ""
    form["_page"] = page
    return form


def _submit(client, tenant, form: dict, **changes):
    data = {k: v for k, v in form.items() if not k.startswith("_")}
    return client.post(f"{_audit(tenant)}/reviews", data={**data, **changes})


def _failed_logins(user_id: int) -> int:
    with control_session() as session:
        return session.get(User, user_id).failed_logins


def _count(tenant, sql: str) -> int:
    with tenant_transaction(tenant.ref) as session:
        return session.execute(text(sql)).scalar_one()


def _sign_with_proof(tenant, person, proof: SsoProof, *, record_id, content, meaning="reviewed"):
    actor = Actor(member_id=person["member_id"], label=person["name"], request_id="t", client_addr="127.0.0.1")
    with tenant_transaction(tenant.ref, actor=actor) as session:
        return esign.sign(session, record_type="audit_review", record_id=record_id, content=content,
                          meaning=meaning, actor=actor, user_id=person["user_id"], sso_proof=proof)


def test_sso_only_user_signs_after_a_forced_login_at_the_provider(client, make_tenant, provider) -> None:
    tenant = _tenant(make_tenant, provider)
    sam = _person(tenant, provider, "idp-sam", name="Sam Signer")
    _sso_sign_in(client, tenant, provider, sam)
    assert provider.logins == ["idp-sam"]
    signed_in_at = provider.sessions["idp-sam"]

    page = client.get(f"{_audit(tenant)}?record_type=lot").get_data(as_text=True)
    host = urlsplit(provider.issuer).netloc
    assert f"Re-authenticate with {host}" in page and 'name="signature_password"' not in page
    token = csrf_token(client, f"{_audit(tenant)}?record_type=lot")
    plain = {"record_type": "lot", "conclusion": "ok", "csrf_token": token}
    no_credentials = client.post(f"{_audit(tenant)}/reviews", data=plain)
    assert no_credentials.status_code == 422 and f"re-authenticate with {host}" in no_credentials.get_data(as_text=True)
    a_password = client.post(f"{_audit(tenant)}/reviews", data={**plain, "signature_password": "guess"})
    assert a_password.status_code == 403 and "not with a password" in a_password.get_data(as_text=True)

    start = _start_reauth(client, tenant)
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    assert query["prompt"] == ["login"] and query["max_age"] == ["0"] and query["code_challenge_method"] == ["S256"]
    assert query["nonce"][0] != provider.authorize_requests[0]["nonce"]
    assert query["state"][0] != provider.authorize_requests[0]["state"]
    provider.next_user = sam["claims"]
    back = _through_provider(client, start)
    assert back.status_code == 302 and back.headers["Location"].endswith("/audit?record_type=lot#signature")
    # The provider saw prompt=login / max_age=0 and made Sam log in again, although its session was live.
    assert provider.authorize_requests[-1]["prompt"] == "login" and provider.authorize_requests[-1]["max_age"] == "0"
    assert provider.logins == ["idp-sam", "idp-sam"] and provider.sessions["idp-sam"] >= signed_in_at

    form = _signing_form(client, tenant)
    assert "Re-authenticated with" in form["_page"] and form["signature_sso_proof"]
    assert (form["conclusion"], form["reason"], form["meaning"]) == ("corrections justified", "weekly review",
                                                                     "reviewed")
    assert _count(tenant, "SELECT count(*) FROM audit_reviews") == 0  # nothing exists before it is signed
    response = _submit(client, tenant, form)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].endswith(f"/audit/reviews/{form['_review_id']}")
    review = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Reviewed</strong>" in review and "Sam Signer" in review and "valid" in review
    with tenant_transaction(tenant.ref) as session:
        signature = session.scalars(select(Signature)).one()
        event = session.get_one(AuditEvent, signature.audit_seq)
        how = event.new_values["reauthentication"]
    assert signature.printed_name == "Sam Signer" and signature.record_id == form["_review_id"]
    assert (how["method"], how["issuer"], how["subject"]) == ("sso", provider.issuer, "idp-sam")
    assert events(tenant, "reauth.success", sam["user_id"])[0].detail["purpose"]["record_id"] == form["_review_id"]

    # The proof worked once: submitting it again is refused, stores nothing, and counts toward the lockout.
    again = _submit(client, tenant, form)
    assert again.status_code == 403 and "already used" in again.get_data(as_text=True)
    assert _count(tenant, "SELECT count(*) FROM audit_reviews") == 1
    assert _failed_logins(sam["user_id"]) == 1
    assert events(tenant, "reauth.failure", sam["user_id"])[-1].detail["reason"] == "proof reused"
    assert f"Re-authenticate with {host}" in client.get(f"{_audit(tenant)}?record_type=lot").get_data(as_text=True)


def test_a_proof_signs_only_its_own_record_meaning_content_and_session(client, make_tenant, provider) -> None:
    tenant = _tenant(make_tenant, provider)
    sam = _person(tenant, provider, "idp-sam", name="Sam Signer")
    _sso_sign_in(client, tenant, provider, sam)
    session_id = client.get_cookie("batchline_session").value
    anything = {"conclusion": "anything"}
    cases = [
        ("another record", lambda f: {"record_id": int(f["_review_id"]) + 1}, "another record"),
        ("another meaning", lambda f: {"record_id": f["_review_id"], "meaning": "approved"}, "sign as 'reviewed'"),
        ("another session", lambda f: {"record_id": f["_review_id"], "session": "x" * 43}, "another browser session"),
    ]
    for n, (_label, change, message) in enumerate(cases, start=1):
        form = _reauthenticate(client, tenant, provider, sam)
        changes = change(form)
        proof = SsoProof(token=form["signature_sso_proof"], session_id=changes.pop("session", session_id))
        with pytest.raises(esign.SignatureRefused, match=message):
            _sign_with_proof(tenant, sam, proof, content=anything, **changes)
        assert _failed_logins(sam["user_id"]) == n
    # Through the form: the conclusion edited after re-authenticating is other content than was bound.
    form = _reauthenticate(client, tenant, provider, sam)
    edited = _submit(client, tenant, form, conclusion="corrections justified, and more")
    assert edited.status_code == 403 and "changed after you re-authenticated" in edited.get_data(as_text=True)
    assert _failed_logins(sam["user_id"]) == 4
    assert _count(tenant, "SELECT count(*) FROM signatures") == 0
    assert _count(tenant, "SELECT count(*) FROM audit_reviews") == 0
    # A proof for exactly this signature works, and the successful re-authentication resets the count.
    form = _reauthenticate(client, tenant, provider, sam)
    assert _submit(client, tenant, form).status_code == 302
    assert _failed_logins(sam["user_id"]) == 0
    reasons = [e.detail["reason"] for e in events(tenant, "reauth.failure", sam["user_id"])]
    assert reasons == ["proof for another purpose", "proof for another purpose", "proof of another session",
                       "proof for another purpose"]


def test_a_login_that_is_not_fresh_is_refused(app, client, make_tenant, provider, monkeypatch) -> None:
    tenant = _tenant(make_tenant, provider)
    sam = _person(tenant, provider, "idp-sam", name="Sam Signer")
    _sso_sign_in(client, tenant, provider, sam)
    # A provider that ignores prompt=login answers with the auth_time of the earlier sign-in.
    provider.ignore_prompt = True
    provider.sessions["idp-sam"] -= 30
    provider.next_user = sam["claims"]
    refused = _through_provider(client, _start_reauth(client, tenant))
    body = refused.get_data(as_text=True)
    assert refused.status_code == 403 and "did not make you log in again" in body and "Back to the form" in body
    assert provider.logins == ["idp-sam"]
    provider.ignore_prompt, provider.omit_auth_time = False, True
    refused = _through_provider(client, _start_reauth(client, tenant))
    assert refused.status_code == 403 and "no auth_time" in refused.get_data(as_text=True)
    assert 'name="signature_sso_proof"' not in client.get(f"{_audit(tenant)}?record_type=lot").get_data(as_text=True)
    assert [e.detail["reason"] for e in events(tenant, "reauth.failure", sam["user_id"])] == ["stale auth_time",
                                                                                              "no auth_time"]
    # A fresh login whose proof is used after the allowed age: refused at signing.
    provider.omit_auth_time, provider.auth_time_shift = False, -2
    form = _reauthenticate(client, tenant, provider, sam)
    monkeypatch.setitem(app.config, "SSO_REAUTH_MAX_AGE_S", 1)
    stale = _submit(client, tenant, form)
    assert stale.status_code == 403 and "more than 1 s old" in stale.get_data(as_text=True)
    assert _failed_logins(sam["user_id"]) == 3
    assert _count(tenant, "SELECT count(*) FROM signatures") == 0


def test_another_persons_identity_or_proof_is_refused(app, client, make_tenant, provider) -> None:
    tenant = _tenant(make_tenant, provider)
    sam = _person(tenant, provider, "idp-sam", name="Sam Signer")
    kim = _person(tenant, provider, "idp-kim", name="Kim Other")
    _sso_sign_in(client, tenant, provider, sam)
    # Sam asks to sign, but at the provider Kim logs in (a shared tablet), then a stranger nobody linked.
    for claims, reason in ((kim["claims"], "identity of another person"),
                           ({"sub": "idp-stranger", "email": "x@example.com"}, "identity not linked to any account")):
        provider.next_user = claims
        refused = _through_provider(client, _start_reauth(client, tenant))
        assert refused.status_code == 403 and "not your linked identity" in refused.get_data(as_text=True)
        assert events(tenant, "reauth.failure", sam["user_id"])[-1].detail["reason"] == reason
    assert _failed_logins(sam["user_id"]) == 2 and _failed_logins(kim["user_id"]) == 0
    # Sam's valid proof, submitted by Kim in Kim's own session, is refused and counts against Kim.
    form = _reauthenticate(client, tenant, provider, sam)
    kims_browser = app.test_client()
    _sso_sign_in(kims_browser, tenant, provider, kim)
    token = csrf_token(kims_browser, f"{_audit(tenant)}?record_type=lot")
    response = _submit(kims_browser, tenant, form, csrf_token=token)
    assert response.status_code == 403 and "belongs to another person" in response.get_data(as_text=True)
    assert _failed_logins(kim["user_id"]) == 1
    assert _count(tenant, "SELECT count(*) FROM signatures") == 0


def test_sso_required_policy_and_password_signers(client, make_tenant, make_member, provider) -> None:
    tenant = _tenant(make_tenant, provider)
    both = _person(tenant, provider, "idp-pat", name="Pat Both", password=TEST_PASSWORD)
    plain = make_member(tenant, ["QA"])
    content = {"conclusion": "fine"}

    def sign_with_password(person_id: int, member_id: int, record_id: int) -> Signature:
        actor = Actor(member_id=member_id, label="x", request_id="t", client_addr="127.0.0.1")
        with tenant_transaction(tenant.ref, actor=actor) as session:
            return esign.sign(session, record_type="audit_review", record_id=record_id, content=content,
                              meaning="reviewed", actor=actor, user_id=person_id, password=TEST_PASSWORD)

    # Without the policy, an account with a password signs with it, linked identity or not.
    assert sign_with_password(both["user_id"], both["member_id"], 1).printed_name == "Pat Both"
    assert sign_with_password(plain.user_id, plain.member_id, 2).printed_name == plain.name
    # The admin turns "SSO required" on through the SSO settings form.
    sign_in(client, tenant.admin_email)
    url = f"/t/{tenant.ref.slug}/admin/sso"
    response = client.post(url, data={"issuer": provider.issuer, "client_id": "batchline-client", "enabled": "on",
                                      "sso_required": "on", "csrf_token": csrf_token(client, url)})
    assert response.status_code == 302
    with control_session() as session:
        assert session.get(SsoProvider, tenant.ref.id).sso_required
    assert events(tenant, "sso.configured")[-1].detail["after"]["sso_required"] is True
    with pytest.raises(esign.SignatureRefused, match="not with a password"):
        sign_with_password(both["user_id"], both["member_id"], 3)
    assert _failed_logins(both["user_id"]) == 0  # a refused method is not a failed authentication
    # Accounts without a linked identity keep signing with their password, and cannot take the SSO detour.
    assert sign_with_password(plain.user_id, plain.member_id, 4).record_id == "4"
    browser = client.application.test_client()
    sign_in(browser, plain.email)
    page = browser.get(f"{_audit(tenant)}?record_type=lot").get_data(as_text=True)
    assert 'name="signature_password"' in page and "Re-authenticate with" not in page
    detour = _start_reauth(browser, tenant)
    assert detour.status_code == 422 and "with its password" in detour.get_data(as_text=True)
    assert provider.authorize_requests == []


def test_refused_proofs_lock_the_account_and_alert_the_admins(client, make_tenant, provider, mail_dir) -> None:
    mailbox = Mailbox(mail_dir)
    tenant = _tenant(make_tenant, provider)
    admin = admin_of(tenant)
    update_security_settings(tenant_id=tenant.ref.id, by_user_id=admin.user_id,
                             values={"lockout_threshold": "3", "idle_timeout_min": "15", "session_max_hours": "12",
                                     "password_min_length": "12"})
    sam = _person(tenant, provider, "idp-sam", name="Sam Signer")
    _sso_sign_in(client, tenant, provider, sam)
    form = _reauthenticate(client, tenant, provider, sam)  # a genuine proof, kept for after the lockout
    session_id = client.get_cookie("batchline_session").value
    for guess in ("a" * 43, "b" * 43, "c" * 43):  # forged proof tokens
        with pytest.raises(esign.SignatureRefused, match=r"expired .* or is unknown"):
            _sign_with_proof(tenant, sam, SsoProof(token=guess, session_id=session_id), record_id=1, content={})
    with control_session() as session:
        assert session.get(User, sam["user_id"]).locked_at is not None
    (alert,) = events(tenant, "account.locked", sam["user_id"])
    assert alert.alert and alert.detail["consecutive_failures"] == 3
    # The lockout ended Sam's session, and even the genuine proof no longer signs.
    assert client.get(f"{_audit(tenant)}?record_type=lot").status_code == 302
    with pytest.raises(esign.SignatureRefused, match="locked"):
        _sign_with_proof(tenant, sam, SsoProof(token=form["signature_sso_proof"], session_id=session_id),
                         record_id=form["_review_id"], content={})
    run_jobs()  # the alert mail goes out through the outbox and a real RQ worker
    (mail,) = mailbox.to(admin.email)
    assert "account.locked" in mail["Subject"] and sam["email"] in mailbox.body(mail)
