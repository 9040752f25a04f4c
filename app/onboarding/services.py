"""The guided onboarding flow: which steps are done (derived from the data), skipped, or left; invitations."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.accounts.models import Membership, User
from app.accounts.passwords import hash_password
from app.audit.services import current_actor, record
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.permissions import BUILTIN_ROLES
from app.core.tenancy import TenantRef, control_session
from app.materials.models import Material
from app.onboarding.models import OnboardingStep
from app.plant.models import Equipment, Line, Sensor, Site
from app.tenancy.services import validate_email

#: The steps in order: key, title, what it asks, the permission it needs.
STEPS: list[tuple[str, str, str, str]] = [
    ("site", "Site", "Where you manufacture: name, timezone, regulatory profile", "plant.manage"),
    ("line", "Line", "The suite or line your first process runs in", "plant.manage"),
    ("equipment", "Equipment", "Bioreactors, balances, cabinets... with status and qualification", "plant.manage"),
    ("sensors", "Sensors", "What each item measures, its unit and valid range", "plant.manage"),
    ("materials", "Materials", "Raw materials, intermediates and products", "materials.manage"),
    ("users", "Invite users", "Your operators, QA and supervisors", "users.manage"),
]
STEP_KEYS = [s[0] for s in STEPS]
_COUNTED = {"site": Site, "line": Line, "equipment": Equipment, "sensors": Sensor, "materials": Material}


@dataclass(frozen=True)
class StepState:
    """Where one step stands."""

    key: str
    title: str
    blurb: str
    permission: str
    count: int
    skipped: bool

    @property
    def done(self) -> bool:
        """A step is done once something exists for it."""
        return self.count > 0

    @property
    def state(self) -> str:
        """done / skipped / todo."""
        return "done" if self.done else ("skipped" if self.skipped else "todo")


def member_count(tenant: TenantRef) -> int:
    """Active members of the tenant (control plane)."""
    with control_session() as session:
        return session.scalar(select(func.count()).select_from(Membership).where(
            Membership.tenant_id == tenant.id, Membership.active.is_(True))) or 0


def checklist(session: Session, tenant: TenantRef) -> list[StepState]:
    """Every step with its state; done-ness is read from the data, so records made anywhere count."""
    skipped = {s.step for s in session.scalars(select(OnboardingStep).where(OnboardingStep.skipped.is_(True)))}
    states = []
    for key, title, blurb, permission in STEPS:
        if key == "users":
            count = member_count(tenant) - 1  # the founder who signed up is not an invitation
        else:
            count = session.scalar(select(func.count()).select_from(_COUNTED[key])) or 0
        states.append(StepState(key, title, blurb, permission, count, key in skipped))
    return states


def next_step(states: list[StepState], after: str | None = None) -> StepState | None:
    """The first step neither done nor skipped (after `after`, if given), or None when all are settled."""
    start = STEP_KEYS.index(after) + 1 if after else 0
    return next((s for s in states[start:] if s.state == "todo"), None)


def set_skipped(session: Session, *, step: str, skipped: bool) -> None:
    """Skip a step (it stays on the checklist, marked skipped) or bring it back."""
    if step not in STEP_KEYS:
        raise NotFound(f"no onboarding step {step!r}")
    row = session.get(OnboardingStep, step)
    member_id = current_actor(session).member_id
    if row is None:
        session.add(OnboardingStep(step=step, skipped=skipped, member_id=member_id))
    else:
        row.skipped, row.member_id, row.updated_at = skipped, member_id, func.now()
    session.flush()


@dataclass(frozen=True)
class Invitation:
    """An invited member and, for a new account, the one-time password to hand over."""

    email: str
    role: str
    temporary_password: str | None


def invite_member(session: Session, *, tenant: TenantRef, email: str, name: str, role: str) -> Invitation:
    """Give a person a membership with one built-in role; a new account gets a one-time password."""
    email = validate_email(email)
    if role not in BUILTIN_ROLES:
        raise ValidationError(f"role {role!r} is not one of: {', '.join(BUILTIN_ROLES)}")
    name = (name or "").strip()[:200] or email.split("@")[0]
    # The tenant event goes first, in the caller's transaction: if the control-plane write fails, it rolls back.
    record(session, action="create", record_type="membership", record_id=email,
           new={"email": email, "name": name, "roles": [role]})
    password = None
    with control_session() as control:
        user = control.scalar(select(User).where(User.email == email))
        if user is None:
            password = secrets.token_urlsafe(12)
            user = User(email=email, name=name, password_hash=hash_password(password))
            control.add(user)
            control.flush()
        elif control.scalar(select(Membership.id).where(Membership.user_id == user.id,
                                                        Membership.tenant_id == tenant.id)) is not None:
            raise Conflict(f"{email} is already a member of this tenant")
        control.add(Membership(user_id=user.id, tenant_id=tenant.id, roles=[role]))
    return Invitation(email=email, role=role, temporary_password=password)
