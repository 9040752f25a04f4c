"""The guided onboarding flow: which steps are done (derived from the data), skipped, or left."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.accounts.models import Invitation
from app.accounts.queries import seats_taken
from app.audit.services import current_actor
from app.core.errors import NotFound
from app.core.tenancy import TenantRef, control_session
from app.materials.models import Material
from app.onboarding.models import OnboardingStep
from app.plant.models import Equipment, Line, Sensor, Site

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


def invited_count(tenant: TenantRef) -> int:
    """People invited beyond the founder: other active members plus invitations still open (control plane)."""
    with control_session() as session:
        return max(seats_taken(session, tenant.id) - 1, 0)


def open_invitations(tenant: TenantRef) -> list[tuple[str, list[str]]]:
    """(email, roles) of the tenant's open invitations."""
    with control_session() as session:
        return [(i.email, list(i.roles)) for i in session.scalars(select(Invitation).where(
            Invitation.tenant_id == tenant.id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None),
            Invitation.expires_at > func.now()).order_by(Invitation.id))]


def checklist(session: Session, tenant: TenantRef) -> list[StepState]:
    """Every step with its state; done-ness is read from the data, so records made anywhere count."""
    skipped = {s.step for s in session.scalars(select(OnboardingStep).where(OnboardingStep.skipped.is_(True)))}
    states = []
    for key, title, blurb, permission in STEPS:
        if key == "users":
            count = invited_count(tenant)
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
