"""The application factory."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import redis
from flask import Flask, render_template, request
from flask_login import LoginManager
from flask_wtf import CSRFProtect
from werkzeug.exceptions import HTTPException

from app.core.config import defaults
from app.core.db import Database
from app.core.embedded import embedded_postgres_url, embedded_redis_url
from app.core.errors import BatchlineError
from app.core.web import problem

REPO_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)

login_manager = LoginManager()
csrf = CSRFProtect()


def _blueprints() -> list[Any]:
    """Every blueprint, in one explicit list."""
    from app.accounts.views import bp as accounts_bp
    from app.api.oauth import oauth_bp
    from app.api.registry import load_operations
    from app.api.views import bp as api_tokens_bp
    from app.api.views import docs_bp as api_docs_bp
    from app.billing.views import bp as billing_bp
    from app.billing.views import webhook_bp as billing_webhook_bp
    from app.health.views import bp as health_bp
    from app.home.views import bp as home_bp
    from app.jobs.views import bp as jobs_bp
    from app.sensors.views import bp as sensors_bp
    from app.signup.views import bp as signup_bp
    from app.signup.views import onboarding_bp

    return [health_bp, accounts_bp, home_bp, jobs_bp, signup_bp, onboarding_bp, billing_bp, billing_webhook_bp,
            api_tokens_bp, api_docs_bp, oauth_bp, sensors_bp, load_operations()]


#: Blueprints authenticated by something other than the session cookie (bearer tokens, Stripe signatures,
#: OAuth client secrets): CSRF tokens do not apply to them.
CSRF_EXEMPT = ("api_v1", "oauth", "billing_webhook")


def _secret_key(instance: Path) -> str:
    """A per-installation secret for local runs; production sets BATCHLINE_SECRET_KEY."""
    path = instance / "secret_key"
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then BATCHLINE_* environment, then `overrides`."""
    app = Flask(__name__, instance_path=str(REPO_ROOT / "instance"), instance_relative_config=False)
    app.config.update(defaults())
    app.config.from_prefixed_env("BATCHLINE")
    if overrides:
        app.config.update(overrides)
    instance = Path(app.instance_path)
    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = embedded_postgres_url(instance / "pg")
    if not app.config["REDIS_URL"]:
        app.config["REDIS_URL"] = embedded_redis_url(instance / "redis")
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _secret_key(instance)

    Database().init_app(app)
    # Short timeouts: a web request that enqueues must not hang on a dead Redis; the outbox retries later.
    app.extensions["batchline.redis"] = redis.Redis.from_url(
        app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5
    )
    login_manager.init_app(app)
    login_manager.login_view = "accounts.login"
    csrf.init_app(app)
    blueprints = _blueprints()
    for bp in blueprints:
        app.register_blueprint(bp)
        if bp.name in CSRF_EXEMPT:
            csrf.exempt(bp)
    from app.api.oauth import init_oauth

    init_oauth(app, [bp for bp in blueprints if bp.name in ("api_v1", "oauth")])
    _register_errors(app)

    from app.cli import register_flask_cli

    register_flask_cli(app)
    return app


def _register_errors(app: Flask) -> None:
    def wants_json() -> bool:
        return "/api/" in request.path or request.accept_mimetypes.best == "application/json"

    @app.errorhandler(BatchlineError)
    def batchline_error(exc: BatchlineError) -> Any:
        if wants_json():
            return problem(exc.status_code, type(exc).__name__, str(exc))
        return render_template("error.html", status=exc.status_code, message=str(exc)), exc.status_code

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        if wants_json():
            response = problem(status, exc.name, exc.description or "")
            # Keep the exception's own headers (Allow on a 405, Retry-After on a 429, WWW-Authenticate).
            for name, value in exc.get_headers():
                if name.lower() != "content-type":
                    response.headers[name] = value
            return response
        return render_template("error.html", status=status, message=exc.description), status


@login_manager.user_loader
def _load_user(user_id: str) -> Any:
    from app.accounts.models import User
    from app.core.tenancy import control_session

    with control_session() as session:
        user = session.get(User, int(user_id))
    return user if user is not None and user.active else None
