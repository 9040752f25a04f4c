"""E-signature area: signatures as records of their own, signature meanings, and signature routes (21 CFR 11.50,
11.70, 11.100, 11.200, 11.300).

Owns: `Signature`, `SignatureMeaning`, `SignatureRoute`, `SignatureRouteRun`, the signing form partial and the
manifestation macro. Does not own: passwords and lockout (`app.accounts.security`), the records being signed
(each area owns its own) or their status column (the area copies `RouteState.record_status` onto it).

The API other areas call, always inside their own tenant transaction (services flush, never commit):

    from app import esign

    sig = esign.sign(session, record_type="recipe_version", record_id=v.id, content=v.signed_content(),
                     meaning="approved", actor=request_actor(), user_id=current_user.id, reason="...",
                     **esign.signing_credentials(request.form))
        # re-verifies the password (and the user ID after a fresh sign-in or idle period) every time; a wrong
        # password counts toward the lockout and raises SignatureRefused (403). Accounts that sign in through SSO
        # (linked identity and no password, or the tenant's "SSO required" policy) present instead a single-use
        # proof of a fresh login at the provider (`prompt=login`, `max_age=0`), bound to this record, meaning and
        # content hash; a wrong, reused, expired or stale proof counts toward the lockout as well (forms.py
        # shows the view side). When the record type has a route, the route is enforced: order (RouteViolation,
        # 409), role and separation of duties (SignerNotPermitted, 403). Stores the signature (printed name,
        # roles and meaning frozen; DB time) and one `sign` audit event (which records how the signer
        # re-authenticated); advances the route run.
    esign.reject(session, ..., reason="...")           # signed rejection: the route run ends, record goes back
    state = esign.require_route(session, record_type=..., record_id=...)   # start / resume; raises if no route
    state = esign.route_state(session, record_type=..., record_id=...)     # None if never on a route
    record.status = state.record_status                 # the record's status follows its route
    esign.verify_signature(session, sig, current_content)  # False once the record changed or on another record

Records whose type a tenant puts on a route but whose own page does not drive it (`route_on_own_page` in the audit
registry) are signed step by step on the generic route page `esign.route_page` (linked from their history page).
    esign.check_signatures(session, esign.signatures_of(session, ...), current_content)  # for pages, exports

`content` is the record's canonical content as a dict of JSON-able values: include every field a signer attests
to, exclude status and bookkeeping columns that the signature itself changes. The hash covers the record type and
id too, so a signature copied onto another record never verifies.

Templates: `{% from "esign/_sign_form.html" import signature_fields %}` inside a signing form, and
`{% from "esign/_manifestation.html" import manifestation %}` on every page or export showing a signed record
(§11.50(b)); `manifestation_text(sig)` for CSV and plain-text exports.
"""

from app.esign.errors import RouteViolation, SignatureRefused, SignerNotPermitted
from app.esign.forms import (
    SsoSigning,
    identification_required,
    note_signature_made,
    signing_credentials,
    sso_signing,
    start_sso_reauth,
    wants_sso_reauth,
)
from app.esign.manifest import manifestation_text
from app.esign.services import (
    RouteState,
    RouteStep,
    SignatureCheck,
    active_route,
    check_record_signatures,
    check_signatures,
    configure_route,
    content_hash,
    reject,
    require_route,
    route_state,
    sign,
    signatures_of,
    verify_signature,
)

__all__ = [
    "RouteState",
    "RouteStep",
    "RouteViolation",
    "SignatureCheck",
    "SignatureRefused",
    "SignerNotPermitted",
    "SsoSigning",
    "active_route",
    "check_record_signatures",
    "check_signatures",
    "configure_route",
    "content_hash",
    "identification_required",
    "manifestation_text",
    "note_signature_made",
    "reject",
    "require_route",
    "route_state",
    "sign",
    "signatures_of",
    "signing_credentials",
    "sso_signing",
    "start_sso_reauth",
    "verify_signature",
    "wants_sso_reauth",
]
