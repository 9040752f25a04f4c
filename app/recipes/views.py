"""Recipe screens: list, template library, import, version page (outline, scaling, diff, signatures), editor,
history, exports and the validation report."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from flask import Response, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from app import esign
from app.audit.models import AuditEvent
from app.core.errors import BatchlineError, NotFound, PaymentRequired
from app.core.tenancy import tenant_transaction
from app.core.web import request_actor, requires, tenant_blueprint
from app.esign.manifest import format_signed_at
from app.recipes import queries, report, services
from app.recipes.document import (
    CAPTURE_KINDS,
    COMMON_UNITS,
    CRITICALITIES,
    PARAMETER_TYPES,
    SIGNATURE_MEANINGS,
    effective_dependencies,
    format_duration,
)
from app.recipes.errors import RecipeInputError
from app.recipes.models import MasterRecipe, RecipeVersion, ValidationRun
from app.recipes.rendering import instructions_html
from app.recipes.scaling import ScalingError, scale
from app.recipes.templates import TEMPLATES_DIR, read_index
from app.recipes.validation import validate

bp = tenant_blueprint("recipes", __name__, template_folder="templates")
# The signature manifestation macro needs it; registering the same function again (the esign screens do) is harmless.
bp.add_app_template_filter(format_signed_at, "signed_at")

STATUS_LABELS = {"draft": "Draft", "in_review": "In review", "reviewed": "Reviewed", "approved": "Approved",
                 "superseded": "Superseded", "retired": "Retired"}
#: Which permission each recipe signature needs on top of the route's role check.
SIGN_PERMISSIONS = {"authored": "recipes.author", "reviewed": "recipes.review", "approved": "recipes.approve"}


def _form() -> dict[str, str]:
    return {k: v for k, v in request.form.items() if k != "csrf_token"}


@bp.app_template_filter("recipe_status")
def recipe_status(status: str) -> str:
    """Human label of a version status."""
    return STATUS_LABELS.get(status, status)


@bp.app_template_filter("duration")
def duration_filter(value: Any) -> str:
    """An ISO 8601 duration as stored (PT30M), or a dash."""
    if value is None or value == "":
        return "\u2013"
    return value if isinstance(value, str) else format_duration(value)


@bp.app_template_global("instructions")
def instructions(text: str, version_id: int) -> Any:
    """A step's instructions as HTML, its images served from the version."""
    return instructions_html(text, lambda name: url_for("recipes.attachment", version_id=version_id, name=name))


