"""Every verification scenario of every template, replayed through the real batch engine.

The recipe area runs the same scenarios with its pure evaluator (tests/recipes); here each one plans and releases
a real batch of the approved template version and plays its records through the batch services (starts,
entries, scans, signatures with real password checks, overrides, completion), and the exceptions the engine
raised and the actions it refused must be exactly the scenario's expected outcome. One tenant per template, one
batch per scenario.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text

from app.accounts.models import Membership, User
from app.accounts.passwords import hash_password
from app.batches.models import Batch, StepEntry
from app.batches.scenario_replay import ReplayCast, ReplayTemplate, prepare_template, replay_scenario
from app.core.tenancy import control_session, tenant_transaction
from app.recipes.scenarios import evaluate
from app.recipes.templates import TEMPLATES_DIR, load_library
from app.tenancy.services import create_tenant
from tests.conftest import TEST_PASSWORD, Member

LIBRARY = {t.id: t for t in load_library(TEMPLATES_DIR)}
CASES = [(t.id, s.id) for t in LIBRARY.values() for s in t.pack.scenarios]
_n = itertools.count(1)


#: The cast of every replay tenant: (roles, name). The same accounts are members of each template's tenant.
CAST = ((("Operator",), "Anna Operator"), (("Operator",), "Ben Operator"), (("Operator",), "Cleo Operator"),
        (("Supervisor",), "Sam Supervisor"), (("Process Engineer",), "Paula Process"),
        (("Process Engineer",), "Rita Reviewer"), (("QA",), "Quentin Quality"))


class TemplateFloor:
    """A tenant with a template approved in it, a cast of people and the lots its scenarios scan."""

    def __init__(self, db: Any, template_id: str, users: list[tuple[int, str, str]]) -> None:
        n = next(_n)
        slug = f"replay-{os.getpid()}-{n}"
        self.tenant = create_tenant(db, slug=slug, name=f"Replay {n}", admin_email=f"admin@{slug}.example.com",
                                    admin_password=TEST_PASSWORD, apply_defaults=True).ref
        people = []
        with control_session(db=db) as session:
            for (user_id, email, name), (roles, _) in zip(users, CAST, strict=True):
                membership = Membership(user_id=user_id, tenant_id=self.tenant.id, roles=list(roles))
                session.add(membership)
                session.flush()
                people.append(Member(user_id, membership.id, email, name, roles))
        self.cast = ReplayCast(password=TEST_PASSWORD, operators=tuple(people[:3]), supervisor=people[3],
                               engineer=people[4], reviewer=people[5], approver=people[6])
        self.template: ReplayTemplate = prepare_template(self.tenant, template_id=template_id, cast=self.cast)
        self.lots: dict[str, str] = {}


@pytest.fixture(scope="module")
def template_floor(app: Flask) -> Callable[[str], TemplateFloor]:
    """One tenant per template, made the first time a scenario of that template runs."""
    db = app.extensions["batchline.db"]
    password_hash = hash_password(TEST_PASSWORD)  # one hash for the whole cast: argon2 is the slow part here
    users = []
    with control_session(db=db) as session:
        for _, name in CAST:
            email = f"{name.split()[0].lower()}-{os.getpid()}-{next(_n)}@replay.example.com"
            user = User(email=email, name=name, password_hash=password_hash)
            session.add(user)
            session.flush()
            users.append((user.id, email, name))
    floors: dict[str, TemplateFloor] = {}

    def get(template_id: str) -> TemplateFloor:
        if template_id not in floors:
            floors[template_id] = TemplateFloor(db, template_id, users)
        return floors[template_id]

    return get


@pytest.mark.parametrize(("template_id", "scenario_id"), CASES, ids=[s for _, s in CASES])
def test_engine_produces_the_scenario_outcome(template_floor: Callable[[str], TemplateFloor], template_id: str,
                                              scenario_id: str) -> None:
    floor = template_floor(template_id)
    scenario = next(s for s in LIBRARY[template_id].pack.scenarios if s.id == scenario_id)
    replay = replay_scenario(floor.tenant, template=floor.template, scenario=scenario, cast=floor.cast,
                             lots=floor.lots)
    assert replay.mismatches == [], "\n".join(replay.mismatches)
    # The evaluator agrees on the same control recipe: both implementations, one outcome.
    assert evaluate(floor.template.document, scenario).mismatches(scenario.expect) == []
    with tenant_transaction(floor.tenant) as session:
        batch = session.get(Batch, replay.batch_id)
        assert batch is not None and batch.recipe_version_id == floor.template.version_id
        entries = session.scalar(select(text("count(*)")).select_from(StepEntry)
                                 .where(StepEntry.batch_id == batch.id))
    assert entries > 0  # the records really went through the engine
    if scenario.complete_batch:
        assert batch.status in ("completed", "aborted")
        assert (batch.status == "completed") == (not any(
            e.type == "missing_mandatory_step" for e in scenario.expect.exceptions))


def test_validation_report_includes_the_engine_replay_of_a_template(app, make_tenant, tmp_path) -> None:
    from app.recipes.models import ValidationRun

    tenant = make_tenant(with_defaults=True)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["validation", "report", "--tenant", tenant.ref.slug, "--engine", "--template",
                                 "mrna-ivt-purification", "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    pack = LIBRARY["mrna-ivt-purification"].pack
    assert result.output.count("engine mrna-ivt-purification") == len(pack.scenarios)
    assert "FAILED" not in result.output and "PASSED" in result.output
    with tenant_transaction(tenant.ref) as session:
        run = session.scalars(select(ValidationRun).order_by(ValidationRun.id.desc())).first()
        batches = session.scalar(select(text("count(*)")).select_from(Batch))
    (replayed,) = run.results["engine_replay"]
    assert replayed["passed"] and [s["scenario"] for s in replayed["scenarios"]] == [s.id for s in pack.scenarios]
    assert batches == len(pack.scenarios)  # one real batch per scenario, in this tenant
    html = (tmp_path / "r.html").read_text()
    assert "The same scenarios on the batch engine" in html and replayed["scenarios"][0]["batch_number"] in html
    # The temporary cast cannot sign anything any more.
    with control_session() as session:
        from app.accounts.models import Membership

        cast = session.scalars(select(Membership).join(User, User.id == Membership.user_id).where(
            Membership.tenant_id == tenant.ref.id, User.email.like("replay-%"))).all()
    assert len(cast) == 7 and not any(m.active for m in cast)
