"""Web plumbing every area uses: tenant-scoped blueprints, permission declarations, error rendering."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    has_request_context,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user
from sqlalchemy import Select, any_, bindparam, func, select

from app.core.permissions import permissions_of
from app.core.tenancy import Actor, TenantRef, control_lookup, current_db, tenant_ref

F = TypeVar("F", bound=Callable[..., Any])

#: Marker value for routes anyone may reach (sign-in page, health checks).
PUBLIC = "public"
#: Marker value for routes any signed-in member of the tenant may reach.
MEMBER = "member"


def requires(permission: str) -> Callable[[F], F]:
    """Declare the permission a view needs; every route must carry one (a test walks the URL map)."""

    def mark(view: F) -> F:
        view.__batchline_permission__ = permission  # type: ignore[attr-defined]
        return view

    return mark


def allowed_when_read_only(view: F) -> F:
    """Let a writing view run in a read-only tenant (billing, exports): the few ways out of read-only."""
    view.__batchline_read_only_ok__ = True  # type: ignore[attr-defined]
    return view


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY_MESSAGE = ("This workspace is read-only because its subscription has ended: every record stays readable "
                     "and exportable, but nothing new can be recorded. An admin can renew on the billing page.")


def write_refused_in_read_only(view: Callable[..., Any] | None, tenant_status: str, method: str) -> bool:
    """True when a request must be refused because the tenant is read-only."""
    return (tenant_status == "read_only" and method not in SAFE_METHODS
            and not getattr(view, "__batchline_read_only_ok__", False))


def view_permission(view: Callable[..., Any]) -> str | None:
    """The permission a view declared, or None."""
    return getattr(view, "__batchline_permission__", None)


def tenant_blueprint(name: str, import_name: str, **kwargs: Any) -> Blueprint:
    """A blueprint under `/t/<slug>/` whose requests are resolved to a tenant and a membership first."""
    bp = Blueprint(name, import_name, url_prefix="/t/<tenant_slug>", **kwargs)
    bp.url_value_preprocessor(_pull_tenant_slug)
    bp.url_defaults(_push_tenant_slug)
    bp.before_request(_resolve_tenant_member)
    return bp


def _pull_tenant_slug(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    g.tenant_slug = (values or {}).pop("tenant_slug", None)


def _push_tenant_slug(_endpoint: str, values: dict[str, Any]) -> None:
    if "tenant_slug" not in values and getattr(g, "tenant_slug", None):
        values["tenant_slug"] = g.tenant_slug


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/t/")) and "/api/" in request.path


#: Tenant statuses whose members reach the tenant's pages; any other status answers 404 like a wrong slug.
OPEN_TENANT_STATUSES = ("active", "read_only", "suspended")


@cache
def _user_and_membership() -> Select[Any]:
    """One statement for what every tenant request needs: the user `:user_id`, their active membership of the
    open tenant `:slug` and the permissions of the tenant's custom roles among theirs (membership columns NULL
    when they are not a member). Built once: constructing it costs more than running it."""
    from app.accounts.models import Membership, TenantRole, User  # accounts builds on core
    from app.tenancy.models import Tenant

    custom = (select(func.json_object_agg(TenantRole.name, TenantRole.permissions))
              .where(TenantRole.tenant_id == Tenant.id, TenantRole.active.is_(True),
                     TenantRole.name == any_(Membership.roles))
              .scalar_subquery())
    member = (select(Membership.user_id, Membership.id.label("member_id"), Membership.roles,
                     Tenant.id.label("tenant_id"), Tenant.slug, Tenant.status, custom.label("custom"))
              .join(Tenant, Tenant.id == Membership.tenant_id)
              .where(Tenant.slug == bindparam("slug"), Tenant.status.in_(OPEN_TENANT_STATUSES),
                     Membership.active.is_(True))
              .subquery("member"))
    return (select(User, member.c.member_id, member.c.roles, member.c.tenant_id, member.c.slug, member.c.status,
                   member.c.custom)
            .outerjoin(member, member.c.user_id == User.id)
            .where(User.id == bindparam("user_id")))


def load_signed_in_user(user_id: int) -> Any:
    """The signed-in user for flask-login (None when deactivated or locked, so that ends the session at once).

    On a tenant route the membership comes in the same statement and is kept for `_resolve_tenant_member`: one
    control-plane round trip per request instead of three.
    """
    from app.accounts.models import User

    slug = g.get("tenant_slug") if has_request_context() else None
    with control_lookup() as control:
        if slug is None:
            user = control.get(User, user_id)
        else:
            row = control.execute(_user_and_membership(), {"user_id": user_id, "slug": slug}).first()
            user = row.User if row is not None else None
            g.tenant_membership = (user_id, row if row is not None and row.member_id is not None else None)
    return user if user is not None and user.is_active else None


def _resolve_tenant_member() -> Any:
    """Resolve slug -> tenant and current user -> membership; anything else is a 404 (never a hint)."""
    if not current_user.is_authenticated:  # loads the user, and on this route the membership with it
        return _to_sign_in()
    found = g.pop("tenant_membership", None)
    if found is not None and found[0] == current_user.id:
        row = found[1]
    else:  # the user was put in place without the loader (signed in during this request)
        with control_lookup() as control:
            row = control.execute(_user_and_membership(), {"user_id": current_user.id, "slug": g.tenant_slug}).first()
        row = row if row is not None and row.member_id is not None else None
    if row is None:
        abort(404)
    db = current_db()
    g.tenant = tenant_ref(row.tenant_id, db=db, slug=row.slug)
    g.tenant_status = row.status
    g.member_id = row.member_id
    g.member_roles = list(row.roles)
    g.permissions = permissions_of(g.member_roles, row.custom)
    view = current_app.view_functions.get(request.endpoint or "")
    needed = view_permission(view) if view else None
    if needed is None:
        abort(500, description=f"route {request.endpoint} declares no permission")
    if needed not in (PUBLIC, MEMBER) and needed not in g.permissions:
        abort(403, description=f"your role does not allow this ({needed})")
    if write_refused_in_read_only(view, row.status, request.method):
        if _wants_json():
            return problem(402, "Workspace is read-only", READ_ONLY_MESSAGE)
        return render_template("error.html", status=402, message=READ_ONLY_MESSAGE), 402
    return None


def request_actor() -> Actor:
    """The signed-in member acting in this request, for audit events and signatures."""
    request_id = request.headers.get("X-Request-Id") or g.setdefault("request_id", uuid.uuid4().hex)
    return Actor(member_id=g.member_id, label=f"{current_user.name} <{current_user.email}>"[:300],
                 request_id=request_id[:64], client_addr=(request.remote_addr or "")[:64] or None)


def _to_sign_in() -> Any:
    """Anonymous (or ended) sessions: 401 for the API, otherwise the sign-in page and back afterwards."""
    if _wants_json():
        abort(401, description="sign in first (your session may have ended)")
    if getattr(session, "ended", False):
        flash("Your session has ended (signed out, timed out or ended by an administrator). Sign in again.", "info")
    return redirect(url_for("accounts.login", next=request.full_path.rstrip("?")))


def enforce_declared_permission() -> Any:
    """App-wide guard: a route without a declaration answers 500; global MEMBER routes need a signed-in user.

    Tenant routes check the permission itself in `_resolve_tenant_member`, after resolving the membership.
    """
    if request.endpoint is None:
        return None  # no route matched: the 404/405 handlers answer
    view = current_app.view_functions.get(request.endpoint)
    needed = view_permission(view) if view else None
    if needed is None:
        abort(500, description=f"route {request.endpoint} declares no permission")
    # Blueprints authenticated by bearer tokens, client secrets or signatures check their own credentials.
    token_authenticated = request.blueprint in current_app.extensions.get("batchline.non_session_blueprints", ())
    if needed == MEMBER and g.get("tenant_slug") is None and not current_user.is_authenticated \
            and not token_authenticated:
        return _to_sign_in()
    return None


def current_tenant() -> TenantRef:
    """The tenant of this request (set by the tenant blueprint)."""
    return g.tenant


def problem(status: int, title: str, detail: str = "", **extra: Any) -> Any:
    """An RFC 9457 problem document response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def app_url(endpoint: str, **values: Any) -> str:
    """`url_for` that also works outside a request (CLI output, jobs).

    External URLs (mailed links) use PUBLIC_BASE_URL when set, never the request's Host header: a forged Host
    must not turn a password reset mail into a link to someone else's server.
    """
    from flask import has_request_context

    base = (current_app.config.get("PUBLIC_BASE_URL") or "").rstrip("/")
    if base:
        with current_app.test_request_context(base_url=base):
            return url_for(endpoint, **values)
    if has_request_context():
        return url_for(endpoint, **values)
    with current_app.test_request_context():
        return url_for(endpoint, **values)


