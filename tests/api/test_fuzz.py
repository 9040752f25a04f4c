"""Schemathesis fuzzes every documented operation of /api/openapi.json over real HTTP (bounded examples).

Checks (schemathesis defaults): no 5xx, status codes, content types, headers and bodies match the document,
invalid input is rejected and valid input accepted, and missing auth is refused.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from app.api.openapi import openapi_document
from app.api.registry import load_operations
from app.core.jobs import enqueue
from app.core.tenancy import tenant_transaction
from tests.support_saas import live_server

MAX_EXAMPLES = 10

load_operations()  # the same registry the app serves; the served document is compared below
schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def base_url(app):
    with live_server(app) as url:
        yield url


@pytest.fixture
def api_token(app, make_tenant, issue_token, monkeypatch) -> str:
    monkeypatch.setitem(app.config, "API_RATE_LIMIT", "100000 per minute")  # fuzzing is not a flood test
    tenant = make_tenant()
    with tenant_transaction(tenant.ref) as session:  # something to list and fetch
        for _ in range(3):
            enqueue(session, "app.core.jobs:whoami")
    return issue_token(tenant)


def test_fuzzed_document_is_the_served_one(base_url) -> None:
    assert requests.get(base_url + "/api/openapi.json", timeout=10).json() == openapi_document()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, base_url, api_token) -> None:
    case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {api_token}"})
