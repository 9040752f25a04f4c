"""Recipes: master recipes, versions (frozen once out of draft), draft revisions, review diffs, validation runs.

Revision ID: trc01
Revises: tpl01
Create Date: 2026-11-27 10:00

SQL is copied from app/recipes/models.py on purpose: a migration is history and must not change when the model
code does.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "trc01"
down_revision = "tpl01"
branch_labels = None
depends_on = None

VERSION_GUARD_SQL = """
CREATE FUNCTION recipe_version_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id IS DISTINCT FROM OLD.id OR NEW.master_recipe_id IS DISTINCT FROM OLD.master_recipe_id
     OR NEW.version IS DISTINCT FROM OLD.version OR NEW.created_at IS DISTINCT FROM OLD.created_at
     OR NEW.created_by_member_id IS DISTINCT FROM OLD.created_by_member_id
     OR NEW.parent_version_id IS DISTINCT FROM OLD.parent_version_id
     OR NEW.template_id IS DISTINCT FROM OLD.template_id
     OR NEW.template_version IS DISTINCT FROM OLD.template_version
     OR NEW.template_hash IS DISTINCT FROM OLD.template_hash THEN
    RAISE EXCEPTION 'recipe version %: identity and provenance never change', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (OLD.status <> 'draft' OR NEW.status <> 'draft') AND (
       NEW.document IS DISTINCT FROM OLD.document OR NEW.content_hash IS DISTINCT FROM OLD.content_hash
       OR NEW.revision IS DISTINCT FROM OLD.revision OR NEW.recipe_code IS DISTINCT FROM OLD.recipe_code
       OR NEW.product_code IS DISTINCT FROM OLD.product_code OR NEW.product_name IS DISTINCT FROM OLD.product_name
       OR NEW.batch_size IS DISTINCT FROM OLD.batch_size OR NEW.batch_size_unit IS DISTINCT FROM OLD.batch_size_unit
       OR NEW.effective_date IS DISTINCT FROM OLD.effective_date OR NEW.expiry_date IS DISTINCT FROM OLD.expiry_date
       OR NEW.change_reason IS DISTINCT FROM OLD.change_reason) THEN
    RAISE EXCEPTION 'recipe version % is % and cannot be changed: create a new draft version with a reason',
      OLD.id, OLD.status USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
       (OLD.status = 'draft' AND NEW.status IN ('in_review', 'retired'))
    OR (OLD.status = 'in_review' AND NEW.status IN ('reviewed', 'draft'))
    OR (OLD.status = 'reviewed' AND NEW.status IN ('approved', 'draft'))
    OR (OLD.status = 'approved' AND NEW.status IN ('superseded', 'retired'))
    OR (OLD.status = 'superseded' AND NEW.status = 'retired')) THEN
    RAISE EXCEPTION 'recipe version %: status % cannot become %', OLD.id, OLD.status, NEW.status
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (OLD.approved_at IS NOT NULL AND NEW.approved_at IS DISTINCT FROM OLD.approved_at)
     OR (OLD.effective_from IS NOT NULL AND NEW.effective_from IS DISTINCT FROM OLD.effective_from)
     OR (OLD.retired_at IS NOT NULL AND (NEW.retired_at IS DISTINCT FROM OLD.retired_at
                                         OR NEW.retired_reason IS DISTINCT FROM OLD.retired_reason))
     OR (OLD.effective_until IS NOT NULL AND (NEW.effective_until IS NULL
                                              OR NEW.effective_until > OLD.effective_until)) THEN
    RAISE EXCEPTION 'recipe version %: approval and effective dates are set once (an end may only move earlier)',
      OLD.id USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""

