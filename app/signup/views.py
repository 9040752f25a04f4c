"""Public sign-up pages, the verification link, the progress page and the onboarding page."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, g, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user

from app.billing.plans import catalogue
from app.billing.queries import billing_overview
from app.core.errors import BatchlineError
from app.core.mail import backend_name, mail_dir
from app.core.tenancy import control_session
from app.core.web import MEMBER, PUBLIC, requires, tenant_blueprint
from app.signup import services
from app.signup.models import Signup

bp = Blueprint("signup", __name__, template_folder="templates")
onboarding_bp = tenant_blueprint("onboarding", __name__, template_folder="templates")

_FIELDS = ("company_name", "slug", "admin_name", "email", "plan")


def _verify_link(signup: Signup) -> str:
    token = services.verification_token(signup)
    base = current_app.config.get("PUBLIC_BASE_URL")
    if base:
        return base.rstrip("/") + url_for("signup.verify", token=token)
    return url_for("signup.verify", token=token, _external=True)


def _form_page(values: dict[str, str], error: str = "", status: int = 200) -> Any:
    cat = catalogue()
    return render_template("signup/form.html", values=values, error=error, plans=cat.plans.values(),
                           trial_days=cat.trial_days), status


@bp.get("/signup")
@requires(PUBLIC)
def form() -> Any:
    """The public sign-up page."""
    return _form_page({"plan": request.args.get("plan") or catalogue().default_plan})


@bp.post("/signup")
@requires(PUBLIC)
def submit() -> Any:
    """Reserve the slug, store the sign-up and mail the verification link."""
    values = {name: (request.form.get(name) or "").strip() for name in _FIELDS}
    try:
        with control_session() as db_session:
            signup = services.create_signup(db_session, password=request.form.get("password") or "", **values)
            signup_id, email = signup.id, signup.email
            services.send_verification_mail(signup, _verify_link(signup))
    except BatchlineError as exc:
        return _form_page(values, str(exc), exc.status_code)
    hint = str(mail_dir()) if backend_name() == "file" else ""
    return render_template("signup/check_mail.html", email=email, signup_id=signup_id, mail_hint=hint), 201


@bp.get("/signup/slug")
@requires(PUBLIC)
def slug_check() -> Any:
    """Live availability check of a slug for the form's small script."""
    slug = (request.args.get("slug") or "").strip().lower()
    with control_session() as db_session:
        problem = services.slug_problem(db_session, slug)
    return jsonify(slug=slug, available=problem is None, message=problem or f"'{slug}' is available.")


@bp.post("/signup/resend")
@requires(PUBLIC)
def resend() -> Any:
    """Send a fresh verification link for an unverified sign-up (the old one expired or got lost)."""
    email = (request.form.get("email") or "").strip().lower()
    try:
        with control_session() as db_session:
            signup = services.renew_pending(db_session, email=email)
            if signup is not None:
                services.send_verification_mail(signup, _verify_link(signup))
    except BatchlineError as exc:
        return render_template("signup/link_problem.html", message=str(exc), expired=False), exc.status_code
    # Same answer whether or not the address is known: nobody learns who signed up.
    return render_template("signup/check_mail.html", email=email, signup_id=None, mail_hint="", resent=True)


@bp.get("/signup/verify/<token>")
@requires(PUBLIC)
def verify(token: str) -> Any:
    """The link in the mail: verify the address, start provisioning, show its progress."""
    try:
        signup_id, generation = services.read_verification_token(token)
        with control_session() as db_session:
            signup = services.verify_signup(db_session, signup_id=signup_id, generation=generation)
            status = signup.status
    except services.SignupLinkError as exc:
        return render_template("signup/link_problem.html", message=str(exc), expired=exc.expired), 410 \
            if exc.expired else 400
    session["signup_id"] = signup_id
    if status == "ready" and not current_user.is_authenticated:
        return redirect(url_for("signup.enter", signup_id=signup_id))
    return render_template("signup/progress.html", signup_id=signup_id)


def _own_signup(signup_id: int) -> Signup:
    if session.get("signup_id") != signup_id:
        abort(404)
    with control_session() as db_session:
        signup = db_session.get(Signup, signup_id)
    if signup is None:
        abort(404)
    return signup


@bp.get("/signup/<int:signup_id>/status")
@requires(PUBLIC)
def status(signup_id: int) -> Any:
    """Provisioning progress as JSON (polled by static/signup.js); only for the browser that verified."""
    signup = _own_signup(signup_id)
    return jsonify(status=signup.status, steps=signup.steps, error=signup.error, slug=signup.slug,
                   enter_url=url_for("signup.enter", signup_id=signup_id) if signup.status == "ready" else None)


@bp.get("/signup/<int:signup_id>/progress")
@requires(PUBLIC)
def progress(signup_id: int) -> Any:
    """The progress page (also the no-JavaScript fallback, which refreshes itself)."""
    signup = _own_signup(signup_id)
    return render_template("signup/progress.html", signup_id=signup_id, signup=signup)


@bp.get("/signup/<int:signup_id>/enter")
@requires(PUBLIC)
def enter(signup_id: int) -> Any:
    """Sign the verified visitor in (once) and open the onboarding flow of the new workspace."""
    _own_signup(signup_id)
    try:
        with control_session() as db_session:
            user, slug = services.enter_tenant(db_session, signup_id=signup_id)
    except BatchlineError as exc:
        return render_template("signup/link_problem.html", message=str(exc), expired=False), exc.status_code
    session.clear()  # a fresh session at sign-in, as on the sign-in page
    login_user(user)
    return redirect(url_for("onboarding.index", tenant_slug=slug))


@onboarding_bp.get("/welcome")
@requires(MEMBER)
def index() -> Any:
    """The onboarding checklist of a new workspace."""
    with control_session() as db_session:
        overview = billing_overview(db_session, g.tenant.id, with_invoice=False)
    return render_template("signup/onboarding.html", o=overview)
