"""Signing forms: which credentials a signature needs now (§11.200(a)(1)), read from the posted form.

Views of any area do:

    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        esign.sign(session, ..., actor=request_actor(), user_id=current_user.id, **signing_credentials(request.form))
    note_signature_made()

and include `{% from "esign/_sign_form.html" import signature_fields %}{{ signature_fields(...) }}` in the form.
"""

from __future__ import annotations

import time
from typing import Any

from flask import current_app, session

#: Flask session key: when the signer last completed a signature in this continuous session.
_LAST_SIGNED_KEY = "esign_last_signed_at"


def identification_required() -> bool:
    """True when the next signature must ask for the user ID as well: fresh sign-in, or idle too long."""
    last = session.get(_LAST_SIGNED_KEY)
    if last is None:
        return True  # sign-in clears the session: the first signature of a session asks for both components
    return time.time() - float(last) > float(current_app.config["ESIGN_IDLE_TIMEOUT_S"])


def note_signature_made() -> None:
    """Start (or extend) the continuous signing period after a successful signature."""
    session[_LAST_SIGNED_KEY] = time.time()


def signing_credentials(form: Any) -> dict[str, Any]:
    """The credential keyword arguments of `esign.sign(...)` from a posted signing form."""
    return {
        "password": form.get("signature_password") or "",
        "identification": (form.get("signature_user_id") or "").strip() or None,
        "identification_required": identification_required(),
    }
