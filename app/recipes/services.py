"""Recipe state changes and the lookups other areas build on, inside the caller's tenant transaction.

Services flush, never commit: the audit event and any signature land in the caller's transaction. Every
create, edit, signature and status change is audited (`app.audit.services.record`); drafts keep every saved
state in `recipe_version_revisions`; versions out of draft are frozen (service checks here, a trigger in the
database). The lifecycle follows the tenant's signature route for `recipe_version` records (shipped default:
authored → reviewed → approved by QA, no one signing twice):

    import / create / new_draft_version      → draft (edit_draft saves revisions)
    sign_version(meaning="authored")         → in_review   (refused while the editor reports errors)
    sign_version(meaning="reviewed")         → reviewed    (the diff shown is stored with the signature)
    sign_version(meaning="approved")         → approved, effective from max(approval, effective date);
                                               the previous approved version is superseded from then
    reject_version(...)                      → draft again (a new route cycle starts on resubmission)
    retire_version(...)                      → retired (no longer effective from now)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app import esign
from app.audit.services import current_actor, record
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.tenancy import Actor
from app.esign.errors import SignerNotPermitted
from app.recipes import editing
from app.recipes.adaptation import ScenarioResult, rerun_template_scenarios
from app.recipes.batchml import BatchMLError, batchml_locator, from_batchml, to_batchml
from app.recipes.diff import Change, diff_documents
from app.recipes.document import (
    MaterialScanCapture,
    Problem,
    RecipeDocument,
    RecipeDocumentError,
    canonical_json,
    content_hash,
    format_loc,
    parse_document,
    parse_unit,
    to_data,
    units_compatible,
)
from app.recipes.errors import RecipeInputError
from app.recipes.models import (
    RELEASED_STATUSES,
    VERSION_RECORD_TYPE,
    MasterRecipe,
    RecipeAttachment,
    RecipeVersion,
    RecipeVersionDiff,
    RecipeVersionRevision,
    attachment_hashes,
)
from app.recipes.templates import TEMPLATES_DIR, Template, TemplateError, load_library, read_index, template_hash
from app.recipes.validation import Message, has_errors, validate

#: Statuses of a version still on its way to approval (a master recipe has at most one).
OPEN_STATUSES = ("draft", "in_review", "reviewed")
#: Import formats.
FORMATS = ("json", "batchml")


# ---------------------------------------------------------------------------------------------------------------
# Lookups (batches plan from these)


def get_version(session: Session, version_id: int) -> RecipeVersion:
    """Return one recipe version (any status) or raise NotFound; `.document` is the validated recipe document."""
    version = session.get(RecipeVersion, int(version_id))
    if version is None:
        raise NotFound(f"recipe version {version_id} does not exist in this tenant")
    return version


def effective_version(session: Session, master_recipe_id: int, at: datetime) -> RecipeVersion:
    """Return the approved version of a master recipe that is effective at `at` (timezone-aware), or NotFound.

    A version is effective from `effective_from` (the later of its approval and its header's effective date)
    until `effective_until` (its expiry, the start of the next approved version, or its retirement), so the
    answer for a past moment is the version that was effective then. Batches plan from this version and
    freeze its document (`content_hash` identifies it) as their control recipe.
    """
    if at.tzinfo is None:
        raise ValueError("effective_version needs a timezone-aware moment")
    version = session.scalar(
        select(RecipeVersion)
        .where(RecipeVersion.master_recipe_id == int(master_recipe_id),
               RecipeVersion.status.in_(RELEASED_STATUSES),
               RecipeVersion.effective_from.is_not(None),
               RecipeVersion.effective_from <= at,
               or_(RecipeVersion.effective_until.is_(None), RecipeVersion.effective_until > at))
        .order_by(RecipeVersion.effective_from.desc(), RecipeVersion.version.desc())
        .limit(1)
    )
    if version is None:
        raise NotFound(f"master recipe {master_recipe_id} has no approved version effective at {at.isoformat()}")
    return version


def get_master_recipe(session: Session, master_recipe_id: int) -> MasterRecipe:
    """Return a master recipe or raise NotFound."""
    master = session.get(MasterRecipe, int(master_recipe_id))
    if master is None:
        raise NotFound(f"master recipe {master_recipe_id} does not exist in this tenant")
    return master


def document_of(version: RecipeVersion) -> RecipeDocument:
    """Parse a stored version's document and check it still hashes to its recorded content hash."""
    doc = parse_document(version.document)
    if content_hash(doc) != version.content_hash:
        raise Conflict(f"recipe version {version.id}: the stored document does not match its content hash "
                       f"{version.content_hash[:12]}...; it was changed outside the application")
    return doc


def previous_version(session: Session, version: RecipeVersion) -> RecipeVersion | None:
    """The version a reviewer compares with: its parent, else the latest earlier approved version."""
    if version.parent_version_id is not None:
        return session.get(RecipeVersion, version.parent_version_id)
    return session.scalar(select(RecipeVersion).where(
        RecipeVersion.master_recipe_id == version.master_recipe_id, RecipeVersion.version < version.version,
        RecipeVersion.status.in_(RELEASED_STATUSES)).order_by(RecipeVersion.version.desc()).limit(1))


# ---------------------------------------------------------------------------------------------------------------
# Parsing inputs and checking them against the tenant


def parse_upload(source: str | bytes, fmt: str) -> tuple[RecipeDocument, Any]:
    """Parse an uploaded JSON or BatchML recipe; return it and a locator naming where a location came from."""
    if fmt not in FORMATS:
        raise ValidationError(f"unknown format {fmt!r}: use json or batchml")
    if not source.strip():
        raise RecipeInputError("the file is empty", [Problem("$", "upload a recipe JSON or BatchML file")])
    try:
        if fmt == "json":
            return parse_document(source), format_loc
        doc = from_batchml(source)
        return doc, batchml_locator(source)
    except RecipeDocumentError as exc:
        raise RecipeInputError("the recipe JSON was refused", exc.problems) from exc
    except BatchMLError as exc:
        raise RecipeInputError("the BatchML file was refused", exc.problems) from exc


def _material_refs(doc: RecipeDocument) -> list[tuple[tuple[int | str, ...], str, str | None]]:
    """Every place the document names a material: (location, code, unit given there)."""
    refs: list[tuple[tuple[int | str, ...], str, str | None]] = [
        (("materials", i, "code"), m.code, m.unit) for i, m in enumerate(doc.materials)]
    for u, up in enumerate(doc.procedure.unit_procedures):
        for o, op in enumerate(up.operations):
            for p, ph in enumerate(op.phases):
                base = ("procedure", "unit_procedures", u, "operations", o, "phases", p)
                refs.extend(((*base, "materials", r, "material"), req.material, req.unit)
                            for r, req in enumerate(ph.materials))
                refs.extend(((*base, "captures", c, "material"), cap.material, None)
                            for c, cap in enumerate(ph.captures) if isinstance(cap, MaterialScanCapture))
    return refs


def material_problems(session: Session, doc: RecipeDocument,
                      locate: Any = format_loc) -> list[Problem]:
    """Name each material the tenant's materials master does not know, or counts in an incompatible unit."""
    from app.materials.models import Material  # materials master data (plant area)

    refs = _material_refs(doc)
    codes = {code for _, code, _ in refs}
    known = {row.code: row.unit for row in session.execute(
        select(Material.code, Material.unit).where(Material.code.in_(codes)))} if codes else {}
    problems = []
    for loc, code, unit in refs:
        if code not in known:
            problems.append(Problem(locate(loc), f"material {code!r} is not in this tenant's materials master; "
                                                 "add it under Materials (or correct the code) and import again"))
            continue
        if unit is None:
            continue
        try:
            parse_unit(known[code])
        except ValueError:
            continue  # a master-data unit pint cannot read ('ea'): nothing to compare it with
        if not units_compatible(unit, known[code]):
            where = (*loc[:-1], "unit")
            problems.append(Problem(locate(where), f"material {code!r} is counted in {known[code]} in the materials "
                                                   f"master; {unit!r} cannot be converted to it"))
    return problems


def _actor(session: Session) -> Actor:
    return current_actor(session)


def _header_columns(doc: RecipeDocument) -> dict[str, Any]:
    h = doc.header
    return {"recipe_code": h.recipe_code, "product_code": h.product_code, "product_name": h.product_name,
            "batch_size": h.batch_size.value, "batch_size_unit": h.batch_size.unit,
            "effective_date": h.effective_date, "expiry_date": h.expiry_date}


def _add_revision(session: Session, version: RecipeVersion, doc: RecipeDocument, note: str) -> None:
    session.add(RecipeVersionRevision(version_id=version.id, revision=version.revision, document=to_data(doc),
                                      content_hash=version.content_hash, note=note[:2000],
                                      member_id=_actor(session).member_id))
    session.flush()


def _version_audit(version: RecipeVersion) -> dict[str, Any]:
    return {"master_recipe_id": version.master_recipe_id, "version": version.version, "status": version.status,
            "content_hash": version.content_hash, "revision": version.revision,
            "recipe_code": version.recipe_code, "change_reason": version.change_reason,
            "parent_version_id": version.parent_version_id, "template_id": version.template_id,
            "template_version": version.template_version, "template_hash": version.template_hash}


@dataclass(frozen=True)
class TemplateSource:
    """Where an imported recipe came from in the template library."""

    template_id: str
    version: str
    hash: str
    document: RecipeDocument


def _open_version(session: Session, master_id: int) -> RecipeVersion | None:
    return session.scalar(select(RecipeVersion).where(RecipeVersion.master_recipe_id == master_id,
                                                      RecipeVersion.status.in_(OPEN_STATUSES)).limit(1))


def create_version(session: Session, *, document: RecipeDocument, note: str, change_reason: str | None = None,
                   template: TemplateSource | None = None, check_materials: bool = True,
                   locate: Any = format_loc) -> RecipeVersion:
    """Store a document as a new draft: version 1 of a new master recipe, or the next version of its code."""
    if check_materials:
        problems = material_problems(session, document, locate)
        if problems:
            raise RecipeInputError("the recipe refers to materials this tenant does not have", problems)
    code = document.header.recipe_code
    master = session.scalar(select(MasterRecipe).where(MasterRecipe.code == code).with_for_update())
    actor = _actor(session)
    change_reason = (change_reason or "").strip() or None
    parent = None
    if master is None:
        master = MasterRecipe(code=code, name=document.header.product_name, product_code=document.header.product_code,
                              template_id=template.template_id if template else None,
                              template_version=template.version if template else None,
                              template_hash=template.hash if template else None,
                              template_document=to_data(template.document) if template else None,
                              created_by_member_id=actor.member_id)
        session.add(master)
        session.flush()
        record(session, action="create", record_type="master_recipe", record_id=master.id,
               new={"code": code, "name": master.name, "product_code": master.product_code,
                    "template_id": master.template_id, "template_version": master.template_version,
                    "template_hash": master.template_hash})
        number = 1
    else:
        open_version = _open_version(session, master.id)
        if open_version is not None:
            raise Conflict(f"recipe {code} already has version {open_version.version} in {open_version.status}; "
                           "finish, reject or retire it before adding another version")
        if not change_reason:
            raise ValidationError(f"recipe {code} already exists: give a change reason for its new version")
        parent = session.scalar(select(RecipeVersion).where(RecipeVersion.master_recipe_id == master.id)
                                .order_by(RecipeVersion.version.desc()).limit(1))
        number = (parent.version if parent else 0) + 1
    version = RecipeVersion(master_recipe_id=master.id, version=number, status="draft", document=to_data(document),
                            content_hash=content_hash(document), revision=1, change_reason=change_reason,
                            parent_version_id=parent.id if parent else None,
                            template_id=master.template_id, template_version=master.template_version,
                            template_hash=master.template_hash, created_by_member_id=actor.member_id,
                            **_header_columns(document))
    session.add(version)
    session.flush()
    _add_revision(session, version, document, note)
    record(session, action="create", record_type=VERSION_RECORD_TYPE, record_id=version.id,
           new={**_version_audit(version), "note": note}, reason=change_reason)
    return version


def import_recipe(session: Session, *, source: str | bytes, fmt: str, change_reason: str | None = None,
                  filename: str | None = None) -> RecipeVersion:
    """Import a recipe version from our JSON or from BatchML; refused whole (nothing stored) on any problem."""
    document, locate = parse_upload(source, fmt)
    note = f"imported from {fmt.upper() if fmt == 'json' else 'BatchML'}" + (f" file {filename}" if filename else "")
    return create_version(session, document=document, note=note, change_reason=change_reason, locate=locate)


_LIBRARY_CACHE: dict[tuple[tuple[str, int], ...], list[Template]] = {}


def _load_library_cached() -> list[Template]:
    """Parse the library once per state of its files (keyed on every file's modification time)."""
    key = tuple(sorted((str(p), p.stat().st_mtime_ns) for p in TEMPLATES_DIR.rglob("*.json")))
    if key not in _LIBRARY_CACHE:
        _LIBRARY_CACHE.clear()
        _LIBRARY_CACHE[key] = load_library(TEMPLATES_DIR)
    return _LIBRARY_CACHE[key]


def library_templates() -> list[Template]:
    """The template library, checked against its index (a template changed without a new version is refused)."""
    index = {e["id"]: e for e in read_index(TEMPLATES_DIR)["templates"]}
    templates = []
    for template in _load_library_cached():
        entry = index.get(template.id)
        if entry is None or entry["version"] != template.version:
            raise TemplateError(f"template {template.id} {template.version} is not in the library index")
        templates.append(template)
    return templates


def find_template(template_id: str) -> tuple[Template, str]:
    """Return a library template and its verified hash, refusing one whose content no longer matches the index."""
    template = next((t for t in library_templates() if t.id == template_id), None)
    if template is None:
        raise NotFound(f"there is no template {template_id!r} in the library")
    digest = template_hash(template.path)
    indexed = next(e for e in read_index(TEMPLATES_DIR)["templates"] if e["id"] == template_id)
    if digest != indexed["sha256"]:
        raise Conflict(f"template {template_id} {template.version} does not match its library index hash; "
                       "the installation is not as validated")
    return template, digest


def missing_template_materials(session: Session, template_id: str) -> list[dict[str, str]]:
    """The materials of a template the tenant's materials master lacks (code, name, unit), for the import screen."""
    from app.materials.models import Material

    template = next((t for t in library_templates() if t.id == template_id), None)
    if template is None:
        raise NotFound(f"there is no template {template_id!r} in the library")
    doc = template.document
    names = {m.code: (m.name, m.unit) for m in doc.materials}
    codes = list(dict.fromkeys(code for _, code, _ in _material_refs(doc)))
    known = set(session.scalars(select(Material.code).where(Material.code.in_(codes)))) if codes else set()
    return [{"code": c, "name": names.get(c, (c, ""))[0], "unit": names.get(c, ("", ""))[1]}
            for c in codes if c not in known]


def import_template(session: Session, *, template_id: str, create_missing_materials: bool = False,
                    change_reason: str | None = None) -> RecipeVersion:
    """Import a library template as a draft master recipe keeping its provenance (template id, version, hash)."""
    template, digest = find_template(template_id)
    if create_missing_materials:
        from app.materials.services import create_material

        for item in missing_template_materials(session, template_id):
            create_material(session, code=item["code"], name=item["name"], material_type="raw",
                            unit=item["unit"] or "ea")
    source = TemplateSource(template_id=template.id, version=template.version, hash=digest,
                            document=template.document)
    return create_version(session, document=template.document, template=source, change_reason=change_reason,
                          note=f"imported from template {template.id} {template.version} (sha256 {digest})")


def new_recipe(session: Session, *, recipe_code: str, product_code: str, product_name: str, batch_size: Any,
               batch_unit: str) -> RecipeVersion:
    """Start a new master recipe from an empty skeleton (one unit procedure, operation and step)."""
    try:
        size = float(str(batch_size).strip())
    except ValueError:
        raise RecipeInputError("the new recipe was refused",
                               [Problem("header.batch_size.value", f"{batch_size!r} is not a number")]) from None
    data = {"schema": "batchline.recipe/1",
            "header": {"recipe_code": (recipe_code or "").strip(), "product_code": (product_code or "").strip(),
                       "product_name": (product_name or "").strip(),
                       "batch_size": {"value": size, "unit": (batch_unit or "").strip()}},
            "procedure": {"unit_procedures": [{"key": "main", "name": "Main", "operations": [
                {"key": "main_op", "name": "Main operation", "phases": [
                    {"key": "first_step", "name": "First step", "signatures": [{"meaning": "performed"}]}]}]}]}}
    try:
        doc = parse_document(data)
    except RecipeDocumentError as exc:
        raise RecipeInputError("the new recipe was refused", exc.problems) from exc
    if session.scalar(select(MasterRecipe.id).where(MasterRecipe.code == doc.header.recipe_code)) is not None:
        raise Conflict(f"a recipe with code {doc.header.recipe_code!r} already exists; open it to add a version")
    return create_version(session, document=doc, note="new recipe")


# ---------------------------------------------------------------------------------------------------------------
# Drafts


def _lock_version(session: Session, version_id: int) -> RecipeVersion:
    version = session.scalar(select(RecipeVersion).where(RecipeVersion.id == int(version_id)).with_for_update())
    if version is None:
        raise NotFound(f"recipe version {version_id} does not exist in this tenant")
    return version


def _require_draft(version: RecipeVersion) -> None:
    if version.status != "draft":
        raise Conflict(f"version {version.version} of {version.recipe_code} is {version.status.replace('_', ' ')} "
                       "and cannot be changed; create a new draft version with a change reason")


def edit_draft(session: Session, *, version_id: int, op: str, fields: Mapping[str, Any],
               expected_revision: int | None = None) -> tuple[RecipeVersion, list[Message]]:
    """Apply one editor operation to a draft and save it as a new revision; return the editor's messages."""
    version = _lock_version(session, version_id)
    _require_draft(version)
    if expected_revision is not None and int(expected_revision) != version.revision:
        raise Conflict(f"this draft was saved by someone else meanwhile (revision {version.revision}, your page "
                       f"showed {expected_revision}); reload it and make your change again")
    try:
        data = editing.apply_operation(version.document, op, fields)
        doc = parse_document(data)
    except RecipeDocumentError as exc:
        raise RecipeInputError("the change was not saved", exc.problems) from exc
    return _save_draft(session, version, doc, editing.describe_operation(op, fields))


def replace_draft_document(session: Session, *, version_id: int, document: RecipeDocument, note: str,
                           expected_revision: int | None = None) -> tuple[RecipeVersion, list[Message]]:
    """Replace a draft's whole document (API and JSON tab); the recipe code must stay."""
    version = _lock_version(session, version_id)
    _require_draft(version)
    if expected_revision is not None and int(expected_revision) != version.revision:
        raise Conflict(f"this draft is at revision {version.revision}, not {expected_revision}; reload it")
    if document.header.recipe_code != version.recipe_code:
        raise RecipeInputError("the document was refused", [Problem(
            "header.recipe_code", f"this is a version of {version.recipe_code}; the recipe code cannot change")])
    return _save_draft(session, version, document, note)


def _save_draft(session: Session, version: RecipeVersion, doc: RecipeDocument,
                note: str) -> tuple[RecipeVersion, list[Message]]:
    new_hash = content_hash(doc)
    messages = validate(doc)
    if new_hash == version.content_hash:
        return version, messages
    old = {"content_hash": version.content_hash, "revision": version.revision}
    version.document = to_data(doc)
    version.content_hash = new_hash
    version.revision += 1
    for name, value in _header_columns(doc).items():
        setattr(version, name, value)
    session.flush()
    _add_revision(session, version, doc, note)
    record(session, action="update", record_type=VERSION_RECORD_TYPE, record_id=version.id, old=old,
           new={"content_hash": new_hash, "revision": version.revision, "note": note})
    return version, messages


def new_draft_version(session: Session, *, version_id: int, change_reason: str) -> RecipeVersion:
    """Start the next version of a recipe from an approved (or superseded/retired) one, with a change reason."""
    source = get_version(session, version_id)
    if source.status not in RELEASED_STATUSES:
        raise Conflict(f"version {source.version} is {source.status.replace('_', ' ')}: change the draft itself, "
                       "or wait until it is approved")
    if not (change_reason or "").strip():
        raise ValidationError("a change reason is required for a new version of an approved recipe")
    created = create_version(session, document=document_of(source), change_reason=change_reason,
                             note=f"new version from version {source.version}", check_materials=False)
    for item in current_attachments(session, source.id).values():
        session.add(RecipeAttachment(version_id=created.id, name=item.name, content_type=item.content_type,
                                     size=item.size, sha256=item.sha256, data=item.data,
                                     member_id=_actor(session).member_id))
    session.flush()
    return created


# ---------------------------------------------------------------------------------------------------------------
# Review and approval


@dataclass(frozen=True)
class VersionDiff:
    """What a version is compared with and the changes."""

    against: str
    against_version: RecipeVersion | None
    against_hash: str | None
    changes: list[Change]


def version_diff(session: Session, version: RecipeVersion) -> VersionDiff:
    """The diff a reviewer sees: against the previous version, else against the imported template."""
    doc = document_of(version)
    previous = previous_version(session, version)
    if previous is not None:
        return VersionDiff("version", previous, previous.content_hash, diff_documents(previous.document, doc))
    master = session.get_one(MasterRecipe, version.master_recipe_id)
    if master.template_document is not None:
        template_doc = parse_document(master.template_document)
        return VersionDiff("template", None, content_hash(template_doc), diff_documents(template_doc, doc))
    return VersionDiff("none", None, None, diff_documents(None, doc))


def template_diff(session: Session, version: RecipeVersion) -> list[Change] | None:
    """The adaptation: every difference between the imported template and this version (None: no template)."""
    master = session.get_one(MasterRecipe, version.master_recipe_id)
    if master.template_document is None:
        return None
    return diff_documents(master.template_document, document_of(version))


def template_pack(template_id: str | None, template_version: str | None) -> Any:
    """The validation pack of the template a recipe came from, if the library still holds that version."""
    if template_id is None:
        return None
    for template in _load_library_cached():
        if template.id == template_id and template.version == template_version:
            return template.pack
    return None


def adaptation_results(session: Session, version: RecipeVersion) -> list[ScenarioResult] | None:
    """Re-run the template's scenarios whose assumptions still hold on this version (None: no template)."""
    master = session.get_one(MasterRecipe, version.master_recipe_id)
    pack = template_pack(master.template_id, master.template_version)
    if pack is None or master.template_document is None:
        return None
    return rerun_template_scenarios(parse_document(master.template_document), document_of(version), pack)


def _authors(session: Session, version: RecipeVersion) -> set[int]:
    """Members who wrote this version: its creator and whoever saved a revision of it."""
    members = set(session.scalars(select(RecipeVersionRevision.member_id).where(
        RecipeVersionRevision.version_id == version.id, RecipeVersionRevision.member_id.is_not(None))))
    if version.created_by_member_id is not None:
        members.add(version.created_by_member_id)
    return members


def _check_ready_for_review(session: Session, version: RecipeVersion) -> None:
    doc = document_of(version)
    messages = validate(doc)
    if has_errors(messages):
        errors = [m for m in messages if m.level == "error"]
        raise RecipeInputError("the version cannot go to review while the editor reports errors",
                               [Problem(m.path, m.message) for m in errors])
    problems = material_problems(session, doc)
    if problems:
        raise RecipeInputError("the version names materials this tenant does not have", problems)
    failed = [r for r in adaptation_results(session, version) or [] if r.status == "failed"]
    if failed:
        raise RecipeInputError("template scenarios that still apply fail on this version",
                               [Problem(r.scenario_id, "; ".join(r.details)) for r in failed])
    today = datetime.now(UTC).date()
    if version.expiry_date is not None and version.expiry_date <= today:
        raise ValidationError(f"the expiry date {version.expiry_date} has passed; change it before review")


def sign_version(session: Session, *, version_id: int, meaning: str, user_id: int, password: str,
                 reason: str | None = None, identification: str | None = None,
                 identification_required: bool = False) -> RecipeVersion:
    """Sign a version on its route (authored, reviewed, approved); the status follows the route."""
    version = _lock_version(session, version_id)
    actor = _actor(session)
    meaning = (meaning or "").strip()
    if meaning == "authored":
        _require_draft(version)
        _check_ready_for_review(session, version)
    elif meaning in ("reviewed", "approved"):
        if version.status not in ("in_review", "reviewed"):
            raise Conflict(f"version {version.version} is {version.status.replace('_', ' ')}; only a version in "
                           f"review can be signed {meaning!r}")
        if actor.member_id in _authors(session, version):
            raise SignerNotPermitted(f"separation of duties: you wrote this version; another person must sign it "
                                     f"{meaning!r}")
        if meaning == "approved":
            today = datetime.now(UTC).date()
            if version.expiry_date is not None and version.expiry_date <= today:
                raise ValidationError(f"the expiry date {version.expiry_date} has passed: reject the version so "
                                      "the author can change it")
    else:
        raise ValidationError(f"{meaning!r} is not a recipe signature: sign authored, reviewed or approved")
    diff = version_diff(session, version) if meaning in ("reviewed", "approved") else None
    signature = esign.sign(session, record_type=VERSION_RECORD_TYPE, record_id=version.id,
                           content=signed_content(session, version), meaning=meaning, password=password, actor=actor,
                           user_id=user_id, reason=reason, identification=identification,
                           identification_required=identification_required)
    if diff is not None:
        session.add(RecipeVersionDiff(version_id=version.id, signature_id=signature.id, meaning=meaning,
                                      against=diff.against,
                                      against_version_id=diff.against_version.id if diff.against_version else None,
                                      against_hash=diff.against_hash, content_hash=version.content_hash,
                                      diff=[c.as_dict() for c in diff.changes]))
        session.flush()
    _follow_route(session, version, f"signed {meaning} by {signature.printed_name}")
    if version.status == "approved" and version.approved_at is None:
        _approve(session, version, signature.signed_at)
    return version


def reject_version(session: Session, *, version_id: int, user_id: int, password: str, reason: str,
                   identification: str | None = None, identification_required: bool = False) -> RecipeVersion:
    """Send a version in review back to draft with a signed rejection and a reason."""
    version = _lock_version(session, version_id)
    if version.status not in ("in_review", "reviewed"):
        raise Conflict(f"version {version.version} is {version.status.replace('_', ' ')}; only a version in review "
                       "can be rejected")
    signature = esign.reject(session, record_type=VERSION_RECORD_TYPE, record_id=version.id,
                             content=signed_content(session, version), password=password, actor=_actor(session),
                             user_id=user_id, reason=reason, identification=identification,
                             identification_required=identification_required)
    _follow_route(session, version, f"rejected by {signature.printed_name}: {reason}")
    return version


def _follow_route(session: Session, version: RecipeVersion, why: str) -> None:
    state = esign.route_state(session, record_type=VERSION_RECORD_TYPE, record_id=version.id)
    if state is None or state.record_status == version.status:
        return
    if state.record_status not in ("draft", "in_review", "reviewed", "approved"):
        raise Conflict(f"the signature route of recipe versions sets status {state.record_status!r}, which a recipe "
                       "version does not have; an administrator must correct the route")
    old = version.status
    version.status = state.record_status
    session.flush()
    record(session, action="status_change", record_type=VERSION_RECORD_TYPE, record_id=version.id,
           old={"status": old}, new={"status": version.status}, reason=why)


def _midnight_utc(day: Any) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _approve(session: Session, version: RecipeVersion, approved_at: datetime) -> None:
    """Set the effective period and supersede the version it replaces."""
    start = approved_at
    if version.effective_date is not None:
        start = max(start, _midnight_utc(version.effective_date))
    version.approved_at = approved_at
    version.effective_from = start
    if version.expiry_date is not None:
        version.effective_until = max(start, _midnight_utc(version.expiry_date))
    session.flush()
    record(session, action="approve", record_type=VERSION_RECORD_TYPE, record_id=version.id,
           new={"approved_at": approved_at, "effective_from": start, "effective_until": version.effective_until,
                "content_hash": version.content_hash})
    earlier = session.scalars(select(RecipeVersion).where(
        RecipeVersion.master_recipe_id == version.master_recipe_id, RecipeVersion.id != version.id,
        RecipeVersion.status == "approved").with_for_update())
    for old in earlier:
        end = max(start, old.effective_from) if old.effective_from is not None else start
        if old.effective_until is not None:
            end = min(end, old.effective_until)
        before = {"status": old.status, "effective_until": old.effective_until}
        old.status = "superseded"
        old.effective_until = end
        session.flush()
        record(session, action="supersede", record_type=VERSION_RECORD_TYPE, record_id=old.id, old=before,
               new={"status": "superseded", "effective_until": end, "superseded_by": version.id},
               reason=f"version {version.version} approved, effective from {start.isoformat()}")


def retire_version(session: Session, *, version_id: int, reason: str) -> RecipeVersion:
    """Retire a version: an abandoned draft, or an approved/superseded version no longer to be used from now."""
    version = _lock_version(session, version_id)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("a reason is required to retire a recipe version")
    if version.status not in ("draft", "approved", "superseded"):
        raise Conflict(f"version {version.version} is {version.status.replace('_', ' ')}; reject it first, then "
                       "retire the draft")
    now = session.scalar(select(func.now()))
    old = {"status": version.status, "effective_until": version.effective_until}
    version.status = "retired"
    version.retired_at = now
    version.retired_reason = reason
    if version.effective_from is not None:
        end = max(now, version.effective_from)
        version.effective_until = end if version.effective_until is None else min(version.effective_until, end)
    session.flush()
    record(session, action="status_change", record_type=VERSION_RECORD_TYPE, record_id=version.id, old=old,
           new={"status": "retired", "effective_until": version.effective_until}, reason=reason)
    return version


# ---------------------------------------------------------------------------------------------------------------
# Export


def export_json(version: RecipeVersion) -> bytes:
    """The version's document as our JSON (schema batchline.recipe/1), indented, hashing to its content hash."""
    data = json.loads(canonical_json(document_of(version)))
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode()


def export_batchml(version: RecipeVersion) -> str:
    """The version's document as a BatchML (B2MML-V0600) MasterRecipe."""
    return to_batchml(document_of(version), version=str(version.version))


def export_filename(version: RecipeVersion, fmt: str) -> str:
    """A download name: recipe code, version and format."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in version.recipe_code)
    return f"{safe}_v{version.version}.{'json' if fmt == 'json' else 'batchml.xml'}"


def signatures(session: Session, version: RecipeVersion) -> list[esign.SignatureCheck]:
    """The version's signatures, each verified against its current content."""
    return esign.check_signatures(session, esign.signatures_of(session, record_type=VERSION_RECORD_TYPE,
                                                               record_id=version.id),
                                 signed_content(session, version))


def stored_diffs(session: Session, version: RecipeVersion) -> Sequence[RecipeVersionDiff]:
    """The diffs stored with the version's review and approval signatures."""
    return session.scalars(select(RecipeVersionDiff).where(RecipeVersionDiff.version_id == version.id)
                           .order_by(RecipeVersionDiff.id)).all()


# ---------------------------------------------------------------------------------------------------------------
# Instruction images


#: Images a step's instructions may show, recognised by their first bytes (the browser's claim is not trusted).
IMAGE_SIGNATURES: tuple[tuple[str, bytes, int], ...] = (
    ("image/png", b"\x89PNG\r\n\x1a\n", 0),
    ("image/jpeg", b"\xff\xd8\xff", 0),
    ("image/gif", b"GIF8", 0),
    ("image/webp", b"WEBP", 8),
)
MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
_ATTACHMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def signed_content(session: Session, version: RecipeVersion) -> dict[str, Any]:
    """What a signature on a version attests to, including the hashes of its instruction images."""
    return version.signed_content(attachment_hashes(session, version.id))


def current_attachments(session: Session, version_id: int) -> dict[str, RecipeAttachment]:
    """A version's attachments by name (the latest upload of each name)."""
    rows = session.scalars(select(RecipeAttachment).where(RecipeAttachment.version_id == version_id)
                           .order_by(RecipeAttachment.id))
    return {row.name: row for row in rows}


def get_attachment(session: Session, version_id: int, name: str) -> RecipeAttachment:
    """One attachment of a version, or NotFound."""
    found = current_attachments(session, version_id).get(name)
    if found is None:
        raise NotFound(f"version {version_id} has no image {name!r}")
    return found


def _image_type(data: bytes) -> str | None:
    for media_type, magic, offset in IMAGE_SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            return media_type
    return None


def add_attachment(session: Session, *, version_id: int, filename: str, data: bytes,
                   phase_key: str | None = None) -> RecipeAttachment:
    """Upload an image for a draft's instructions; with a step, list it on that step (a new draft revision)."""
    version = _lock_version(session, version_id)
    _require_draft(version)
    name = (filename or "").strip().rsplit("/", 1)[-1].rsplit("\\", 1)[-1].replace(" ", "-")
    if not _ATTACHMENT_NAME.match(name):
        raise ValidationError(f"image name {name!r} is invalid: letters, digits, '.', '_' and '-' only "
                              "(at most 128 characters, starting with a letter or digit)")
    if not data:
        raise ValidationError(f"{name} is empty")
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise ValidationError(f"{name} is {len(data) / 1048576:.1f} MB; images may be at most "
                              f"{MAX_ATTACHMENT_BYTES // 1048576} MB")
    media_type = _image_type(data)
    if media_type is None:
        raise ValidationError(f"{name} is not a PNG, JPEG, GIF or WebP image")
    row = RecipeAttachment(version_id=version.id, name=name, content_type=media_type, size=len(data),
                           sha256=hashlib.sha256(data).hexdigest(), data=data, member_id=_actor(session).member_id)
    session.add(row)
    session.flush()
    record(session, action="create", record_type="recipe_attachment", record_id=row.id,
           new={"version_id": version.id, "name": name, "content_type": media_type, "size": row.size,
                "sha256": row.sha256})
    if phase_key:
        phase = next((ph for ph in document_of(version).phases() if ph.key == phase_key), None)
        if phase is None:
            raise ValidationError(f"there is no step {phase_key!r} in this version")
        if name not in phase.attachments:
            data_doc = editing.add_attachment_name(version.document, {"phase": phase_key, "name": name})
            _save_draft(session, version, parse_document(data_doc), f"image {name} on step {phase_key}")
    return row


def attachment_messages(session: Session, version: RecipeVersion) -> list[Message]:
    """Warnings for images a step lists or shows but nobody uploaded yet."""
    uploaded = set(current_attachments(session, version.id))
    out = []
    for path, phase in document_of(version).iter_phase_paths():
        for a, name in enumerate(phase.attachments):
            if name not in uploaded:
                out.append(Message("warning", f"{path}.attachments[{a}]",
                                   f"image {name!r} of step {phase.key!r} is not uploaded yet"))
    return out
