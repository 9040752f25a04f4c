"""State changes of accounts: invitations, roles, deactivation, unlock, custom roles, settings, passwords, SSO.

Tenant-scoped changes run in `control_then_tenant_transaction`: the control-plane change and its security event
commit together or not at all. Input is validated before anything is written; a refusal changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.accounts.models import (
    Invitation,
    Membership,
    PasswordReset,
    SecuritySettings,
    SsoIdentity,
    SsoProvider,
    TenantRole,
    User,
)
from app.accounts.passwords import check_password_policy, hash_password, verify_password
from app.accounts.queries import (
    DEFAULT_SETTINGS,
    SETTING_NAMES,
    assignable_roles,
    custom_role_permissions,
    member,
    member_permissions,
    open_invitation_count,
    seats_taken,
    sso_switched_on,
    strictest_settings,
    tenant_settings,
)
from app.accounts.security import record_account_event, record_security_event
from app.accounts.tokens import INVITE, RESET, ExpiredLink, make_token, read_token
from app.billing.services import FEATURES_IN_USE, register_usage_counter, require_capacity, require_feature
from app.core.crypto import seal
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.jobs import enqueue
from app.core.mail import send_mail
from app.core.permissions import BUILTIN_ROLES, PERMISSIONS, permissions_of
from app.core.tenancy import control_session, control_then_tenant_transaction
from app.tenancy.models import Tenant

# ASCII only, on purpose: a look-alike Cyrillic letter a (U+0430) in an address is a classic impersonation trick, and
# internationalised addresses are rare in regulated plants. Local part: RFC 5322 dot-atom.
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_DOMAIN_RE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_ROLE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9 ._-]{1,58}[A-Za-z0-9]$")
#: Unicode categories refused in names: control, format (zero-width, bidi overrides), separators, private use.
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
MAX_ROLES_PER_MEMBER = 10

# Accounts own memberships and invitations, so they tell billing how many places a tenant uses.
register_usage_counter("users", seats_taken, plane="control")
FEATURES_IN_USE["sso"] = sso_switched_on


def validate_email(email: str) -> str:
    """Return the normalised (trimmed, lower-case) email, or raise with what is wrong."""
    raw = (email or "").strip()
    if not raw:
        raise ValidationError("an email address is required")
    if len(raw) > 254:
        raise ValidationError("the email address is too long (at most 254 characters)")
    if not raw.isascii():
        raise ValidationError(f"{raw!r} contains non-ASCII characters; type the address in plain ASCII")
    if not _EMAIL_RE.match(raw) or len(raw.partition("@")[0]) > 64:
        raise ValidationError(f"{raw!r} is not a valid email address (expected name@company.example)")
    return raw.lower()


def validate_name(name: str, *, what: str = "name", max_length: int = 200) -> str:
    """Return a printable person's name (NFC, single spaces), refusing invisible and direction-changing tricks."""
    cleaned = unicodedata.normalize("NFC", name or "")
    bad = sorted({f"U+{ord(ch):04X}" for ch in cleaned if unicodedata.category(ch) in _REFUSED_CATEGORIES})
    if bad:
        raise ValidationError(f"the {what} contains invisible or control characters ({', '.join(bad[:5])}); "
                              "type it again without them")
    cleaned = " ".join(cleaned.split())
    if not cleaned:
        raise ValidationError(f"a {what} is required")
    if len(cleaned) > max_length:
        raise ValidationError(f"the {what} is too long (at most {max_length} characters)")
    return cleaned


def _validate_roles(session: Session, tenant_id: int, roles: Iterable[str], *, allow_empty: bool = False) -> list[str]:
    wanted = list(dict.fromkeys(r.strip() for r in roles if r and r.strip()))
    if not wanted and not allow_empty:
        raise ValidationError("choose at least one role")
    if len(wanted) > MAX_ROLES_PER_MEMBER:
        raise ValidationError(f"at most {MAX_ROLES_PER_MEMBER} roles per member")
    known = set(assignable_roles(session, tenant_id))
    unknown = [r for r in wanted if r not in known]
    if unknown:
        raise ValidationError(f"unknown role(s): {', '.join(repr(r[:60]) for r in unknown)}")
    return wanted


