"""HTML pages of accounts.

`bp` (global): sign-in, sign-out, quick user switch for shared tablets, own account and password, password reset,
invitation acceptance, single sign-on. `admin_bp` (per tenant, `/t/<slug>/admin/...`): members, invitations,
roles, security events and alerts, security settings, SSO configuration.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select

from app.accounts import reauth, services, sso
from app.accounts.models import Invitation, Membership, User
from app.accounts.passwords import burn_verify_time, hash_password, needs_rehash, verify_password
from app.accounts.queries import (
    assignable_roles,
    custom_roles,
    member,
    member_permissions,
    members,
    open_alerts,
    security_events,
    sso_provider,
    strictest_settings,
    tenant_settings,
)
from app.accounts.security import record_account_event, record_security_event, register_failed_password
from app.accounts.sessions import rotate_session
from app.core.errors import BatchlineError
from app.core.permissions import BUILTIN_ROLES, PERMISSIONS, changes_gmp_records
from app.core.tenancy import control_session, tenant_transaction
from app.core.web import MEMBER, PUBLIC, requires, tenant_blueprint
from app.tenancy.models import Tenant
from app.tenancy.queries import LIVE_STATUSES

bp = Blueprint("accounts", __name__, template_folder="templates")
admin_bp = tenant_blueprint("accounts_admin", __name__, template_folder="templates")

GENERIC_FAILURE = "Email or password is not correct."
_TENANT_PATH_RE = re.compile(r"^/t/([a-z][a-z0-9-]{1,39})(?:/|$)")


def _safe_next(target: str | None) -> str | None:
    """Only follow same-site relative redirects after sign-in."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target


def _sso_tenant_for_login() -> tuple[str, str] | None:
    """The (slug, name) of the tenant whose SSO the sign-in page should offer, from ?tenant= or ?next=/t/<slug>."""
    slug = (request.args.get("tenant") or "").strip().lower()[:40]
    if not slug:
        match = _TENANT_PATH_RE.match(request.args.get("next") or "")
        slug = match.group(1) if match else ""
    if not slug:
        return None
    with control_session() as db_session:
        row = db_session.execute(
            select(Tenant.slug, Tenant.name).join(sso.SsoProvider, sso.SsoProvider.tenant_id == Tenant.id)
            .where(Tenant.slug == slug, Tenant.status.in_(LIVE_STATUSES), sso.SsoProvider.enabled.is_(True))
        ).first()
    return (row.slug, row.name) if row else None


def _start_session_for(user: User, *, remember: bool) -> None:
    """Sign `user` in on a fresh session (new id; nothing from before survives) with the limits in force."""
    with control_session() as db_session:
        settings = strictest_settings(db_session, user.id)
        roles_by_tenant = db_session.execute(
            select(Membership.tenant_id, Membership.roles)
            .where(Membership.user_id == user.id, Membership.active.is_(True))
        ).all()
        gmp = any(changes_gmp_records(member_permissions(db_session, tenant_id=r.tenant_id, roles=r.roles))
                  for r in roles_by_tenant)
    absolute = settings.session_max_hours * 3600
    persistent = remember and not gmp
    # A remembered read-only session survives a browser restart and idles up to its absolute lifetime.
    idle = absolute if persistent else settings.idle_timeout_min * 60
    rotate_session(session, idle_s=idle, absolute_s=absolute, persistent=persistent)
    login_user(user)
    if remember and gmp:
        flash("\u201cKeep me signed in\u201d is not available to accounts that record GMP data; the session "
              f"ends after {settings.idle_timeout_min} minutes without activity.", "info")


