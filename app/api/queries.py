"""Read side of API credentials (the token management page)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.models import ApiToken, OAuthClient


def personal_tokens(session: Session, *, tenant_id: int, user_id: int) -> list[ApiToken]:
    """A member's active personal tokens in this tenant."""
    return list(session.scalars(select(ApiToken).where(
        ApiToken.tenant_id == tenant_id, ApiToken.user_id == user_id, ApiToken.kind == "personal",
        ApiToken.revoked_at.is_(None)).order_by(ApiToken.id)))


def oauth_clients(session: Session, *, tenant_id: int) -> list[dict[str, Any]]:
    """The tenant's active OAuth clients."""
    rows = session.scalars(select(OAuthClient).where(OAuthClient.tenant_id == tenant_id,
                                                     OAuthClient.revoked_at.is_(None)).order_by(OAuthClient.id))
    return [{"id": c.id, "client_id": c.client_id, "name": c.name, "scopes": c.scopes, "created_at": c.created_at}
            for c in rows]
