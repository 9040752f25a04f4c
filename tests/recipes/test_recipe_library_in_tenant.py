"""Every template of the library in a real tenant: imports, passes its scenarios, and round-trips JSON and BatchML."""

from __future__ import annotations

import pytest

from app.recipes import services
from app.recipes.scenarios import check_pack
from app.recipes.templates import TEMPLATES_DIR, load_library, read_index
from tests.recipes.conftest import RecipeTeam

TEMPLATE_IDS = [t.id for t in load_library(TEMPLATES_DIR)]


@pytest.mark.parametrize("template_id", TEMPLATE_IDS)
def test_template_imports_passes_its_scenarios_and_round_trips(recipe_team: RecipeTeam, template_id: str) -> None:
    team = recipe_team
    entry = next(e for e in read_index(TEMPLATES_DIR)["templates"] if e["id"] == template_id)
    with team.session(team.author) as session:
        version = services.import_template(session, template_id=template_id, create_missing_materials=True)
        first_id, first_hash = version.id, version.content_hash
    with team.session(team.author) as session:
        stored = services.get_version(session, first_id)
        doc = services.document_of(stored)  # read back from PostgreSQL, hash re-checked
        assert first_hash == entry["recipe_content_hash"]
        assert (stored.template_id, stored.template_version, stored.template_hash) == (
            template_id, entry["version"], entry["sha256"])
        template, _ = services.find_template(template_id)
        assert check_pack(doc, template.pack) == []  # every scenario, as stored in this tenant
        results = services.adaptation_results(session, stored)
        assert results is not None and {r.status for r in results} == {"passed"}
        exported_json = services.export_json(stored)
        exported_xml = services.export_batchml(stored)
        services.retire_version(session, version_id=first_id, reason="round-trip check")
    # Re-import both exports as new versions of the same recipe: the content hash is identical.
    for fmt, source in (("json", exported_json), ("batchml", exported_xml)):
        with team.session(team.author) as session:
            again = services.import_recipe(session, source=source, fmt=fmt, change_reason=f"{fmt} round trip")
            assert again.content_hash == first_hash, fmt
            assert again.version == (2 if fmt == "json" else 3)
            services.retire_version(session, version_id=again.id, reason="round-trip check")
