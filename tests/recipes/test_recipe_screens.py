"""Recipe screens over HTTP: the fed-batch path end to end, the editor's messages, imports refused with pointers."""

from __future__ import annotations

import json
import re
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.recipes import services
from app.recipes.models import MasterRecipe, RecipeVersion
from tests.conftest import TEST_PASSWORD, csrf_token, sign_in
from tests.factories import admin_actor, make_material
from tests.recipes.conftest import RecipeTeam


def _client(app: Any, who: Any) -> FlaskClient:
    from tests.conftest import RequestIsolatedClient

    app.test_client_class = RequestIsolatedClient
    client = app.test_client()
    assert sign_in(client, who.email).status_code == 302
    return client


def _post(client: FlaskClient, path: str, page: str, data: dict[str, Any], **kwargs: Any) -> Any:
    return client.post(path, data={"csrf_token": csrf_token(client, page), **data}, **kwargs)


def _sign_fields(who: Any) -> dict[str, str]:
    return {"signature_user_id": who.email, "signature_password": TEST_PASSWORD}


def _create_template_materials(team: RecipeTeam) -> None:
    """An administrator puts the template's materials into the materials master first."""
    with team.session(team.author) as session:
        missing = services.missing_template_materials(session, "cho-fed-batch-sub50")
    with _admin(team) as session:
        for item in missing:
            make_material(session, code=item["code"], name=item["name"], unit=item["unit"])


def _admin(team: RecipeTeam) -> Any:
    from app.core.tenancy import tenant_transaction

    return tenant_transaction(team.tenant.ref, actor=admin_actor(team.tenant))


def _version_id(response: Any) -> int:
    match = re.search(r"/recipes/versions/(\d+)", response.headers["Location"])
    assert match, response.headers.get("Location")
    return int(match.group(1))


def test_fed_batch_template_import_change_review_and_qa_approval_over_http(app, recipe_team: RecipeTeam) -> None:
    team = recipe_team
    _create_template_materials(team)
    slug = team.tenant.ref.slug
    base = f"/t/{slug}/recipes"
    author = _client(app, team.author)

    page = author.get(f"{base}/templates")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "CHO" in html and html.count('data-template="') == 8
    imported = _post(author, f"{base}/templates/cho-fed-batch-sub50/import", f"{base}/templates", {})
    assert imported.status_code == 302
    version_id = _version_id(imported)
    edit = f"{base}/versions/{version_id}/edit"

    # The editor opens on the parameter; a typo is refused with the field's path and nothing is saved.
    form_page = author.get(f"{edit}?sel=param:temp_production")
    assert form_page.status_code == 200
    assert 'name="original_key" value="temp_production"' in form_page.get_data(as_text=True)
    with team.session(team.author) as session:
        version = services.get_version(session, version_id)
        param = next(p for p in version.document["formula"]["parameters"] if p["key"] == "temp_production")
        index = version.document["formula"]["parameters"].index(param)
    fields = {"op": "upsert_parameter", "sel": "param:temp_production", "revision": "1",
              "original_key": "temp_production", "key": "temp_production", "name": param["name"],
              "type": param["type"], "unit": param["unit"], "criticality": "critical", "scaling_rule": "fixed",
              "low": "32", "alarm_low": "32.5", "target": "33", "alarm_high": "33.5", "high": "33,8",
              "description": ""}
    refused = _post(author, edit, f"{edit}?sel=param:temp_production", fields)
    assert refused.status_code == 422
    assert f"formula.parameters[{index}].high" in refused.get_data(as_text=True)
    assert "is not a number" in refused.get_data(as_text=True)
    # Changing the limit for real: saved as revision 2, shown as a limit change against the template.
    saved = _post(author, edit, f"{edit}?sel=param:temp_production", {**fields, "high": "33.8"})
    assert saved.status_code == 302
    with team.session(team.author) as session:
        version = services.get_version(session, version_id)
        assert version.revision == 2
    page = author.get(f"{base}/versions/{version_id}?against=template").get_data(as_text=True)
    assert "formula parameter &#39;temp_production&#39; high limit" in page
    assert "FB-SC-001" in page and "not applicable" in page and "passed" in page  # template scenarios re-run

    # Route for review (author), review (second engineer), approve (QA).
    routed = _post(author, f"{base}/versions/{version_id}/submit", f"{base}/versions/{version_id}",
                   {**_sign_fields(team.author), "reason": "tighter production temperature"})
    assert routed.status_code == 302, routed.get_data(as_text=True)
    reviewer = _client(app, team.reviewer)
    assert _post(reviewer, f"{base}/versions/{version_id}/review", f"{base}/versions/{version_id}",
                 _sign_fields(team.reviewer)).status_code == 302
    qa = _client(app, team.qa)
    qa_page = qa.get(f"{base}/versions/{version_id}").get_data(as_text=True)
    assert 'id="approve-form"' in qa_page and "temp_production" in qa_page
    approved = _post(qa, f"{base}/versions/{version_id}/approve", f"{base}/versions/{version_id}",
                     _sign_fields(team.qa))
    assert approved.status_code == 302
    final = qa.get(f"{base}/versions/{version_id}").get_data(as_text=True)
    assert "effective now" in final
    assert final.count('class="signature "') == 3 and final.count("badge ok\">valid") == 3
    assert "Quentin Quality" in final and "Approved" in final
    listing = qa.get(f"{base}/").get_data(as_text=True)
    assert "USP-CHO-FB-50L" in listing and "since" in listing


