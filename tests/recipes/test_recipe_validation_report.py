"""The validation report: every template scenario run on this instance, stored with its evidence hash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from app.audit.services import verify_chain
from app.recipes import report, services
from app.recipes.models import MasterRecipe, ValidationRun
from tests.conftest import sign_in
from tests.recipes.conftest import RecipeTeam, import_cho


def _pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout
    return " ".join(out.split())  # table cells wrap: compare words, not lines


def _adapt(team: RecipeTeam) -> int:
    version_id = import_cho(team)
    with team.session(team.author) as session:
        version = services.get_version(session, version_id)
        param = next(p for p in version.document["formula"]["parameters"] if p["key"] == "temp_production")
        fields = {"original_key": "temp_production", "key": "temp_production", "name": param["name"],
                  "type": param["type"], "unit": param["unit"], "criticality": "critical", "scaling_rule": "fixed",
                  "low": "32", "alarm_low": "32.5", "target": "33", "alarm_high": "33.5", "high": "33.8"}
        services.edit_draft(session, version_id=version_id, op="upsert_parameter", fields=fields)
    return version_id


def test_run_covers_every_template_requirement_and_the_adaptation(recipe_team: RecipeTeam, tmp_path: Path) -> None:
    team = recipe_team
    _adapt(team)
    with team.session(team.qa) as session:
        run = report.run_validation(session, tenant=team.tenant.ref)
        run_id = run.id
        assert report.run_passed(run) and report.verify_run(run)
        templates = run.results["templates"]
        assert len(templates) == 8 and all(t["passed"] for t in templates)
        assert all(all(t["checks"].values()) for t in templates)
        total = sum(len(t["scenarios"]) for t in templates)
        assert total >= 70
        requirement_ids = [r["id"] for t in templates for r in t["requirements"]]
        assert requirement_ids and all(r["result"] == "passed" for t in templates for r in t["requirements"])
        (adaptation,) = run.results["adaptations"]
        assert adaptation["recipe_code"] == "USP-CHO-FB-50L"
        assert [c["label"] for c in adaptation["changes"]] == ["formula parameter 'temp_production' high limit"]
        statuses = {s["scenario"]: s["status"] for s in adaptation["scenarios"]}
        assert statuses["FB-SC-001"] == "not_applicable" and statuses["FB-SC-003"] == "passed"
        assert run.scenarios_run == total + sum(1 for s in statuses.values() if s != "not_applicable")
        env = run.environment
        assert env["migrations"]["at_head"] and env["packages"]["sqlalchemy"] and "PostgreSQL" in env["postgresql"]
        # The on-instance checks wrote nothing that stays: only this tenant's own recipe exists, and the trail holds.
        assert session.scalar(select(func.count()).select_from(MasterRecipe)) == 1
        assert verify_chain(session).ok
        html = report.render_html(run, tenant=team.tenant.ref)
        pdf = report.render_pdf(run, tenant=team.tenant.ref)
    assert run.evidence_hash in html and "PASSED" in html and "recomputed and matching" in html
    text_ = _pdf_text(pdf, tmp_path)
    assert f"Validation report #{run_id}" in text_ and "PASSED" in text_
    assert run.evidence_hash[:32] in text_.replace("\n", "").replace(" ", "")
    for prefix in ("FF", "MB", "CT", "FB", "EC", "MR", "PA", "TF"):  # every template's requirements and scenarios
        assert f"{prefix}-REQ-001" in text_ and f"{prefix}-SC-001" in text_
    assert "USP-CHO-FB-50L v1 (draft)" in text_ and "temp_production' high limit: 34.0 → 33.8" in text_


def test_a_stored_run_altered_outside_the_app_no_longer_verifies(app, recipe_team: RecipeTeam) -> None:
    team = recipe_team
    with team.session(team.qa) as session:
        run_id = report.run_validation(session, tenant=team.tenant.ref).id
    with pytest.raises(DBAPIError, match=r"never deleted or overwritten|permission denied"), \
            team.session(team.qa) as session:
        session.execute(text("UPDATE recipe_validation_runs SET scenarios_passed = 0 WHERE id = :id"), {"id": run_id})
    owner = app.extensions["batchline.db"].owner
    with owner.begin() as conn:  # a superuser bypassing triggers, as an attacker with database access could
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f'SET LOCAL search_path TO "{team.tenant.ref.schema}"'))
        conn.execute(text("UPDATE recipe_validation_runs SET results = jsonb_set(results, '{templates,0,passed}', "
                          "'true') , environment = jsonb_set(environment, '{python}', '\"9.9\"') WHERE id = :id"),
                     {"id": run_id})
    with team.session(team.qa) as session:
        run = session.get_one(ValidationRun, run_id)
        assert not report.verify_run(run)
        assert "DOES NOT MATCH" in report.render_html(run, tenant=team.tenant.ref)


def test_validation_screen_runs_and_downloads_the_pdf(app, recipe_team: RecipeTeam, tmp_path: Path) -> None:
    team = recipe_team
    from tests.conftest import RequestIsolatedClient, csrf_token

    app.test_client_class = RequestIsolatedClient
    qa = app.test_client()
    assert sign_in(qa, team.qa.email).status_code == 302
    base = f"/t/{team.tenant.ref.slug}/recipes/validation"
    assert qa.get(base).status_code == 200
    ran = qa.post(f"{base}/run", data={"csrf_token": csrf_token(qa, base)})
    assert ran.status_code == 302
    page = qa.get(ran.headers["Location"])
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "PASSED" in html and 'data-template="car-t-autologous"' in html
    pdf = qa.get(ran.headers["Location"] + ".pdf")
    assert pdf.mimetype == "application/pdf" and "PASSED" in _pdf_text(pdf.data, tmp_path)
    # An engineer may read reports but not run them.
    engineer = app.test_client()
    assert sign_in(engineer, team.author.email).status_code == 302
    assert engineer.post(f"{base}/run", data={"csrf_token": csrf_token(engineer, base)}).status_code == 403


def test_cli_writes_html_and_pdf_and_exits_zero_when_everything_passes(app, recipe_team: RecipeTeam,
                                                                         tmp_path: Path) -> None:
    team = recipe_team
    runner = app.test_cli_runner()
    result = runner.invoke(args=["validation", "report", "--tenant", team.tenant.ref.slug, "--pdf",
                                 str(tmp_path / "r.pdf"), "--html", str(tmp_path / "r.html"),
                                 "--performed-by", "Quentin Quality"])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and "evidence sha256" in result.output
    digest = result.output.split("evidence sha256 ")[1].split()[0]
    assert digest in (tmp_path / "r.html").read_text()
    pdf_text = _pdf_text((tmp_path / "r.pdf").read_bytes(), tmp_path)
    assert "Quentin Quality" in pdf_text and "Template library" in pdf_text
    missing = runner.invoke(args=["validation", "report", "--tenant", "no-such-tenant"])
    assert missing.exit_code == 2 and "no tenant" in missing.output
