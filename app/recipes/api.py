"""JSON API of the recipes area under `/t/<slug>/api/v1/recipes/...` (same permissions as the screens)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Response, g, request

from app.audit.deletion import refuse_deletions
from app.core.api import parse_body, register_api_errors
from app.core.errors import ValidationError
from app.core.tenancy import tenant_transaction
from app.core.web import problem, request_actor, requires, tenant_blueprint
from app.recipes import queries, services
from app.recipes.document import Problem, canonical_json, to_data
from app.recipes.errors import RecipeInputError
from app.recipes.models import RecipeVersion
from app.recipes.scaling import ScalingError, scale
from app.recipes.schemas import (
    ChangeOut,
    DiffOut,
    ImportIn,
    MessageOut,
    RecipeOut,
    ScaledOut,
    ScaledRowOut,
    TemplateImportIn,
    TemplateOut,
    VersionOut,
    VersionSummary,
)
from app.recipes.templates import TEMPLATES_DIR, read_index
from app.recipes.validation import validate

bp = tenant_blueprint("recipes_api", __name__)
register_api_errors(bp)
PREFIX = "/api/v1/recipes"


@bp.errorhandler(RecipeInputError)
def _refused(exc: RecipeInputError) -> Any:
    """A refused recipe: 422 with every problem and the element it points at."""
    return problem(422, "Recipe refused", exc.summary, errors=[p.as_dict() for p in exc.problems])


def _version_out(version: RecipeVersion, *, with_messages: bool = False) -> dict[str, Any]:
    out = VersionOut.model_validate(version)
    if with_messages:
        out.messages = [MessageOut.model_validate(m) for m in validate(services.document_of(version))]
    return out.model_dump(mode="json")


@bp.get(f"{PREFIX}")
@requires("recipes.read")
def list_recipes() -> Any:
    """Master recipes with their latest and effective versions."""
    with tenant_transaction(g.tenant) as session:
        rows = queries.recipe_rows(session, datetime.now(UTC))
        items = [RecipeOut(id=r.master.id, code=r.master.code, name=r.master.name,
                           product_code=r.master.product_code, template_id=r.master.template_id,
                           template_version=r.master.template_version, template_hash=r.master.template_hash,
                           latest=VersionSummary.model_validate(r.latest),
                           effective=VersionSummary.model_validate(r.effective) if r.effective else None)
                 .model_dump(mode="json") for r in rows]
    return {"items": items, "count": len(items)}


@bp.get(f"{PREFIX}/<int:master_id>/versions")
@requires("recipes.read")
def list_versions(master_id: int) -> Any:
    """Every version of a master recipe, newest first."""
    with tenant_transaction(g.tenant) as session:
        services.get_master_recipe(session, master_id)
        items = [VersionSummary.model_validate(v).model_dump(mode="json")
                 for v in session.scalars(queries.versions_query(master_id))]
    return {"items": items, "count": len(items)}


@bp.get(f"{PREFIX}/versions/<int:version_id>")
@requires("recipes.read")
def get_version(version_id: int) -> Any:
    """A version with its document and (for drafts) the editor's validation messages."""
    with tenant_transaction(g.tenant) as session:
        return _version_out(services.get_version(session, version_id), with_messages=True)


@bp.get(f"{PREFIX}/<int:master_id>/effective")
@requires("recipes.read")
def get_effective(master_id: int) -> Any:
    """The version effective now (or at `?at=` an ISO 8601 moment with its zone)."""
    raw = request.args.get("at")
    try:
        at = datetime.fromisoformat(raw) if raw else datetime.now(UTC)
    except ValueError:
        raise ValidationError(f"at={raw!r} is not an ISO 8601 date-time (e.g. 2026-11-27T10:00:00+00:00)") from None
    if at.tzinfo is None:
        raise ValidationError("give `at` with its time zone (e.g. +00:00)")
    with tenant_transaction(g.tenant) as session:
        return _version_out(services.effective_version(session, master_id, at))


