"""Background jobs of accounts: invitation mails and security alert mails (through the outbox, so a mail relay
outage only delays them and failures show on the jobs page)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.accounts.models import Invitation, SecurityEvent
from app.accounts.queries import admin_recipients
from app.accounts.services import invitation_link_token
from app.core.jobs import tenant_job
from app.core.mail import send_mail
from app.core.tenancy import control_session
from app.core.web import app_url
from app.tenancy.models import Tenant


@tenant_job(queue="default")
def send_invitation(session: Session, *, invitation_id: int) -> dict[str, Any]:
    """Mail the invitation link (nothing when the invitation was accepted or withdrawn meanwhile)."""
    tenant_id = session.info["tenant"].id
    with control_session() as control:
        invitation = control.get(Invitation, invitation_id)
        if invitation is None or invitation.tenant_id != tenant_id:
            raise LookupError(f"invitation {invitation_id} not found in tenant {tenant_id}")
        if invitation.accepted_at is not None or invitation.revoked_at is not None:
            return {"sent": 0, "reason": "no longer open"}
        tenant = control.get(Tenant, tenant_id)
        token = invitation_link_token(invitation)
        to, expires = invitation.email, invitation.expires_at
        roles = ", ".join(invitation.roles)
    link = app_url("accounts.accept_invitation", token=token, _external=True)
    send_mail(to=to, subject=f"Batchline: you are invited to {tenant.name if tenant else 'a company'}", body=(
        f"Hello,\n\nyou are invited to join {tenant.name if tenant else ''} on Batchline as {roles}.\n"
        f"Open this link to accept (it works once, until {expires:%Y-%m-%d %H:%M} UTC):\n\n{link}\n\n"
        "If you did not expect this invitation, ignore this mail.\n"))
    return {"sent": 1, "to": to}


@tenant_job(queue="default")
def send_security_alert(session: Session, *, event_id: int) -> dict[str, Any]:
    """Mail a security alert (an account lockout) to every admin of the tenant who manages users."""
    tenant = session.info["tenant"]
    event = session.scalar(select(SecurityEvent).where(SecurityEvent.id == event_id))
    if event is None:
        raise LookupError(f"security event {event_id} not found")
    with control_session() as control:
        recipients = admin_recipients(control, tenant.id)
        row = control.get(Tenant, tenant.id)
        company = row.name if row else tenant.slug
    page = app_url("accounts_admin.security_events_page", tenant_slug=tenant.slug, _external=True)
    what = {"account.locked": "was locked after repeated wrong passwords"}.get(event.kind, f"raised {event.kind}")
    sent = []
    for _user_id, email, name in recipients:
        send_mail(to=email, subject=f"Batchline security alert: {event.kind} in {company}", body=(
            f"Hello {name},\n\nthe account {event.user_label or event.user_id} {what} "
            f"at {event.occurred_at:%Y-%m-%d %H:%M:%S} UTC (source: {event.source}, address: {event.ip or '-'}).\n"
            f"Company: {company}\n\nReview and acknowledge it here: {page}\n"
            "If this was not the user, treat it as an attempted break-in.\n"))
        sent.append(email)
    return {"sent": len(sent), "to": sent}