def _password_sign_in(identifier: str, password: str, *, source: str) -> tuple[User | None, str]:
    """Check a sign-in name (email or badge code) and password; count failures; return (user, error)."""
    identifier = (identifier or "").strip()[:254]
    with control_session() as db_session:
        if re.fullmatch(r"[Uu]\d{6,}", identifier):
            user = db_session.scalar(select(User).where(User.user_code == identifier.upper()))
        else:
            user = db_session.scalar(select(User).where(User.email == identifier.lower()))
    if user is None or user.password_hash is None:
        burn_verify_time()
        current_app.logger.info("sign-in failure for unknown name from %s", request.remote_addr)
        return None, GENERIC_FAILURE
    if not verify_password(user.password_hash, password):
        if user.locked_at is not None or not user.active:
            record_account_event(user_id=user.id, kind="signin.refused", source=source,
                                 detail={"reason": "locked" if user.locked_at else "deactivated",
                                         "password_correct": False})
            return None, GENERIC_FAILURE
        locked = register_failed_password(user_id=user.id, tenant_id=None, source=source)
        if locked:
            return None, ("Too many wrong passwords: this account is now locked. Your administrator has been "
                          "alerted and can unlock it.")
        return None, GENERIC_FAILURE
    if user.locked_at is not None or not user.active:
        reason = "locked" if user.locked_at is not None else "deactivated"
        record_account_event(user_id=user.id, kind="signin.refused", source=source,
                             detail={"reason": reason, "password_correct": True})
        return None, (f"This account is {reason}. Ask your administrator"
                      + (" to unlock it." if reason == "locked" else "."))
    with control_session() as db_session:
        fresh = db_session.get(User, user.id, with_for_update=True)
        if fresh is not None:
            fresh.failed_logins = 0
            if fresh.password_hash and needs_rehash(fresh.password_hash):
                fresh.password_hash = hash_password(password)
            user = fresh
    return user, ""


@bp.route("/login", methods=["GET", "POST"])
@requires(PUBLIC)
def login() -> Any:
    """Sign in with email (or badge code) and password; offer the company's SSO when known."""
    sso_tenant = _sso_tenant_for_login()
    if request.method == "POST":
        email = (request.form.get("email") or "").strip().lower()[:254]
        user, error = _password_sign_in(email, request.form.get("password") or "", source="signin")
        if user is None:
            flash(error, "error")
            return render_template("accounts/login.html", email=email, sso_tenant=sso_tenant), 401
        _start_session_for(user, remember=request.form.get("remember") == "on")
        record_account_event(user_id=user.id, kind="signin.success", source="signin")
        return redirect(_safe_next(request.args.get("next")) or url_for("accounts.choose_tenant"))
    return render_template("accounts/login.html", email="", sso_tenant=sso_tenant)


@bp.post("/logout")
@requires(PUBLIC)
def logout() -> Any:
    """Sign out: the server-side session is deleted, so the old cookie is worthless."""
    if current_user.is_authenticated:
        record_account_event(user_id=current_user.id, kind="signout")
    logout_user()
    session.clear()
    return redirect(url_for("accounts.login"))


@bp.get("/")
@requires(PUBLIC)
def index() -> Any:
    """Send people where they belong."""
    if current_user.is_authenticated:
        return redirect(url_for("accounts.choose_tenant"))
    return redirect(url_for("accounts.login"))


@bp.get("/tenants")
@requires(MEMBER)
def choose_tenant() -> Any:
    """List the tenants the user belongs to; go straight in when there is one."""
    with control_session() as db_session:
        rows = db_session.execute(
            select(Tenant.slug, Tenant.name)
            .join(Membership, Membership.tenant_id == Tenant.id)
            .where(Membership.user_id == current_user.id, Membership.active.is_(True),
                   Tenant.status.in_(LIVE_STATUSES))
            .order_by(Tenant.name)
        ).all()
    if len(rows) == 1:
        return redirect(url_for("home.index", tenant_slug=rows[0].slug))
    return render_template("accounts/tenants.html", tenants=rows)


# --- shared tablets: quick user switch -------------------------------------------------------------------------


@bp.route("/switch", methods=["GET", "POST"])
@requires(PUBLIC)
def switch_user() -> Any:
    """Hand a shared tablet to the next person: badge scan (or user name) and password; the previous person's
    session ends before anything else happens, whatever the next person types."""
    slug = (request.values.get("tenant") or "").strip().lower()[:40]
    if not re.fullmatch(r"[a-z][a-z0-9-]{1,39}", slug):
        slug = ""
    if request.method == "GET":
        return render_template("accounts/switch.html", tenant=slug, badge="")
    previous = (current_user.id, current_user.label) if current_user.is_authenticated else None
    if previous:
        logout_user()
    session.clear()
    session.rotate = True  # type: ignore[attr-defined]  (ServerSession: drop the old id now)
    badge = (request.form.get("badge") or "").strip()[:254]
    user, error = _password_sign_in(badge, request.form.get("password") or "", source="switch")
    if user is None:
        flash(error, "error")
        return render_template("accounts/switch.html", tenant=slug, badge=badge), 401
    _start_session_for(user, remember=False)
    detail = {"previous_user_id": previous[0] if previous else None,
              "previous_user": previous[1] if previous else None}
    record_account_event(user_id=user.id, kind="user.switched", source="switch", detail=detail)
    if slug:
        with control_session() as db_session:
            ok = db_session.scalar(
                select(Membership.id).join(Tenant, Tenant.id == Membership.tenant_id)
                .where(Tenant.slug == slug, Membership.user_id == user.id, Membership.active.is_(True)))
        if ok:
            return redirect(url_for("home.index", tenant_slug=slug))
    return redirect(url_for("accounts.choose_tenant"))


