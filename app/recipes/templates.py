"""The validated template library in ``tenants/templates``: loading, content hashes and the index.

Each template is a directory holding ``template.json`` (metadata, the public sources its typical parameters
come from, and the recipe document) and ``validation.json`` (its validation pack). ``index.json`` lists every
template's id, version and SHA-256 hash, computed over the canonical JSON of both files, so any change to a
template shows: the index must be regenerated, and it refuses to record a changed template whose version was
not bumped.

    python -m app.recipes.templates --write-index   # regenerate tenants/templates/index.json
    python -m app.recipes.templates --check         # verify the library (as CI does through the tests)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from app.recipes.document import (
    LongText,
    Problem,
    RecipeDocument,
    RecipeDocumentError,
    StrictModel,
    Text,
    canonical_json,
    content_hash,
    load_json,
    problems_from_validation_error,
)
from app.recipes.scenarios import ValidationPack, check_pack, parse_validation_pack
from app.recipes.validation import validate

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "tenants" / "templates"
INDEX_NAME = "index.json"
INDEX_SCHEMA = "batchline.template-index/1"
TEMPLATE_SCHEMA = "batchline.template/1"


class TemplateError(ValueError):
    """A template that cannot be loaded or an index that does not match the library."""


class Source(StrictModel):
    """A public reference the template's typical parameters were taken from."""

    citation: LongText
    url: str | None = None
    used_for: LongText


class TemplateNotes(StrictModel):
    """Where the numbers come from, and what a site must still decide itself."""

    summary: LongText
    sources: list[Source] = Field(min_length=1)
    adapt_before_use: LongText


class TemplateFile(StrictModel):
    """The content of ``template.json``."""

    model_config = StrictModel.model_config | {
        "validate_by_alias": True,
        "validate_by_name": False,
        "serialize_by_alias": True,
    }

    schema_id: str = Field(alias="schema", pattern=r"^batchline\.template/1$")
    id: str = Field(pattern=r"^[a-z][a-z0-9-]{2,63}$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    title: Text
    description: LongText
    notes: TemplateNotes
    document: RecipeDocument


@dataclass(frozen=True)
class Template:
    """A loaded template."""

    path: Path
    meta: TemplateFile
    pack: ValidationPack

    @property
    def id(self) -> str:
        """Return the template id."""
        return self.meta.id

    @property
    def version(self) -> str:
        """Return the template version."""
        return self.meta.version

    @property
    def document(self) -> RecipeDocument:
        """Return the recipe document."""
        return self.meta.document


def _describe(path: Path, problems: Sequence[Problem]) -> str:
    """Name the file and list its problems in one message."""
    return f"{path}: " + "; ".join(f"{p.path}: {p.message}" for p in problems)


def _read_json(path: Path) -> Any:
    """Read a JSON file strictly, naming the file in any problem."""
    try:
        return load_json(path.read_bytes())
    except RecipeDocumentError as exc:
        raise TemplateError(_describe(path, exc.problems)) from exc


def load_template(path: Path) -> Template:
    """Load one template directory, validating both files strictly."""
    data = _read_json(path / "template.json")
    try:
        meta = TemplateFile.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        problems = problems_from_validation_error(exc, data)
        raise TemplateError(_describe(path / "template.json", problems)) from exc
    try:
        pack = parse_validation_pack(_read_json(path / "validation.json"))
    except RecipeDocumentError as exc:
        raise TemplateError(_describe(path / "validation.json", exc.problems)) from exc
    if (pack.template_id, pack.template_version) != (meta.id, meta.version):
        raise TemplateError(
            f"{path}: validation.json is for {pack.template_id} {pack.template_version}, "
            f"the template is {meta.id} {meta.version}"
        )
    return Template(path=path, meta=meta, pack=pack)


def template_dirs(root: Path = TEMPLATES_DIR) -> list[Path]:
    """Return the template directories of a library, sorted."""
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "template.json").exists())


