"""HTML pages of the API area: token and client management (per tenant) and the API reference."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, g, jsonify, render_template, request
from flask_login import current_user

from app.api import services
from app.api.openapi import openapi_document
from app.api.queries import oauth_clients, personal_tokens
from app.core.errors import BatchlineError, ValidationError
from app.core.permissions import PERMISSIONS
from app.core.tenancy import control_session
from app.core.web import MEMBER, PUBLIC, allowed_when_read_only, requires, tenant_blueprint

bp = tenant_blueprint("api_tokens", __name__, template_folder="templates")
docs_bp = Blueprint("api_docs", __name__, template_folder="templates")


def _page(issued: dict[str, str] | None = None, error: str = "", status: int = 200) -> Any:
    with control_session() as session:
        tokens = personal_tokens(session, tenant_id=g.tenant.id, user_id=current_user.id)
        clients = oauth_clients(session, tenant_id=g.tenant.id) if "settings.manage" in g.permissions else None
    scopes = {p: d for p, d in PERMISSIONS.items() if p in g.permissions}
    return render_template("api/tokens.html", tokens=tokens, clients=clients, scopes=scopes,
                           all_scopes=PERMISSIONS, issued=issued, error=error), status


def _expiry() -> int | None:
    raw = (request.form.get("expires_days") or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ValidationError("expiry must be a number of days")
    return int(raw)


@bp.get("/settings/api")
@requires(MEMBER)
def index() -> Any:
    """Your personal API tokens, and the tenant's OAuth clients for admins."""
    return _page()


# Creating credentials stays possible in a read-only tenant: they are how its data is exported.
@bp.post("/settings/api/tokens")
@requires(MEMBER)
@allowed_when_read_only
def create_token() -> Any:
    """Issue a personal token with the chosen scopes; it is shown once."""
    try:
        with control_session() as session:
            issued = services.create_personal_token(
                session, tenant_id=g.tenant.id, user_id=current_user.id, name=request.form.get("name", ""),
                scopes=request.form.getlist("scopes"), holder_permissions=g.permissions, expires_days=_expiry())
    except BatchlineError as exc:
        return _page(error=str(exc), status=exc.status_code)
    return _page(issued={"kind": "token", "secret": issued.secret}, status=201)


@bp.post("/settings/api/tokens/<int:token_id>/revoke")
@requires(MEMBER)
@allowed_when_read_only
def revoke_token(token_id: int) -> Any:
    """Revoke one of your tokens; it stops working at once."""
    with control_session() as session:
        services.revoke_token(session, tenant_id=g.tenant.id, token_id=token_id, user_id=current_user.id)
    return _page()


@bp.post("/settings/api/clients")
@requires("settings.manage")
@allowed_when_read_only
def create_client() -> Any:
    """Register an OAuth2 client-credentials client (a gateway or another system)."""
    try:
        with control_session() as session:
            issued = services.create_oauth_client(session, tenant_id=g.tenant.id, name=request.form.get("name", ""),
                                                  scopes=request.form.getlist("scopes"),
                                                  created_by_user_id=current_user.id)
    except BatchlineError as exc:
        return _page(error=str(exc), status=exc.status_code)
    return _page(issued={"kind": "client", "client_id": issued.client_id, "secret": issued.secret}, status=201)


@bp.post("/settings/api/clients/<int:client_id>/revoke")
@requires("settings.manage")
@allowed_when_read_only
def revoke_client(client_id: int) -> Any:
    """Revoke a client and all its tokens."""
    with control_session() as session:
        services.revoke_oauth_client(session, tenant_id=g.tenant.id, client_row_id=client_id)
    return _page()


@docs_bp.get("/api/openapi.json")
@requires(PUBLIC)
def openapi_json() -> Any:
    """The OpenAPI 3.1 document of the public API."""
    return jsonify(openapi_document())


@docs_bp.get("/api/docs")
@requires(PUBLIC)
def reference() -> Any:
    """A readable reference of the API, rendered from the same document (no external assets)."""
    doc = openapi_document()
    if not doc["paths"]:
        abort(404)
    return render_template("api/reference.html", doc=doc)
