"""Sign-up state changes: reserve a slug, verify the email, provision the tenant step by step."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Flask, current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.accounts.models import Membership, User
from app.accounts.passwords import hash_password
from app.billing.plans import catalogue
from app.billing.services import start_trial
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.jobs import control_job, enqueue_control
from app.core.mail import send_mail
from app.core.tenancy import control_session, current_db, tenant_ref
from app.signup.models import Signup
from app.tenancy.models import Tenant
from app.tenancy.services import create_tenant, validate_email, validate_slug

#: Statuses of a sign-up that hold its slug (besides an unexpired pending one).
_HOLDING = ("verified", "provisioning", "ready")
MIN_PASSWORD = 12

#: Extra provisioning steps other areas register (tenant defaults, the recipe template library):
#: (key, label shown to the visitor, fn(app, tenant_ref)). Each runs once, after the workspace exists.
PROVISIONING_HOOKS: list[tuple[str, str, Callable[[Flask, Any], None]]] = []

BASE_STEPS = [
    ("verify", "Email address verified"),
    ("workspace", "Database schema, role and your administrator account"),
    ("plan", "Plan and trial"),
]


class SignupLinkError(Exception):
    """The verification link is expired or not ours; `expired` tells which."""

    def __init__(self, message: str, *, expired: bool) -> None:
        super().__init__(message)
        self.expired = expired


def _serializer(app: Flask | None = None) -> URLSafeTimedSerializer:
    app = app or current_app
    return URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="batchline-signup-verify")


def verification_token(signup: Signup) -> str:
    """A signed, timestamped token naming the sign-up and its link generation (a resend kills older links)."""
    return _serializer().dumps({"s": int(signup.id), "e": int(signup.expires_at.timestamp())})


def read_verification_token(token: str) -> tuple[int, int]:
    """(sign-up id, link generation) of a valid token; raise `SignupLinkError` for an expired or forged one."""
    max_age = int(current_app.config["SIGNUP_VERIFY_MAX_AGE_S"])
    try:
        data = _serializer().loads(token, max_age=max_age)
        return int(data["s"]), int(data["e"])
    except SignatureExpired:
        raise SignupLinkError("This verification link has expired.", expired=True) from None
    except (BadSignature, KeyError, TypeError, ValueError):
        raise SignupLinkError("This verification link is not valid.", expired=False) from None


def slug_problem(session: Session, slug: str) -> str | None:
    """Why a slug cannot be had right now, or None when it is free."""
    try:
        validate_slug(slug)
    except ValidationError as exc:
        return str(exc)
    if session.scalar(select(Tenant.id).where(Tenant.slug == slug)) is not None:
        return f"'{slug}' is already taken; choose another name."
    held = session.scalar(select(Signup.id).where(
        Signup.slug == slug,
        (Signup.status.in_(_HOLDING)) | ((Signup.status == "pending") & (Signup.expires_at > func.now())),
    ).limit(1))
    if held is not None:
        return f"'{slug}' is being claimed by another sign-up right now; choose another name."
    return None


def create_signup(session: Session, *, company_name: str, slug: str, admin_name: str, email: str, password: str,
                  plan: str) -> Signup:
    """Validate the form and reserve the slug; two sign-ups racing for one slug: the first wins."""
    company_name, admin_name, slug = company_name.strip(), admin_name.strip(), slug.strip().lower()
    if not company_name or len(company_name) > 200:
        raise ValidationError("Company name is required (at most 200 characters).")
    if not admin_name or len(admin_name) > 200:
        raise ValidationError("Your name is required (at most 200 characters); it is printed on your signatures.")
    email = validate_email(email)
    if len(password) < MIN_PASSWORD or len(password) > 256:
        raise ValidationError(f"Choose a password of at least {MIN_PASSWORD} characters.")
    plan = catalogue().get(plan or catalogue().default_plan).key
    validate_slug(slug)
    # Serialise sign-ups for one slug: the check below and the insert are atomic against a concurrent one.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"signup-slug:{slug}"})
    problem = slug_problem(session, slug)
    if problem:
        raise Conflict(problem)
    signup = Signup(company_name=company_name, slug=slug, admin_name=admin_name, email=email,
                    password_hash=hash_password(password), plan=plan, status="pending",
                    steps=[{"key": k, "label": label, "state": "waiting"} for k, label in _all_steps()],
                    expires_at=_link_expiry(session))
    session.add(signup)
    session.flush()
    return signup


def _link_expiry(session: Session) -> Any:
    """Until when a link sent now works, by the database clock, to the second (links carry it)."""
    moment = session.execute(select(func.date_trunc("second", func.now()))).scalar_one()
    return moment + timedelta(seconds=int(current_app.config["SIGNUP_VERIFY_MAX_AGE_S"]))


def _all_steps() -> list[tuple[str, str]]:
    return BASE_STEPS + [(key, label) for key, label, _fn in PROVISIONING_HOOKS]


def send_verification_mail(signup: Signup, link: str) -> None:
    """Mail the verification link."""
    hours = int(current_app.config["SIGNUP_VERIFY_MAX_AGE_S"]) // 3600
    send_mail(to=signup.email, subject="Confirm your Batchline sign-up",
              body=(f"Hello {signup.admin_name},\n\n"
                    f"Confirm your email address to create the workspace '{signup.slug}' for {signup.company_name}:\n\n"
                    f"{link}\n\n"
                    f"The link works for {hours} hours. If you did not sign up, ignore this message.\n"))


def renew_pending(session: Session, *, email: str) -> Signup | None:
    """Give the latest unverified sign-up of an address a fresh link, if its slug is still free."""
    email = (email or "").strip().lower()
    signup = session.scalar(select(Signup).where(Signup.email == email, Signup.status == "pending")
                            .order_by(Signup.id.desc()).limit(1).with_for_update())
    if signup is None:
        return None
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"signup-slug:{signup.slug}"})
    signup.status = "expired"  # step aside so the slug check below does not see this very sign-up
    session.flush()
    problem = slug_problem(session, signup.slug)
    if problem:
        raise Conflict(f"{problem} Please sign up again with another name.")
    signup.status = "pending"
    signup.expires_at = _link_expiry(session)
    session.flush()
    return signup


def verify_signup(session: Session, *, signup_id: int, generation: int) -> Signup:
    """Mark the email verified and queue provisioning (once; a second click changes nothing)."""
    signup = session.scalar(select(Signup).where(Signup.id == signup_id).with_for_update())
    if signup is None:
        raise NotFound("This sign-up does not exist.")
    if int(signup.expires_at.timestamp()) != generation:
        raise SignupLinkError("This link was replaced by a newer one: use the link in the latest mail.", expired=True)
    if signup.status == "pending":
        if session.scalar(select(Signup.expires_at <= func.now()).where(Signup.id == signup_id)):
            raise SignupLinkError("This verification link has expired.", expired=True)
        signup.status = "verified"
        signup.verified_at = func.now()
        signup.steps = _set_step(signup.steps, "verify", "done")
        session.flush()
        enqueue_control(session, "app.signup.services:provision_signup", signup_id=signup.id)
    elif signup.status == "expired":
        raise SignupLinkError("This verification link has expired.", expired=True)
    return signup


def _set_step(steps: list[dict[str, Any]], key: str, state: str, **extra: Any) -> list[dict[str, Any]]:
    return [{**s, "state": state, **extra} if s["key"] == key else s for s in steps]


def _progress(signup_id: int, key: str, state: str, **values: Any) -> None:
    """Record one step's state in its own committed transaction, so the visitor's page sees it at once."""
    with control_session() as session:
        signup = session.scalar(select(Signup).where(Signup.id == signup_id).with_for_update())
        if signup is None:
            return
        signup.steps = _set_step(signup.steps, key, state, **({"seconds": values.pop("seconds")}
                                                               if "seconds" in values else {}))
        for name, value in values.items():
            setattr(signup, name, value)


def _existing_tenant(session: Session, signup: Signup) -> int | None:
    """A tenant already made for this sign-up by an earlier attempt of the job."""
    return session.scalar(
        select(Tenant.id).join(Membership, Membership.tenant_id == Tenant.id).join(User, User.id == Membership.user_id)
        .where(Tenant.slug == signup.slug, User.email == signup.email, Tenant.status != "dropped"))


@control_job(queue="default")
def provision_signup(session: Session, *, signup_id: int) -> dict[str, Any]:
    """RQ job: build the tenant of a verified sign-up, recording each step for the progress page."""
    signup = session.get(Signup, signup_id)
    if signup is None:
        raise LookupError(f"sign-up {signup_id} not found")
    if signup.status == "ready" and signup.tenant_id is not None:
        return {"tenant_id": signup.tenant_id, "slug": signup.slug}
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    db = current_db()
    snapshot = {"slug": signup.slug, "company_name": signup.company_name, "email": signup.email,
                "admin_name": signup.admin_name, "password_hash": signup.password_hash, "plan": signup.plan}

    started = time.perf_counter()
    _progress(signup_id, "workspace", "running", status="provisioning")
    tenant_id = _existing_tenant(session, signup)
    if tenant_id is None:
        try:
            made = create_tenant(db, slug=snapshot["slug"], name=snapshot["company_name"],
                                 admin_email=snapshot["email"], admin_name=snapshot["admin_name"],
                                 admin_password_hash=snapshot["password_hash"],
                                 migrations_dir=app.config["TENANT_MIGRATIONS_DIR"])
        except Conflict as exc:  # the slug went to someone else (e.g. an operator's CLI): no retry can help
            _progress(signup_id, "workspace", "failed", status="failed",
                      error=f"{exc}. Please sign up again with another workspace name.")
            return {"failed": str(exc)}
        tenant_id = made.ref.id
    _progress(signup_id, "workspace", "done", seconds=round(time.perf_counter() - started, 3), tenant_id=tenant_id)

    started = time.perf_counter()
    with control_session() as trial_session:
        start_trial(trial_session, tenant_id=tenant_id, plan=snapshot["plan"])
    _progress(signup_id, "plan", "done", seconds=round(time.perf_counter() - started, 3))

    ref = tenant_ref(tenant_id, db=db, slug=snapshot["slug"])
    for key, _label, hook in PROVISIONING_HOOKS:
        started = time.perf_counter()
        _progress(signup_id, key, "running")
        hook(app, ref)
        _progress(signup_id, key, "done", seconds=round(time.perf_counter() - started, 3))

    with control_session() as done_session:
        done = done_session.scalar(select(Signup).where(Signup.id == signup_id).with_for_update())
        if done is not None:
            done.status, done.ready_at = "ready", func.now()
    return {"tenant_id": tenant_id, "slug": snapshot["slug"]}


def enter_tenant(session: Session, *, signup_id: int) -> tuple[User, str]:
    """Sign the verified visitor in to their new tenant, once; return the user and the tenant slug."""
    signup = session.scalar(select(Signup).where(Signup.id == signup_id).with_for_update())
    if signup is None or signup.status != "ready" or signup.tenant_id is None:
        raise Conflict("Your workspace is not ready yet.")
    if signup.entered_at is not None:
        raise Conflict("You have already entered your workspace from this sign-up; sign in with your email "
                       "and password.")
    user = session.scalar(select(User).where(User.email == signup.email))
    if user is None or not user.active:
        raise NotFound("Your account is not available; contact support.")
    signup.entered_at = func.now()
    session.flush()
    return user, signup.slug
