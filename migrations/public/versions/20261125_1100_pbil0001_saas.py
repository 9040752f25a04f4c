"""Self-serve SaaS: control-plane outbox, sign-ups, subscriptions, Stripe events, usage, API credentials.

Revision ID: pbil0001
Revises: p0001
Create Date: 2026-11-25 11:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "pbil0001"
down_revision = "p0001"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, **kw)


def _created() -> sa.Column:
    return _ts("created_at", nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "control_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("func", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(40), nullable=False),
        sa.Column("kwargs", postgresql.JSONB(), nullable=False),
        _ts("dispatched_at"),
        _ts("finished_at"),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", postgresql.JSONB(), nullable=True),
        _created(),
        sa.PrimaryKeyConstraint("id", name="pk_control_outbox"),
        schema="public",
    )
    op.create_index("ix_control_outbox_pending", "control_outbox", ["created_at"], schema="public",
                    postgresql_where=sa.text("dispatched_at IS NULL"))
    op.create_table(
        "signups",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("company_name", sa.String(200), nullable=False),
        sa.Column("slug", sa.String(40), nullable=False),
        sa.Column("admin_name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("plan", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("steps", postgresql.JSONB(), nullable=False),
        sa.Column("tenant_id", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("expires_at", nullable=False),
        _ts("verified_at"),
        _ts("ready_at"),
        _ts("entered_at"),
        _created(),
        sa.ForeignKeyConstraint(["tenant_id"], ["public.tenants.id"], name="fk_signups_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_signups"),
        schema="public",
    )
    op.create_index("ix_signups_slug", "signups", ["slug"], schema="public")
    op.create_index("ix_signups_email", "signups", ["email"], schema="public")
    op.create_table(
        "subscriptions",
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("plan", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        _ts("trial_ends_at"),
        sa.Column("stripe_customer_id", sa.String(64), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(64), nullable=True),
        _ts("current_period_end"),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        _ts("grace_until"),
        _ts("synced_at"),
        _ts("updated_at"),
        _created(),
        sa.ForeignKeyConstraint(["tenant_id"], ["public.tenants.id"], name="fk_subscriptions_tenant_id_tenants",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_subscriptions"),
        sa.UniqueConstraint("stripe_customer_id", name="uq_subscriptions_stripe_customer_id"),
        sa.UniqueConstraint("stripe_subscription_id", name="uq_subscriptions_stripe_subscription_id"),
        schema="public",
    )
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        _ts("stripe_created"),
        _ts("received_at", nullable=False, server_default=sa.func.now()),
        _ts("processed_at"),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_stripe_events"),
        schema="public",
    )
    op.create_table(
        "usage_counters",
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("over_allowance", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["public.tenants.id"], name="fk_usage_counters_tenant_id_tenants",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "metric", "period", name="pk_usage_counters"),
        schema="public",
    )
    op.create_table(
        "oauth_clients",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("scopes", sa.ARRAY(sa.String(60)), nullable=False),
        sa.Column("created_by_user_id", sa.BigInteger(), nullable=True),
        _ts("revoked_at"),
        _created(),
        sa.ForeignKeyConstraint(["tenant_id"], ["public.tenants.id"], name="fk_oauth_clients_tenant_id_tenants",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["created_by_user_id"], ["public.users.id"],
                                name="fk_oauth_clients_created_by_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_clients"),
        sa.UniqueConstraint("client_id", name="uq_oauth_clients_client_id"),
        schema="public",
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_prefix", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.ARRAY(sa.String(60)), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("oauth_client_id", sa.BigInteger(), nullable=True),
        _ts("expires_at"),
        _ts("last_used_at"),
        _ts("revoked_at"),
        _created(),
        sa.ForeignKeyConstraint(["tenant_id"], ["public.tenants.id"], name="fk_api_tokens_tenant_id_tenants",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["public.users.id"], name="fk_api_tokens_user_id_users"),
        sa.ForeignKeyConstraint(["oauth_client_id"], ["public.oauth_clients.id"],
                                name="fk_api_tokens_oauth_client_id_oauth_clients"),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
        schema="public",
    )


def downgrade() -> None:
    op.drop_table("api_tokens", schema="public")
    op.drop_table("oauth_clients", schema="public")
    op.drop_table("usage_counters", schema="public")
    op.drop_table("stripe_events", schema="public")
    op.drop_table("subscriptions", schema="public")
    op.drop_index("ix_signups_email", table_name="signups", schema="public")
    op.drop_index("ix_signups_slug", table_name="signups", schema="public")
    op.drop_table("signups", schema="public")
    op.drop_index("ix_control_outbox_pending", table_name="control_outbox", schema="public")
    op.drop_table("control_outbox", schema="public")