def test_author_cannot_approve_and_operator_cannot_open_the_editor(app, recipe_team: RecipeTeam) -> None:
    team = recipe_team
    _create_template_materials(team)
    with team.session(team.author) as session:
        version_id = services.import_template(session, template_id="cho-fed-batch-sub50").id
    base = f"/t/{team.tenant.ref.slug}/recipes"
    author = _client(app, team.author)
    assert _post(author, f"{base}/versions/{version_id}/submit", f"{base}/versions/{version_id}",
                 _sign_fields(team.author)).status_code == 302
    # The author's role lacks recipes.approve: the route is refused before anything is signed.
    token = csrf_token(author, f"{base}/versions/{version_id}")
    assert author.post(f"{base}/versions/{version_id}/approve",
                       data={"csrf_token": token, **_sign_fields(team.author)}).status_code == 403
    # The same author cannot review their own version either (separation of duties), with a reason shown.
    refused = author.post(f"{base}/versions/{version_id}/review", data={"csrf_token": token,
                                                                          **_sign_fields(team.author)})
    assert refused.status_code == 403 and "separation of duties" in refused.get_data(as_text=True)
    operator = _client(app, team.operator)
    assert operator.get(f"{base}/versions/{version_id}").status_code == 200
    assert operator.get(f"{base}/versions/{version_id}/edit").status_code == 403


def test_editor_shows_validation_messages_that_point_at_the_element(app, recipe_team: RecipeTeam) -> None:
    team = recipe_team
    _create_template_materials(team)
    with team.session(team.author) as session:
        version_id = services.import_template(session, template_id="cho-fed-batch-sub50").id
    base = f"/t/{team.tenant.ref.slug}/recipes/versions/{version_id}"
    author = _client(app, team.author)
    with team.session(team.author) as session:
        doc = services.get_version(session, version_id).document
    index = next(i for i, p in enumerate(doc["formula"]["parameters"]) if p["key"] == "ph")
    ph = doc["formula"]["parameters"][index]
    # A critical parameter without limits.
    response = _post(author, f"{base}/edit", f"{base}/edit?sel=param:ph", {
        "op": "upsert_parameter", "sel": "param:ph", "original_key": "ph", "key": "ph", "name": ph["name"],
        "type": ph["type"], "unit": ph["unit"], "criticality": "critical", "scaling_rule": "fixed"})
    assert response.status_code == 302
    # A material requirement with no quantity (a new BOM line refuses an empty quantity outright).
    no_qty = _post(author, f"{base}/edit", f"{base}/edit?sel=material:", {
        "op": "upsert_material", "sel": "material:", "code": "NEW-1", "name": "New", "unit": "kg", "quantity": ""})
    assert no_qty.status_code == 422 and "has no quantity" in no_qty.get_data(as_text=True)
    # An unreachable step: a step that waits for itself.
    response = _post(author, f"{base}/edit", f"{base}/edit?sel=phase:medium_sample", {
        "op": "update_phase", "sel": "phase:medium_sample", "key": "medium_sample", "name": "Medium sample",
        "mandatory": "yes", "depends_on": "medium_sample", "sign_performed": "yes", "material_rows": "0"})
    assert response.status_code == 302
    page = author.get(f"{base}/edit").get_data(as_text=True)
    messages = re.findall(r'<li class="msg-(error|warning)">(.*?)</li>', page, re.S)
    text_of = " ".join(re.sub(r"<[^>]+>", "", body) for _, body in messages)
    assert f"formula.parameters[{index}]" in text_of and "critical" in text_of
    assert "medium_sample" in text_of and ("cycle" in text_of or "never" in text_of or "itself" in text_of)
    # Each message links to the editor panel of its element.
    assert "sel=param:ph" in page and "sel=phase:medium_sample" in page
    # Submission is refused while errors remain; the page says why, nothing changes.
    refused = _post(author, f"/t/{team.tenant.ref.slug}/recipes/versions/{version_id}/submit",
                    f"/t/{team.tenant.ref.slug}/recipes/versions/{version_id}", _sign_fields(team.author))
    assert refused.status_code == 422 and "editor reports errors" in refused.get_data(as_text=True)