def _utc(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "\u2013"


# ---------------------------------------------------------------------------------------------------------------
# List, library, import


@bp.get("/recipes/")
@requires("recipes.read")
def index() -> Any:
    """Master recipes with their latest and effective versions."""
    with tenant_transaction(g.tenant) as session:
        rows = queries.recipe_rows(session, datetime.now(UTC))
        return render_template("recipes/index.html", rows=rows, utc=_utc)


@bp.get("/recipes/templates")
@requires("recipes.read")
def templates() -> Any:
    """The validated template library: what each template is, its sources and its validation pack."""
    with tenant_transaction(g.tenant) as session:
        library = services.library_templates()
        missing = {t.id: services.missing_template_materials(session, t.id) for t in library}
        imported = {m.template_id: m for m in session.scalars(
            select(MasterRecipe).where(MasterRecipe.template_id.is_not(None)))}
    index = {e["id"]: e for e in read_index(TEMPLATES_DIR)["templates"]}
    return render_template("recipes/templates.html", library=library, missing=missing, imported=imported,
                           index=index)


@bp.post("/recipes/templates/<template_id>/import")
@requires("recipes.author")
def import_template(template_id: str) -> Any:
    """Import a template into this tenant as a draft master recipe."""
    create = request.form.get("create_materials") == "yes"
    if create and "materials.manage" not in g.permissions:
        abort(403, description="creating materials needs the materials.manage permission; ask an administrator "
                               "to add the template's materials first")
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            version = services.import_template(session, template_id=template_id, create_missing_materials=create,
                                               change_reason=request.form.get("change_reason") or None)
            version_id = version.id
    except RecipeInputError as exc:
        return render_template("recipes/import.html", problems=exc.problems, summary=exc.summary,
                               values={}), 422
    flash(f"Template {template_id} imported as a draft. Adapt it, then route it for review.", "ok")
    return redirect(url_for("recipes.version", version_id=version_id))


@bp.route("/recipes/import", methods=["GET", "POST"])
@requires("recipes.author")
def import_file() -> Any:
    """Import a recipe version from our JSON or from BatchML; refused whole, with pointed messages."""
    if request.method == "GET":
        return render_template("recipes/import.html", problems=[], summary="", values={})
    upload = request.files.get("file")
    values = _form()
    if upload is None or not upload.filename:
        return render_template("recipes/import.html", problems=[], values=values,
                               summary="choose a recipe file (.json or BatchML .xml) to import"), 422
    fmt = values.get("format") or ("batchml" if upload.filename.lower().endswith(".xml") else "json")
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            version = services.import_recipe(session, source=upload.read(), fmt=fmt, filename=upload.filename,
                                             change_reason=values.get("change_reason") or None)
            version_id = version.id
    except RecipeInputError as exc:
        return render_template("recipes/import.html", problems=exc.problems, summary=exc.summary,
                               values=values), 422
    except BatchlineError as exc:
        return render_template("recipes/import.html", problems=[], summary=str(exc), values=values), \
            exc.status_code
    flash(f"{upload.filename} imported as a draft version.", "ok")
    return redirect(url_for("recipes.version", version_id=version_id))


@bp.route("/recipes/new", methods=["GET", "POST"])
@requires("recipes.author")
def new() -> Any:
    """Start a new master recipe from an empty skeleton."""
    if request.method == "GET":
        return render_template("recipes/new.html", values={"batch_unit": "L"}, problems=[], units=COMMON_UNITS)
    values = _form()
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            version = services.new_recipe(session, recipe_code=values.get("recipe_code", ""),
                                          product_code=values.get("product_code", ""),
                                          product_name=values.get("product_name", ""),
                                          batch_size=values.get("batch_size", ""),
                                          batch_unit=values.get("batch_unit", ""))
            version_id = version.id
    except RecipeInputError as exc:
        return render_template("recipes/new.html", values=values, problems=exc.problems, units=COMMON_UNITS), 422
    return redirect(url_for("recipes.edit", version_id=version_id))


# ---------------------------------------------------------------------------------------------------------------
# Master recipe and version pages


@bp.get("/recipes/<int:master_id>")
@requires("recipes.read")
def master(master_id: int) -> Any:
    """A master recipe and all its versions."""
    with tenant_transaction(g.tenant) as session:
        recipe = services.get_master_recipe(session, master_id)
        versions = list(session.scalars(queries.versions_query(master_id)))
        now = datetime.now(UTC)
        return render_template("recipes/master.html", recipe=recipe, versions=versions, utc=_utc,
                               effective={v.id for v in versions if queries.is_effective(v, now)})


def _scaled(doc: Any, size: str, unit: str) -> tuple[Any, str | None]:
    if not size:
        return None, None
    try:
        return scale(doc, float(size), unit or doc.header.batch_size.unit), None
    except ValueError as exc:  # ScalingError, UnknownUnitError, or a size that is not a number
        message = str(exc) if isinstance(exc, ScalingError) or "unit" in str(exc) else f"{size!r} is not a number"
        return None, message


def _version_page(session: Any, version: RecipeVersion, *, signing_error: str | None = None) -> dict[str, Any]:
    doc = services.document_of(version)
    recipe = session.get_one(MasterRecipe, version.master_recipe_id)
    against = request.args.get("against", "")
    diff = services.version_diff(session, version)
    template_changes = services.template_diff(session, version)
    if against == "template" and template_changes is not None:
        shown_diff, shown_against = template_changes, "template"
    else:
        shown_diff, shown_against = diff.changes, diff.against
    size, unit = request.args.get("batch_size", ""), request.args.get("batch_unit", "")
    scaled, scale_error = _scaled(doc, size, unit)
    state = esign.route_state(session, record_type="recipe_version", record_id=version.id)
    return {
        "version": version, "recipe": recipe, "doc": doc,
        "messages": validate(doc) + services.attachment_messages(session, version),
        "images": services.current_attachments(session, version.id),
        "deps": effective_dependencies(doc), "diff": shown_diff, "diff_against": shown_against,
        "diff_version": diff.against_version, "has_template": template_changes is not None,
        "adaptation": services.adaptation_results(session, version),
        "scaled": scaled, "scale_error": scale_error, "scale_values": {"batch_size": size, "batch_unit": unit},
        "checks": services.signatures(session, version), "route": state,
        "stored_diffs": services.stored_diffs(session, version),
        "revisions": list(session.scalars(queries.revisions_query(version.id))),
        "require_user_id": esign.identification_required(), "signing_error": signing_error,
        "effective_now": queries.is_effective(version, datetime.now(UTC)), "utc": _utc,
        "sign_permissions": SIGN_PERMISSIONS,
    }


@bp.get("/recipes/versions/<int:version_id>")
@requires("recipes.read")
def version(version_id: int) -> Any:
    """A version: status, signatures, outline, scaled preview, diff and template scenarios."""
    with tenant_transaction(g.tenant) as session:
        found = services.get_version(session, version_id)
        return render_template("recipes/version.html", **_version_page(session, found))


def _sign(version_id: int, meaning: str) -> Any:
    values = _form()
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            services.sign_version(session, version_id=version_id, meaning=meaning, user_id=current_user.id,
                                  reason=values.get("reason") or None, **esign.signing_credentials(request.form))
    except BatchlineError as exc:
        problems = getattr(exc, "problems", [])
        message = str(exc) if not problems else exc.summary  # type: ignore[attr-defined]
        with tenant_transaction(g.tenant) as session:
            found = services.get_version(session, version_id)
            context = _version_page(session, found, signing_error=message)
            context["signing_problems"] = problems
            return render_template("recipes/version.html", **context), exc.status_code
    esign.note_signature_made()
    flash({"authored": "Routed for review.", "reviewed": "Review signed.",
           "approved": "Version approved."}[meaning], "ok")
    return redirect(url_for("recipes.version", version_id=version_id))


@bp.post("/recipes/versions/<int:version_id>/submit")
@requires("recipes.author")
def submit(version_id: int) -> Any:
    """Sign the draft as authored: it goes to review."""
    return _sign(version_id, "authored")


@bp.post("/recipes/versions/<int:version_id>/review")
@requires("recipes.review")
def review(version_id: int) -> Any:
    """Sign the version as reviewed (the diff shown is stored with the signature)."""
    return _sign(version_id, "reviewed")


@bp.post("/recipes/versions/<int:version_id>/approve")
@requires("recipes.approve")
def approve(version_id: int) -> Any:
    """Approve the version (QA): it becomes effective from its effective date."""
    return _sign(version_id, "approved")


@bp.post("/recipes/versions/<int:version_id>/reject")
@requires("recipes.review")
def reject(version_id: int) -> Any:
    """Send the version back to draft with a signed reason."""
    values = _form()
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            services.reject_version(session, version_id=version_id, user_id=current_user.id,
                                    reason=values.get("reason", ""), **esign.signing_credentials(request.form))
    except BatchlineError as exc:
        with tenant_transaction(g.tenant) as session:
            context = _version_page(session, services.get_version(session, version_id), signing_error=str(exc))
            return render_template("recipes/version.html", **context), exc.status_code
    esign.note_signature_made()
    flash("Sent back to draft.", "ok")
    return redirect(url_for("recipes.version", version_id=version_id))


@bp.post("/recipes/versions/<int:version_id>/new-version")
@requires("recipes.author")
def new_version(version_id: int) -> Any:
    """Start the next version from an approved one, with a change reason."""
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            created = services.new_draft_version(session, version_id=version_id,
                                                 change_reason=request.form.get("change_reason", ""))
            created_id = created.id
    except BatchlineError as exc:
        flash(str(exc), "error")
        return redirect(url_for("recipes.version", version_id=version_id)), 303
    return redirect(url_for("recipes.edit", version_id=created_id))


@bp.post("/recipes/versions/<int:version_id>/retire")
@requires("recipes.author")
def retire(version_id: int) -> Any:
    """Retire a version (an approved one needs the approve permission)."""
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            found = services.get_version(session, version_id)
            if found.status != "draft" and "recipes.approve" not in g.permissions:
                abort(403, description="retiring an approved version needs the recipes.approve permission (QA)")
            services.retire_version(session, version_id=version_id, reason=request.form.get("reason", ""))
    except BatchlineError as exc:
        flash(str(exc), "error")
    else:
        flash("Version retired.", "ok")
    return redirect(url_for("recipes.version", version_id=version_id)), 303


@bp.get("/recipes/versions/<int:version_id>/export.json")
@requires("recipes.read")
def export_json(version_id: int) -> Any:
    """Download the version as our JSON document."""
    with tenant_transaction(g.tenant) as session:
        found = services.get_version(session, version_id)
        body, name = services.export_json(found), services.export_filename(found, "json")
    return Response(body, mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/recipes/versions/<int:version_id>/export.xml")
@requires("recipes.read")
def export_batchml(version_id: int) -> Any:
    """Download the version as a BatchML MasterRecipe."""
    with tenant_transaction(g.tenant) as session:
        found = services.get_version(session, version_id)
        body, name = services.export_batchml(found), services.export_filename(found, "batchml")
    return Response(body, mimetype="application/xml",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/recipes/versions/<int:version_id>/history")
@requires("audit.read")
def history(version_id: int) -> Any:
    """The audit trail of a version and its master recipe, and its draft revisions."""
    with tenant_transaction(g.tenant) as session:
        found = services.get_version(session, version_id)
        events = session.scalars(select(AuditEvent).where(
            ((AuditEvent.record_type == "recipe_version") & (AuditEvent.record_id == str(found.id)))
            | ((AuditEvent.record_type == "master_recipe") & (AuditEvent.record_id == str(found.master_recipe_id))))
            .order_by(AuditEvent.seq)).all()
        revisions = list(session.scalars(queries.revisions_query(found.id)))
        return render_template("recipes/history.html", version=found, events=events, revisions=revisions,
                               utc=_utc)


# ---------------------------------------------------------------------------------------------------------------
# Editor


_PATH_RE = re.compile(r"^(?P<area>header|formula\.parameters\[(?P<param>\d+)\]|materials\[(?P<mat>\d+)\]|"
                      r"procedure\.unit_procedures\[(?P<u>\d+)\](?:\.operations\[(?P<o>\d+)\]"
                      r"(?:\.phases\[(?P<p>\d+)\](?:\.captures\[(?P<c>\d+)\])?)?)?)")


def selection_for_path(data: dict[str, Any], path: str) -> str:
    """The editor panel that edits the element at a message's path (`phase:<key>`, `param:<key>`...)."""
    match = _PATH_RE.match(path)
    if match is None:
        return "json"
    try:
        if match["param"] is not None:
            return f"param:{data['formula']['parameters'][int(match['param'])]['key']}"
        if match["mat"] is not None:
            return f"material:{data['materials'][int(match['mat'])]['code']}"
        if match["u"] is not None:
            up = data["procedure"]["unit_procedures"][int(match["u"])]
            if match["p"] is None:
                return f"unit:{up['key']}"
            phase = up["operations"][int(match["o"])]["phases"][int(match["p"])]
            if match["c"] is not None:
                return f"capture:{phase['key']}:{phase['captures'][int(match['c'])]['key']}"
            return f"phase:{phase['key']}"
    except (IndexError, KeyError):
        return "json"
    return "header"


def _editor(session: Any, version: RecipeVersion, *, selection: str, problems: list[Any] | None = None,
            error: str | None = None, posted: dict[str, str] | None = None) -> dict[str, Any]:
    data = version.document
    doc = services.document_of(version)
    messages = validate(doc) + services.attachment_messages(session, version)
    for_phase = {}
    for m in messages:
        for_phase.setdefault(selection_for_path(data, m.path), []).append(m)
    kind, _, rest = selection.partition(":")
    selected: dict[str, Any] = {"kind": kind, "key": rest}
    if kind == "phase":
        selected["phase"] = next((ph for up in data["procedure"]["unit_procedures"] for op in up["operations"]
                                  for ph in op["phases"] if ph["key"] == rest), None)
    elif kind == "capture":
        phase_key, _, cap_key = rest.partition(":")
        phase = next((ph for up in data["procedure"]["unit_procedures"] for op in up["operations"]
                      for ph in op["phases"] if ph["key"] == phase_key), None)
        selected.update(phase=phase, capture=next((c for c in (phase or {}).get("captures", [])
                                                   if c["key"] == cap_key), None), phase_key=phase_key)
    elif kind == "newcapture":
        selected["phase_key"] = rest
    elif kind == "param":
        selected["param"] = next((p for p in data["formula"]["parameters"] if p["key"] == rest), None)
    elif kind == "material":
        selected["material"] = next((m for m in data["materials"] if m["code"] == rest), None)
    elif kind == "unit":
        selected["unit"] = next((u for u in data["procedure"]["unit_procedures"] if u["key"] == rest), None)
    return {"version": version, "data": data, "messages": messages, "by_selection": for_phase,
            "selection": selection, "selected": selected, "problems": problems or [], "error": error,
            "posted": posted, "capture_kinds": CAPTURE_KINDS, "parameter_types": PARAMETER_TYPES,
            "criticalities": CRITICALITIES, "meanings": SIGNATURE_MEANINGS, "units": COMMON_UNITS,
            "selection_for_path": lambda path: selection_for_path(data, path),
            "document_json": services.export_json(version).decode(),
            "images": services.current_attachments(session, version.id)}


@bp.get("/recipes/versions/<int:version_id>/edit")
@requires("recipes.author")
def edit(version_id: int) -> Any:
    """The recipe editor: outline, the selected element's form, and the validation messages."""
    with tenant_transaction(g.tenant) as session:
        found = services.get_version(session, version_id)
        if found.status != "draft":
            flash(f"Version {found.version} is {recipe_status(found.status).lower()} and cannot be edited; start a "
                  "new version with a change reason.", "warn")
            return redirect(url_for("recipes.version", version_id=version_id))
        return render_template("recipes/editor.html",
                               **_editor(session, found, selection=request.args.get("sel", "header")))


@bp.post("/recipes/versions/<int:version_id>/edit")
@requires("recipes.author")
def edit_save(version_id: int) -> Any:
    """Apply one editor change and save it as a new draft revision (nothing is saved if it is refused)."""
    values = _form()
    op = values.pop("op", "")
    selection = values.pop("sel", "header")
    expected = values.pop("revision", None)
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            saved, _ = services.edit_draft(session, version_id=version_id, op=op, fields=values,
                                           expected_revision=int(expected) if expected else None)
            selection = _selection_after(op, values, selection, saved.document)
    except RecipeInputError as exc:
        with tenant_transaction(g.tenant) as session:
            found = services.get_version(session, version_id)
            return render_template("recipes/editor.html", **_editor(
                session, found, selection=selection, problems=exc.problems, error=exc.summary, posted=values)), 422
    except BatchlineError as exc:
        with tenant_transaction(g.tenant) as session:
            found = services.get_version(session, version_id)
            if found.status != "draft":
                raise
            return render_template("recipes/editor.html", **_editor(
                session, found, selection=selection, error=str(exc), posted=values)), exc.status_code
    return redirect(url_for("recipes.edit", version_id=version_id, sel=selection))


@bp.post("/recipes/versions/<int:version_id>/attachments")
@requires("recipes.author")
def upload_attachment(version_id: int) -> Any:
    """Upload an image for a step's instructions (drafts only); it is listed on the step."""
    phase = request.form.get("phase") or None
    upload = request.files.get("file")
    selection = f"phase:{phase}" if phase else "json"
    try:
        if upload is None or not upload.filename:
            raise RecipeInputError("no image was uploaded", [])
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            row = services.add_attachment(session, version_id=version_id, filename=upload.filename,
                                          data=upload.read(), phase_key=phase)
            name = row.name
    except BatchlineError as exc:
        with tenant_transaction(g.tenant) as session:
            found = services.get_version(session, version_id)
            if found.status != "draft":
                raise
            return render_template("recipes/editor.html", **_editor(session, found, selection=selection,
                                                                    error=str(exc))), exc.status_code
    flash(f"Image {name} uploaded: show it in the instructions with ![caption](attachment:{name}).", "ok")
    return redirect(url_for("recipes.edit", version_id=version_id, sel=selection))


@bp.get("/recipes/versions/<int:version_id>/attachments/<name>")
@requires("recipes.read")
def attachment(version_id: int, name: str) -> Any:
    """An instruction image of a version (served with its detected type, never sniffed or scripted)."""
    with tenant_transaction(g.tenant) as session:
        row = services.get_attachment(session, version_id, name)
        data, media_type, digest = row.data, row.content_type, row.sha256
    return Response(data, mimetype=media_type, headers={
        "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'",
        "Cache-Control": "private, max-age=86400", "ETag": f'"{digest}"'})


def _selection_after(op: str, values: dict[str, str], selection: str, data: dict[str, Any]) -> str:
    """Where the editor opens after a change: the element just added or changed."""
    if op in ("add_phase",) and values.get("key"):
        return f"phase:{values['key']}"
    if op == "upsert_parameter" and values.get("key"):
        return f"param:{values['key']}"
    if op == "upsert_material" and values.get("code"):
        return f"material:{values['code']}"
    if op == "upsert_capture" and values.get("key"):
        return f"capture:{values.get('phase')}:{values['key']}"
    if op in ("remove_phase", "remove_parameter", "remove_material", "remove_unit_procedure", "remove_operation"):
        return "structure"
    if op == "remove_capture":
        return f"phase:{values.get('phase')}"
    if op in ("add_unit_procedure", "add_operation"):
        return "structure"
    return selection


# ---------------------------------------------------------------------------------------------------------------
# Validation report


@bp.get("/recipes/validation")
@requires("recipes.read")
def validation_index() -> Any:
    """Validation report runs on this instance."""
    return validation_index_page()


def validation_index_page(status: int = 200) -> Any:
    with tenant_transaction(g.tenant) as session:
        runs = list(session.scalars(queries.validation_runs_query().limit(50)))
        return render_template("recipes/validation_index.html", runs=runs, utc=_utc), status


@bp.post("/recipes/validation/run")
@requires("recipes.approve")
def validation_run() -> Any:
    """Run every template scenario on this instance and store the evidence."""
    try:
        with tenant_transaction(g.tenant, actor=request_actor()) as session:
            run = report.run_validation(session, tenant=g.tenant)
            run_id = run.id
    except PaymentRequired as exc:
        flash(str(exc), exc.flash_category)
        return validation_index_page(exc.status_code)
    flash(f"Validation run {run_id}: {run.scenarios_passed} of {run.scenarios_run} scenarios passed.",
          "ok" if run.scenarios_passed == run.scenarios_run else "error")
    return redirect(url_for("recipes.validation_report", run_id=run_id))


def _run(session: Any, run_id: int) -> ValidationRun:
    found = session.get(ValidationRun, run_id)
    if found is None:
        raise NotFound(f"validation run {run_id} does not exist")
    return found


@bp.get("/recipes/validation/<int:run_id>")
@requires("recipes.read")
def validation_report(run_id: int) -> Any:
    """A validation report as a page."""
    with tenant_transaction(g.tenant) as session:
        run = _run(session, run_id)
        return report.render_html(run, tenant=g.tenant, standalone=False)


@bp.get("/recipes/validation/<int:run_id>.pdf")
@requires("recipes.read")
def validation_report_pdf(run_id: int) -> Any:
    """A validation report as PDF (for the customer's QA file)."""
    with tenant_transaction(g.tenant) as session:
        run = _run(session, run_id)
        pdf = report.render_pdf(run, tenant=g.tenant)
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="validation-report-{run_id}.pdf"'})
