"""Recipes: images shown in step instructions, frozen with their version.

Revision ID: trc03
Revises: tba01
Create Date: 2026-11-27 11:00

SQL is copied from app/recipes/models.py on purpose: a migration is history and must not change when the model
code does.
"""

import sqlalchemy as sa
from alembic import op

revision = "trc03"
down_revision = "tba01"
branch_labels = None
depends_on = None

GUARD_SQL = """
CREATE FUNCTION recipe_attachment_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT status FROM recipe_versions WHERE id = NEW.version_id) IS DISTINCT FROM 'draft' THEN
    RAISE EXCEPTION 'recipe version % is not a draft: its images are frozen', NEW.version_id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "recipe_attachments",
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("size = octet_length(data)", name="size_matches"),
        sa.ForeignKeyConstraint(["version_id"], ["recipe_versions.id"],
                                name="fk_recipe_attachments_version_id_recipe_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_recipe_attachments"),
    )
    op.create_index("ix_recipe_attachments_version_id_name", "recipe_attachments", ["version_id", "name"])
    op.execute("CREATE TRIGGER recipe_attachments_no_delete BEFORE DELETE ON recipe_attachments FOR EACH ROW "
               "EXECUTE FUNCTION gmp_refuse_change()")
    op.execute("CREATE TRIGGER recipe_attachments_no_truncate BEFORE TRUNCATE ON recipe_attachments "
               "FOR EACH STATEMENT EXECUTE FUNCTION gmp_refuse_change()")
    op.execute(GUARD_SQL)
    op.execute("CREATE TRIGGER recipe_attachments_guard BEFORE INSERT ON recipe_attachments "
               "FOR EACH ROW EXECUTE FUNCTION recipe_attachment_guard()")
    op.execute("CREATE TRIGGER recipe_attachments_no_update BEFORE UPDATE ON recipe_attachments FOR EACH ROW "
               "EXECUTE FUNCTION gmp_refuse_change()")


def downgrade() -> None:
    op.drop_table("recipe_attachments")
    op.execute("DROP FUNCTION recipe_attachment_guard()")