def test_editor_structure_operations_reorder_and_add(app, recipe_team: RecipeTeam) -> None:
    team = recipe_team
    _create_template_materials(team)
    with team.session(team.author) as session:
        version_id = services.import_template(session, template_id="cho-fed-batch-sub50").id
    base = f"/t/{team.tenant.ref.slug}/recipes/versions/{version_id}"
    author = _client(app, team.author)

    def steps() -> list[str]:
        with team.session(team.author) as session:
            doc = services.get_version(session, version_id).document
        return [ph["key"] for up in doc["procedure"]["unit_procedures"] for op in up["operations"]
                for ph in op["phases"]]

    before = steps()
    assert _post(author, f"{base}/edit", f"{base}/edit?sel=structure", {
        "op": "move_phase", "sel": "structure", "key": before[2], "direction": "up"}).status_code == 302
    after = steps()
    assert after[1:3] == [before[2], before[1]]
    assert _post(author, f"{base}/edit", f"{base}/edit?sel=structure", {
        "op": "add_phase", "sel": "structure", "unit_procedure": "harvest", "operation": "clarification",
        "key": "filter_integrity", "name": "Filter integrity test", "after": "depth_filtration"}).status_code == 302
    assert steps().index("filter_integrity") == steps().index("depth_filtration") + 1
    capture = _post(author, f"{base}/edit", f"{base}/edit?sel=newcapture:filter_integrity", {
        "op": "upsert_capture", "sel": "newcapture:filter_integrity", "phase": "filter_integrity", "kind": "number",
        "key": "bubble_point", "label": "Bubble point", "required": "yes", "unit": "bar", "low": "3.2",
        "criticality": "critical"})
    assert capture.status_code == 302
    with team.session(team.author) as session:
        doc = services.get_version(session, version_id).document
    phase = next(ph for up in doc["procedure"]["unit_procedures"] for op in up["operations"] for ph in op["phases"]
                 if ph["key"] == "filter_integrity")
    assert phase["captures"][0]["limits"]["low"] == 3.2 and phase["captures"][0]["unit"] == "bar"
    assert author.get(f"{base}/edit?sel=capture:filter_integrity:bubble_point").status_code == 200


def test_import_refuses_malformed_or_unknown_material_files_and_stores_nothing(app, recipe_team: RecipeTeam) -> None:
    team = recipe_team
    base = f"/t/{team.tenant.ref.slug}/recipes"
    author = _client(app, team.author)
    with team.session(team.author) as session:
        template_doc = services.find_template("cho-fed-batch-sub50")[0].document
    from app.recipes.batchml import to_batchml
    from app.recipes.document import to_data

    data = to_data(template_doc)

    def upload(body: bytes, name: str) -> Any:
        import io

        return _post(author, f"{base}/import", f"{base}/import",
                     {"file": (io.BytesIO(body), name)}, content_type="multipart/form-data")

    cases = [
        (b'{"schema": "batchline.recipe/1", "header": {', "broken.json", "line 1 column"),
        (json.dumps({**data, "header": {**data["header"], "batch_size": {"value": 50, "unit": "Lx"}}}).encode(),
         "unit.json", "header.batch_size.unit"),
        (json.dumps(data).encode(), "materials.json", "materials[0].code"),
        (to_batchml(template_doc).encode(), "materials.xml", "MasterRecipe/Formula/Parameter["),
        (to_batchml(template_doc).replace("<UnitOfMeasure>L</UnitOfMeasure>", "<UnitOfMeasure>Lx</UnitOfMeasure>",
                                          1).encode(), "unit.xml", "UnitOfMeasure"),
        (b"<MasterRecipe><ID>x</ID>", "broken.xml", "malformed XML"),
    ]
    for body, name, pointer in cases:
        response = upload(body, name)
        text = response.get_data(as_text=True)
        assert response.status_code == 422, (name, text[:500])
        assert "Nothing was imported" in text and pointer in text, (name, re.findall(r"<li>.*?</li>", text)[:5])
    with team.session(team.author) as session:
        assert session.scalar(select(func.count()).select_from(MasterRecipe)) == 0
        assert session.scalar(select(func.count()).select_from(RecipeVersion)) == 0
    # With its materials in the master, the same JSON file imports.
    _create_template_materials(team)
    assert upload(json.dumps(data).encode(), "cho.json").status_code == 302


def test_scaled_preview_is_shown_before_a_batch(app, recipe_team: RecipeTeam) -> None:
    team = recipe_team
    _create_template_materials(team)
    with team.session(team.author) as session:
        version_id = services.import_template(session, template_id="cho-fed-batch-sub50").id
    author = _client(app, team.author)
    page = author.get(f"/t/{team.tenant.ref.slug}/recipes/versions/{version_id}?batch_size=25&batch_unit=L")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Factor 0.5" in html
    assert re.search(r"<td>50 L</td><td><strong>25 L</strong>", html)
    too_big = author.get(f"/t/{team.tenant.ref.slug}/recipes/versions/{version_id}?batch_size=500&batch_unit=L")
    assert "500" in too_big.get_data(as_text=True) and 'role="alert"' in too_big.get_data(as_text=True)
    wrong_unit = author.get(f"/t/{team.tenant.ref.slug}/recipes/versions/{version_id}?batch_size=25&batch_unit=kg")
    assert "kg" in wrong_unit.get_data(as_text=True) and "flash error" in wrong_unit.get_data(as_text=True)