def _check_no_escalation(session: Session, tenant_id: int, roles: list[str], by_permissions: frozenset[str]) -> None:
    granted = permissions_of(roles, custom_role_permissions(session, tenant_id, roles))
    beyond = sorted(granted - by_permissions)
    if beyond:
        raise ValidationError(f"you cannot grant permissions you do not hold yourself: {', '.join(beyond)}")


def _managers_left(session: Session, tenant_id: int, *, excluding_user: int, with_roles: list[str] | None) -> int:
    """Active members able to manage users once `excluding_user` holds `with_roles` (None: is deactivated)."""
    rows = session.execute(
        select(Membership.user_id, Membership.roles).join(User, User.id == Membership.user_id)
        .where(Membership.tenant_id == tenant_id, Membership.active.is_(True), User.active.is_(True))
    ).all()
    custom = custom_role_permissions(session, tenant_id)
    count = 0
    for row in rows:
        roles = row.roles if row.user_id != excluding_user else with_roles
        if roles is not None and "users.manage" in permissions_of(roles, custom):
            count += 1
    return count


def _now(session: Session) -> Any:
    return session.execute(text("SELECT now()")).scalar_one()


# --- invitations -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvitationView:
    """What an invitation link shows before it is accepted."""

    invitation_id: int
    tenant_id: int
    tenant_name: str
    tenant_slug: str
    email: str
    roles: list[str]
    account_exists: bool


def invitation_link_token(invitation: Invitation) -> str:
    """The signed token of an invitation's link."""
    return make_token(INVITE, {"i": invitation.id, "n": invitation.nonce})


def invite_member(*, tenant_id: int, email: str, roles: list[str], by_user_id: int,
                  by_permissions: frozenset[str]) -> Invitation:
    """Invite an email address with roles; a newer invitation of the same address replaces an open one."""
    email = validate_email(email)
    ttl = timedelta(seconds=int(current_app.config["INVITATION_TTL_S"]))
    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        roles = _validate_roles(control, tenant_id, roles)
        _check_no_escalation(control, tenant_id, roles, by_permissions)
        existing = control.execute(
            select(Membership).join(User, User.id == Membership.user_id)
            .where(Membership.tenant_id == tenant_id, User.email == email)
        ).scalar_one_or_none()
        if existing is not None and existing.active:
            raise Conflict(f"{email} is already a member; change their roles instead")
        if existing is not None:
            raise Conflict(f"{email} was a member and is deactivated; reactivate them instead")
        # A new invitation of an address already invited replaces the open one: it takes no new place.
        replacing = open_invitation_count(control, tenant_id, email=email) > 0
        require_capacity(control, tenant_id=tenant_id, entitlement="users", adding=0 if replacing else 1)
        now = _now(control)
        for old in control.scalars(select(Invitation).where(
                Invitation.tenant_id == tenant_id, Invitation.email == email,
                Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))):
            old.revoked_at = now
        invitation = Invitation(tenant_id=tenant_id, email=email, roles=roles, nonce=secrets.token_urlsafe(24),
                                invited_by=by_user_id, expires_at=now + ttl)
        control.add(invitation)
        control.flush()
        session = enter_tenant()
        record_security_event(session=session, tenant_id=tenant_id, kind="member.invited", user_id=None,
                              actor_user_id=by_user_id, user_label=email,
                              detail={"email": email, "roles": roles, "invitation_id": invitation.id,
                                      "expires_at": invitation.expires_at.isoformat()})
        enqueue(session, "app.accounts.jobs:send_invitation", invitation_id=invitation.id)
    return invitation


