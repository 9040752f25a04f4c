"""Schemathesis fuzzes every documented operation of /api/openapi.json over real HTTP (bounded examples).

Checks (schemathesis defaults): no 5xx, status codes, content types, headers and bodies match the document,
invalid input is rejected and valid input accepted, and missing auth is refused.

One tenant per module, seeded with a record of every kind the API serves (site to audit event), so list
operations answer real items whose shape is checked against the document; ids the fuzzer makes up mostly
answer 404, which the document declares.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.api.openapi import openapi_document
from app.api.registry import load_operations
from app.core.jobs import enqueue
from app.core.tenancy import tenant_transaction
from tests.api.conftest import admin_token, new_tenant, seed_every_kind
from tests.support import serve

MAX_EXAMPLES = 10

load_operations()  # the same registry the app serves; the served document is compared below
schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def base_url(app):
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def api_token(app) -> Iterator[str]:
    tenant = new_tenant(app, "fuzz")
    with tenant_transaction(tenant.ref) as session:  # something to list and fetch
        for _ in range(3):
            enqueue(session, "app.core.jobs:whoami")
    seed_every_kind(tenant)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(app.config, "API_RATE_LIMIT", "100000 per minute")  # fuzzing is not a flood test
        yield admin_token(tenant)


def test_fuzzed_document_is_the_served_one(base_url) -> None:
    assert requests.get(base_url + "/api/openapi.json", timeout=10).json() == openapi_document()


def schema_valid_request_passes_validation(ctx, response, case) -> None:
    """A request the document calls valid must pass the request models (the document and validation agree).

    Replaces schemathesis' `positive_data_acceptance`, which wants every schema-valid request accepted: an
    area's own rules (an IANA timezone name, a known equipment class, a unit that converts) are checked by its
    services and answer their own 422 problem ("ValidationError"); those the document cannot express.
    """
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    refused_by_models = response.status_code == 422 and response.json().get("title") == "Validation failed"
    if refused_by_models or response.status_code == 415:
        raise AssertionError(f"a schema-valid request was refused by the request models: {response.text[:500]}")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, base_url, api_token) -> None:
    case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {api_token}"},
                           excluded_checks=[positive_data_acceptance],
                           additional_checks=[schema_valid_request_passes_validation])