MASTER_GUARD_SQL = """
CREATE FUNCTION master_recipe_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id IS DISTINCT FROM OLD.id OR NEW.code IS DISTINCT FROM OLD.code
     OR NEW.created_at IS DISTINCT FROM OLD.created_at
     OR NEW.template_id IS DISTINCT FROM OLD.template_id OR NEW.template_version IS DISTINCT FROM OLD.template_version
     OR NEW.template_hash IS DISTINCT FROM OLD.template_hash
     OR NEW.template_document IS DISTINCT FROM OLD.template_document THEN
    RAISE EXCEPTION 'master recipe %: code and template provenance never change', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""

GMP_TABLES = ["master_recipes", "recipe_versions", "recipe_version_revisions", "recipe_version_diffs",
              "recipe_validation_runs"]
APPEND_ONLY_TABLES = ["recipe_version_revisions", "recipe_version_diffs", "recipe_validation_runs"]


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "master_recipes",
        _created_at(),
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("product_code", sa.String(64), nullable=False),
        sa.Column("template_id", sa.String(64), nullable=True),
        sa.Column("template_version", sa.String(20), nullable=True),
        sa.Column("template_hash", sa.String(64), nullable=True),
        sa.Column("template_document", postgresql.JSONB(), nullable=True),
        sa.Column("created_by_member_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_master_recipes"),
        sa.UniqueConstraint("code", name="uq_master_recipes_code"),
    )
    op.create_table(
        "recipe_versions",
        _created_at(),
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("master_recipe_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(20), server_default=sa.text("'draft'"), nullable=False),
        sa.Column("document", postgresql.JSONB(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("revision", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("recipe_code", sa.String(64), nullable=False),
        sa.Column("product_code", sa.String(64), nullable=False),
        sa.Column("product_name", sa.String(200), nullable=False),
        sa.Column("batch_size", sa.Float(), nullable=False),
        sa.Column("batch_size_unit", sa.String(40), nullable=False),
        sa.Column("effective_date", sa.Date(), nullable=True),
        sa.Column("expiry_date", sa.Date(), nullable=True),
        sa.Column("change_reason", sa.Text(), nullable=True),
        sa.Column("parent_version_id", sa.BigInteger(), nullable=True),
        sa.Column("template_id", sa.String(64), nullable=True),
        sa.Column("template_version", sa.String(20), nullable=True),
        sa.Column("template_hash", sa.String(64), nullable=True),
        sa.Column("created_by_member_id", sa.BigInteger(), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("effective_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('draft', 'in_review', 'reviewed', 'approved', 'superseded', 'retired')",
                           name="status"),
        sa.CheckConstraint("effective_until IS NULL OR effective_from IS NULL OR effective_until >= effective_from",
                           name="effective_period"),
        sa.ForeignKeyConstraint(["master_recipe_id"], ["master_recipes.id"],
                                name="fk_recipe_versions_master_recipe_id_master_recipes"),
        sa.ForeignKeyConstraint(["parent_version_id"], ["recipe_versions.id"],
                                name="fk_recipe_versions_parent_version_id_recipe_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_recipe_versions"),
        sa.UniqueConstraint("master_recipe_id", "version", name="uq_recipe_versions_master_recipe_id_version"),
    )
    op.create_index("ix_recipe_versions_effective", "recipe_versions", ["master_recipe_id", "effective_from"],
                    postgresql_where=sa.text("effective_from IS NOT NULL"))
    op.create_table(
        "recipe_version_revisions",
        _created_at(),
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("document", postgresql.JSONB(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["version_id"], ["recipe_versions.id"],
                                name="fk_recipe_version_revisions_version_id_recipe_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_recipe_version_revisions"),
        sa.UniqueConstraint("version_id", "revision", name="uq_recipe_version_revisions_version_id_revision"),
    )
    op.create_table(
        "recipe_version_diffs",
        _created_at(),
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("signature_id", sa.BigInteger(), nullable=True),
        sa.Column("meaning", sa.String(40), nullable=False),
        sa.Column("against", sa.String(20), nullable=False),
        sa.Column("against_version_id", sa.BigInteger(), nullable=True),
        sa.Column("against_hash", sa.String(64), nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("diff", postgresql.JSONB(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["recipe_versions.id"],
                                name="fk_recipe_version_diffs_version_id_recipe_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_recipe_version_diffs"),
    )
    op.create_index("ix_recipe_version_diffs_version_id", "recipe_version_diffs", ["version_id"])
    op.create_table(
        "recipe_validation_runs",
        _created_at(),
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("environment", postgresql.JSONB(), nullable=False),
        sa.Column("results", postgresql.JSONB(), nullable=False),
        sa.Column("scenarios_run", sa.BigInteger(), nullable=False),
        sa.Column("scenarios_passed", sa.BigInteger(), nullable=False),
        sa.Column("evidence_hash", sa.String(64), nullable=False),
        sa.Column("performed_by", sa.String(300), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_recipe_validation_runs"),
    )
    for table in GMP_TABLES:
        op.execute(f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} FOR EACH ROW "
                   "EXECUTE FUNCTION gmp_refuse_change()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT "
                   "EXECUTE FUNCTION gmp_refuse_change()")
    op.execute(VERSION_GUARD_SQL)
    op.execute("CREATE TRIGGER recipe_versions_guard BEFORE UPDATE ON recipe_versions FOR EACH ROW "
               "EXECUTE FUNCTION recipe_version_guard()")
    op.execute(MASTER_GUARD_SQL)
    op.execute("CREATE TRIGGER master_recipes_guard BEFORE UPDATE ON master_recipes FOR EACH ROW "
               "EXECUTE FUNCTION master_recipe_guard()")
    for table in APPEND_ONLY_TABLES:
        op.execute(f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} FOR EACH ROW "
                   "EXECUTE FUNCTION gmp_refuse_change()")


def downgrade() -> None:
    for table in reversed(GMP_TABLES):
        op.drop_table(table)
    op.execute("DROP FUNCTION master_recipe_guard()")
    op.execute("DROP FUNCTION recipe_version_guard()")