@bp.get(f"{PREFIX}/versions/<int:version_id>/export")
@requires("recipes.read")
def export_version(version_id: int) -> Any:
    """The version as our JSON (`?format=json`, default) or as BatchML (`?format=batchml`)."""
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "batchml"):
        raise ValidationError(f"format={fmt!r}: use json or batchml")
    with tenant_transaction(g.tenant) as session:
        version = services.get_version(session, version_id)
        name = services.export_filename(version, fmt)
        if fmt == "json":
            body, mimetype = services.export_json(version), "application/json"
        else:
            body, mimetype = services.export_batchml(version).encode(), "application/xml"
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get(f"{PREFIX}/versions/<int:version_id>/diff")
@requires("recipes.read")
def version_diff(version_id: int) -> Any:
    """The version compared with its previous version, else with the template it came from."""
    with tenant_transaction(g.tenant) as session:
        diff = services.version_diff(session, services.get_version(session, version_id))
        return DiffOut(against=diff.against, against_version_id=diff.against_version.id if diff.against_version
                       else None, against_hash=diff.against_hash,
                       changes=[ChangeOut.model_validate(c.as_dict()) for c in diff.changes]).model_dump(mode="json")


@bp.get(f"{PREFIX}/versions/<int:version_id>/scaled")
@requires("recipes.read")
def scaled(version_id: int) -> Any:
    """The version scaled to `?batch_size=&unit=`: factor, scaled values and the scaled document."""
    raw, unit = request.args.get("batch_size", ""), request.args.get("unit", "")
    try:
        size = float(raw)
    except ValueError:
        raise ValidationError(f"batch_size={raw!r} is not a number") from None
    with tenant_transaction(g.tenant) as session:
        doc = services.document_of(services.get_version(session, version_id))
    try:
        result = scale(doc, size, unit or doc.header.batch_size.unit)
    except (ScalingError, ValueError) as exc:
        raise ValidationError(str(exc)) from None
    return ScaledOut(batch_size=result.batch_size, unit=result.unit, factor=result.factor,
                     source_hash=result.source_hash, rows=[ScaledRowOut(**row) for row in result.summary()],
                     document=to_data(result.document)).model_dump(mode="json")


@bp.post(f"{PREFIX}/import")
@requires("recipes.author")
def import_recipe() -> Any:
    """Import a recipe as a draft (new master recipe, or the next version of its code with a change reason)."""
    body = parse_body(ImportIn)
    if body.format == "json":
        if body.document is None:
            raise RecipeInputError("the recipe JSON was refused", [_missing("document")])
        source: str | bytes = canonical_json(body.document)
    else:
        if not body.batchml:
            raise RecipeInputError("the BatchML file was refused", [_missing("batchml")])
        source = body.batchml
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        version = services.import_recipe(session, source=source, fmt=body.format, change_reason=body.change_reason)
        return _version_out(version, with_messages=True), 201


def _missing(field: str) -> Problem:
    return Problem(field, f"give the recipe in `{field}`")


@bp.get(f"{PREFIX}/templates")
@requires("recipes.read")
def list_templates() -> Any:
    """The validated template library."""
    index = {e["id"]: e for e in read_index(TEMPLATES_DIR)["templates"]}
    items = [TemplateOut(id=t.id, version=t.version, title=t.meta.title, sha256=index[t.id]["sha256"],
                         recipe_content_hash=index[t.id]["recipe_content_hash"],
                         requirements=len(t.pack.requirements), scenarios=len(t.pack.scenarios))
             .model_dump(mode="json") for t in services.library_templates()]
    return {"items": items, "count": len(items)}


@bp.post(f"{PREFIX}/templates/<template_id>/import")
@requires("recipes.author")
def import_template(template_id: str) -> Any:
    """Import a library template as a draft master recipe keeping its provenance."""
    body = parse_body(TemplateImportIn)
    if body.create_missing_materials and "materials.manage" not in g.permissions:
        return problem(403, "Forbidden", "creating materials needs the materials.manage permission")
    with tenant_transaction(g.tenant, actor=request_actor()) as session:
        version = services.import_template(session, template_id=template_id,
                                           create_missing_materials=body.create_missing_materials,
                                           change_reason=body.change_reason)
        return _version_out(version, with_messages=True), 201


refuse_deletions(bp, permission="recipes.author", rules={f"{PREFIX}/<int:record_id>": "master_recipe",
                                                         f"{PREFIX}/versions/<int:record_id>": "recipe_version"})
