"""The validation report: every template's verification scenarios run on this instance, as IQ/OQ evidence.

`run_validation` works inside one tenant transaction and stores a `ValidationRun` holding:

* the **environment**: Python, the installed package versions, the PostgreSQL server, the migration revision
  of the control plane and of the tenant's schema against the code's heads, the template library's index hash;
* per template: its content hash recomputed now against the library index (installation check), then, on this
  instance's database, the recipe stored as a version row and read back (JSONB round trip, hash unchanged), every
  scenario run on the stored document (operational check), and the JSON and BatchML export → import round
  trips (hash unchanged); each requirement is traced to its scenarios and their results. The rows written for
  the check live in a savepoint that is rolled back: the tenant's recipes are untouched;
* per tenant recipe imported from a template: the template's scenarios whose assumptions still hold re-run on
  its latest version (`app.recipes.adaptation`), the others listed with what changed.

The **evidence hash** is the SHA-256 of the canonical JSON of environment and results; the report prints it,
and `verify_run` recomputes it from the stored run, so a QA file can be checked against the instance.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import sys
from typing import Any

from flask import render_template
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.audit.services import current_actor, record
from app.billing.services import require_feature
from app.core.tenancy import TenantRef, control_session
from app.recipes import services
from app.recipes.adaptation import requirement_results, run_scenario
from app.recipes.batchml import from_batchml, to_batchml
from app.recipes.document import canonical_json, content_hash, parse_document, to_data
from app.recipes.models import MasterRecipe, RecipeVersion, ValidationRun
from app.recipes.templates import INDEX_NAME, TEMPLATES_DIR, read_index, template_hash

#: Packages whose versions the report lists (what the system's behaviour depends on).
PACKAGES = ("batchline", "flask", "sqlalchemy", "alembic", "psycopg", "pydantic", "pint", "defusedxml", "weasyprint",
            "rq", "redis", "argon2-cffi", "gunicorn")


def _package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment(session: Session, tenant: TenantRef) -> dict[str, Any]:
    """Describe the instance the report runs on."""
    from app.tenancy.schema import alembic_config, head_revision

    with control_session() as control:
        public_revision = control.execute(text("SELECT version_num FROM public.alembic_version")).scalar()
    tenant_revision = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    heads = {"public": head_revision(alembic_config("public")), "tenant": head_revision(alembic_config("tenant"))}
    index_bytes = (TEMPLATES_DIR / INDEX_NAME).read_bytes()
    return {
        "generated_at": session.execute(text("SELECT now()")).scalar_one().isoformat(),
        "tenant": {"id": tenant.id, "slug": tenant.slug, "schema": tenant.schema},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "postgresql": session.execute(text("SELECT version()")).scalar_one(),
        "packages": _package_versions(),
        "migrations": {"public": public_revision, "public_head": heads["public"], "tenant": tenant_revision,
                       "tenant_head": heads["tenant"],
                       "at_head": public_revision == heads["public"] and tenant_revision == heads["tenant"]},
        "template_library": {"index_sha256": hashlib.sha256(index_bytes).hexdigest(),
                             "templates": len(read_index(TEMPLATES_DIR)["templates"])},
    }


def _stored_round_trip(session: Session, doc: Any) -> tuple[Any, str]:
    """Store a document as a version row in a savepoint, read it back from the database, then roll back."""
    savepoint = session.begin_nested()
    try:
        master = MasterRecipe(code=f"~validation-{content_hash(doc)[:16]}", name="validation check",
                              product_code=doc.header.product_code)
        session.add(master)
        session.flush()
        row = RecipeVersion(master_recipe_id=master.id, version=1, status="draft", document=to_data(doc),
                            content_hash=content_hash(doc), recipe_code=doc.header.recipe_code,
                            product_code=doc.header.product_code, product_name=doc.header.product_name,
                            batch_size=doc.header.batch_size.value, batch_size_unit=doc.header.batch_size.unit)
        session.add(row)
        session.flush()
        stored = session.execute(text("SELECT document, content_hash FROM recipe_versions WHERE id = :id"),
                                 {"id": row.id}).one()
        return parse_document(stored.document), stored.content_hash
    finally:
        savepoint.rollback()


def _template_result(session: Session, template: Any, indexed: dict[str, Any]) -> dict[str, Any]:
    digest = template_hash(template.path)
    doc = template.document
    stored_doc, stored_hash = _stored_round_trip(session, doc)
    json_doc = parse_document(canonical_json(stored_doc))
    batchml_doc = from_batchml(to_batchml(stored_doc, version=template.version))
    results = [run_scenario(stored_doc, scenario) for scenario in template.pack.scenarios]
    checks = {
        "template hash matches the library index": digest == indexed.get("sha256"),
        "recipe content hash matches the library index": content_hash(doc) == indexed.get("recipe_content_hash"),
        "stored and read back unchanged": content_hash(stored_doc) == stored_hash == content_hash(doc),
        "JSON export/import round trip unchanged": content_hash(json_doc) == content_hash(doc),
        "BatchML export/import round trip unchanged": content_hash(batchml_doc) == content_hash(doc),
    }
    return {
        "id": template.id, "version": template.version, "title": template.meta.title, "sha256": digest,
        "recipe_content_hash": content_hash(doc), "intended_use": template.pack.intended_use, "checks": checks,
        "requirements": requirement_results(template.pack, results),
        "scenarios": [r.as_dict() for r in results],
        "passed": all(checks.values()) and all(r.status == "passed" for r in results),
    }


def _adaptation_results(session: Session) -> list[dict[str, Any]]:
    out = []
    for master in session.scalars(select(MasterRecipe).where(MasterRecipe.template_id.is_not(None))
                                  .order_by(MasterRecipe.code)):
        latest = session.scalar(select(RecipeVersion).where(RecipeVersion.master_recipe_id == master.id)
                                .order_by(RecipeVersion.version.desc()).limit(1))
        if latest is None:
            continue
        results = services.adaptation_results(session, latest)
        changes = services.template_diff(session, latest) or []
        pack = services.template_pack(master.template_id, master.template_version)
        out.append({
            "recipe_code": master.code, "version": latest.version, "status": latest.status,
            "content_hash": latest.content_hash, "template_id": master.template_id,
            "template_version": master.template_version, "template_hash": master.template_hash,
            "changes": [c.as_dict() for c in changes],
            "scenarios": [r.as_dict() for r in results or []],
            "requirements": requirement_results(pack, results) if pack is not None and results is not None else [],
            "note": None if results is not None else "the library no longer holds this template version",
            "passed": all(r.status != "failed" for r in results or []),
        })
    return out


def evidence_hash(environment_data: dict[str, Any], results: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a run's environment and results."""
    return hashlib.sha256(canonical_json({"environment": environment_data, "results": results})).hexdigest()


