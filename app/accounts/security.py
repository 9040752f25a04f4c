"""Password re-verification with failure counting (21 CFR 11.300(d)).

Minimal stand-in for the accounts issue's version: same signature and contract (counts failures, refuses locked
or deactivated users and memberships). Failures are counted in Redis here so no control-plane column is needed;
the accounts area replaces this module with its database-backed lockout.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select

from app.accounts.models import Membership, User
from app.accounts.passwords import verify_password
from app.core.tenancy import control_session

#: Consecutive wrong passwords after which the account is locked.
DEFAULT_LOCKOUT_THRESHOLD = 5


def _keys(user_id: int) -> tuple[str, str]:
    return f"batchline:auth:failures:{int(user_id)}", f"batchline:auth:locked:{int(user_id)}"


def verify_user_password(*, user_id: int, password: str, tenant_id: int) -> bool:
    """Check the user's password for an action in a tenant; count a wrong one toward the lockout."""
    conn = current_app.extensions["batchline.redis"]
    failures_key, locked_key = _keys(user_id)
    with control_session() as session:
        row = session.execute(
            select(User.password_hash, User.active, Membership.active.label("member_active"))
            .join(Membership, Membership.user_id == User.id)
            .where(User.id == user_id, Membership.tenant_id == tenant_id)
        ).first()
    if row is None or not row.active or not row.member_active or conn.exists(locked_key):
        return False
    if verify_password(row.password_hash, password):
        conn.delete(failures_key)
        return True
    failures = conn.incr(failures_key)
    if failures >= int(current_app.config.get("ACCOUNT_LOCKOUT_THRESHOLD", DEFAULT_LOCKOUT_THRESHOLD)):
        conn.set(locked_key, "1")
    return False
