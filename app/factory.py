"""The application factory."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

import redis
from flask import Flask, current_app, render_template, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf import CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from app.core.config import defaults
from app.core.db import Database
from app.core.embedded import embedded_postgres_url, embedded_redis_url
from app.core.errors import BatchlineError
from app.core.web import (
    PUBLIC,
    SubdomainTenantMiddleware,
    enforce_declared_permission,
    problem,
    requires,
    security_headers,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)

login_manager = LoginManager()
csrf = CSRFProtect()


def _blueprints() -> list[Any]:
    """Every blueprint, in one explicit list."""
    from app.accounts.api import bp as accounts_api_bp
    from app.accounts.views import admin_bp as accounts_admin_bp
    from app.accounts.views import bp as accounts_bp
    from app.api.oauth import oauth_bp
    from app.api.registry import load_operations
    from app.api.views import bp as api_tokens_bp
    from app.api.views import docs_bp as api_docs_bp
    from app.audit.views import bp as audit_bp
    from app.batches.api import bp as batches_api_bp
    from app.batches.views import bp as batches_bp
    from app.billing.views import bp as billing_bp
    from app.billing.views import webhook_bp as billing_webhook_bp
    from app.esign.views import bp as esign_bp
    from app.health.views import bp as health_bp
    from app.home.views import bp as home_bp
    from app.jobs.views import bp as jobs_bp
    from app.materials.api import bp as materials_api_bp
    from app.materials.views import bp as materials_bp
    from app.onboarding.views import bp as onboarding_flow_bp
    from app.plant.api import bp as plant_api_bp
    from app.plant.views import bp as plant_bp
    from app.recipes.api import bp as recipes_api_bp
    from app.recipes.views import bp as recipes_bp
    from app.review.views import bp as review_bp
    from app.sensors.views import bp as sensors_bp
    from app.signup.views import bp as signup_bp
    from app.signup.views import onboarding_bp

    return [health_bp, accounts_bp, accounts_admin_bp, accounts_api_bp, home_bp, jobs_bp, audit_bp, esign_bp,
            signup_bp, onboarding_bp, billing_bp, billing_webhook_bp, api_tokens_bp, api_docs_bp, oauth_bp,
            load_operations(), plant_bp, plant_api_bp, materials_bp, materials_api_bp, onboarding_flow_bp,
            recipes_bp, recipes_api_bp, batches_bp, batches_api_bp, sensors_bp, review_bp]


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


def _check_password_hash_profile(app: Flask) -> None:
    """Refuse an unknown argon2 profile, and the fast one anywhere but the test suite."""
    from app.accounts.passwords import DEFAULT_HASH_PROFILE, HASH_PROFILES

    profile = app.config["PASSWORD_HASH_PROFILE"]
    if profile not in HASH_PROFILES:
        raise RuntimeError(f"PASSWORD_HASH_PROFILE {profile!r} is unknown; use {DEFAULT_HASH_PROFILE!r}")
    if profile != DEFAULT_HASH_PROFILE and not app.config.get("TESTING"):
        raise RuntimeError(f"PASSWORD_HASH_PROFILE {profile!r} is for the test suite only (TESTING is off)")


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then BATCHLINE_* environment, then `overrides`.

    Local state (embedded servers, generated secret key, file mail) lives in `instance/` of the repository, or in
    INSTANCE_PATH (`BATCHLINE_INSTANCE_PATH`, or the override) when given.
    """
    instance_path = (overrides or {}).get("INSTANCE_PATH") or os.environ.get("BATCHLINE_INSTANCE_PATH")
    app = Flask(__name__, instance_path=str(instance_path or REPO_ROOT / "instance"), instance_relative_config=False)
    app.config.update(defaults())
    app.config.from_prefixed_env("BATCHLINE")
    if overrides:
        app.config.update(overrides)
    _check_password_hash_profile(app)
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
    from app.accounts.sessions import RedisSessionInterface

    app.session_interface = RedisSessionInterface()
    if int(app.config["PROXY_FIX_X_FOR"]):
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=int(app.config["PROXY_FIX_X_FOR"]),  # type: ignore[method-assign]
                                x_proto=1, x_host=1)
    login_manager.init_app(app)
    login_manager.login_view = "accounts.login"
    login_manager.login_message = "Sign in to continue."
    csrf.init_app(app)
    app.before_request(enforce_declared_permission)
    app.after_request(security_headers)
    blueprints = _blueprints()
    app.extensions["batchline.non_session_blueprints"] = CSRF_EXEMPT
    for bp in blueprints:
        app.register_blueprint(bp)
        if bp.name in CSRF_EXEMPT:
            csrf.exempt(bp)
    from app.api.oauth import init_oauth

    init_oauth(app, [bp for bp in blueprints if bp.name in ("api_v1", "oauth")])
    # Flask's own static route declares nothing; it is public like the sign-in page (CSS and our own JS).
    app.view_functions["static"] = requires(PUBLIC)(_static_view(app))
    _apply_rate_limits(app)
    _register_errors(app)
    app.context_processor(_template_globals)
    app.wsgi_app = SubdomainTenantMiddleware(app.wsgi_app, app)  # type: ignore[method-assign]

    from app.cli import register_flask_cli

    register_flask_cli(app)
    return app