# --- own account -----------------------------------------------------------------------------------------------


def _account_page(status: int = 200) -> Any:
    with control_session() as db_session:
        user = db_session.get(User, current_user.id)
        linked = db_session.execute(
            select(sso.SsoIdentity.issuer, sso.SsoIdentity.created_at).where(sso.SsoIdentity.user_id == current_user.id)
        ).all()
        sso_tenants = db_session.execute(
            select(Tenant.slug, Tenant.name).join(Membership, Membership.tenant_id == Tenant.id)
            .join(sso.SsoProvider, sso.SsoProvider.tenant_id == Tenant.id)
            .where(Membership.user_id == current_user.id, Membership.active.is_(True),
                   sso.SsoProvider.enabled.is_(True), Tenant.status.in_(LIVE_STATUSES))
        ).all()
        settings = strictest_settings(db_session, current_user.id)
    return render_template("accounts/account.html", user=user, linked=linked, sso_tenants=sso_tenants,
                           min_length=settings.password_min_length), status


@bp.get("/account")
@requires(MEMBER)
def account() -> Any:
    """The signed-in person's account: badge code, password change, single sign-on links."""
    return _account_page()


@bp.post("/account/password")
@requires(MEMBER)
def change_password() -> Any:
    """Change the own password (current one required); other sessions of the account end."""
    from app.accounts.sessions import end_user_sessions

    new = request.form.get("new_password") or ""
    if new != (request.form.get("confirm_password") or ""):
        flash("The new password and its confirmation differ.", "error")
        return _account_page(422)
    try:
        services.change_password(user_id=current_user.id, current_password=request.form.get("current_password") or "",
                                 new_password=new)
    except BatchlineError as exc:
        flash(str(exc)[:1].upper() + str(exc)[1:] + ".", "error")
        return _account_page(exc.status_code)
    end_user_sessions(current_user.id, keep_sid=getattr(session, "sid", None))
    session.rotate = True  # type: ignore[attr-defined]
    flash("Password changed. Your other sessions were signed out.", "ok")
    return redirect(url_for("accounts.account"))


@bp.route("/password/forgot", methods=["GET", "POST"])
@requires(PUBLIC)
def forgot_password() -> Any:
    """Ask for a password reset link by email (same answer whether or not the address has an account)."""
    if request.method == "POST":
        email = request.form.get("email") or ""
        try:
            services.request_password_reset(email=email, ip=request.remote_addr)
        except BatchlineError as exc:
            flash(str(exc)[:1].upper() + str(exc)[1:] + ".", "error")
            return render_template("accounts/forgot.html", email=email[:254]), exc.status_code
        flash("If an account with a password exists for that address, a reset link is on its way. "
              "It works once, within the hour.", "ok")
        return redirect(url_for("accounts.login"))
    return render_template("accounts/forgot.html", email="")


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
@requires(PUBLIC)
def reset_password(token: str) -> Any:
    """Choose a new password through a single-use, expiring link."""
    try:
        email = services.check_reset_token(token)
    except BatchlineError as exc:
        return render_template("error.html", status=exc.status_code, message=str(exc)), exc.status_code
    if request.method == "POST":
        new = request.form.get("new_password") or ""
        if new != (request.form.get("confirm_password") or ""):
            flash("The new password and its confirmation differ.", "error")
            return render_template("accounts/reset.html", email=email), 422
        try:
            services.reset_password(token=token, new_password=new)
        except BatchlineError as exc:
            flash(str(exc)[:1].upper() + str(exc)[1:] + ".", "error")
            return render_template("accounts/reset.html", email=email), exc.status_code
        logout_user()
        session.clear()
        flash("Password changed. Sign in with the new password.", "ok")
        return redirect(url_for("accounts.login"))
    return render_template("accounts/reset.html", email=email)