def revoke_invitation(*, tenant_id: int, invitation_id: int, by_user_id: int) -> None:
    """Withdraw an open invitation; its link stops working."""
    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        invitation = control.get(Invitation, invitation_id, with_for_update=True)
        if invitation is None or invitation.tenant_id != tenant_id:
            raise NotFound("no such invitation")
        if invitation.accepted_at is not None or invitation.revoked_at is not None:
            raise Conflict("the invitation was already accepted or withdrawn")
        invitation.revoked_at = _now(control)
        email = invitation.email
        record_security_event(session=enter_tenant(), tenant_id=tenant_id, kind="member.invitation_revoked",
                              actor_user_id=by_user_id, user_label=email,
                              detail={"email": email, "invitation_id": invitation_id})


def _open_invitation(session: Session, token: str, *, lock: bool = False) -> Invitation:
    payload = read_token(INVITE, token, max_age_s=int(current_app.config["INVITATION_TTL_S"]))
    invitation = session.get(Invitation, int(payload.get("i", 0)), with_for_update=lock)
    if invitation is None or not hmac.compare_digest(str(invitation.nonce), str(payload.get("n", ""))):
        raise ValidationError("this invitation link is not valid; ask your administrator for a new one")
    if invitation.revoked_at is not None:
        raise ValidationError("this invitation was withdrawn or replaced by a newer one; use the latest mail")
    if invitation.accepted_at is not None:
        raise ValidationError("this invitation was already used; sign in instead")
    if invitation.expires_at <= _now(session):
        raise ExpiredLink("this invitation has expired; ask your administrator to invite you again")
    tenant = session.get(Tenant, invitation.tenant_id)
    if tenant is None or tenant.status not in ("active", "read_only"):
        raise ValidationError("the company of this invitation is not available")
    return invitation


def read_invitation(token: str) -> InvitationView:
    """Describe a still-valid invitation, or raise with why it cannot be used."""
    with control_session() as session:
        invitation = _open_invitation(session, token)
        tenant = session.get(Tenant, invitation.tenant_id)
        exists = session.scalar(select(User.id).where(User.email == invitation.email)) is not None
        return InvitationView(invitation.id, invitation.tenant_id, tenant.name if tenant else "",
                              tenant.slug if tenant else "", invitation.email, list(invitation.roles), exists)


def accept_invitation(*, token: str, signed_in_user_id: int | None, name: str = "", password: str = "",
                      sso_identity: tuple[str, str] | None = None) -> tuple[int, str]:
    """Accept an invitation once: a new account (name + password, or an SSO identity) or the signed-in one whose
    email it names. Return (user id, tenant slug)."""
    with control_session() as peek:
        tenant_id = _open_invitation(peek, token).tenant_id
    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        invitation = _open_invitation(control, token, lock=True)
        # The invitation already holds its place; this refuses only if the plan shrank since it was sent.
        require_capacity(control, tenant_id=tenant_id, entitlement="users", adding=0)
        user = control.scalar(select(User).where(User.email == invitation.email).with_for_update())
        created = False
        if user is not None:
            if signed_in_user_id != user.id:
                raise ValidationError(f"an account for {invitation.email} exists: sign in as {invitation.email} "
                                      "first, then open the invitation link again")
            if not user.active:
                raise ValidationError("this account is deactivated; ask your administrator")
        else:
            if signed_in_user_id is not None:
                raise ValidationError(f"this invitation is for {invitation.email}; sign out first to accept it")
            name = validate_name(name)
            if sso_identity is None:
                settings = tenant_settings(control, tenant_id)
                check_password_policy(password, email=invitation.email, min_length=settings.password_min_length)
            user = User(email=invitation.email, name=name,
                        password_hash=hash_password(password) if sso_identity is None else None,
                        password_changed_at=func.now() if sso_identity is None else None)
            control.add(user)
            control.flush()
            created = True
            if sso_identity is not None:
                control.add(SsoIdentity(issuer=sso_identity[0], subject=sso_identity[1], user_id=user.id,
                                        tenant_id=tenant_id))
        membership = control.scalar(select(Membership).where(
            Membership.user_id == user.id, Membership.tenant_id == tenant_id).with_for_update())
        if membership is not None:
            raise Conflict("you are already a member of this company (deactivated memberships are reactivated by "
                           "an administrator)")
        membership = Membership(user_id=user.id, tenant_id=tenant_id, roles=list(invitation.roles))
        control.add(membership)
        invitation.accepted_at = _now(control)
        invitation.accepted_user_id = user.id
        control.flush()
        user_id, label, membership_id = user.id, f"{user.name} <{user.email}>", membership.id
        slug = control.get(Tenant, tenant_id).slug  # type: ignore[union-attr]
        session = enter_tenant()
        record_security_event(session=session, tenant_id=tenant_id, kind="member.joined", user_id=user_id,
                              user_label=label, membership_id=membership_id,
                              detail={"invitation_id": invitation.id, "roles": list(invitation.roles),
                                      "new_account": created, "via": "sso" if sso_identity else "password"})
    return user_id, slug


