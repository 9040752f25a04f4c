"""API credentials: personal tokens and OAuth2 clients, each bound to one tenant (control plane)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ARRAY, ForeignKey, Identity, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import CreatedAt, PublicBase


class OAuthClient(CreatedAt, PublicBase):
    """An OAuth2 client-credentials client (a machine: gateway, ERP) bound to one tenant."""

    __tablename__ = "oauth_clients"

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Public client id (`blc_...`).
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    #: SHA-256 of the client secret (the secret is random, 256 bits, shown once).
    secret_hash: Mapped[str] = mapped_column(String(64))
    #: The tenant its tokens act in.
    tenant_id: Mapped[int] = mapped_column(ForeignKey("public.tenants.id", ondelete="CASCADE"))
    #: Name shown to admins, e.g. "Line 1 gateway".
    name: Mapped[str] = mapped_column(String(100))
    #: Scopes (permission names) the client may ask for.
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(60)), default=list)
    #: The admin who created it.
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("public.users.id"))
    #: When it was revoked (its tokens stop working at once).
    revoked_at: Mapped[datetime | None]


class ApiToken(CreatedAt, PublicBase):
    """A bearer token: a personal token of a member, or an access token issued to an OAuth client."""

    __tablename__ = "api_tokens"

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: personal / oauth.
    kind: Mapped[str] = mapped_column(String(10))
    #: The tenant the token acts in.
    tenant_id: Mapped[int] = mapped_column(ForeignKey("public.tenants.id", ondelete="CASCADE"))
    #: Name shown in the token list.
    name: Mapped[str] = mapped_column(String(100))
    #: First characters of the token, to recognise it in lists and logs.
    token_prefix: Mapped[str] = mapped_column(String(16))
    #: SHA-256 of the token (tokens are random, 256 bits; the token itself is never stored).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: Scopes granted (permission names); a personal token is also capped by its owner's current roles.
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(60)), default=list)
    #: Owner of a personal token.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("public.users.id"))
    #: OAuth client an access token was issued to.
    oauth_client_id: Mapped[int | None] = mapped_column(ForeignKey("public.oauth_clients.id"))
    #: Expiry (None: until revoked).
    expires_at: Mapped[datetime | None]
    #: Last successful use (updated at most once a minute).
    last_used_at: Mapped[datetime | None]
    #: When it was revoked.
    revoked_at: Mapped[datetime | None]
