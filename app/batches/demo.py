"""The demo batch `make run` seeds: the CHO fed-batch template imported, approved by demo people's signatures,
and a 50 L batch planned on a demo line and released to the floor, ready for an operator on a tablet.

Everything goes through the real services (and signatures through the real password checks), so the demo data
is what the product would hold had people clicked through it. `create_demo_people` makes the accounts in the
control plane; `seed_demo` does the rest inside one tenant transaction and is idempotent (a second run finds the
imported template and does nothing).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.batches import services
from app.batches.models import Batch
from app.core.tenancy import Actor, TenantRef, control_session
from app.plant.models import Equipment, Line

TEMPLATE_ID = "cho-fed-batch-sub50"
LINE_CODE = "USP-DEMO"


@dataclass(frozen=True)
class DemoPerson:
    """A demo account with a membership in the demo tenant."""

    user_id: int
    member_id: int
    email: str
    name: str
    roles: tuple[str, ...]

    @property
    def actor(self) -> Actor:
        """The person as the actor of a unit of work."""
        return Actor(member_id=self.member_id, label=f"{self.name} <{self.email}>", request_id="demo-seed")


#: (key, name, roles) of the demo people.
PEOPLE = [
    ("engineer", "Paula Process", ("Process Engineer",)),
    ("reviewer", "Quentin Review", ("QA",)),
    ("approver", "Qiana Approve", ("QA",)),
    ("supervisor", "Sam Supervisor", ("Supervisor",)),
    ("operator", "Olga Operator", ("Operator",)),
    ("operator2", "Oscar Operator", ("Operator",)),
]


def create_demo_people(tenant: TenantRef, *, domain: str, password: str | None = None) -> tuple[
        dict[str, DemoPerson], str]:
    """Create (or find) the demo accounts and their memberships; return them and their shared password."""
    from app.accounts.models import Membership, User
    from app.accounts.passwords import hash_password

    password = password or secrets.token_urlsafe(12)
    hashed = hash_password(password)
    people = {}
    with control_session() as cp:
        for key, name, roles in PEOPLE:
            email = f"{key}@{domain}"
            user = cp.scalar(select(User).where(User.email == email))
            if user is None:
                user = User(email=email, name=name, password_hash=hashed)
                cp.add(user)
                cp.flush()
            else:
                user.password_hash = hashed
            member = cp.scalar(select(Membership).where(Membership.user_id == user.id,
                                                        Membership.tenant_id == tenant.id))
            if member is None:
                member = Membership(user_id=user.id, tenant_id=tenant.id, roles=list(roles))
                cp.add(member)
                cp.flush()
            people[key] = DemoPerson(user.id, member.id, email, name, roles)
    return people, password


@contextmanager
def acting(session: Session, person: Any) -> Iterator[None]:
    """Attribute what the services do inside the block to `person` (anyone with an `.actor`: audit events,
    signatures)."""
    previous = session.info.get("actor")
    session.info["actor"] = person.actor
    try:
        yield
    finally:
        session.info["actor"] = previous


def _credentials(person: DemoPerson, password: str) -> dict[str, Any]:
    return {"user_id": person.user_id, "password": password, "identification": person.email,
            "identification_required": True}


def seed_demo(session: Session, *, people: dict[str, DemoPerson], password: str) -> Batch | None:
    """Seed the demo plant, lots, approved fed-batch recipe and a batch released to the floor (idempotent)."""
    from app.materials import services as materials
    from app.materials.models import Material
    from app.plant import services as plant
    from app.plant.models import Site
    from app.recipes import services as recipes
    from app.recipes.models import MasterRecipe

    if session.scalar(select(MasterRecipe.id).where(MasterRecipe.template_id == TEMPLATE_ID)) is not None:
        return None
    engineer, reviewer, approver = people["engineer"], people["reviewer"], people["approver"]
    supervisor = people["supervisor"]
    with acting(session, supervisor):
        # An older demo (the sensor simulator's) may already hold site DEMO and BR-101: reuse them.
        site = session.scalar(select(Site).where(Site.code == "DEMO")) or plant.create_site(
            session, code="DEMO", name="Demo Biologics GMP suite", timezone="Europe/Zurich",
            regulatory_profile="21 CFR Part 11, EU GMP Annex 11")
        existing = session.scalar(select(Equipment).where(Equipment.tag == "BR-101"))
        line = session.get(Line, existing.line_id) if existing is not None else \
            session.scalar(select(Line).where(Line.code == LINE_CODE)) or \
            plant.create_line(session, site_id=site.id, code=LINE_CODE, name="Upstream demo line")
        today = datetime.now(UTC).date()
        due = today + timedelta(days=180)
        for tag, name, klass, capacity in (("BR-101", "S.U.B. 50 L bioreactor", "bioreactor", "50"),
                                           ("CC-01", "Cell counter", "other", None),
                                           ("DF-01", "Depth filtration skid", "filter_skid", None)):
            if session.scalar(select(Equipment.id).where(Equipment.tag == tag)) is None:
                plant.create_equipment(session, tag=tag, name=name, equipment_class=klass, line_id=line.id,
                                       capacity=capacity, capacity_unit="L" if capacity else "", status="clean",
                                       qualification_status="qualified", calibration_due=due)
    with acting(session, engineer):
        for item in recipes.missing_template_materials(session, TEMPLATE_ID):
            materials.create_material(session, code=item["code"], name=item["name"], material_type="raw",
                                      unit=item["unit"] or "count")
        template, _ = recipes.find_template(TEMPLATE_ID)
        header = template.document.header
        if session.scalar(select(Material.id).where(Material.code == header.product_code)) is None:
            materials.create_material(session, code=header.product_code, name=header.product_name,
                                      material_type="intermediate", unit="L", shelf_life_days=30)
        version = recipes.import_template(session, template_id=TEMPLATE_ID)
        recipes.sign_version(session, version_id=version.id, meaning="authored", **_credentials(engineer, password))
    with acting(session, reviewer):
        recipes.sign_version(session, version_id=version.id, meaning="reviewed", **_credentials(reviewer, password))
    with acting(session, approver):
        recipes.sign_version(session, version_id=version.id, meaning="approved", **_credentials(approver, password))
        quantities = {"count": "20", "mL": "2000"}
        for material in session.scalars(select(Material).where(Material.code != header.product_code)
                                        .order_by(Material.code)):
            lot = materials.receive_lot(session, material_id=material.id, lot_number=f"{material.code}-L001",
                                        quantity=quantities.get(material.unit, "200"),
                                        received_on=today.isoformat(), supplier="Demo Supplies AG",
                                        expiry_date=(today + timedelta(days=365)).isoformat())
            materials.change_lot_status(session, lot_id=lot.id, to_status="released", reason="CoA reviewed (demo)",
                                        credentials=_credentials(approver, password))
    with acting(session, supervisor):
        reactor = session.scalar(select(Equipment.id).where(Equipment.tag == "BR-101"))
        skid = session.scalar(select(Equipment.id).where(Equipment.tag == "DF-01"))
        batch = services.plan_batch(session, master_recipe_id=version.master_recipe_id, batch_size="50", unit="L",
                                    line_id=line.id, planned_start=datetime.now(UTC),
                                    equipment={"SUB-50L": reactor, "DEPTH-FILTER-SKID": skid})
        services.dispatch_batch(session, batch_id=batch.id, actor=supervisor.actor,
                                reason="demo batch released to the floor", **_credentials(supervisor, password))
    return batch
