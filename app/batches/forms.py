"""Reading batch actions from a request (HTML form or JSON), shared by the screens and the JSON API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import g, request
from flask_login import current_user

from app import esign
from app.batches.execution import DeviceClock, OverrideRequest
from app.batches.services import OVERRIDE_RECORD, Signer, member_signer, signer_by_email
from app.core.errors import ValidationError
from app.core.web import request_actor


def parse_time(raw: Any, field: str) -> datetime | None:
    """An optional ISO 8601 time with its zone (device clocks)."""
    if raw in (None, ""):
        return None
    if isinstance(raw, datetime):
        moment = raw
    else:
        try:
            moment = datetime.fromisoformat(str(raw).strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValidationError(f"{field} {raw!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise ValidationError(f"{field} needs its time zone")
    return moment.astimezone(UTC)


def device_clock(entered: Any, sent: Any) -> DeviceClock:
    """The device's clock readings sent with an entry."""
    return DeviceClock(entered_at=parse_time(entered, "device_time"), sent_at=parse_time(sent, "device_sent_at"))


def override_from(values: dict[str, Any] | None) -> OverrideRequest | None:
    """A supervisor override from `{email, password, reason}` (None when no user ID was given)."""
    if not values or not str(values.get("email") or "").strip():
        return None
    actor = request_actor()
    return OverrideRequest(email=str(values.get("email") or ""), password=str(values.get("password") or ""),
                           reason=str(values.get("reason") or ""), request_id=actor.request_id,
                           client_addr=actor.client_addr)


def form_override() -> OverrideRequest | None:
    """A supervisor override from the posted form's override_email / override_password / override_reason, or from
    the signed-in SSO supervisor's re-authentication proof (override_sso_proof, bound to a reserved override id)."""
    token = (request.form.get("override_sso_proof") or "").strip()
    if token:
        sso = esign.sso_signing(record_type=OVERRIDE_RECORD)
        actor = request_actor()
        proof = esign.signing_credentials({"signature_sso_proof": token}).get("sso_proof")
        return OverrideRequest(email=current_user.email, password="",
                               reason=str(request.form.get("override_reason") or ""), request_id=actor.request_id,
                               client_addr=actor.client_addr, sso_proof=proof,
                               override_id=int(sso.record_id) if sso and sso.record_id else None)
    return override_from({"email": request.form.get("override_email"),
                          "password": request.form.get("override_password"),
                          "reason": request.form.get("override_reason")})


def form_raw() -> dict[str, Any]:
    """The value fields of a posted capture form."""
    raw: dict[str, Any] = {}
    for name in ("value", "unit", "code", "quantity"):
        if name in request.form:
            raw[name] = request.form.get(name)
    if request.form.get("kind") == "checkbox":
        raw["value"] = request.form.get("value") in ("on", "true", "1", "yes")
    return raw


def form_upload() -> tuple[str, str, bytes] | None:
    """The uploaded file of an attachment capture, if any."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return None
    return upload.filename, upload.mimetype or "application/octet-stream", upload.read()


def step_signer(signer_email: str | None, sso_token: str | None) -> tuple[Signer, dict[str, Any]]:
    """The person signing a step and the credential keyword arguments of `sign_step` besides the password.

    With an SSO proof (obtained by the re-authentication detour, single-use, bound to step, meaning and content)
    the signed-in member signs as themselves; else as `signer_for` says.
    """
    proof = esign.signing_credentials({"signature_sso_proof": sso_token or ""}).get("sso_proof")
    if proof is not None:
        signer, _ident = signer_for(None)
        return signer, {"identification": None, "identification_required": False, "sso_proof": proof}
    signer, ident = signer_for(signer_email)
    return signer, {**ident, "sso_proof": None}


def signer_for(signer_email: str | None) -> tuple[Signer, dict[str, Any]]:
    """The person signing: the signed-in user, or a second person identified on the shared tablet.

    Returns the signer and the identification keyword arguments for esign (a second person always gives both
    components, user ID and password).
    """
    actor = request_actor()
    email = (signer_email or "").strip().lower()
    if email and email != (current_user.email or "").lower():
        signer = signer_by_email(g.tenant, email, request_id=actor.request_id, client_addr=actor.client_addr)
        return signer, {"identification": signer.email, "identification_required": True}
    signer = member_signer(g.tenant, user_id=current_user.id, actor=actor, email=current_user.email)
    required = esign.identification_required()
    return signer, {"identification": email or None, "identification_required": required}