# --- invitations -----------------------------------------------------------------------------------------------


@bp.route("/invite/<token>", methods=["GET", "POST"])
@requires(PUBLIC)
def accept_invitation(token: str) -> Any:
    """Accept an invitation: create the account (name + password), or join with the signed-in account."""
    try:
        view = services.read_invitation(token)
    except BatchlineError as exc:
        return render_template("error.html", status=exc.status_code, message=str(exc)), exc.status_code
    with control_session() as db_session:
        has_sso = sso_provider(db_session, view.tenant_id) is not None
        min_length = tenant_settings(db_session, view.tenant_id).password_min_length
    signed_in = current_user.id if current_user.is_authenticated else None
    context = {"invite": view, "token": token, "has_sso": has_sso, "min_length": min_length, "name": ""}
    if request.method == "POST":
        name = request.form.get("name") or ""
        password = request.form.get("password") or ""
        if signed_in is None and password != (request.form.get("confirm_password") or ""):
            flash("The password and its confirmation differ.", "error")
            return render_template("accounts/invite.html", **{**context, "name": name[:200]}), 422
        try:
            user_id, slug = services.accept_invitation(token=token, signed_in_user_id=signed_in, name=name,
                                                       password=password)
        except BatchlineError as exc:
            flash(str(exc)[:1].upper() + str(exc)[1:] + ".", "error")
            return render_template("accounts/invite.html", **{**context, "name": name[:200]}), exc.status_code
        if signed_in is None:
            with control_session() as db_session:
                user = db_session.get(User, user_id)
            if user is not None:
                _start_session_for(user, remember=False)
                record_account_event(user_id=user.id, kind="signin.success", source="invitation",
                                     tenant_ids=[view.tenant_id])
        flash(f"Welcome to {view.tenant_name}.", "ok")
        return redirect(url_for("home.index", tenant_slug=slug))
    return render_template("accounts/invite.html", **context)


# --- single sign-on --------------------------------------------------------------------------------------------


def _tenant_id_by_slug(slug: str) -> int:
    with control_session() as db_session:
        tenant_id = db_session.scalar(select(Tenant.id).where(Tenant.slug == slug, Tenant.status.in_(LIVE_STATUSES)))
    if tenant_id is None:
        abort(404)
    return int(tenant_id)


@bp.get("/sso/<tenant_slug>/start")
@requires(PUBLIC)
def sso_start(tenant_slug: str) -> Any:
    """Send the browser to the company's sign-on provider (authorization code + PKCE)."""
    tenant_id = _tenant_id_by_slug(tenant_slug[:40])
    mode = "link" if request.args.get("link") == "1" and current_user.is_authenticated else "signin"
    try:
        url, pending = sso.start(tenant_id=tenant_id, redirect_uri=url_for("accounts.sso_callback", _external=True),
                                 mode=mode)
    except BatchlineError as exc:
        return render_template("error.html", status=exc.status_code, message=str(exc)), exc.status_code
    if mode == "link":
        pending["user_id"] = current_user.id
    session["sso_pending"] = pending
    return redirect(url)


@bp.get("/sso/callback")
@requires(PUBLIC)
def sso_callback() -> Any:
    """Finish single sign-on: validate the provider's answer, then sign in, join or link."""
    pending = session.pop("sso_pending", None)
    args = {k: v[:4096] for k, v in request.args.items()}
    if pending and pending.get("mode") == reauth.MODE:
        return _reauth_callback(pending, args)
    try:
        tenant_id, claims = sso.finish(pending=pending, args=args)
        slug = _slug_of(tenant_id)
        if pending and pending.get("mode") == "link":
            if not current_user.is_authenticated or current_user.id != pending.get("user_id"):
                raise sso.SsoRefused("sign in with your password first, then link single sign-on again")
            sso.link_identity(tenant_id=tenant_id, claims=claims, user_id=current_user.id)
            flash("Single sign-on is now linked to your account.", "ok")
            return redirect(url_for("accounts.account"))
        user_id = sso.sign_in_user(tenant_id=tenant_id, claims=claims)
    except BatchlineError as exc:
        return render_template("error.html", status=exc.status_code, message=str(exc)), exc.status_code
    with control_session() as db_session:
        user = db_session.get(User, user_id)
    if user is None or not user.is_active:
        abort(403)
    if current_user.is_authenticated:
        logout_user()
    _start_session_for(user, remember=False)
    return redirect(url_for("home.index", tenant_slug=slug))


