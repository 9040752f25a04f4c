"""Recipe endpoints of the public API (read only: `/api/v1/recipes...`; bearer tokens).

Master recipes, their versions with the whole recipe document, and the version effective at a moment (the one
batches are planned from), all through the recipes area's queries and services. Authoring, review and approval
stay on the recipe screens, where each step is e-signed.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.api.registry import operation, page_of, paginate_list
from app.api.schemas import Moment, Page, PageQuery, Query
from app.api.services import ApiPrincipal
from app.core.errors import NotFound
from app.core.tenancy import tenant_transaction
from app.core.validation import db_now
from app.recipes import queries, services
from app.recipes.models import MasterRecipe, RecipeVersion
from app.recipes.schemas import MessageOut, RecipeOut, VersionOut, VersionSummary
from app.recipes.validation import validate

TAGS = ["recipes"]
NO_RECIPE = {404: "No such master recipe in this tenant"}


class RecipeQuery(PageQuery):
    """Filters of the master recipe list."""

    q: str | None = Field(default=None, max_length=100, description="Part of the recipe code or name")
    product_code: str | None = Field(default=None, max_length=60, description="Only recipes of this product")
    effective: bool | None = Field(default=None, description="true: only recipes with a version effective now; "
                                                             "false: only recipes without one")


class RecipePage(Page[RecipeOut]):
    """A page of master recipes, each with its latest version and the version effective now."""


class VersionPage(Page[VersionSummary]):
    """A page of a master recipe's versions."""


class EffectiveQuery(Query):
    """The moment to ask about."""

    at: Moment | None = Field(default=None, description="An ISO 8601 moment with its zone (default: now)")


def _version_out(version: RecipeVersion, *, with_messages: bool) -> VersionOut:
    out = VersionOut.model_validate(version)
    if with_messages:
        out.messages = [MessageOut.model_validate(m) for m in validate(services.document_of(version))]
    return out


def _recipe(row: queries.RecipeRow) -> dict[str, Any]:
    master = row.master
    return RecipeOut(id=master.id, code=master.code, name=master.name, product_code=master.product_code,
                     template_id=master.template_id, template_version=master.template_version,
                     template_hash=master.template_hash, latest=VersionSummary.model_validate(row.latest),
                     effective=VersionSummary.model_validate(row.effective) if row.effective else None).model_dump()


def _wanted(row: queries.RecipeRow, query: RecipeQuery) -> bool:
    needle = (query.q or "").strip().lower()
    return ((not needle or needle in row.master.code.lower() or needle in row.master.name.lower())
            and (query.product_code is None or row.master.product_code == query.product_code)
            and (query.effective is None or (row.effective is not None) == query.effective))


@operation("GET", "/recipes", summary="List master recipes", permission="recipes.read", query=RecipeQuery,
           response=RecipePage, tags=TAGS)
def list_recipes(principal: ApiPrincipal, *, query: RecipeQuery) -> dict[str, Any]:
    """Master recipes by id, each with its latest version and the version effective now (null when none is),
    filterable by text, product and whether a version is effective."""
    with tenant_transaction(principal.tenant) as session:
        rows = queries.recipe_rows(session, db_now(session))
        return paginate_list([r for r in rows if _wanted(r, query)], query, _recipe)


@operation("GET", "/recipes/<int:master_id>", summary="One master recipe", permission="recipes.read",
           response=RecipeOut, tags=TAGS, errors=NO_RECIPE)
def get_recipe(principal: ApiPrincipal, *, master_id: int) -> dict[str, Any]:
    """A master recipe with its latest version and the version effective now."""
    with tenant_transaction(principal.tenant) as session:
        master = services.get_master_recipe(session, master_id)
        latest = session.scalars(queries.versions_query(master.id).limit(1)).first()
        if latest is None:
            raise NotFound(f"master recipe {master_id} has no version yet")
        try:
            effective: RecipeVersion | None = services.effective_version(session, master.id, db_now(session))
        except NotFound:
            effective = None
        return _recipe(queries.RecipeRow(master=master, latest=latest, effective=effective))


@operation("GET", "/recipes/<int:master_id>/versions", summary="Versions of a master recipe",
           permission="recipes.read", query=PageQuery, response=VersionPage, tags=TAGS, errors=NO_RECIPE)
def list_recipe_versions(principal: ApiPrincipal, *, master_id: int, query: PageQuery) -> dict[str, Any]:
    """Every version (draft, in review, approved, superseded, retired) by id, with its status, content hash and
    effective period."""
    return page_of(principal, queries.versions_query(master_id), query, RecipeVersion.id, VersionSummary,
                   parent=(MasterRecipe, master_id, "master recipe"))


@operation("GET", "/recipes/<int:master_id>/effective", summary="The version effective at a moment",
           permission="recipes.read", query=EffectiveQuery, response=VersionOut, tags=TAGS,
           errors={404: "No such master recipe, or no version of it is effective at that moment"})
def get_effective_version(principal: ApiPrincipal, *, master_id: int, query: EffectiveQuery) -> VersionOut:
    """The approved version in force now (or at `at`) with its whole document: the version `POST /batches`
    plans from. A past moment answers the version that was effective then."""
    with tenant_transaction(principal.tenant) as session:
        services.get_master_recipe(session, master_id)
        at = query.at or db_now(session)
        return _version_out(services.effective_version(session, master_id, at), with_messages=False)


@operation("GET", "/recipes/versions/<int:version_id>", summary="One recipe version with its document",
           permission="recipes.read", response=VersionOut, tags=TAGS,
           errors={404: "No such recipe version in this tenant",
                   409: "The stored document no longer matches its content hash (changed outside the application)"})
def get_recipe_version(principal: ApiPrincipal, *, version_id: int) -> VersionOut:
    """A version with its whole recipe document (procedure, parameters and limits, materials, equipment,
    signatures), its content hash and the editor's validation messages."""
    with tenant_transaction(principal.tenant) as session:
        return _version_out(services.get_version(session, version_id), with_messages=True)
