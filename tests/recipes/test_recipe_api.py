"""The recipes JSON API: list, get, import (refusals point at the element), export, scale, diff, effective."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from app.recipes import services
from app.recipes.batchml import from_batchml
from app.recipes.document import content_hash, parse_document
from tests.conftest import csrf_token, sign_in
from tests.recipes.conftest import RecipeTeam


def _client(app: Any, who: Any) -> tuple[FlaskClient, dict[str, str]]:
    from tests.conftest import RequestIsolatedClient

    app.test_client_class = RequestIsolatedClient
    client = app.test_client()
    assert sign_in(client, who.email).status_code == 302
    return client, {"X-CSRFToken": csrf_token(client, "/login")}


def test_api_imports_templates_and_files_and_exports_identically(app, recipe_team: RecipeTeam) -> None:
    team = recipe_team
    api = f"/t/{team.tenant.ref.slug}/api/v1/recipes"
    client, headers = _client(app, team.author)
    templates = client.get(f"{api}/templates").get_json()
    assert templates["count"] == 8 and {t["scenarios"] > 5 for t in templates["items"]} == {True}
    created = client.post(f"{api}/templates/protein-a-capture/import", json={"create_missing_materials": False},
                          headers=headers)
    assert created.status_code == 422  # the tenant has none of the template's materials yet
    assert created.mimetype == "application/problem+json"
    errors = created.get_json()["errors"]
    assert errors and errors[0]["path"].startswith("materials[0].code") and "materials master" in errors[0]["message"]
    # The author has no materials.manage: creating the materials on the way is refused.
    assert client.post(f"{api}/templates/protein-a-capture/import", json={"create_missing_materials": True},
                       headers=headers).status_code == 403
    admin_client, admin_headers = _client_admin(app, team)
    created = admin_client.post(f"{api}/templates/protein-a-capture/import",
                                json={"create_missing_materials": True}, headers=admin_headers)
    assert created.status_code == 201, created.get_data(as_text=True)
    version = created.get_json()
    assert version["status"] == "draft" and version["template_id"] == "protein-a-capture"
    assert version["document"]["schema"] == "batchline.recipe/1" and version["messages"] is not None

    listing = client.get(api).get_json()
    assert [r["code"] for r in listing["items"]] == [version["recipe_code"]]
    got = client.get(f"{api}/versions/{version['id']}").get_json()
    assert got["content_hash"] == version["content_hash"]
    exported = client.get(f"{api}/versions/{version['id']}/export?format=json")
    assert exported.status_code == 200 and "attachment" in exported.headers["Content-Disposition"]
    assert content_hash(parse_document(exported.data)) == version["content_hash"]
    xml = client.get(f"{api}/versions/{version['id']}/export?format=batchml")
    assert xml.mimetype == "application/xml" and content_hash(from_batchml(xml.data)) == version["content_hash"]
    diff = client.get(f"{api}/versions/{version['id']}/diff").get_json()
    assert diff["against"] == "template" and diff["changes"] == []
    scaled = client.get(f"{api}/versions/{version['id']}/scaled?batch_size=2&unit=L")
    assert scaled.status_code in (200, 422)
    bad_scale = client.get(f"{api}/versions/{version['id']}/scaled?batch_size=two")
    assert bad_scale.status_code == 422 and "not a number" in bad_scale.get_json()["detail"]

    # Re-import the exported JSON as a new version: refused without a reason while the draft is open.
    doc = json.loads(exported.data)
    refused = client.post(f"{api}/import", json={"format": "json", "document": doc}, headers=headers)
    assert refused.status_code == 409
    with team.session(team.author) as session:
        services.retire_version(session, version_id=version["id"], reason="replaced by the API import")
    no_reason = client.post(f"{api}/import", json={"format": "json", "document": doc}, headers=headers)
    assert no_reason.status_code == 422 and "change reason" in no_reason.get_json()["detail"]
    again = client.post(f"{api}/import", json={"format": "batchml", "batchml": xml.data.decode(),
                                                "change_reason": "round trip"}, headers=headers)
    assert again.status_code == 201 and again.get_json()["content_hash"] == version["content_hash"]
    versions = client.get(f"{api}/{version['master_recipe_id']}/versions").get_json()
    assert [v["version"] for v in versions["items"]] == [2, 1]
    assert client.get(f"{api}/{version['master_recipe_id']}/effective").status_code == 404


def test_api_refuses_malformed_documents_with_pointers_and_stores_nothing(app, recipe_team: RecipeTeam) -> None:
    team = recipe_team
    api = f"/t/{team.tenant.ref.slug}/api/v1/recipes"
    client, headers = _client(app, team.author)
    bad = {"schema": "batchline.recipe/1", "header": {"recipe_code": "X-1", "product_code": "P", "product_name": "P",
                                                       "batch_size": {"value": 1, "unit": "Lx"}},
           "procedure": {"unit_procedures": [{"key": "u", "name": "U", "operations": [
               {"key": "o", "name": "O", "phases": [{"key": "p", "name": "P", "captures": [
                   {"kind": "number", "key": "t", "label": "T", "unit": "degC", "limts": {}}]}]}]}]}}
    response = client.post(f"{api}/import", json={"format": "json", "document": bad}, headers=headers)
    assert response.status_code == 422
    paths = {e["path"]: e["message"] for e in response.get_json()["errors"]}
    assert "header.batch_size.unit" in paths and "did you mean 'L'" in paths["header.batch_size.unit"]
    capture = "procedure.unit_procedures[0].operations[0].phases[0].captures[0].limts"
    assert capture in paths and "did you mean 'limits'" in paths[capture]
    xml = client.post(f"{api}/import", json={"format": "batchml", "batchml": "<MasterRecipe"}, headers=headers)
    assert xml.status_code == 422 and "malformed XML" in xml.get_json()["errors"][0]["message"]
    wrong = client.post(f"{api}/import", json={"format": "yaml", "document": {}}, headers=headers)
    assert wrong.status_code == 422
    assert client.get(api).get_json()["count"] == 0
    # A reader may not import.
    operator, op_headers = _client(app, team.operator)
    assert operator.post(f"{api}/import", json={"format": "json", "document": bad},
                         headers=op_headers).status_code == 403


def _client_admin(app: Any, team: RecipeTeam) -> tuple[FlaskClient, dict[str, str]]:
    from tests.conftest import RequestIsolatedClient

    app.test_client_class = RequestIsolatedClient
    client = app.test_client()
    assert sign_in(client, team.tenant.admin_email).status_code == 302
    return client, {"X-CSRFToken": csrf_token(client, "/login")}