class SubdomainTenantMiddleware:
    """Serve `<slug>.<SERVER_NAME>/path` as `/t/<slug>/path` (path routing keeps working on every host).

    Paths that already match a global route (sign-in, static files, health probes) are left alone, so a
    tenant's subdomain can still reach them; `/` is the tenant's home there.
    """

    def __init__(self, wsgi_app: Callable[..., Any], flask_app: Any) -> None:
        self.wsgi_app = wsgi_app
        self.flask_app = flask_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        server_name = (self.flask_app.config.get("SERVER_NAME") or "").split(":")[0].lower()
        host = (environ.get("HTTP_HOST") or "").split(":")[0].lower()
        path = environ.get("PATH_INFO") or "/"
        if server_name and host.endswith("." + server_name) and not path.startswith("/t/"):
            slug = host[: -len(server_name) - 1]
            if "." not in slug and (path == "/" or not self._is_global(path, environ)):
                environ["PATH_INFO"] = f"/t/{slug}{path}"
        return self.wsgi_app(environ, start_response)

    def _is_global(self, path: str, environ: dict[str, Any]) -> bool:
        adapter = self.flask_app.url_map.bind("", path_info=path, url_scheme=environ.get("wsgi.url_scheme", "http"))
        try:
            endpoint, _ = adapter.match(path, method=environ.get("REQUEST_METHOD", "GET"))
        except Exception:  # no global route matches (404/405/redirect): treat the path as the tenant's
            return False
        return not str(endpoint).startswith(tuple(f"{bp}." for bp in self._tenant_blueprints()))

    def _tenant_blueprints(self) -> list[str]:
        return [name for name, bp in self.flask_app.blueprints.items() if bp.url_prefix == "/t/<tenant_slug>"]


#: No inline script or style anywhere: scripts and styles come from our own /static only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def security_headers(response: Any) -> Any:
    """Headers every response carries: CSP, no framing, no sniffing, no referrer leaks, HSTS over HTTPS."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # Reset and invitation links carry tokens in the path: never send them to another site as a Referer.
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(self), microphone=(), geolocation=(), payment=()")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    if request.endpoint != "static" and session.get("_user_id") is not None:
        # Batch records on a shared tablet must not come back from the browser cache after sign-out. A signed-in
        # session is enough to say so: loading the user here would cost a query on requests that need none.
        headers["Cache-Control"] = "no-store"
    return response