# --- members and roles -----------------------------------------------------------------------------------------


def assign_roles(*, tenant_id: int, user_id: int, roles: list[str], by_user_id: int,
                 by_permissions: frozenset[str]) -> list[str]:
    """Replace a member's roles; refuse granting more than the admin holds or leaving nobody to manage users."""
    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        roles = _validate_roles(control, tenant_id, roles)
        found = member(control, tenant_id=tenant_id, user_id=user_id)
        if found is None:
            raise NotFound("no such member")
        membership, _user = found
        before = list(membership.roles)
        _check_no_escalation(control, tenant_id, [r for r in roles if r not in before], by_permissions)
        if _managers_left(control, tenant_id, excluding_user=user_id, with_roles=roles) == 0:
            raise Conflict("at least one active member must keep a role that manages users")
        if sorted(before) == sorted(roles):
            return roles
        membership.roles = roles
        record_security_event(session=enter_tenant(), tenant_id=tenant_id, kind="role.changed", user_id=user_id,
                              actor_user_id=by_user_id, detail={"before": before, "after": roles})
    return roles


def deactivate_member(*, tenant_id: int, user_id: int, by_user_id: int) -> None:
    """Deactivate a membership: the row stays on every record; the user's sessions end at once."""
    from app.accounts.sessions import end_user_sessions

    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        found = member(control, tenant_id=tenant_id, user_id=user_id)
        if found is None:
            raise NotFound("no such member")
        membership, _user = found
        if not membership.active:
            raise Conflict("this member is already deactivated")
        if _managers_left(control, tenant_id, excluding_user=user_id, with_roles=None) == 0:
            raise Conflict("at least one active member must keep a role that manages users")
        membership.active = False
        membership.deactivated_at = func.now()
        membership.deactivated_by = by_user_id
        record_security_event(session=enter_tenant(), tenant_id=tenant_id, kind="member.deactivated",
                              user_id=user_id, actor_user_id=by_user_id, detail={"roles": list(membership.roles)})
    end_user_sessions(user_id)


def reactivate_member(*, tenant_id: int, user_id: int, by_user_id: int, by_permissions: frozenset[str]) -> None:
    """Reactivate a deactivated membership with its previous roles."""
    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        found = member(control, tenant_id=tenant_id, user_id=user_id)
        if found is None:
            raise NotFound("no such member")
        membership, user = found
        if membership.active:
            raise Conflict("this member is active")
        if not user.active:
            raise Conflict("the account itself is deactivated")
        _check_no_escalation(control, tenant_id, list(membership.roles), by_permissions)
        require_capacity(control, tenant_id=tenant_id, entitlement="users", adding=1)
        membership.active = True
        record_security_event(session=enter_tenant(), tenant_id=tenant_id, kind="member.reactivated",
                              user_id=user_id, actor_user_id=by_user_id, detail={"roles": list(membership.roles)})


