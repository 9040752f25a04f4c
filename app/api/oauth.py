"""OAuth2 client credentials (authlib's authorization server) and the API's rate limits (flask-limiter)."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from flask import Blueprint, Flask, current_app, request
from flask_limiter import Limiter
from sqlalchemy import select

from app.api.models import OAuthClient
from app.api.services import OAUTH_PREFIX, check_client_secret, store_oauth_token
from app.core.tenancy import control_session
from app.core.web import PUBLIC, requires
from app.tenancy.models import Tenant
from app.tenancy.queries import LIVE_STATUSES


class _Client(ClientMixin):
    """authlib's view of one of our OAuth clients."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = set(self.row.scopes)
        if not scope:
            return " ".join(sorted(allowed))
        return " ".join(sorted(s for s in scope.split() if s in allowed))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return check_client_secret(self.row, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class _ClientCredentials(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


def _query_client(client_id: str) -> _Client | None:
    with control_session() as session:
        row = session.scalar(
            select(OAuthClient).join(Tenant, Tenant.id == OAuthClient.tenant_id)
            .where(OAuthClient.client_id == client_id, OAuthClient.revoked_at.is_(None),
                   Tenant.status.in_(LIVE_STATUSES)))
    return _Client(row) if row is not None else None


def _save_token(token: dict[str, Any], oauth_request: Any) -> None:
    client: _Client = oauth_request.client
    with control_session() as session:
        store_oauth_token(session, client=client.row, token=token["access_token"],
                          scopes=(token.get("scope") or "").split(), expires_in=int(token["expires_in"]))


oauth_bp = Blueprint("oauth", __name__)


def _rate_key() -> str:
    """Limit per credential (by a hash of the token or client), else per address."""
    auth = request.headers.get("Authorization", "")
    if auth:
        return "cred:" + hashlib.sha256(auth.encode()).hexdigest()[:24]
    return "ip:" + (request.remote_addr or "unknown")


def _api_limit() -> str:
    return current_app.config["API_RATE_LIMIT"]


@oauth_bp.post("/oauth/token")
@requires(PUBLIC)
def token() -> Any:
    """OAuth2 token endpoint (client credentials grant only); tokens are bound to the client's tenant."""
    return current_app.extensions["batchline.oauth"].create_token_response()


def init_oauth(app: Flask, rate_limited: list[Blueprint]) -> None:
    """Give the app its own authorization server and rate limiter (one per app: tests build several apps)."""
    server = AuthorizationServer(app, query_client=_query_client, save_token=_save_token)
    server.register_grant(_ClientCredentials)
    server.register_token_generator("default", BearerTokenGenerator(
        access_token_generator=lambda **_kw: OAUTH_PREFIX + secrets.token_urlsafe(32),
        expires_generator=lambda _client, _grant_type: int(app.config["OAUTH_TOKEN_EXPIRES_S"]),
    ))
    app.extensions["batchline.oauth"] = server
    url = app.config["REDIS_URL"]
    # `limits` names the unix-socket scheme of the embedded Redis differently from redis-py.
    storage = "redis+unix://" + url[len("unix://"):] if url.startswith("unix://") else url
    limiter = Limiter(key_func=_rate_key, app=app, storage_uri=storage, headers_enabled=True,
                      key_prefix="batchline-rl")
    for blueprint in rate_limited:
        limiter.limit(_api_limit)(blueprint)
    app.extensions["batchline.limiter"] = limiter
