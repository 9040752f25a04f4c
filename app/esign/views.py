"""E-signature settings (meanings, routes) and the list of signatures with their manifestation."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from sqlalchemy import select

from app.core.errors import ValidationError
from app.core.tenancy import tenant_transaction
from app.core.web import request_actor, requires, tenant_blueprint
from app.esign.manifest import format_signed_at
from app.esign.models import Signature, SignatureRoute
from app.esign.services import add_meaning, configure_route, meanings, set_meaning_active

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
