"""Images in step instructions: uploaded to drafts, shown on the page, frozen and signed with the version."""

from __future__ import annotations

import base64
import io

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.core.errors import Conflict, ValidationError
from app.recipes import services
from tests.conftest import csrf_token, sign_in
from tests.recipes.conftest import RecipeTeam, import_cho

#: A 1x1 PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGA"
                       "hKmMIQAAAABJRU5ErkJggg==")


def test_an_image_uploaded_to_a_step_is_shown_and_served(app, recipe_team: RecipeTeam) -> None:
    team = recipe_team
    version_id = import_cho(team)
    from tests.conftest import RequestIsolatedClient

    app.test_client_class = RequestIsolatedClient
    author = app.test_client()
    assert sign_in(author, team.author.email).status_code == 302
    base = f"/t/{team.tenant.ref.slug}/recipes/versions/{version_id}"
    editor = f"{base}/edit?sel=phase:install_bag"
    # The template's step lists an image nobody uploaded yet: the editor warns.
    page = author.get(editor).get_data(as_text=True)
    assert "sub50-bag-install.png" in page and "not uploaded" in page
    refused = author.post(f"{base}/attachments", data={"csrf_token": csrf_token(author, editor), "phase": "install_bag",
                                                      "file": (io.BytesIO(b"<svg onload=alert(1)>"), "x.png")},
                          content_type="multipart/form-data")
    assert refused.status_code == 422 and "not a PNG, JPEG, GIF or WebP" in refused.get_data(as_text=True)
    uploaded = author.post(f"{base}/attachments", data={"csrf_token": csrf_token(author, editor),
                                                       "phase": "install_bag",
                                                       "file": (io.BytesIO(PNG), "sub50-bag-install.png")},
                           content_type="multipart/form-data")
    assert uploaded.status_code == 302
    # Show it in the instructions, as an author writes Markdown.
    with team.session(team.author) as session:
        version = services.get_version(session, version_id)
        phase = next(ph for ph in services.document_of(version).phases() if ph.key == "install_bag")
        fields = {"key": "install_bag", "name": phase.name, "mandatory": "yes", "material_rows": "0",
                  "sign_performed": "yes", "attachments": "sub50-bag-install.png",
                  "instructions": phase.instructions + "\n\n![Bag on the support](attachment:sub50-bag-install.png)"
                                  "\n\n<script>alert(1)</script>"}
        services.edit_draft(session, version_id=version_id, op="update_phase", fields=fields)
    page = author.get(base).get_data(as_text=True)
    src = f"/t/{team.tenant.ref.slug}/recipes/versions/{version_id}/attachments/sub50-bag-install.png"
    assert f'<img src="{src}" alt="Bag on the support"' in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    image = author.get(src)
    assert image.data == PNG and image.mimetype == "image/png"
    assert image.headers["X-Content-Type-Options"] == "nosniff"
    assert "not uploaded" not in author.get(editor).get_data(as_text=True)


def test_images_are_frozen_and_signed_with_the_version_and_copied_to_the_next(recipe_team: RecipeTeam) -> None:
    team = recipe_team
    version_id = import_cho(team)
    with team.session(team.author) as session:
        services.add_attachment(session, version_id=version_id, filename="sub50-bag-install.png", data=PNG,
                                phase_key="install_bag")
        with pytest.raises(ValidationError, match="at most"):
            services.add_attachment(session, version_id=version_id, filename="big.png",
                                    data=PNG + b"0" * services.MAX_ATTACHMENT_BYTES)
    for who, meaning in ((team.author, "authored"), (team.reviewer, "reviewed"), (team.qa, "approved")):
        team.sign(who, version_id, meaning)
    with team.session(team.author) as session, pytest.raises(Conflict, match="cannot be changed"):
        services.add_attachment(session, version_id=version_id, filename="late.png", data=PNG)
    with pytest.raises(DBAPIError, match="images are frozen"), team.session(team.author) as session:
        session.execute(text("INSERT INTO recipe_attachments (version_id, name, content_type, size, sha256, data) "
                             "VALUES (:v, 'late.png', 'image/png', 1, 'x', '\\x00')"), {"v": version_id})
    with team.session(team.qa) as session:
        version = services.get_version(session, version_id)
        content = services.signed_content(session, version)
        assert list(content["attachments"]) == ["sub50-bag-install.png"]
        assert all(c.valid for c in services.signatures(session, version))
        nxt = services.new_draft_version(session, version_id=version_id, change_reason="next")
        copied = services.current_attachments(session, nxt.id)
        assert copied["sub50-bag-install.png"].data == PNG