def unlock_account(*, tenant_id: int, user_id: int, by_user_id: int) -> None:
    """Unlock a member's account after a lockout (recorded in every tenant of the account)."""
    with control_session() as control:
        found = member(control, tenant_id=tenant_id, user_id=user_id)
        if found is None:
            raise NotFound("no such member")
        _membership, user = found
        if user.locked_at is None:
            raise Conflict("this account is not locked")
        user.locked_at = None
        user.failed_logins = 0
    record_account_event(user_id=user_id, kind="account.unlocked", actor_user_id=by_user_id,
                         detail={"by_tenant_id": tenant_id})


# --- custom roles ----------------------------------------------------------------------------------------------


def _validate_permissions(permissions: Iterable[str], by_permissions: frozenset[str]) -> list[str]:
    wanted = sorted(set(p for p in permissions if p))
    unknown = [p for p in wanted if p not in PERMISSIONS]
    if unknown:
        raise ValidationError(f"unknown permission(s): {', '.join(repr(p[:60]) for p in unknown)}")
    if not wanted:
        raise ValidationError("a role needs at least one permission")
    beyond = [p for p in wanted if p not in by_permissions]
    if beyond:
        raise ValidationError(f"you cannot grant permissions you do not hold yourself: {', '.join(beyond)}")
    return wanted


def create_custom_role(*, tenant_id: int, name: str, description: str, permissions: list[str], by_user_id: int,
                       by_permissions: frozenset[str]) -> int:
    """Create a tenant role from the named permissions; its name is fixed and unlike any built-in one."""
    name = validate_name(name, what="role name", max_length=60)
    if not _ROLE_NAME_RE.match(name):
        raise ValidationError("a role name is 3-60 letters, digits, spaces, '.', '_' or '-', starting with a letter")
    if name.casefold() in {r.casefold() for r in BUILTIN_ROLES}:
        raise ValidationError(f"{name!r} is a built-in role name; choose another")
    description = validate_name(description, what="description", max_length=300) if description.strip() else ""
    permissions = _validate_permissions(permissions, by_permissions)
    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        clash = control.scalar(select(TenantRole.id).where(TenantRole.tenant_id == tenant_id,
                                                           func.lower(TenantRole.name) == name.lower()))
        if clash is not None:
            raise Conflict(f"a role named {name!r} already exists (retired roles keep their names)")
        role = TenantRole(tenant_id=tenant_id, name=name, description=description, permissions=permissions,
                          created_by=by_user_id)
        control.add(role)
        control.flush()
        role_id = role.id
        record_security_event(session=enter_tenant(), tenant_id=tenant_id, kind="role.created",
                              actor_user_id=by_user_id,
                              detail={"role_id": role_id, "name": name, "permissions": permissions})
    return role_id


def update_custom_role(*, tenant_id: int, role_id: int, description: str, permissions: list[str], by_user_id: int,
                       by_permissions: frozenset[str]) -> None:
    """Change a custom role's permissions (takes effect on its holders' next request)."""
    description = validate_name(description, what="description", max_length=300) if description.strip() else ""
    permissions = _validate_permissions(permissions, by_permissions)
    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        role = control.get(TenantRole, role_id, with_for_update=True)
        if role is None or role.tenant_id != tenant_id or not role.active:
            raise NotFound("no such role")
        before = list(role.permissions)
        role.permissions, role.description = permissions, description
        control.flush()
        if "users.manage" in before and "users.manage" not in permissions and _managers_left(
                control, tenant_id, excluding_user=-1, with_roles=None) == 0:
            raise Conflict("at least one active member must keep a role that manages users")
        record_security_event(session=enter_tenant(), tenant_id=tenant_id, kind="role.updated",
                              actor_user_id=by_user_id,
                              detail={"role_id": role_id, "name": role.name, "before": before, "after": permissions})


