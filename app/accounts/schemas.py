"""Response schemas of the accounts API (the API never returns ORM objects)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class MemberOut(BaseModel):
    """A membership of the tenant and its account."""

    membership_id: int
    user_id: int
    name: str
    email: str
    user_code: str
    roles: list[str]
    active: bool
    locked: bool
    sso_only: bool
    joined_at: datetime
    deactivated_at: datetime | None


class RoleOut(BaseModel):
    """A role (built-in or the tenant's own) and its permissions."""

    name: str
    builtin: bool
    active: bool
    description: str
    permissions: list[str]


class SecurityEventOut(BaseModel):
    """A security event as recorded."""

    id: int
    occurred_at: datetime
    kind: str
    user_id: int | None
    membership_id: int | None
    user_label: str
    actor_user_id: int | None
    actor_label: str
    source: str
    ip: str | None
    user_agent: str | None
    detail: dict[str, Any]
    alert: bool
