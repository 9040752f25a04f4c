"""The template library: every template loads, validates, is sourced, indexed and round-trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.recipes.document import canonical_json, content_hash, parse_document, to_data
from app.recipes.templates import (
    TEMPLATES_DIR,
    TemplateError,
    build_index,
    index_differences,
    load_library,
    load_template,
    main,
    read_index,
    template_hash,
    write_index,
)
from app.recipes.validation import validate

LIBRARY = load_library()
REQUIRED = {
    "cho-fed-batch-sub50",
    "buffer-prep-phosphate-saline",
    "ecoli-plasmid-fermentation-10l",
    "protein-a-capture",
    "ufdf-tff-formulation",
    "mrna-ivt-purification",
    "car-t-autologous",
    "aseptic-vial-fill-finish",
}


def _ids(template):
    return template.id


def test_library_has_the_eight_required_templates():
    assert {t.id for t in LIBRARY} >= REQUIRED
    assert len(LIBRARY) >= 8


@pytest.mark.parametrize("template", LIBRARY, ids=_ids)
def test_template_validates_without_errors(template):
    errors = [m.as_dict() for m in validate(template.document) if m.level == "error"]
    assert errors == []


@pytest.mark.parametrize("template", LIBRARY, ids=_ids)
def test_template_is_realistic_and_sourced(template):
    steps = template.document.phases()
    assert 10 <= len(steps) <= 25
    assert template.document.formula.parameters
    assert template.document.materials
    assert any(s.signatures and any(sig.independent for sig in s.signatures) for s in steps)
    assert any(p.criticality == "critical" for p in template.document.formula.parameters)
    assert len(template.meta.notes.sources) >= 3
    assert all(s.citation and s.used_for for s in template.meta.notes.sources)
    assert template.path.name == template.id


@pytest.mark.parametrize("template", LIBRARY, ids=_ids)
def test_validation_pack_traces_every_requirement_and_risk(template):
    requirement_ids = {r.id for r in template.pack.requirements}
    verified = {ref for scenario in template.pack.scenarios for ref in scenario.verifies}
    assert requirement_ids <= verified
    assert all(set(risk.requirements) <= requirement_ids for risk in template.pack.risks)
    expectations = [s.expect for s in template.pack.scenarios]
    assert any(not e.exceptions and not e.refusals for e in expectations), "a nominal scenario"
    assert any(e.exceptions for e in expectations) and any(e.refusals for e in expectations)


@pytest.mark.parametrize("template", LIBRARY, ids=_ids)
def test_json_round_trip_keeps_the_content_hash(template):
    doc = template.document
    assert content_hash(parse_document(canonical_json(doc))) == content_hash(doc)
    assert content_hash(parse_document(json.dumps(to_data(doc), indent=2))) == content_hash(doc)
    raw = json.loads((template.path / "template.json").read_text(encoding="utf-8"))["document"]
    assert content_hash(parse_document(raw)) == content_hash(doc)


def test_index_matches_the_library():
    assert index_differences() == []
    committed = read_index()
    assert committed == build_index()
    for entry in committed["templates"]:
        assert entry["sha256"] == template_hash(TEMPLATES_DIR / entry["directory"])


@pytest.fixture
def library_copy(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, root)
    return root


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def test_a_changed_template_needs_a_new_version(library_copy: Path):
    template_json = library_copy / "protein-a-capture" / "template.json"

    def change_limit(data):
        data["document"]["formula"]["parameters"][7]["high"] = 45.0

    _edit(template_json, change_limit)
    assert index_differences(library_copy) == [
        "protein-a-capture: content changed but version 1.0.0 did not; bump the version"
    ]
    with pytest.raises(TemplateError, match="changed without a new version: protein-a-capture"):
        write_index(library_copy)

    def bump(data):
        data["version"] = "1.1.0"

    _edit(template_json, bump)
    _edit(
        library_copy / "protein-a-capture" / "validation.json", lambda d: d.update(template_version="1.1.0")
    )
    assert "stale (1.0.0 -> 1.1.0)" in index_differences(library_copy)[0]
    write_index(library_copy)
    assert index_differences(library_copy) == []


def test_formatting_alone_does_not_change_the_hash(library_copy: Path):
    path = library_copy / "car-t-autologous" / "validation.json"
    before = template_hash(path.parent)
    path.write_text(json.dumps(json.loads(path.read_text(encoding="utf-8"))), encoding="utf-8")
    assert template_hash(path.parent) == before


def test_broken_templates_are_refused_with_the_file_and_path(library_copy: Path):
    template_json = library_copy / "mrna-ivt-purification" / "template.json"
    _edit(template_json, lambda d: d["document"]["header"].update(batch_size={"value": 50, "unit": "mLL"}))
    with pytest.raises(TemplateError, match=r"template.json: document.header.batch_size.unit: unknown unit"):
        load_template(template_json.parent)
    pack = library_copy / "ufdf-tff-formulation" / "validation.json"
    _edit(pack, lambda d: d.update(template_version="9.9.9"))
    with pytest.raises(TemplateError, match=r"validation\.json is for ufdf-tff-formulation 9\.9\.9"):
        load_template(pack.parent)


def test_command_line_checks_and_writes_the_index(library_copy: Path, capsys):
    assert main(["--check", "--root", str(library_copy)]) == 0
    assert "0 problem(s)" in capsys.readouterr().out
    (library_copy / "index.json").unlink()
    assert main(["--check", "--root", str(library_copy)]) == 1
    assert "not in the index" in capsys.readouterr().err
    assert main(["--write-index", "--root", str(library_copy)]) == 0
    assert (library_copy / "index.json").read_text(encoding="utf-8") == (
        TEMPLATES_DIR / "index.json"
    ).read_text(encoding="utf-8")