def load_library(root: Path = TEMPLATES_DIR) -> list[Template]:
    """Load every template of the library, refusing duplicate ids."""
    templates = [load_template(p) for p in template_dirs(root)]
    seen: dict[str, Path] = {}
    for t in templates:
        if t.id in seen:
            raise TemplateError(f"template id {t.id} is used by {seen[t.id].name} and {t.path.name}")
        seen[t.id] = t.path
    return templates


def template_hash(path: Path) -> str:
    """Return the SHA-256 of a template directory: canonical JSON of template.json and validation.json."""
    content = {
        "template": _read_json(path / "template.json"),
        "validation": _read_json(path / "validation.json"),
    }
    return hashlib.sha256(canonical_json(content)).hexdigest()


def build_index(root: Path = TEMPLATES_DIR) -> dict[str, Any]:
    """Build the index of a library from its templates."""
    entries = []
    for template in load_library(root):
        entries.append(
            {
                "id": template.id,
                "version": template.version,
                "directory": template.path.name,
                "sha256": template_hash(template.path),
                "recipe_content_hash": content_hash(template.document),
            }
        )
    return {"schema": INDEX_SCHEMA, "templates": sorted(entries, key=lambda e: e["id"])}


def read_index(root: Path = TEMPLATES_DIR) -> dict[str, Any]:
    """Read the committed index of a library."""
    path = root / INDEX_NAME
    if not path.exists():
        return {"schema": INDEX_SCHEMA, "templates": []}
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("schema") != INDEX_SCHEMA:
        raise TemplateError(f"{path}: not a {INDEX_SCHEMA} index")
    return data


def index_differences(root: Path = TEMPLATES_DIR) -> list[str]:
    """Return how the committed index differs from the library; empty when they match."""
    committed = {e["id"]: e for e in read_index(root)["templates"]}
    current = {e["id"]: e for e in build_index(root)["templates"]}
    out = []
    for tid in sorted(committed.keys() | current.keys()):
        old, new = committed.get(tid), current.get(tid)
        if old is None:
            out.append(f"{tid}: not in the index")
        elif new is None:
            out.append(f"{tid}: in the index but not in the library")
        elif old != new:
            if old["version"] == new["version"] and old["sha256"] != new["sha256"]:
                out.append(f"{tid}: content changed but version {new['version']} did not; bump the version")
            else:
                out.append(f"{tid}: index entry is stale ({old['version']} -> {new['version']})")
    return out


def write_index(root: Path = TEMPLATES_DIR) -> Path:
    """Regenerate the index, refusing templates whose content changed under an unchanged version."""
    committed = {e["id"]: e for e in read_index(root)["templates"]}
    index = build_index(root)
    unbumped = [
        e["id"]
        for e in index["templates"]
        if e["id"] in committed
        and committed[e["id"]]["version"] == e["version"]
        and committed[e["id"]]["sha256"] != e["sha256"]
    ]
    if unbumped:
        raise TemplateError(f"changed without a new version: {', '.join(unbumped)}; bump their version first")
    path = root / INDEX_NAME
    path.write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def check_library(root: Path = TEMPLATES_DIR) -> list[Problem]:
    """Check every template: recipe without validation errors, scenarios as expected, index up to date."""
    out: list[Problem] = []
    for template in load_library(root):
        name = template.path.name
        errors = [m for m in validate(template.document) if m.level == "error"]
        out.extend(Problem(f"{name}/template.json {m.path}", m.message) for m in errors)
        pack_problems = check_pack(template.document, template.pack)
        out.extend(Problem(f"{name}/validation.json {p.path}", p.message) for p in pack_problems)
    out.extend(Problem(INDEX_NAME, d) for d in index_differences(root))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate or check the template index from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m app.recipes.templates", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", type=Path, default=TEMPLATES_DIR, help="library directory")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write-index", action="store_true", help="regenerate index.json")
    group.add_argument("--check", action="store_true", help="validate templates, scenarios and the index")
    args = parser.parse_args(argv)
    try:
        if args.write_index:
            print(f"wrote {write_index(args.root)}")
            return 0
        problems = check_library(args.root)
    except TemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for p in problems:
        print(f"{p.path}: {p.message}", file=sys.stderr)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