def _reauth_callback(pending: dict[str, Any], args: dict[str, str]) -> Any:
    """Finish a re-authentication: keep a single-use proof for the form page and go back to it."""
    back = pending.get("return_to") or url_for("accounts.choose_tenant")
    try:
        _tenant_id, claims = sso.finish(pending=pending, args=args)
        proof = reauth.complete(pending=pending, claims=claims,
                                user_id=current_user.id if current_user.is_authenticated else None,
                                session_id=getattr(session, "sid", None))
    except BatchlineError as exc:
        return render_template("error.html", status=exc.status_code, message=str(exc), back=back), exc.status_code
    reauth.remember(session, proof)
    return redirect(back)


def _slug_of(tenant_id: int) -> str:
    with control_session() as db_session:
        return str(db_session.scalar(select(Tenant.slug).where(Tenant.id == tenant_id)))


# --- tenant administration -------------------------------------------------------------------------------------


def _error(exc: BatchlineError) -> None:
    message = str(exc)
    flash(message[:1].upper() + message[1:] + ("" if message.endswith(".") else "."), exc.flash_category)


def _by_permissions() -> frozenset[str]:
    return frozenset(g.permissions)


def _users_page(status: int = 200, invite: dict[str, Any] | None = None) -> Any:
    with control_session() as db_session:
        people = members(db_session, g.tenant.id)
        invitations = db_session.scalars(
            select(Invitation).where(Invitation.tenant_id == g.tenant.id, Invitation.accepted_at.is_(None),
                                     Invitation.revoked_at.is_(None)).order_by(Invitation.id.desc())
        ).all()
        roles = assignable_roles(db_session, g.tenant.id)
    return render_template("accounts/users.html", members=people, invitations=invitations, roles=roles,
                           invite=invite or {"email": "", "roles": []}), status


@admin_bp.get("/admin/users")
@requires("users.manage")
def users() -> Any:
    """Members, open invitations and the invitation form."""
    return _users_page()


@admin_bp.post("/admin/users/invite")
@requires("users.manage")
def invite() -> Any:
    """Invite someone by email with roles; the signed link goes out by mail."""
    try:
        services.invite_member(tenant_id=g.tenant.id, email=request.form.get("email") or "",
                               roles=request.form.getlist("roles"), by_user_id=current_user.id,
                               by_permissions=_by_permissions())
    except BatchlineError as exc:
        _error(exc)
        return _users_page(exc.status_code, invite={"email": (request.form.get("email") or "")[:254],
                                                    "roles": request.form.getlist("roles")})
    flash("Invitation sent.", "ok")
    return redirect(url_for("accounts_admin.users"))


@admin_bp.post("/admin/invitations/<int:invitation_id>/revoke")
@requires("users.manage")
def revoke_invitation(invitation_id: int) -> Any:
    """Withdraw an open invitation."""
    try:
        services.revoke_invitation(tenant_id=g.tenant.id, invitation_id=invitation_id, by_user_id=current_user.id)
    except BatchlineError as exc:
        _error(exc)
        return _users_page(exc.status_code)
    flash("Invitation withdrawn.", "ok")
    return redirect(url_for("accounts_admin.users"))


def _member_page(user_id: int, status: int = 200) -> Any:
    with control_session() as db_session:
        found = member(db_session, tenant_id=g.tenant.id, user_id=user_id)
        if found is None:
            abort(404)
        membership, user = found
        roles = assignable_roles(db_session, g.tenant.id)
        person = {"user_id": user.id, "name": user.name, "email": user.email, "user_code": user.user_code,
                  "roles": list(membership.roles), "active": membership.active and user.active,
                  "locked": user.locked_at is not None, "locked_at": user.locked_at,
                  "failed_logins": user.failed_logins, "joined_at": membership.created_at,
                  "deactivated_at": membership.deactivated_at, "sso_only": user.password_hash is None}
    with tenant_transaction(g.tenant) as tenant_session:
        events = security_events(tenant_session, user_id=user_id, limit=50)
    return render_template("accounts/member.html", person=person, roles=roles, events=events), status


