"""JSON API of accounts under `/t/<slug>/api/v1/accounts/...`: members, roles, security events (read-only)."""

from __future__ import annotations

from typing import Any

from flask import g, jsonify, request

from app.accounts.queries import custom_roles, members, security_events
from app.accounts.schemas import MemberOut, RoleOut, SecurityEventOut
from app.core.permissions import BUILTIN_ROLES
from app.core.tenancy import control_session, tenant_transaction
from app.core.web import requires, tenant_blueprint

bp = tenant_blueprint("accounts_api", __name__)
PREFIX = "/api/v1/accounts"


@bp.get(f"{PREFIX}/members")
@requires("users.manage")
def list_members() -> Any:
    """Every membership of the tenant."""
    with control_session() as session:
        rows = members(session, g.tenant.id)
    return jsonify([MemberOut(**r).model_dump(mode="json") for r in rows])


@bp.get(f"{PREFIX}/roles")
@requires("users.manage")
def list_roles() -> Any:
    """Built-in roles and the tenant's custom roles with their permissions."""
    out = [RoleOut(name=n, builtin=True, active=True, description="", permissions=sorted(p))
           for n, p in BUILTIN_ROLES.items()]
    with control_session() as session:
        out += [RoleOut(name=r.name, builtin=False, active=r.active, description=r.description,
                        permissions=sorted(r.permissions)) for r in custom_roles(session, g.tenant.id,
                                                                                  include_retired=True)]
    return jsonify([r.model_dump(mode="json") for r in out])


@bp.get(f"{PREFIX}/security-events")
@requires("audit.read")
def list_security_events() -> Any:
    """Security events, newest first; `?kind=signin`, `?user=<id>`, `?before=<id>` page through them."""
    limit = max(1, min(request.args.get("limit", 100, type=int) or 100, 500))
    with tenant_transaction(g.tenant) as session:
        events = security_events(session, kind=(request.args.get("kind") or "")[:60],
                                 user_id=request.args.get("user", type=int),
                                 before_id=request.args.get("before", type=int), limit=limit)
        body = [SecurityEventOut.model_validate(e, from_attributes=True).model_dump(mode="json") for e in events]
    return jsonify(body)
