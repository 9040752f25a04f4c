"""Schemas of the API framework and of the endpoints the API area itself serves (pydantic).

They validate requests and shape responses, and the OpenAPI document is generated from them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

T = TypeVar("T")
_ISO_START = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_text(value: Any) -> Any:
    # pydantic would read a bare number as seconds since 1970; a query string means a date-time, so say so.
    if isinstance(value, str) and not _ISO_START.match(value):
        raise ValueError("give an ISO 8601 date-time with its zone, e.g. 2026-11-27T10:00:00Z")
    return value


#: A moment in a query string: ISO 8601 with its zone (`Z` or `+01:00`); a time without zone is refused.
Moment = Annotated[AwareDatetime, BeforeValidator(_iso_text)]


class Problem(BaseModel):
    """An RFC 9457 problem document: every API error has this shape."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    errors: list[dict[str, Any]] | None = Field(default=None, description="Field errors of a 422")


class Query(BaseModel):
    """Base of query-string models: unknown parameters are refused, so a typo never filters silently."""

    model_config = ConfigDict(extra="forbid")


class Body(BaseModel):
    """Base of request bodies: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class PageQuery(Query):
    """Keyset pagination shared by every list: `after` is the last id seen, `limit` the page size."""

    after: int | None = Field(default=None, ge=0, le=2**62, description="Return items with an id above this one")
    limit: int = Field(default=50, ge=1, le=200, description="Page size (1-200)")


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_after` as `after` to get the next page (null: last page)."""

    items: list[T]
    next_after: int | None


class JobOut(BaseModel):
    """A background job of the tenant."""

    id: int
    func: str
    queue: str
    status: Literal["waiting", "queued", "failing", "finished"]
    created_at: datetime
    finished_at: datetime | None
    failures: int
    last_error: str | None
    result: Any | None = None


class JobPage(Page[JobOut]):
    """A page of jobs."""


class JobQuery(PageQuery):
    """Filters of the job list."""

    status: Literal["waiting", "queued", "failing", "finished"] | None = None


class DiagnosticsIn(Body):
    """Queue a diagnostics job that reports the database role and schema jobs run under."""

    check: Literal["whoami"] = "whoami"


class MemberOut(BaseModel):
    """A member of the tenant: the account and its roles here."""

    id: int
    user_id: int
    email: str
    name: str
    roles: list[str]
    active: bool
    created_at: datetime


class MemberPage(Page[MemberOut]):
    """A page of members."""


class MemberQuery(PageQuery):
    """Filters of the member list."""

    role: str | None = Field(default=None, max_length=60)
    active: bool | None = None


class UsageItem(BaseModel):
    """Usage of one entitlement against the plan."""

    entitlement: str
    included: bool
    limit: int | None
    used: int | None


class TenantOut(BaseModel):
    """The tenant the credential acts in, its plan and usage."""

    id: int
    slug: str
    name: str
    status: str
    plan: str
    plan_name: str
    subscription_status: str
    usage: list[UsageItem]


class TokenInfo(BaseModel):
    """The credential making the request."""

    kind: Literal["personal", "oauth"]
    name: str
    scopes: list[str]
    effective_permissions: list[str]
    expires_at: datetime | None