def run_validation(session: Session, *, tenant: TenantRef,
                   engine_replay: list[dict[str, Any]] | None = None) -> ValidationRun:
    """Run the validation on this instance for one tenant and store it (with its audit event).

    Running needs the plan's `validation_report`; runs already stored stay readable on every plan.
    `engine_replay` holds the same scenarios replayed through the batch engine in this tenant
    (`app.batches.scenario_replay.replay_for_report`, run beforehand because it commits real batches); when
    given, it is part of the results, the counts and the evidence hash.
    """
    require_feature(session, tenant_id=tenant.id, feature="validation_report")
    index = {e["id"]: e for e in read_index(TEMPLATES_DIR)["templates"]}
    env = environment(session, tenant)
    templates = [_template_result(session, t, index.get(t.id, {})) for t in services.library_templates()]
    adaptations = _adaptation_results(session)
    results: dict[str, Any] = {"templates": templates, "adaptations": adaptations}
    if engine_replay is not None:
        results["engine_replay"] = engine_replay
    scenario_rows = [s for t in templates for s in t["scenarios"]] + \
        [s for a in adaptations for s in a["scenarios"] if s["status"] != "not_applicable"] + \
        [s for e in engine_replay or [] for s in e["scenarios"]]
    passed = sum(1 for s in scenario_rows if s["status"] == "passed")
    actor = current_actor(session)
    digest = evidence_hash(env, results)
    run = ValidationRun(environment=env, results=results, scenarios_run=len(scenario_rows),
                        scenarios_passed=passed,
                        evidence_hash=digest, performed_by=actor.label[:300], member_id=actor.member_id)
    session.add(run)
    session.flush()
    record(session, action="create", record_type="recipe_validation_run", record_id=run.id,
           new={"evidence_hash": digest, "scenarios_run": run.scenarios_run, "scenarios_passed": run.scenarios_passed,
                "templates": [{"id": t["id"], "version": t["version"], "sha256": t["sha256"]} for t in templates]})
    return run


def verify_run(run: ValidationRun) -> bool:
    """Recompute a stored run's evidence hash (False if its stored content was altered)."""
    return evidence_hash(run.environment, run.results) == run.evidence_hash


def run_passed(run: ValidationRun) -> bool:
    """Whether every check and scenario of a run passed."""
    templates_ok = all(t["passed"] for t in run.results.get("templates", []))
    adaptations_ok = all(a["passed"] for a in run.results.get("adaptations", []))
    engine_ok = all(e["passed"] for e in run.results.get("engine_replay", []))
    return templates_ok and adaptations_ok and engine_ok and run.scenarios_passed == run.scenarios_run


def render_html(run: ValidationRun, *, tenant: TenantRef, standalone: bool = True) -> str:
    """The report as HTML: a page of the app, or a standalone document (file, PDF)."""
    return render_template("recipes/validation_report.html", run=run, tenant=tenant, standalone=standalone,
                           verified=verify_run(run), passed=run_passed(run))


def render_pdf(run: ValidationRun, *, tenant: TenantRef) -> bytes:
    """The report as PDF (WeasyPrint, no network: the HTML carries its own styles)."""
    from weasyprint import HTML

    return HTML(string=render_html(run, tenant=tenant, standalone=True)).write_pdf()
