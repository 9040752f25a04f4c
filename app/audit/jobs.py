"""Audit jobs: time-stamp the chain head (periodically, fanned out per tenant, and after a batch release)."""

from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy.orm import Session

from app.audit.services import anchor_chain
from app.core.jobs import tenant_job


@tenant_job(queue="default")
def anchor_audit_chain(session: Session, *, reason: str = "periodic", record_type: str | None = None,
                       record_id: str | None = None) -> dict[str, Any]:
    """Anchor this tenant's chain head at the TSA; periodic runs skip a head that is already anchored."""
    if not current_app.config.get("TSA_URL"):
        return {"skipped": "TSA_URL is not set"}
    anchor = anchor_chain(session, reason=reason, record_type=record_type, record_id=record_id,
                          only_if_new=reason == "periodic")
    if anchor is None:
        return {"skipped": "the audit trail is empty"}
    return {"anchor_id": anchor.id, "seq": anchor.seq, "gen_time": anchor.gen_time.isoformat()}