@admin_bp.get("/admin/users/<int:user_id>")
@requires("users.manage")
def member_detail(user_id: int) -> Any:
    """One member: roles, state, recent security events."""
    return _member_page(user_id)


def _member_action(user_id: int, action: Any, done: str) -> Any:
    try:
        action()
    except BatchlineError as exc:
        _error(exc)
        return _member_page(user_id, exc.status_code)
    flash(done, "ok")
    return redirect(url_for("accounts_admin.member_detail", user_id=user_id))


@admin_bp.post("/admin/users/<int:user_id>/roles")
@requires("users.manage")
def member_roles(user_id: int) -> Any:
    """Replace a member's roles."""
    return _member_action(user_id, lambda: services.assign_roles(
        tenant_id=g.tenant.id, user_id=user_id, roles=request.form.getlist("roles"), by_user_id=current_user.id,
        by_permissions=_by_permissions()), "Roles saved.")


@admin_bp.post("/admin/users/<int:user_id>/deactivate")
@requires("users.manage")
def member_deactivate(user_id: int) -> Any:
    """Deactivate a member; their sessions end at once."""
    return _member_action(user_id, lambda: services.deactivate_member(
        tenant_id=g.tenant.id, user_id=user_id, by_user_id=current_user.id), "Member deactivated.")


@admin_bp.post("/admin/users/<int:user_id>/reactivate")
@requires("users.manage")
def member_reactivate(user_id: int) -> Any:
    """Reactivate a member with their previous roles."""
    return _member_action(user_id, lambda: services.reactivate_member(
        tenant_id=g.tenant.id, user_id=user_id, by_user_id=current_user.id, by_permissions=_by_permissions()),
        "Member reactivated.")


@admin_bp.post("/admin/users/<int:user_id>/unlock")
@requires("users.manage")
def member_unlock(user_id: int) -> Any:
    """Unlock a locked account."""
    return _member_action(user_id, lambda: services.unlock_account(
        tenant_id=g.tenant.id, user_id=user_id, by_user_id=current_user.id), "Account unlocked.")


def _roles_page(status: int = 200) -> Any:
    with control_session() as db_session:
        custom = custom_roles(db_session, g.tenant.id, include_retired=True)
    return render_template("accounts/roles.html", builtin=BUILTIN_ROLES, custom=custom,
                           permissions=PERMISSIONS), status


@admin_bp.get("/admin/roles")
@requires("users.manage")
def roles() -> Any:
    """Built-in roles and the tenant's custom roles, with their permissions."""
    return _roles_page()


@admin_bp.post("/admin/roles")
@requires("users.manage")
def create_role() -> Any:
    """Create a custom role from the named permissions."""
    try:
        services.create_custom_role(tenant_id=g.tenant.id, name=request.form.get("name") or "",
                                    description=request.form.get("description") or "",
                                    permissions=request.form.getlist("permissions"), by_user_id=current_user.id,
                                    by_permissions=_by_permissions())
    except BatchlineError as exc:
        _error(exc)
        return _roles_page(exc.status_code)
    flash("Role created.", "ok")
    return redirect(url_for("accounts_admin.roles"))


@admin_bp.post("/admin/roles/<int:role_id>")
@requires("users.manage")
def update_role(role_id: int) -> Any:
    """Change a custom role's permissions."""
    try:
        services.update_custom_role(tenant_id=g.tenant.id, role_id=role_id,
                                    description=request.form.get("description") or "",
                                    permissions=request.form.getlist("permissions"), by_user_id=current_user.id,
                                    by_permissions=_by_permissions())
    except BatchlineError as exc:
        _error(exc)
        return _roles_page(exc.status_code)
    flash("Role saved.", "ok")
    return redirect(url_for("accounts_admin.roles"))


