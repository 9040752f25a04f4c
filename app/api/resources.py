"""Endpoints of what exists today: the tenant, its background jobs, its members, the calling token."""

from __future__ import annotations

from typing import Any

from sqlalchemy import any_, select

from app.accounts.models import Membership, User
from app.api.registry import operation, paginate
from app.api.schemas import (
    DiagnosticsIn,
    JobOut,
    JobPage,
    JobQuery,
    MemberOut,
    MemberPage,
    MemberQuery,
    TenantOut,
    TokenInfo,
)
from app.api.services import ApiPrincipal
from app.billing.queries import billing_overview
from app.core.errors import NotFound
from app.core.jobs import OutboxMessage, enqueue
from app.core.tenancy import control_session, tenant_transaction
from app.core.web import MEMBER
from app.tenancy.models import Tenant


@operation("GET", "/tenant", summary="The tenant this credential acts in", permission=MEMBER,
           response=TenantOut, tags=["tenant"])
def get_tenant(principal: ApiPrincipal) -> dict[str, Any]:
    """Name, status, plan and usage against the plan's limits."""
    with control_session() as session:
        tenant = session.get(Tenant, principal.tenant.id)
        if tenant is None:
            raise NotFound("the token's tenant no longer exists")
        overview = billing_overview(session, principal.tenant.id, with_invoice=False)
        return {"id": tenant.id, "slug": tenant.slug, "name": tenant.name, "status": tenant.status,
                "plan": overview["plan"]["key"], "plan_name": overview["plan"]["name"],
                "subscription_status": overview["status"], "usage": overview["usage"]}


@operation("GET", "/token", summary="The calling credential and its effective permissions", permission=MEMBER,
           response=TokenInfo, tags=["tenant"])
def get_token(principal: ApiPrincipal) -> dict[str, Any]:
    """What the token may do right now (its scopes narrowed by its owner's current roles)."""
    return {"kind": principal.kind, "name": principal.name, "scopes": principal.scopes,
            "effective_permissions": sorted(principal.permissions), "expires_at": principal.expires_at}


def _job_status(row: OutboxMessage) -> str:
    if row.finished_at:
        return "finished"
    if row.failures:
        return "failing"
    return "queued" if row.dispatched_at else "waiting"


def _job(row: Any) -> dict[str, Any]:
    job = row[0] if isinstance(row, tuple) or hasattr(row, "_mapping") else row
    return {"id": job.id, "func": job.func, "queue": job.queue, "status": _job_status(job),
            "created_at": job.created_at, "finished_at": job.finished_at, "failures": job.failures,
            "last_error": job.last_error, "result": job.result}


_JOB_FILTERS = {
    "finished": lambda: OutboxMessage.finished_at.is_not(None),
    "failing": lambda: OutboxMessage.finished_at.is_(None) & (OutboxMessage.failures > 0),
    "queued": lambda: OutboxMessage.finished_at.is_(None) & (OutboxMessage.failures == 0)
    & OutboxMessage.dispatched_at.is_not(None),
    "waiting": lambda: OutboxMessage.finished_at.is_(None) & (OutboxMessage.failures == 0)
    & OutboxMessage.dispatched_at.is_(None),
}


@operation("GET", "/jobs", summary="List background jobs", permission="jobs.read", query=JobQuery,
           response=JobPage, tags=["jobs"])
def list_jobs(principal: ApiPrincipal, *, query: JobQuery) -> dict[str, Any]:
    """Jobs of the tenant, oldest first, filterable by status."""
    stmt = select(OutboxMessage)
    if query.status:
        stmt = stmt.where(_JOB_FILTERS[query.status]())
    with tenant_transaction(principal.tenant) as session:
        return paginate(session, stmt, query, OutboxMessage.id, _job)


@operation("GET", "/jobs/<int:job_id>", summary="One background job", permission="jobs.read", response=JobOut,
           tags=["jobs"], errors=[404])
def get_job(principal: ApiPrincipal, *, job_id: int) -> dict[str, Any]:
    """A job with its status, result and last error."""
    with tenant_transaction(principal.tenant) as session:
        row = session.get(OutboxMessage, job_id)
        if row is None:
            raise NotFound(f"no job {job_id} in this tenant")
        return _job(row)


@operation("POST", "/jobs/diagnostics", summary="Queue a diagnostics job", permission="settings.manage",
           body=DiagnosticsIn, response=JobOut, status=202, tags=["jobs"])
def queue_diagnostics(principal: ApiPrincipal, *, body: DiagnosticsIn) -> dict[str, Any]:
    """Queue a job that reports the database role and schema jobs of this tenant run under."""
    with tenant_transaction(principal.tenant) as session:
        row = enqueue(session, "app.core.jobs:whoami")
        session.flush()
        session.refresh(row)
        return _job(row)


def _member(row: Any) -> dict[str, Any]:
    member, email, name = row
    return {"id": member.id, "user_id": member.user_id, "email": email, "name": name, "roles": list(member.roles),
            "active": member.active, "created_at": member.created_at}


def _members(tenant_id: int) -> Any:
    return select(Membership, User.email, User.name).join(User, User.id == Membership.user_id) \
        .where(Membership.tenant_id == tenant_id)


@operation("GET", "/members", summary="List members and their roles", permission="users.read", query=MemberQuery,
           response=MemberPage, tags=["members"])
def list_members(principal: ApiPrincipal, *, query: MemberQuery) -> dict[str, Any]:
    """Members of the tenant, filterable by role and active state."""
    stmt = _members(principal.tenant.id)
    if query.role:
        stmt = stmt.where(any_(Membership.roles) == query.role)
    if query.active is not None:
        stmt = stmt.where(Membership.active.is_(query.active))
    with control_session() as session:
        return paginate(session, stmt, query, Membership.id, _member)


@operation("GET", "/members/<int:member_id>", summary="One member", permission="users.read", response=MemberOut,
           tags=["members"], errors=[404])
def get_member(principal: ApiPrincipal, *, member_id: int) -> dict[str, Any]:
    """A member of this tenant (members of other tenants do not exist here)."""
    with control_session() as session:
        row = session.execute(_members(principal.tenant.id).where(Membership.id == member_id)).first()
        if row is None:
            raise NotFound(f"no member {member_id} in this tenant")
        return _member(row)