def retire_custom_role(*, tenant_id: int, role_id: int, by_user_id: int) -> None:
    """Retire a custom role nobody holds any more (the row and its name stay)."""
    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        role = control.get(TenantRole, role_id, with_for_update=True)
        if role is None or role.tenant_id != tenant_id or not role.active:
            raise NotFound("no such role")
        holders = control.scalar(select(func.count()).select_from(Membership).where(
            Membership.tenant_id == tenant_id, Membership.roles.any(role.name)))
        if holders:
            raise Conflict(f"{holders} member(s) hold {role.name!r}; change their roles first")
        role.active = False
        record_security_event(session=enter_tenant(), tenant_id=tenant_id, kind="role.retired",
                              actor_user_id=by_user_id, detail={"role_id": role_id, "name": role.name})


# --- settings --------------------------------------------------------------------------------------------------

#: Safe bounds of each per-tenant setting.
SETTING_BOUNDS = {
    "lockout_threshold": (3, 10),
    "idle_timeout_min": (1, 30),
    "session_max_hours": (1, 24),
    "password_min_length": (12, 64),
}


def update_security_settings(*, tenant_id: int, values: dict[str, Any], by_user_id: int) -> dict[str, int]:
    """Change the tenant's security settings within safe bounds; refuse the whole change if one is out."""
    parsed: dict[str, int] = {}
    for name, (low, high) in SETTING_BOUNDS.items():
        raw = values.get(name, "")
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ValidationError(f"{name.replace('_', ' ')} must be a whole number") from None
        if not low <= value <= high:
            raise ValidationError(f"{name.replace('_', ' ')} must be between {low} and {high}")
        parsed[name] = value
    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        row = control.get(SecuritySettings, tenant_id, with_for_update=True)
        before = {n: getattr(row, n) for n in SETTING_NAMES} if row else {
            n: getattr(DEFAULT_SETTINGS, n) for n in SETTING_NAMES}
        if row is None:
            row = SecuritySettings(tenant_id=tenant_id)
            control.add(row)
        for name, value in parsed.items():
            setattr(row, name, value)
        row.updated_by = by_user_id
        row.updated_at = func.now()
        changed = {n: {"before": before[n], "after": parsed[n]} for n in parsed if before[n] != parsed[n]}
        if changed:
            record_security_event(session=enter_tenant(), tenant_id=tenant_id, kind="settings.changed",
                                  actor_user_id=by_user_id, detail={"changed": changed})
    return parsed


# --- passwords -------------------------------------------------------------------------------------------------


def change_password(*, user_id: int, current_password: str, new_password: str) -> None:
    """Change the own password after re-entering the current one; other sessions of the account end."""
    from app.accounts.security import register_failed_password

    with control_session() as control:
        user = control.get(User, user_id)
        if user is None or not user.active:
            raise NotFound("no such account")
        stored = user.password_hash
        email = user.email
        min_length = strictest_settings(control, user_id).password_min_length
    if stored is None:
        raise ValidationError("this account signs in through single sign-on; change the password there")
    if not verify_password(stored, current_password):
        register_failed_password(user_id=user_id, tenant_id=None, source="password-change")
        raise ValidationError("the current password is not correct")
    check_password_policy(new_password, email=email, min_length=min_length)
    if verify_password(stored, new_password):
        raise ValidationError("the new password must differ from the current one")
    with control_session() as control:
        user = control.get(User, user_id, with_for_update=True)
        user.password_hash = hash_password(new_password)  # type: ignore[union-attr]
        user.password_changed_at = func.now()  # type: ignore[union-attr]
        user.failed_logins = 0  # type: ignore[union-attr]
    record_account_event(user_id=user_id, kind="password.changed", detail={"via": "change"})


