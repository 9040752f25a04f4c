"""E-signature settings (meanings, routes), the list of signatures with their manifestation, and the generic route
page where records of any routed type are signed step by step."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from app.audit.registry import RECORD_TYPES, record_page_url
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.tenancy import tenant_transaction
from app.core.web import MEMBER, request_actor, requires, tenant_blueprint
from app.esign import forms
from app.esign.manifest import format_signed_at
from app.esign.models import Signature, SignatureRoute
from app.esign.services import (
    active_route,
    add_meaning,
    check_signatures,
    configure_route,
    meanings,
    route_state,
    set_meaning_active,
    sign,
    signatures_of,
)

bp = tenant_blueprint("esign", __name__, template_folder="templates")
bp.add_app_template_filter(format_signed_at, "signed_at")


def parse_steps(text: str) -> list[dict[str, Any]]:
    """Read route steps, one per line: `meaning: Role A, Role B -> status` (status optional)."""
    steps = []
    for n, line in enumerate((text or "").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if ":" not in line:
            raise ValidationError(f"step line {n} ({line!r}) needs the form 'meaning: Role A, Role B -> status'")
        meaning, _, rest = line.partition(":")
        roles, _, status = rest.partition("->")
        steps.append({"meaning": meaning.strip(), "roles": [r.strip() for r in roles.split(",") if r.strip()],
                      "status": status.strip() or meaning.strip()})
    return steps


@bp.get("/settings/signatures")
@requires("settings.manage")
def settings() -> Any:
    """Signature meanings and signature routes of the tenant."""
    with tenant_transaction(g.tenant) as session:
        all_meanings = meanings(session)
        routes = session.scalars(select(SignatureRoute).order_by(SignatureRoute.record_type,
                                                                 SignatureRoute.version.desc())).all()
    return render_template("esign/settings.html", meanings=all_meanings, routes=routes)


@bp.post("/settings/signatures/meanings")
@requires("settings.manage")
def create_meaning() -> Any:
    """Add a meaning."""
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        made = add_meaning(session, code=request.form.get("code") or "", label=request.form.get("label") or "",
                           description=request.form.get("description") or "")
    flash(f"Meaning {made.code!r} added.", "info")
    return redirect(url_for("esign.settings"))


@bp.post("/settings/signatures/meanings/<code>/active")
@requires("settings.manage")
def meaning_active(code: str) -> Any:
    """Deactivate or reactivate a meaning; a reason is required."""
    active = request.form.get("active") == "1"
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        set_meaning_active(session, code=code, active=active, reason=request.form.get("reason") or "")
    flash(f"Meaning {code!r} {'reactivated' if active else 'deactivated'}.", "info")
    return redirect(url_for("esign.settings"))


@bp.post("/settings/signatures/routes")
@requires("settings.manage")
def save_route() -> Any:
    """Make a new version of a record type's route active."""
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        route = configure_route(session, record_type=(request.form.get("record_type") or "").strip(),
                                steps=parse_steps(request.form.get("steps") or ""),
                                allow_same_signer=request.form.get("allow_same_signer") == "1",
                                pending_status=request.form.get("pending_status") or "draft",
                                reason=request.form.get("reason"))
    flash(f"Route for {route.record_type} is now version {route.version}.", "info")
    return redirect(url_for("esign.settings"))


@bp.get("/signatures")
@requires("audit.read")
def signatures() -> Any:
    """The latest signatures of the tenant with their manifestation."""
    with tenant_transaction(g.tenant) as session:
        recent = session.scalars(select(Signature).order_by(Signature.id.desc()).limit(200)).all()
    return render_template("esign/signatures.html", signatures=recent)


# ---------------------------------------------------------------------------------------------------------------
# The generic route page: a tenant may put any signable record type on a route (Settings); records whose own page
# does not drive their route are signed here, step by step, with the same re-authentication and route checks.


def _routable(record_type: str) -> Any:
    """The registered record type, if its records can be signed here (a content loader, no route page of its own)."""
    kind = RECORD_TYPES.get(record_type)
    if kind is None or kind.content is None:
        raise NotFound(f"{record_type!r} records cannot be signed on a route")
    return kind


def _route_view(session: Any, record_type: str, record_id: str) -> dict[str, Any]:
    kind = _routable(record_type)
    content = kind.content(session, record_id)
    if content is None:
        raise NotFound(f"no {kind.label.lower()} {record_id}")
    state = route_state(session, record_type=record_type, record_id=record_id)
    route = active_route(session, record_type)
    if state is None and route is None:
        raise NotFound(f"no signature route is configured for {kind.label.lower()} records")
    # The step to sign next: the current run's, or the first step of the route a new cycle starts on.
    if state is not None and state.next_step is not None:
        next_meaning: str | None = state.next_step.meaning
    elif (state is None or state.status == "rejected") and route is not None:
        next_meaning = route.steps[0]["meaning"]
    else:
        next_meaning = None
    return {"kind": kind, "content": content, "state": state, "route": route, "next_meaning": next_meaning,
            "checks": check_signatures(session, signatures_of(session, record_type=record_type,
                                                              record_id=record_id), content)}


@bp.get("/signatures/route/<record_type>/<record_id>")
@requires(MEMBER)
def route_page(record_type: str, record_id: str) -> Any:
    """Where a record stands on its signature route, its signatures, and the form to sign the next step."""
    page = record_page_url(record_type, record_id)
    if _routable(record_type).route_on_own_page and page:
        return redirect(page)
    with tenant_transaction(g.tenant) as session:
        view = _route_view(session, record_type, record_id)
        labels = {m.code: m.label for m in meanings(session)}
    return render_template("esign/route.html", record_type=record_type, record_id=record_id, labels=labels,
                           require_user_id=forms.identification_required(),
                           sso=forms.sso_signing(record_type=record_type, record_id=record_id), **view)


@bp.post("/signatures/route/<record_type>/<record_id>")
@requires(MEMBER)
def route_sign(record_type: str, record_id: str) -> Any:
    """Sign the record's next route step, or reject it back with a reason; roles and order are the route's."""
    meaning = (request.form.get("meaning") or "").strip()
    actor = request_actor()
    here = url_for("esign.route_page", record_type=record_type, record_id=record_id)
    kind = _routable(record_type)
    if kind.route_on_own_page:
        raise Conflict(f"{kind.label} records are signed on their route from their own page")
    with tenant_transaction(g.tenant, actor=actor) as session:
        view = _route_view(session, record_type, record_id)
        if forms.wants_sso_reauth(request.form):
            content = view["content"]
        else:
            content = None
            sign(session, record_type=record_type, record_id=record_id, content=view["content"], meaning=meaning,
                 actor=actor, user_id=current_user.id, reason=request.form.get("reason"),
                 **forms.signing_credentials(request.form))
            state = route_state(session, record_type=record_type, record_id=record_id)
    if content is not None:
        return forms.start_sso_reauth(record_type=record_type, record_id=record_id, meaning=meaning,
                                      content=content, return_to=here,
                                      keep={"reason": request.form.get("reason") or ""})
    forms.note_signature_made()
    flash(f"Signed; on its route the record is now {state.record_status if state else 'unchanged'}.", "info")
    return redirect(here)
