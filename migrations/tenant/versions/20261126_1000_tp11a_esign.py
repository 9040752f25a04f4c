"""E-signatures: meanings, routes, route runs, signatures; the GMP delete-refusal function.

Revision ID: tp11a
Revises: t0002
Create Date: 2026-11-26 10:00

SQL is copied from the models on purpose: a migration is history and must not change when the model code does.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "tp11a"
down_revision = "t0002"
branch_labels = None
depends_on = None

REFUSE_SQL = """
CREATE FUNCTION gmp_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'GMP records are never deleted or overwritten: % refused on %', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$
"""

SIGNED_AT_SQL = """
CREATE FUNCTION esign_stamp_signed_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.signed_at := now();
  RETURN NEW;
END
$$
"""

GMP_TABLES = ["signature_meanings", "signature_routes", "signature_route_runs", "signatures"]


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.execute(REFUSE_SQL)
    op.create_table(
        "signature_meanings",
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("label", sa.String(80), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("code", name="pk_signature_meanings"),
    )
    op.execute("INSERT INTO signature_meanings (code, label) VALUES ('authored', 'Authored'), "
               "('reviewed', 'Reviewed'), ('approved', 'Approved'), ('verified', 'Verified'), "
               "('performed', 'Performed'), ('released', 'Released'), ('rejected', 'Rejected')")
    op.create_table(
        "signature_routes",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("record_type", sa.String(60), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("steps", postgresql.JSONB(), nullable=False),
        sa.Column("allow_same_signer", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("pending_status", sa.String(40), server_default=sa.text("'draft'"), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_by_member_id", sa.BigInteger(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_signature_routes"),
        sa.UniqueConstraint("record_type", "version", name="uq_signature_routes_record_type_version"),
    )
    op.create_index("ix_signature_routes_active", "signature_routes", ["record_type"], unique=True,
                    postgresql_where=sa.text("active"))
    op.create_table(
        "signature_route_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("route_id", sa.BigInteger(), nullable=False),
        sa.Column("record_type", sa.String(60), nullable=False),
        sa.Column("record_id", sa.String(100), nullable=False),
        sa.Column("cycle", sa.BigInteger(), nullable=False),
        sa.Column("step_index", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("status", sa.String(20), server_default=sa.text("'in_progress'"), nullable=False),
        sa.Column("record_status", sa.String(40), nullable=False),
        sa.Column("rejected_reason", sa.Text(), nullable=True),
        _created_at(),
        sa.ForeignKeyConstraint(["route_id"], ["signature_routes.id"],
                                name="fk_signature_route_runs_route_id_signature_routes"),
        sa.PrimaryKeyConstraint("id", name="pk_signature_route_runs"),
        sa.UniqueConstraint("record_type", "record_id", "cycle",
                            name="uq_signature_route_runs_record_type_record_id_cycle"),
    )
    op.create_table(
        "signatures",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("signer_member_id", sa.BigInteger(), nullable=False),
        sa.Column("signer_user_id", sa.BigInteger(), nullable=False),
        sa.Column("printed_name", sa.String(200), nullable=False),
        sa.Column("signer_email", sa.String(254), nullable=False),
        sa.Column("signer_roles", postgresql.ARRAY(sa.String(60)), nullable=False),
        sa.Column("meaning", sa.String(40), nullable=False),
        sa.Column("meaning_label", sa.String(80), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("record_type", sa.String(60), nullable=False),
        sa.Column("record_id", sa.String(100), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("route_run_id", sa.BigInteger(), nullable=True),
        sa.Column("step_index", sa.BigInteger(), nullable=True),
        sa.Column("audit_seq", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["route_run_id"], ["signature_route_runs.id"],
                                name="fk_signatures_route_run_id_signature_route_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_signatures"),
    )
    op.create_index("ix_signatures_record", "signatures", ["record_type", "record_id"])
    for table in GMP_TABLES:
        op.execute(f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} FOR EACH ROW "
                   "EXECUTE FUNCTION gmp_refuse_change()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT "
                   "EXECUTE FUNCTION gmp_refuse_change()")
    op.execute(SIGNED_AT_SQL)
    op.execute("CREATE TRIGGER signatures_signed_at BEFORE INSERT ON signatures FOR EACH ROW "
               "EXECUTE FUNCTION esign_stamp_signed_at()")
    op.execute("CREATE TRIGGER signatures_no_update BEFORE UPDATE ON signatures FOR EACH ROW "
               "EXECUTE FUNCTION gmp_refuse_change()")


def downgrade() -> None:
    for table in reversed(GMP_TABLES):
        op.drop_table(table)
    op.execute("DROP FUNCTION esign_stamp_signed_at()")
    op.execute("DROP FUNCTION gmp_refuse_change()")