def request_password_reset(*, email: str, ip: str | None) -> bool:
    """Mail a single-use reset link to an active, unlocked account with a password; return whether one was sent.

    Callers show the same answer either way, so the form does not reveal which addresses have accounts.
    """
    try:
        email = validate_email(email)
    except ValidationError:
        raise
    ttl = timedelta(seconds=int(current_app.config["PASSWORD_RESET_TTL_S"]))
    with control_session() as control:
        user = control.scalar(select(User).where(User.email == email))
        if user is None or not user.active or user.locked_at is not None or user.password_hash is None:
            return False
        nonce = secrets.token_urlsafe(32)
        reset = PasswordReset(user_id=user.id, nonce_hash=hashlib.sha256(nonce.encode()).hexdigest(),
                              expires_at=_now(control) + ttl, requested_ip=(ip or "")[:45] or None)
        control.add(reset)
        control.flush()
        token = make_token(RESET, {"r": reset.id, "n": nonce})
        user_id, name = user.id, user.name
    from app.core.web import app_url

    link = app_url("accounts.reset_password", token=token, _external=True)
    minutes = ttl.seconds // 60 + ttl.days * 1440
    send_mail(to=email, subject="Batchline: reset your password", body=(
        f"Hello {name},\n\nsomeone (hopefully you) asked to reset the Batchline password of {email}.\n"
        f"Open this link within {minutes} minutes to choose a new password; it works once:\n\n{link}\n\n"
        "If you did not ask for this, ignore this mail: your password stays as it is.\n"))
    record_account_event(user_id=user_id, kind="password.reset_requested", detail={"reset_id": reset.id})
    return True


def _open_reset(session: Session, token: str, *, lock: bool = False) -> PasswordReset:
    payload = read_token(RESET, token, max_age_s=int(current_app.config["PASSWORD_RESET_TTL_S"]))
    reset = session.get(PasswordReset, int(payload.get("r", 0)), with_for_update=lock)
    digest = hashlib.sha256(str(payload.get("n", "")).encode()).hexdigest()
    if reset is None or not hmac.compare_digest(reset.nonce_hash, digest):
        raise ValidationError("this reset link is not valid; ask for a new one")
    if reset.used_at is not None:
        raise ValidationError("this reset link was already used; ask for a new one if you need it")
    if reset.expires_at <= _now(session):
        raise ExpiredLink("this reset link has expired; ask for a new one")
    return reset


def check_reset_token(token: str) -> str:
    """Return the email a still-valid reset link is for, or raise with why it cannot be used."""
    with control_session() as session:
        reset = _open_reset(session, token)
        return session.get(User, reset.user_id).email  # type: ignore[union-attr]


def reset_password(*, token: str, new_password: str) -> int:
    """Set a new password through a reset link (once); every session of the account ends. Return the user id."""
    from app.accounts.sessions import end_user_sessions

    with control_session() as control:
        reset = _open_reset(control, token, lock=True)
        user = control.get(User, reset.user_id, with_for_update=True)
        if user is None or not user.active or user.locked_at is not None:
            raise ValidationError("this account cannot be reset (deactivated or locked); ask your administrator")
        check_password_policy(new_password, email=user.email,
                              min_length=strictest_settings(control, user.id).password_min_length)
        user.password_hash = hash_password(new_password)
        user.password_changed_at = func.now()
        user.failed_logins = 0
        reset.used_at = _now(control)
        # Every other open link of the account dies with this one.
        for other in control.scalars(select(PasswordReset).where(
                PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None), PasswordReset.id != reset.id)):
            other.used_at = reset.used_at
        user_id, reset_id = user.id, reset.id
    end_user_sessions(user_id)
    record_account_event(user_id=user_id, kind="password.reset", detail={"reset_id": reset_id})
    return user_id


# --- single sign-on --------------------------------------------------------------------------------------------


def validate_issuer(issuer: str) -> str:
    """An issuer is an https URL without query or fragment (plain http only on this machine's loopback)."""
    issuer = (issuer or "").strip().rstrip("/")
    if not issuer or len(issuer) > 500 or not issuer.isascii():
        raise ValidationError("the issuer must be the provider's URL (at most 500 ASCII characters)")
    parts = urlsplit(issuer)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValidationError("the issuer must be an https:// URL")
    if not parts.hostname or parts.query or parts.fragment or parts.username or parts.password:
        raise ValidationError("the issuer must be a plain URL (no credentials, query or fragment)")
    return issuer


