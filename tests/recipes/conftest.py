"""Factories for recipe documents: a small valid document that each test bends to its case."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from app.core.tenancy import tenant_transaction
from app.recipes import services as recipe_services
from app.recipes.document import RecipeDocument, parse_document
from tests.conftest import TEST_PASSWORD

BASE: dict[str, Any] = {
    "schema": "batchline.recipe/1",
    "header": {
        "recipe_code": "TEST-FB",
        "product_code": "P-001",
        "product_name": "Test product",
        "batch_size": {"value": 50, "unit": "L", "min": 10, "max": 500},
    },
    "formula": {
        "parameters": [
            {
                "key": "temp",
                "name": "Temperature",
                "type": "process_parameter",
                "unit": "degC",
                "target": 37.0,
                "low": 36.0,
                "high": 38.0,
                "alarm_low": 36.5,
                "alarm_high": 37.5,
                "criticality": "critical",
            },
            {
                "key": "feed_volume",
                "name": "Feed volume",
                "type": "process_input",
                "unit": "L",
                "target": 2.5,
                "low": 2.4,
                "high": 2.6,
                "criticality": "key",
                "scaling": {"rule": "linear", "reference_batch_size": 50, "reference_unit": "L"},
            },
            {
                "key": "ph",
                "name": "pH",
                "type": "process_parameter",
                "unit": "pH",
                "target": 7.0,
                "low": 6.8,
                "high": 7.2,
                "criticality": "critical",
            },
        ]
    },
    "materials": [
        {
            "code": "MED-1",
            "name": "Medium",
            "unit": "L",
            "quantity": 40.0,
            "tolerance_pct": 2.0,
            "scaling": {"rule": "linear", "reference_batch_size": 50, "reference_unit": "L"},
        },
        {
            "code": "FEED-1",
            "name": "Feed",
            "unit": "L",
            "quantity": 2.5,
            "tolerance_pct": 5.0,
            "scaling": {"rule": "linear", "reference_batch_size": 50, "reference_unit": "L"},
        },
        {"code": "BAG-1", "name": "Bag", "unit": "count", "quantity": 1},
    ],
    "procedure": {
        "unit_procedures": [
            {
                "key": "culture",
                "name": "Culture",
                "equipment_class": "SUB-50L",
                "operations": [
                    {
                        "key": "setup",
                        "name": "Set-up",
                        "phases": [
                            {
                                "key": "install",
                                "name": "Install bag",
                                "instructions": "Install the bag.",
                                "captures": [
                                    {
                                        "kind": "material_scan",
                                        "key": "bag",
                                        "label": "Bag",
                                        "material": "BAG-1",
                                    },
                                    {
                                        "kind": "equipment_scan",
                                        "key": "sub",
                                        "label": "Bioreactor",
                                        "equipment_class": "SUB-50L",
                                    },
                                ],
                                "materials": [{"material": "BAG-1", "quantity": 1}],
                                "signatures": [
                                    {"meaning": "performed"},
                                    {"meaning": "verified", "independent": True},
                                ],
                            },
                            {
                                "key": "fill",
                                "name": "Fill medium",
                                "instructions": "Fill 40 L of medium.",
                                "captures": [
                                    {
                                        "kind": "material_scan",
                                        "key": "medium",
                                        "label": "Medium",
                                        "material": "MED-1",
                                    }
                                ],
                                "materials": [{"material": "MED-1", "quantity": 40.0}],
                                "timing": {"expected_duration": "PT1H", "max_hold_time": "PT24H"},
                            },
                        ],
                    },
                    {
                        "key": "run",
                        "name": "Run",
                        "phases": [
                            {
                                "key": "control",
                                "name": "Control",
                                "instructions": "Check set points.",
                                "parameters": ["temp", "ph"],
                                "captures": [
                                    {
                                        "kind": "number",
                                        "key": "temp",
                                        "label": "Temperature",
                                        "parameter": "temp",
                                    },
                                    {"kind": "number", "key": "ph", "label": "pH", "parameter": "ph"},
                                    {
                                        "kind": "number",
                                        "key": "osmo",
                                        "label": "Osmolality",
                                        "unit": "mOsm/kg",
                                        "limits": {"low": 260, "high": 480, "criticality": "key"},
                                        "required": False,
                                    },
                                ],
                                "timing": {
                                    "expected_duration": "PT2H",
                                    "min_duration": "PT1H",
                                    "max_duration": "PT4H",
                                },
                            },
                            {
                                "key": "feed",
                                "name": "Feed",
                                "instructions": "Add one feed bolus.",
                                "parameters": ["feed_volume"],
                                "captures": [
                                    {
                                        "kind": "material_scan",
                                        "key": "feed",
                                        "label": "Feed",
                                        "material": "FEED-1",
                                        "quantity_ref": "feed_volume",
                                    },
                                    {
                                        "kind": "choice",
                                        "key": "appearance",
                                        "label": "Appearance",
                                        "options": ["Clear", "Turbid"],
                                        "acceptable": ["Clear"],
                                    },
                                ],
                                "materials": [{"material": "FEED-1", "quantity": 2.5}],
                            },
                            {
                                "key": "glucose",
                                "name": "Glucose top-up",
                                "instructions": "Only if needed.",
                                "mandatory": False,
                                "depends_on": ["control"],
                            },
                            {
                                "key": "harvest",
                                "name": "Harvest",
                                "instructions": "Harvest the culture.",
                                "depends_on": ["feed"],
                                "captures": [
                                    {
                                        "kind": "text",
                                        "key": "label",
                                        "label": "Bag label",
                                        "pattern": "^H-\\d{4}$",
                                        "identity": "harvest_bag",
                                    },
                                    {"kind": "checkbox", "key": "done", "label": "Harvest complete"},
                                ],
                                "signatures": [
                                    {"meaning": "performed"},
                                    {"meaning": "verified", "independent": True},
                                ],
                            },
                        ],
                    },
                ],
            }
        ]
    },
}


def _phase(data: dict[str, Any], key: str) -> dict[str, Any]:
    """Find a phase dict by key."""
    for up in data["procedure"]["unit_procedures"]:
        for op in up["operations"]:
            for ph in op["phases"]:
                if ph["key"] == key:
                    return ph
    raise KeyError(key)


@pytest.fixture
def make_data() -> Callable[..., dict[str, Any]]:
    """Return a factory of document data: a deep copy of BASE, with phases editable by key."""

    def factory(**phase_changes: dict[str, Any]) -> dict[str, Any]:
        data = copy.deepcopy(BASE)
        for key, changes in phase_changes.items():
            _phase(data, key).update(changes)
        return data

    return factory


@pytest.fixture
def make_document(make_data: Callable[..., dict[str, Any]]) -> Callable[..., RecipeDocument]:
    """Return a factory of validated documents (see make_data)."""

    def factory(**phase_changes: dict[str, Any]) -> RecipeDocument:
        return parse_document(make_data(**phase_changes))

    return factory


@pytest.fixture
def phase_of() -> Callable[[dict[str, Any], str], dict[str, Any]]:
    """Return a lookup of a phase dict in document data by key."""
    return _phase


# ---------------------------------------------------------------------------------------------------------------
# Tenants with people for the recipe lifecycle (real PostgreSQL, real signature routes)


@dataclass(frozen=True)
class RecipeTeam:
    """A tenant provisioned with its defaults (the recipe signature route) and the people of a recipe change."""

    tenant: Any
    author: Any
    reviewer: Any
    qa: Any
    operator: Any

    def session(self, who: Any) -> Any:
        """A tenant transaction acting as `who`."""
        return tenant_transaction(self.tenant.ref, actor=who.actor)

    def sign(self, who: Any, version_id: int, meaning: str, **kwargs: Any) -> Any:
        """Sign a version as `who` (re-entering the password) in a transaction of its own."""
        with self.session(who) as session:
            return recipe_services.sign_version(session, version_id=version_id, meaning=meaning,
                                                user_id=who.user_id, password=TEST_PASSWORD, **kwargs)


@pytest.fixture
def recipe_team(make_tenant: Callable[..., Any], make_member: Callable[..., Any]) -> RecipeTeam:
    tenant = make_tenant(with_defaults=True)
    return RecipeTeam(tenant=tenant,
                      author=make_member(tenant, ("Process Engineer",), name="Paula Process"),
                      reviewer=make_member(tenant, ("Process Engineer",), name="Rita Reviewer"),
                      qa=make_member(tenant, ("QA",), name="Quentin Quality"),
                      operator=make_member(tenant, ("Operator",), name="Otto Operator"))


def import_cho(team: RecipeTeam) -> int:
    """Import the CHO fed-batch template (creating its materials) as the author; return the draft's id."""
    with team.session(team.author) as session:
        return recipe_services.import_template(session, template_id="cho-fed-batch-sub50",
                                               create_missing_materials=True).id