def _static_view(app: Flask) -> Any:
    send = app.send_static_file

    def static(filename: str) -> Any:
        return send(filename)

    return static


def _limit(name: str) -> Any:
    return lambda: current_app.config[name]


def _signin_key() -> str:
    """Client address plus the sign-in name tried: plants put many tablets behind one address (NAT)."""
    name = (request.form.get("email") or request.form.get("badge") or "").strip().lower()[:254]
    return f"{get_remote_address()}|{name}"


def _apply_rate_limits(app: Flask) -> None:
    """Rate limits on sign-in, quick switch, reset and invitation acceptance (flask-limiter on the app's Redis).

    One Limiter per app (its storage is per instance), applied to the registered views by endpoint.
    """
    url = app.config["REDIS_URL"]
    storage = url.replace("unix://", "redis+unix://", 1) if url.startswith("unix://") else url
    limiter = Limiter(key_func=get_remote_address, app=app, storage_uri=storage, key_prefix="bl-rl",
                      strategy="fixed-window", headers_enabled=True)
    app.extensions["batchline.limiter"] = limiter
    per_name = (_limit("RATELIMIT_SIGNIN"), _signin_key)
    per_ip = (_limit("RATELIMIT_SIGNIN_PER_IP"), get_remote_address)
    reset = (_limit("RATELIMIT_RESET"), get_remote_address)
    plan = {
        "accounts.login": [per_name, per_ip],
        "accounts.switch_user": [per_name, per_ip],
        "accounts.forgot_password": [reset],
        "accounts.reset_password": [per_ip],
        "accounts.accept_invitation": [per_ip],
    }
    for endpoint, limits in plan.items():
        view = app.view_functions[endpoint]
        for value, key in limits:
            view = limiter.limit(value, key_func=key, methods=["POST"])(view)
        app.view_functions[endpoint] = view


def _template_globals() -> dict[str, Any]:
    from app.accounts.views import open_alert_count

    return {"open_alert_count": open_alert_count}


def _register_errors(app: Flask) -> None:
    def wants_json() -> bool:
        return "/api/" in request.path or request.accept_mimetypes.best == "application/json"

    @app.errorhandler(BatchlineError)
    def batchline_error(exc: BatchlineError) -> Any:
        if wants_json():
            return problem(exc.status_code, type(exc).__name__, str(exc), **exc.problem_extra)
        return render_template("error.html", status=exc.status_code, message=str(exc)), exc.status_code

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        message = exc.description or ""
        if status == 429:
            message = f"Too many attempts ({message}). Wait a few minutes, then try again."
        if wants_json():
            response = problem(status, exc.name, message)
        else:
            response = app.make_response((render_template("error.html", status=status, message=message), status))
        # Keep the exception's own headers (Allow on a 405, Retry-After on a 429, WWW-Authenticate).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response


@login_manager.user_loader
def _load_user(user_id: str) -> Any:
    from app.core.web import load_signed_in_user

    try:
        uid = int(user_id)
    except (TypeError, ValueError):
        return None
    # Deactivated or locked accounts stop working on their very next request, whatever session they hold.
    return load_signed_in_user(uid)