def configure_sso(*, tenant_id: int, issuer: str, client_id: str, client_secret: str, allowed_domains: str,
                  default_roles: list[str], enabled: bool, by_user_id: int, by_permissions: frozenset[str],
                  sso_required: bool = False) -> None:
    """Set the tenant's OIDC provider and its "SSO required" policy; an empty secret keeps the stored one."""
    issuer = validate_issuer(issuer)
    client_id = (client_id or "").strip()
    if not client_id or len(client_id) > 255 or not client_id.isprintable() or not client_id.isascii():
        raise ValidationError("the client id is required (printable ASCII, at most 255 characters)")
    if len(client_secret) > 1000 or (client_secret and not client_secret.isascii()):
        raise ValidationError("the client secret is at most 1000 ASCII characters")
    domains = sorted({d.strip().lower().lstrip("@") for d in re.split(r"[\s,;]+", allowed_domains or "") if d.strip()})
    bad = [d for d in domains if not _DOMAIN_RE.match(d)]
    if bad:
        raise ValidationError(f"not a domain name: {', '.join(repr(d[:60]) for d in bad)}")
    with control_then_tenant_transaction(tenant_id) as (control, enter_tenant):
        if enabled:  # switching it off stays possible on any plan: it is the way to a plan without SSO
            require_feature(control, tenant_id=tenant_id, feature="sso")
        roles = _validate_roles(control, tenant_id, default_roles, allow_empty=not domains)
        _check_no_escalation(control, tenant_id, roles, by_permissions)
        row = control.get(SsoProvider, tenant_id, with_for_update=True)
        if row is None:
            if not client_secret:
                raise ValidationError("the client secret is required")
            row = SsoProvider(tenant_id=tenant_id)
            control.add(row)
        before = {"issuer": row.issuer, "client_id": row.client_id, "allowed_domains": row.allowed_domains,
                  "default_roles": row.default_roles, "enabled": row.enabled, "sso_required": row.sso_required}
        row.issuer, row.client_id, row.allowed_domains = issuer, client_id, domains
        row.default_roles, row.enabled, row.sso_required = roles, bool(enabled), bool(sso_required)
        if client_secret:
            row.client_secret_sealed = seal(client_secret, purpose=f"sso-client-secret:{tenant_id}")
        row.updated_by, row.updated_at = by_user_id, func.now()
        after = {"issuer": issuer, "client_id": client_id, "allowed_domains": domains, "default_roles": roles,
                 "enabled": bool(enabled), "sso_required": bool(sso_required)}
        record_security_event(session=enter_tenant(), tenant_id=tenant_id, kind="sso.configured",
                              actor_user_id=by_user_id,
                              detail={"before": before, "after": after, "secret_changed": bool(client_secret)})


def acknowledge_alert(*, tenant_id: int, event_id: int, by_user_id: int, note: str = "") -> None:
    """Acknowledge a security alert (a new event; the alert itself is never changed)."""
    from app.accounts.models import SecurityEvent
    from app.accounts.queries import open_alerts
    from app.core.tenancy import tenant_transaction

    note = validate_name(note, what="note", max_length=500) if note.strip() else ""
    with tenant_transaction(tenant_id) as session:
        event = session.get(SecurityEvent, event_id)
        if event is None or not event.alert:
            raise NotFound("no such alert")
        if event_id not in {e.id for e in open_alerts(session)}:
            raise Conflict("this alert was already acknowledged")
        record_security_event(session=session, tenant_id=tenant_id, kind="alert.acknowledged",
                              user_id=event.user_id, actor_user_id=by_user_id,
                              detail={"event_id": event_id, "note": note})


def member_permissions_now(*, tenant_id: int, roles: list[str]) -> frozenset[str]:
    """Permissions of a set of roles in a tenant, read now (for the escalation checks of the views)."""
    with control_session() as session:
        return member_permissions(session, tenant_id=tenant_id, roles=roles)
