"""Recipe version lifecycle on the real database: signatures drive the status, approved versions are frozen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.audit.models import AuditEvent
from app.core.errors import Conflict, NotFound, ValidationError
from app.esign.errors import RouteViolation, SignatureRefused, SignerNotPermitted
from app.recipes import services
from app.recipes.models import MasterRecipe, RecipeVersion, RecipeVersionDiff, RecipeVersionRevision
from app.recipes.templates import TEMPLATES_DIR, read_index
from tests.conftest import TEST_PASSWORD
from tests.recipes.conftest import RecipeTeam, import_cho


def _param(version: RecipeVersion, key: str) -> dict:
    return next(p for p in version.document["formula"]["parameters"] if p["key"] == key)


def _limit_fields(param: dict, **changes: float) -> dict[str, str]:
    """The parameter form as the editor posts it, with some limits changed."""
    fields = {"original_key": param["key"], "key": param["key"], "name": param["name"], "type": param["type"],
              "unit": param["unit"], "criticality": param["criticality"], "scaling_rule": param["scaling"]["rule"],
              "reference_batch_size": str(param["scaling"].get("reference_batch_size") or ""),
              "reference_unit": param["scaling"].get("reference_unit") or "", "description": param["description"]}
    for name in ("target", "low", "high", "alarm_low", "alarm_high"):
        value = changes.get(name, param.get(name))
        fields[name] = "" if value is None else repr(value)
    return fields


def _change_limit(team: RecipeTeam, version_id: int, key: str = "temp_production", **limits: float) -> RecipeVersion:
    with team.session(team.author) as session:
        version = services.get_version(session, version_id)
        fields = _limit_fields(_param(version, key), **limits)
        version, _ = services.edit_draft(session, version_id=version_id, op="upsert_parameter", fields=fields,
                                         expected_revision=version.revision)
        return version


def test_template_import_keeps_provenance_and_history(recipe_team: RecipeTeam) -> None:
    version_id = import_cho(recipe_team)
    entry = next(e for e in read_index(TEMPLATES_DIR)["templates"] if e["id"] == "cho-fed-batch-sub50")
    with recipe_team.session(recipe_team.author) as session:
        version = services.get_version(session, version_id)
        master = session.get_one(MasterRecipe, version.master_recipe_id)
        assert (version.status, version.version, version.revision) == ("draft", 1, 1)
        assert (master.template_id, master.template_version, master.template_hash) == (
            "cho-fed-batch-sub50", entry["version"], entry["sha256"])
        assert (version.template_id, version.template_hash) == ("cho-fed-batch-sub50", entry["sha256"])
        assert version.content_hash == entry["recipe_content_hash"]
        assert version.recipe_code == "USP-CHO-FB-50L" and version.batch_size == 50 and version.batch_size_unit == "L"
        assert services.template_diff(session, version) == []
        events = session.scalars(select(AuditEvent.record_type).where(AuditEvent.record_type.in_(
            ("master_recipe", "recipe_version", "material")))).all()
        assert events.count("master_recipe") == 1 and events.count("recipe_version") == 1
        assert events.count("material") == 8  # the template's materials were created in the same transaction


def test_full_route_author_review_qa_approval(recipe_team: RecipeTeam) -> None:
    team = recipe_team
    version_id = import_cho(team)
    _change_limit(team, version_id, high=33.8)
    with team.session(team.qa) as session, pytest.raises(Conflict, match="only a version in review"):
        services.sign_version(session, version_id=version_id, meaning="approved", user_id=team.qa.user_id,
                              password=TEST_PASSWORD)
    with team.session(team.author) as session, pytest.raises(SignatureRefused):
        services.sign_version(session, version_id=version_id, meaning="authored", user_id=team.author.user_id,
                              password="wrong password")
    assert team.sign(team.author, version_id, "authored").status == "in_review"
    with team.session(team.author) as session, pytest.raises(Conflict, match="cannot be changed"):
        services.edit_draft(session, version_id=version_id, op="upsert_parameter",
                            fields=_limit_fields(_param(services.get_version(session, version_id),
                                                        "temp_production"), high=34.5))
    # The author can neither review nor approve their own change; QA cannot approve before the review.
    with pytest.raises(SignerNotPermitted, match="separation of duties"):
        team.sign(team.author, version_id, "reviewed")
    with pytest.raises(RouteViolation, match="awaiting 'reviewed'"):
        team.sign(team.qa, version_id, "approved")
    with pytest.raises(SignerNotPermitted, match="signed by Process Engineer or QA"):
        team.sign(team.operator, version_id, "reviewed")
    assert team.sign(team.reviewer, version_id, "reviewed", reason="limits checked").status == "reviewed"
    with pytest.raises(SignerNotPermitted, match="signed by QA"):
        team.sign(team.reviewer, version_id, "approved")
    approved = team.sign(team.qa, version_id, "approved")
    assert approved.status == "approved" and approved.approved_at is not None
    assert approved.effective_from == approved.approved_at and approved.effective_until is None
    with team.session(team.qa) as session:
        assert services.effective_version(session, approved.master_recipe_id, datetime.now(UTC)).id == version_id
        with pytest.raises(NotFound):
            services.effective_version(session, approved.master_recipe_id, approved.approved_at - timedelta(1))
        checks = services.signatures(session, services.get_version(session, version_id))
        assert [(c.signature.meaning, c.signature.printed_name, c.valid) for c in checks] == [
            ("authored", "Paula Process", True), ("reviewed", "Rita Reviewer", True),
            ("approved", "Quentin Quality", True)]
        stored = services.stored_diffs(session, services.get_version(session, version_id))
        assert [(d.meaning, d.against) for d in stored] == [("reviewed", "template"), ("approved", "template")]
        assert stored[1].signature_id == checks[2].signature.id
        assert [(c["label"], c["old"], c["new"]) for c in stored[1].diff] == [
            ("formula parameter 'temp_production' high limit", 34.0, 33.8)]
        statuses = session.scalars(select(AuditEvent.new_values["status"].astext).where(
            AuditEvent.record_type == "recipe_version", AuditEvent.record_id == str(version_id),
            AuditEvent.action == "status_change").order_by(AuditEvent.seq)).all()
        assert statuses == ["in_review", "reviewed", "approved"]


def test_rejection_returns_the_version_to_draft_and_a_new_cycle_starts(recipe_team: RecipeTeam) -> None:
    team = recipe_team
    version_id = import_cho(team)
    team.sign(team.author, version_id, "authored")
    with team.session(team.reviewer) as session, pytest.raises(ValidationError, match="reason is required"):
        services.reject_version(session, version_id=version_id, user_id=team.reviewer.user_id,
                                password=TEST_PASSWORD, reason="")
    with team.session(team.reviewer) as session:
        version = services.reject_version(session, version_id=version_id, user_id=team.reviewer.user_id,
                                          password=TEST_PASSWORD, reason="feed volume must follow SOP-123")
        assert version.status == "draft"
    _change_limit(team, version_id, key="feed_volume", high=2.2)
    assert team.sign(team.author, version_id, "authored").status == "in_review"
    assert team.sign(team.reviewer, version_id, "reviewed").status == "reviewed"
    assert team.sign(team.qa, version_id, "approved").status == "approved"


def test_submission_is_refused_while_the_editor_reports_errors(recipe_team: RecipeTeam) -> None:
    team = recipe_team
    version_id = import_cho(team)
    with team.session(team.author) as session:
        version = services.get_version(session, version_id)
        fields = _limit_fields(_param(version, "temp_production"))
        fields.update(low="", high="", alarm_low="", alarm_high="")  # a critical parameter without limits
        services.edit_draft(session, version_id=version_id, op="upsert_parameter", fields=fields)
    with pytest.raises(ValidationError, match="editor reports errors") as caught:
        team.sign(team.author, version_id, "authored")
    assert any(p.path.startswith("formula.parameters[") and "critical" in p.message
               for p in caught.value.problems)  # type: ignore[attr-defined]
    with team.session(team.author) as session:
        assert services.get_version(session, version_id).status == "draft"


def test_approved_versions_are_immutable_in_the_service_and_the_database(recipe_team: RecipeTeam) -> None:
    team = recipe_team
    version_id = import_cho(team)
    for who, meaning in ((team.author, "authored"), (team.reviewer, "reviewed"), (team.qa, "approved")):
        team.sign(who, version_id, meaning)
    with team.session(team.author) as session, pytest.raises(Conflict, match="create a new draft version"):
        services.edit_draft(session, version_id=version_id, op="set_header", fields={"product_name": "x"})
    refused = [
        ("UPDATE recipe_versions SET document = jsonb_set(document, '{header,product_name}', '\"x\"') "
         "WHERE id = :id", "cannot be changed"),
        ("UPDATE recipe_versions SET content_hash = repeat('0', 64) WHERE id = :id", "cannot be changed"),
        ("UPDATE recipe_versions SET status = 'draft' WHERE id = :id", "status approved cannot become draft"),
        ("UPDATE recipe_versions SET effective_from = now() + interval '1 day' WHERE id = :id", "set once"),
        ("DELETE FROM recipe_versions WHERE id = :id", "permission denied|never deleted"),
        ("UPDATE recipe_version_revisions SET note = 'x' WHERE version_id = :id", "permission denied"),
    ]
    for statement, message in refused:
        with pytest.raises(DBAPIError, match=message), team.session(team.qa) as session:
            session.execute(text(statement), {"id": version_id})
    # Even the schema owner (migrations, a DBA) is stopped by the trigger, not only the tenant role.
    db = team.tenant
    from flask import current_app

    owner = current_app.extensions["batchline.db"].owner
    with pytest.raises(DBAPIError, match="cannot be changed"), owner.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path TO "{db.ref.schema}"'))
        conn.execute(text("UPDATE recipe_versions SET document = '{}'::jsonb WHERE id = :id"), {"id": version_id})
    with team.session(team.qa) as session:
        version = services.get_version(session, version_id)
        assert services.document_of(version) is not None and version.status == "approved"


def test_a_new_version_needs_a_reason_and_supersedes_the_old_one_at_approval(recipe_team: RecipeTeam) -> None:
    team = recipe_team
    first = import_cho(team)
    for who, meaning in ((team.author, "authored"), (team.reviewer, "reviewed"), (team.qa, "approved")):
        team.sign(who, first, meaning)
    with team.session(team.author) as session, pytest.raises(ValidationError, match="change reason is required"):
        services.new_draft_version(session, version_id=first, change_reason=" ")
    with team.session(team.author) as session:
        second = services.new_draft_version(session, version_id=first, change_reason="CC-042: tighter temperature")
        assert (second.version, second.parent_version_id, second.status) == (2, first, "draft")
        assert second.template_id == "cho-fed-batch-sub50"
        second_id = second.id
    with team.session(team.author) as session, pytest.raises(Conflict, match="already has version 2 in draft"):
        services.new_draft_version(session, version_id=first, change_reason="another")
    _change_limit(team, second_id, high=33.6)
    with team.session(team.author) as session:
        diff = services.version_diff(session, services.get_version(session, second_id))
        assert diff.against == "version" and diff.against_version.id == first
        assert [c.label for c in diff.changes] == ["formula parameter 'temp_production' high limit"]
    for who, meaning in ((team.author, "authored"), (team.reviewer, "reviewed"), (team.qa, "approved")):
        team.sign(who, second_id, meaning)
    with team.session(team.qa) as session:
        old, new = services.get_version(session, first), services.get_version(session, second_id)
        assert old.status == "superseded" and old.effective_until == new.effective_from
        master_id = new.master_recipe_id
        assert services.effective_version(session, master_id, datetime.now(UTC)).id == second_id
        # A batch planned before the change still finds the version that was effective then.
        assert services.effective_version(session, master_id, new.effective_from - timedelta(microseconds=1)).id \
            == first
        assert session.scalar(select(RecipeVersionDiff.against).where(RecipeVersionDiff.version_id == second_id)
                              .limit(1)) == "version"


def test_a_future_effective_date_keeps_the_previous_version_in_force(recipe_team: RecipeTeam) -> None:
    team = recipe_team
    first = import_cho(team)
    for who, meaning in ((team.author, "authored"), (team.reviewer, "reviewed"), (team.qa, "approved")):
        team.sign(who, first, meaning)
    with team.session(team.author) as session:
        second = services.new_draft_version(session, version_id=first, change_reason="from next month").id
        header = services.get_version(session, second).document["header"]
        starts = (datetime.now(UTC) + timedelta(days=30)).date()
        services.edit_draft(session, version_id=second, op="set_header", fields={
            "product_code": header["product_code"], "product_name": header["product_name"],
            "batch_size": "50", "batch_unit": "L", "batch_min": "25", "batch_max": "50",
            "effective_date": starts.isoformat(), "description": header["description"]})
    for who, meaning in ((team.author, "authored"), (team.reviewer, "reviewed"), (team.qa, "approved")):
        team.sign(who, second, meaning)
    with team.session(team.qa) as session:
        new = services.get_version(session, second)
        assert new.effective_from == datetime(starts.year, starts.month, starts.day, tzinfo=UTC)
        assert services.effective_version(session, new.master_recipe_id, datetime.now(UTC)).id == first
        assert services.effective_version(session, new.master_recipe_id, new.effective_from).id == second


def test_retiring_ends_the_effective_period_and_needs_a_reason(recipe_team: RecipeTeam) -> None:
    team = recipe_team
    version_id = import_cho(team)
    for who, meaning in ((team.author, "authored"), (team.reviewer, "reviewed"), (team.qa, "approved")):
        team.sign(who, version_id, meaning)
    with team.session(team.qa) as session, pytest.raises(ValidationError, match="reason"):
        services.retire_version(session, version_id=version_id, reason="")
    with team.session(team.qa) as session:
        version = services.retire_version(session, version_id=version_id, reason="product discontinued")
        assert version.status == "retired" and version.effective_until is not None
    with team.session(team.qa) as session, pytest.raises(NotFound):
        services.effective_version(session, version.master_recipe_id, datetime.now(UTC) + timedelta(seconds=1))


def test_every_draft_edit_is_kept_as_a_revision(recipe_team: RecipeTeam) -> None:
    team = recipe_team
    version_id = import_cho(team)
    _change_limit(team, version_id, high=33.9)
    _change_limit(team, version_id, high=33.7)
    with team.session(team.author) as session:
        revisions = session.scalars(select(RecipeVersionRevision).where(RecipeVersionRevision.version_id == version_id)
                                    .order_by(RecipeVersionRevision.revision)).all()
        highs = [next(p["high"] for p in r.document["formula"]["parameters"] if p["key"] == "temp_production")
                 for r in revisions]
        assert highs == [34.0, 33.9, 33.7]
        assert services.get_version(session, version_id).revision == 3
    with team.session(team.author) as session, pytest.raises(Conflict, match="saved by someone else"):
        version = services.get_version(session, version_id)
        services.edit_draft(session, version_id=version_id, op="upsert_parameter", expected_revision=2,
                            fields=_limit_fields(_param(version, "temp_production"), high=33.5))
