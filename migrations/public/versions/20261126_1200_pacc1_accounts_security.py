"""Accounts and security: lockout and badge columns, custom roles, security settings, invitations, password
resets, SSO providers and identities.

Revision ID: pacc1
Revises: pbil0001
Create Date: 2026-11-26 09:00
"""

import sqlalchemy as sa
from alembic import op

revision = "pacc1"
down_revision = "pbil0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("users", sa.Column("user_code", sa.String(20), sa.Computed("'U' || lpad(id::text, 6, '0')", persisted=True),
                                     nullable=False), schema="public")
    op.create_unique_constraint("uq_users_user_code", "users", ["user_code"], schema="public")
    op.add_column("users", sa.Column("failed_logins", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
                  schema="public")
    op.add_column("users", sa.Column("locked_at", TS, nullable=True), schema="public")
    op.add_column("users", sa.Column("password_changed_at", TS, nullable=True), schema="public")
    op.add_column("users", sa.Column("deactivated_at", TS, nullable=True), schema="public")
    op.add_column("memberships", sa.Column("deactivated_at", TS, nullable=True), schema="public")
    op.add_column("memberships", sa.Column("deactivated_by", sa.BigInteger(), nullable=True), schema="public")
    op.create_foreign_key("fk_memberships_deactivated_by_users", "memberships", "users", ["deactivated_by"], ["id"],
                          source_schema="public", referent_schema="public")

    op.create_table(
        "tenant_roles",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("description", sa.String(300), nullable=False),
        sa.Column("permissions", sa.ARRAY(sa.String(60)), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["public.tenants.id"], name="fk_tenant_roles_tenant_id_tenants",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["created_by"], ["public.users.id"], name="fk_tenant_roles_created_by_users"),
        sa.PrimaryKeyConstraint("id", name="pk_tenant_roles"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_tenant_roles_tenant_id_name"),
        schema="public",
    )
    op.create_table(
        "tenant_security_settings",
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("lockout_threshold", sa.BigInteger(), nullable=False),
        sa.Column("idle_timeout_min", sa.BigInteger(), nullable=False),
        sa.Column("session_max_hours", sa.BigInteger(), nullable=False),
        sa.Column("password_min_length", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_by", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["public.tenants.id"],
                                name="fk_tenant_security_settings_tenant_id_tenants", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["updated_by"], ["public.users.id"],
                                name="fk_tenant_security_settings_updated_by_users"),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_tenant_security_settings"),
        schema="public",
    )
    op.create_table(
        "invitations",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("roles", sa.ARRAY(sa.String(60)), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("invited_by", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("accepted_at", TS, nullable=True),
        sa.Column("accepted_user_id", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["public.tenants.id"], name="fk_invitations_tenant_id_tenants",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["invited_by"], ["public.users.id"], name="fk_invitations_invited_by_users"),
        sa.ForeignKeyConstraint(["accepted_user_id"], ["public.users.id"],
                                name="fk_invitations_accepted_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_invitations"),
        schema="public",
    )
    op.create_index("ix_invitations_tenant_id_email", "invitations", ["tenant_id", "email"], schema="public")
    op.create_table(
        "password_resets",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("nonce_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.Column("requested_ip", sa.String(45), nullable=True),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["public.users.id"], name="fk_password_resets_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_password_resets"),
        schema="public",
    )
    op.create_index("ix_password_resets_user_id", "password_resets", ["user_id"], schema="public")
    op.create_table(
        "tenant_sso_providers",
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("client_secret_sealed", sa.Text(), nullable=False),
        sa.Column("allowed_domains", sa.ARRAY(sa.String(253)), nullable=False),
        sa.Column("default_roles", sa.ARRAY(sa.String(60)), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_by", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["public.tenants.id"],
                                name="fk_tenant_sso_providers_tenant_id_tenants", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["updated_by"], ["public.users.id"], name="fk_tenant_sso_providers_updated_by_users"),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_tenant_sso_providers"),
        schema="public",
    )
    op.create_table(
        "sso_identities",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["public.users.id"], name="fk_sso_identities_user_id_users"),
        sa.ForeignKeyConstraint(["tenant_id"], ["public.tenants.id"], name="fk_sso_identities_tenant_id_tenants",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_sso_identities"),
        sa.UniqueConstraint("issuer", "subject", name="uq_sso_identities_issuer_subject"),
        schema="public",
    )
    op.create_index("ix_sso_identities_user_id", "sso_identities", ["user_id"], schema="public")


def downgrade() -> None:
    op.drop_index("ix_sso_identities_user_id", table_name="sso_identities", schema="public")
    op.drop_table("sso_identities", schema="public")
    op.drop_table("tenant_sso_providers", schema="public")
    op.drop_index("ix_password_resets_user_id", table_name="password_resets", schema="public")
    op.drop_table("password_resets", schema="public")
    op.drop_index("ix_invitations_tenant_id_email", table_name="invitations", schema="public")
    op.drop_table("invitations", schema="public")
    op.drop_table("tenant_security_settings", schema="public")
    op.drop_table("tenant_roles", schema="public")
    op.drop_constraint("fk_memberships_deactivated_by_users", "memberships", schema="public", type_="foreignkey")
    op.drop_column("memberships", "deactivated_by", schema="public")
    op.drop_column("memberships", "deactivated_at", schema="public")
    for column in ("deactivated_at", "password_changed_at", "locked_at", "failed_logins"):
        op.drop_column("users", column, schema="public")
    op.drop_constraint("uq_users_user_code", "users", schema="public", type_="unique")
    op.drop_column("users", "user_code", schema="public")
