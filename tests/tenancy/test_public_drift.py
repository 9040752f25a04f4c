"""The control-plane models and the `public` migrations do not drift (an `alembic check` for the public tree)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.schema import BLANK_SCHEMA

from app.models import PublicBase


def _as_default_schema(metadata: MetaData) -> MetaData:
    """The models with schema "public" spelled as the default schema, as reflection reports it."""
    copy = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(copy, schema=None, referred_schema_fn=lambda *_args: BLANK_SCHEMA)
    return copy


def test_public_models_match_the_migrated_schema(db) -> None:
    with db.owner.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "include_object": lambda _obj, name, type_, _reflected, _other: name != "alembic_version",
            "compare_type": True,
        })
        diff = compare_metadata(context, _as_default_schema(PublicBase.metadata))
    assert diff == [], diff