@admin_bp.post("/admin/roles/<int:role_id>/retire")
@requires("users.manage")
def retire_role(role_id: int) -> Any:
    """Retire a custom role nobody holds."""
    try:
        services.retire_custom_role(tenant_id=g.tenant.id, role_id=role_id, by_user_id=current_user.id)
    except BatchlineError as exc:
        _error(exc)
        return _roles_page(exc.status_code)
    flash("Role retired.", "ok")
    return redirect(url_for("accounts_admin.roles"))


@admin_bp.get("/admin/security")
@requires("audit.read")
def security_events_page() -> Any:
    """Security events of the tenant (newest first, filterable) and open alerts."""
    kind = (request.args.get("kind") or "").strip()[:60]
    before = request.args.get("before", type=int)
    user_id = request.args.get("user", type=int)
    with tenant_transaction(g.tenant) as tenant_session:
        events = security_events(tenant_session, kind=kind, user_id=user_id, before_id=before, limit=100)
        alerts = open_alerts(tenant_session)
    return render_template("accounts/security.html", events=events, alerts=alerts, kind=kind, user_id=user_id)


@admin_bp.post("/admin/security/alerts/<int:event_id>/ack")
@requires("users.manage")
def acknowledge_alert(event_id: int) -> Any:
    """Acknowledge an alert (recorded as a new event)."""
    try:
        services.acknowledge_alert(tenant_id=g.tenant.id, event_id=event_id, by_user_id=current_user.id,
                                   note=request.form.get("note") or "")
    except BatchlineError as exc:
        _error(exc)
        return redirect(url_for("accounts_admin.security_events_page")), 303
    flash("Alert acknowledged.", "ok")
    return redirect(url_for("accounts_admin.security_events_page"))


@admin_bp.route("/admin/settings/security", methods=["GET", "POST"])
@requires("settings.manage")
def security_settings() -> Any:
    """Lockout threshold, idle timeout, session lifetime and password length, within safe bounds."""
    status = 200
    if request.method == "POST":
        try:
            services.update_security_settings(tenant_id=g.tenant.id, values=request.form.to_dict(),
                                              by_user_id=current_user.id)
        except BatchlineError as exc:
            _error(exc)
            status = exc.status_code
        else:
            flash("Security settings saved; session limits apply from each person's next sign-in.", "ok")
            return redirect(url_for("accounts_admin.security_settings"))
    with control_session() as db_session:
        settings = tenant_settings(db_session, g.tenant.id)
    return render_template("accounts/settings.html", settings=settings, bounds=services.SETTING_BOUNDS), status


@admin_bp.route("/admin/sso", methods=["GET", "POST"])
@requires("settings.manage")
def sso_settings() -> Any:
    """Configure the tenant's OpenID Connect provider."""
    status = 200
    if request.method == "POST":
        try:
            services.configure_sso(tenant_id=g.tenant.id, issuer=request.form.get("issuer") or "",
                                   client_id=request.form.get("client_id") or "",
                                   client_secret=request.form.get("client_secret") or "",
                                   allowed_domains=request.form.get("allowed_domains") or "",
                                   default_roles=request.form.getlist("default_roles"),
                                   enabled=request.form.get("enabled") == "on", by_user_id=current_user.id,
                                   by_permissions=_by_permissions(),
                                   sso_required=request.form.get("sso_required") == "on")
        except BatchlineError as exc:
            _error(exc)
            status = exc.status_code
        else:
            flash("Single sign-on saved.", "ok")
            return redirect(url_for("accounts_admin.sso_settings"))
    with control_session() as db_session:
        provider = sso_provider(db_session, g.tenant.id)
        roles = assignable_roles(db_session, g.tenant.id)
    return render_template("accounts/sso.html", provider=provider, roles=roles,
                           callback=url_for("accounts.sso_callback", _external=True),
                           form=request.form if status != 200 else None), status


def open_alert_count() -> int:
    """Open security alerts of the current tenant (for the admin banner); 0 for people who cannot act on them."""
    if "users.manage" not in getattr(g, "permissions", ()) or getattr(g, "tenant", None) is None:
        return 0
    with tenant_transaction(g.tenant) as tenant_session:
        return len(open_alerts(tenant_session))


def record_tenant_event(kind: str, **kwargs: Any) -> int:
    """Record an event in the current tenant, attributed to the signed-in member (used by other areas' views)."""
    return record_security_event(tenant_id=g.tenant.id, kind=kind, user_id=current_user.id, **kwargs)
