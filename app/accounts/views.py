"""Sign-in pages (global accounts; the tenant is chosen after sign-in)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select

from app.accounts.models import Membership, User
from app.accounts.passwords import hash_password, needs_rehash, verify_password
from app.core.tenancy import control_session
from app.core.web import MEMBER, PUBLIC, requires
from app.tenancy.models import Tenant

bp = Blueprint("accounts", __name__, template_folder="templates")


def _safe_next(target: str | None) -> str | None:
    """Only follow same-site relative redirects after sign-in."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


@bp.route("/login", methods=["GET", "POST"])
@requires(PUBLIC)
def login() -> Any:
    """Sign in with email and password."""
    if request.method == "POST":
        email = (request.form.get("email") or "").strip().lower()[:254]
        password = request.form.get("password") or ""
        with control_session() as db_session:
            user = db_session.scalar(select(User).where(User.email == email))
            ok = user is not None and user.active and verify_password(user.password_hash, password)
            if ok and user is not None and user.password_hash and needs_rehash(user.password_hash):
                user.password_hash = hash_password(password)
        if not ok:
            flash("Email or password is not correct.", "error")
            return render_template("accounts/login.html", email=email), 401
        session.clear()  # a fresh session at sign-in: nothing from before survives
        login_user(user)
        return redirect(_safe_next(request.args.get("next")) or url_for("accounts.choose_tenant"))
    return render_template("accounts/login.html", email="")


@bp.post("/logout")
@requires(PUBLIC)
def logout() -> Any:
    """Sign out and drop the session."""
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
@login_required
@requires(MEMBER)
def choose_tenant() -> Any:
    """List the tenants the user belongs to; go straight in when there is one."""
    with control_session() as db_session:
        rows = db_session.execute(
            select(Tenant.slug, Tenant.name)
            .join(Membership, Membership.tenant_id == Tenant.id)
            .where(Membership.user_id == current_user.id, Membership.active.is_(True),
                   Tenant.status.in_(("active", "read_only", "suspended")))
            .order_by(Tenant.name)
        ).all()
    if len(rows) == 1:
        return redirect(url_for("home.index", tenant_slug=rows[0].slug))
    return render_template("accounts/tenants.html", tenants=rows)
