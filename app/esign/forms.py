"""Signing forms: which credentials a signature needs now (§11.200(a)(1)), read from the posted form.

Views of any area do:

    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        esign.sign(session, ..., actor=request_actor(), user_id=current_user.id, **signing_credentials(request.form))
    note_signature_made()

and include `{% from "esign/_sign_form.html" import signature_fields %}{{ signature_fields(...) }}` in the form.

Signers whose account signs in through SSO re-authenticate at the identity provider instead of typing a password
(`app.accounts.reauth`). The form page passes `sso=esign.sso_signing(record_type=..., record_id=...)` to the
macro, which then shows "Re-authenticate with <provider>" (a submit button named `esign_reauth`). The signing
view answers that button before signing:

    if esign.wants_sso_reauth(request.form):
        return esign.start_sso_reauth(record_type=..., record_id=..., meaning=..., content=...,
                                      return_to=url_for(<the form page>), keep={"reason": ...})

The provider sends the person back to `return_to`, where the macro carries the single-use proof (bound to record,
meaning and content hash) in place of the password; `signing_credentials` passes it on to `esign.sign`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, redirect, session, url_for
from flask_login import current_user

from app.accounts import reauth
from app.core.errors import ValidationError
from app.esign.services import content_hash

#: Flask session key: when the signer last completed a signature in this continuous session.
_LAST_SIGNED_KEY = "esign_last_signed_at"
#: Value of the form's submit button that asks to re-authenticate at the identity provider.
SSO_REAUTH_BUTTON = "sso"


def identification_required() -> bool:
    """True when the next signature must ask for the user ID as well: fresh sign-in, or idle too long."""
    last = session.get(_LAST_SIGNED_KEY)
    if last is None:
        return True  # sign-in clears the session: the first signature of a session asks for both components
    return time.time() - float(last) > float(current_app.config["ESIGN_IDLE_TIMEOUT_S"])


def note_signature_made() -> None:
    """Start (or extend) the continuous signing period after a successful signature; drop its used SSO proof."""
    session[_LAST_SIGNED_KEY] = time.time()
    reauth.forget(session)


def signing_credentials(form: Any) -> dict[str, Any]:
    """The credential keyword arguments of `esign.sign(...)` from a posted signing form."""
    credentials: dict[str, Any] = {
        "password": form.get("signature_password") or "",
        "identification": (form.get("signature_user_id") or "").strip() or None,
        "identification_required": identification_required(),
    }
    token = (form.get("signature_sso_proof") or "").strip()
    if token:
        credentials["sso_proof"] = reauth.SsoProof(token=token[:200], session_id=getattr(session, "sid", None) or "")
    return credentials


@dataclass(frozen=True)
class SsoSigning:
    """How the signed-in member signs on a form through SSO: the provider, and the proof already obtained."""

    provider: str
    proof: reauth.PendingProof | None

    def kept(self, name: str, default: str = "") -> str:
        """A form value typed before the detour to the provider (to fill the form in again)."""
        return self.proof.keep.get(name, default) if self.proof else default

    @property
    def record_id(self) -> str | None:
        """The record the waiting proof signs (records made at signing reserve their id before the detour)."""
        return self.proof.purpose.get("record_id") if self.proof else None

    @property
    def meaning(self) -> str | None:
        """The meaning the waiting proof signs."""
        return self.proof.purpose.get("meaning") if self.proof else None


def sso_signing(*, record_type: str, record_id: Any = None) -> SsoSigning | None:
    """None for signers who re-enter a password; else their provider and the proof waiting for this record type
    (and record, when given) in this session."""
    method = reauth.sso_reauth_for(tenant_id=g.tenant.id, user_id=current_user.id)
    if method is None:
        return None
    proof = reauth.pending_proof(session)
    if proof is not None and (proof.purpose.get("record_type") != record_type
                              or (record_id is not None and proof.purpose.get("record_id") != str(record_id))):
        proof = None
    return SsoSigning(provider=method.provider, proof=proof)


def wants_sso_reauth(form: Any) -> bool:
    """True when the form was submitted with its "Re-authenticate with <provider>" button."""
    return form.get("esign_reauth") == SSO_REAUTH_BUTTON


def start_sso_reauth(*, record_type: str, record_id: Any, meaning: str, content: dict[str, Any], return_to: str,
                     keep: dict[str, str] | None = None) -> Any:
    """Send the signer to the identity provider to log in again for this signature (record, meaning, content)."""
    meaning = (meaning or "").strip()
    if not meaning:
        raise ValidationError("choose the meaning of your signature before re-authenticating")
    purpose = {"record_type": record_type, "record_id": str(record_id), "meaning": meaning,
               "content_hash": content_hash(record_type, record_id, content)}
    url, pending = reauth.begin(tenant_id=g.tenant.id, user_id=current_user.id, purpose=purpose,
                                return_to=return_to, redirect_uri=url_for("accounts.sso_callback", _external=True),
                                keep=keep, source="esign")
    session["sso_pending"] = pending
    return redirect(url)
