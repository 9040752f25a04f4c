"""API credentials: issue, revoke and authenticate personal tokens and OAuth2 clients.

Tokens and client secrets are 256-bit random strings shown once; only their SHA-256 is stored (a fast hash is
right for random secrets: there is nothing to brute-force). Every credential is bound to one tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from app.accounts.models import Membership, TenantRole, User
from app.api.errors import ApiError
from app.api.models import ApiToken, OAuthClient
from app.core.db import Database
from app.core.errors import NotFound, ValidationError
from app.core.permissions import PERMISSIONS, permissions_of
from app.core.tenancy import Actor, TenantRef, tenant_ref
from app.tenancy.models import Tenant
from app.tenancy.queries import LIVE_STATUSES

PERSONAL_PREFIX, OAUTH_PREFIX, CLIENT_PREFIX = "blp_", "blo_", "blc_"


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a random secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _scopes(requested: list[str], allowed: frozenset[str] | None = None) -> list[str]:
    unknown = sorted(set(requested) - set(PERMISSIONS))
    if unknown:
        raise ValidationError(f"unknown scopes: {', '.join(unknown)}")
    if allowed is not None and not set(requested) <= allowed:
        raise ValidationError(f"you cannot grant scopes you do not hold: {', '.join(sorted(set(requested) - allowed))}")
    if not requested:
        raise ValidationError("choose at least one scope")
    return sorted(set(requested))


def _name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError("give the credential a name (at most 100 characters), e.g. 'LIMS export'")
    return name


@dataclass(frozen=True)
class IssuedSecret:
    """A credential just made: its row id and the secret, shown once."""

    id: int
    secret: str
    client_id: str = ""


def create_personal_token(session: Session, *, tenant_id: int, user_id: int, name: str, scopes: list[str],
                          holder_permissions: frozenset[str], expires_days: int | None = None) -> IssuedSecret:
    """Issue a personal token for a member, limited to scopes the member holds."""
    if expires_days is not None and not 1 <= expires_days <= 366:
        raise ValidationError("expiry must be between 1 and 366 days (or none)")
    token = PERSONAL_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(kind="personal", tenant_id=tenant_id, user_id=user_id, name=_name(name),
                   token_prefix=token[:12], token_hash=hash_secret(token),
                   scopes=_scopes(scopes, holder_permissions),
                   expires_at=(func.now() + timedelta(days=expires_days)) if expires_days else None)
    session.add(row)
    session.flush()
    return IssuedSecret(id=row.id, secret=token)


def revoke_token(session: Session, *, tenant_id: int, token_id: int, user_id: int | None = None) -> None:
    """Revoke a token of this tenant (only the owner's own, when `user_id` is given)."""
    query = update(ApiToken).where(ApiToken.id == token_id, ApiToken.tenant_id == tenant_id,
                                   ApiToken.revoked_at.is_(None))
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    if session.execute(query.values(revoked_at=func.now())).rowcount == 0:
        raise NotFound("no such active token")


def create_oauth_client(session: Session, *, tenant_id: int, name: str, scopes: list[str],
                        created_by_user_id: int | None) -> IssuedSecret:
    """Register a client-credentials client bound to this tenant; the secret is shown once."""
    client_id = CLIENT_PREFIX + secrets.token_urlsafe(12)
    secret = secrets.token_urlsafe(32)
    row = OAuthClient(client_id=client_id, secret_hash=hash_secret(secret), tenant_id=tenant_id, name=_name(name),
                      scopes=_scopes(scopes), created_by_user_id=created_by_user_id)
    session.add(row)
    session.flush()
    return IssuedSecret(id=row.id, secret=secret, client_id=client_id)


def revoke_oauth_client(session: Session, *, tenant_id: int, client_row_id: int) -> None:
    """Revoke a client and every token issued to it."""
    done = session.execute(update(OAuthClient).where(
        OAuthClient.id == client_row_id, OAuthClient.tenant_id == tenant_id, OAuthClient.revoked_at.is_(None),
    ).values(revoked_at=func.now())).rowcount
    if not done:
        raise NotFound("no such active client")
    session.execute(update(ApiToken).where(ApiToken.oauth_client_id == client_row_id, ApiToken.revoked_at.is_(None))
                    .values(revoked_at=func.now()))


def rotate_oauth_client_secret(session: Session, *, tenant_id: int, client_row_id: int) -> IssuedSecret:
    """Give a client a new secret (shown once); the old secret and every token issued under it stop working."""
    client = session.scalar(select(OAuthClient).where(
        OAuthClient.id == client_row_id, OAuthClient.tenant_id == tenant_id, OAuthClient.revoked_at.is_(None),
    ).with_for_update())
    if client is None:
        raise NotFound("no such active client")
    secret = secrets.token_urlsafe(32)
    client.secret_hash = hash_secret(secret)
    session.execute(update(ApiToken).where(ApiToken.oauth_client_id == client.id, ApiToken.revoked_at.is_(None))
                    .values(revoked_at=func.now()))
    session.flush()
    return IssuedSecret(id=client.id, secret=secret, client_id=client.client_id)


def check_client_secret(client: OAuthClient, secret: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(client.secret_hash, hash_secret(secret or ""))


def store_oauth_token(session: Session, *, client: OAuthClient, token: str, scopes: list[str], expires_in: int
                      ) -> None:
    """Persist (the hash of) an access token issued to a client."""
    session.add(ApiToken(kind="oauth", tenant_id=client.tenant_id, oauth_client_id=client.id, name=client.name,
                         token_prefix=token[:12], token_hash=hash_secret(token), scopes=sorted(scopes),
                         expires_at=func.now() + timedelta(seconds=expires_in)))
    session.flush()


@dataclass
class ApiPrincipal:
    """Who is calling: the token, its tenant and the permissions it carries right now."""

    token_id: int
    kind: str
    name: str
    tenant: TenantRef
    tenant_status: str
    scopes: list[str]
    permissions: frozenset[str]
    expires_at: datetime | None
    user_id: int | None = None
    member_id: int | None = None
    client_id: int | None = None
    #: Who acts, as audit events and records show it: the member (and the token), or the OAuth client.
    label: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    #: The token's `last_used_at` is more than a minute old (or unset): `stamp_token_use` should refresh it.
    stamp_due: bool = False

    def actor(self, *, request_id: str | None = None, client_addr: str | None = None) -> Actor:
        """The actor of this credential's writes: the member of a personal token, or the OAuth client."""
        return Actor(member_id=self.member_id, label=self.label[:300], request_id=request_id,
                     client_addr=client_addr)


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="batchline"'})


def authenticate_bearer(session: Session, db: Database, header: str | None) -> ApiPrincipal:
    """Resolve an `Authorization: Bearer ...` header to a principal, or raise a 401 problem (reads only)."""
    if not header or not header.startswith("Bearer "):
        raise _unauthorized("send 'Authorization: Bearer <token>' (a personal API token or an OAuth2 access token)")
    token = header[len("Bearer "):].strip()
    if not token.startswith((PERSONAL_PREFIX, OAUTH_PREFIX)) or len(token) > 200:
        raise _unauthorized("the bearer token is not a Batchline API token")
    # One indexed lookup (the token's SHA-256) gives the token, its tenant and its OAuth client, and whether
    # `last_used_at` is due for a refresh: no transaction, no ORM objects.
    row = session.execute(
        select(ApiToken.id, ApiToken.kind, ApiToken.name, ApiToken.tenant_id, ApiToken.scopes, ApiToken.user_id,
               ApiToken.expires_at, ApiToken.oauth_client_id, Tenant.slug, Tenant.status,
               OAuthClient.id.label("client_row_id"), OAuthClient.client_id, OAuthClient.name.label("client_name"),
               OAuthClient.scopes.label("client_scopes"), OAuthClient.revoked_at.label("client_revoked_at"),
               or_(ApiToken.last_used_at.is_(None),
                   ApiToken.last_used_at < func.now() - timedelta(minutes=1)).label("touch"))
        .join(Tenant, Tenant.id == ApiToken.tenant_id)
        .outerjoin(OAuthClient, OAuthClient.id == ApiToken.oauth_client_id)
        .where(ApiToken.token_hash == hash_secret(token), ApiToken.revoked_at.is_(None),
               or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > func.now()),
               Tenant.status.in_(LIVE_STATUSES))
    ).first()
    if row is None:
        raise _unauthorized("the token is unknown, expired or revoked")
    tok = row
    principal = ApiPrincipal(token_id=tok.id, kind=tok.kind, name=tok.name,
                             tenant=tenant_ref(tok.tenant_id, db=db, slug=row.slug), tenant_status=row.status,
                             scopes=list(tok.scopes), permissions=frozenset(), expires_at=tok.expires_at)
    if tok.kind == "personal":
        member = session.execute(
            select(Membership.id, Membership.roles, User.name, User.email).join(User, User.id == Membership.user_id)
            .where(Membership.user_id == tok.user_id, Membership.tenant_id == tok.tenant_id,
                   Membership.active.is_(True), User.active.is_(True))
        ).first()
        if member is None:
            raise _unauthorized("the token's owner is no longer an active member of this tenant")
        principal.user_id, principal.member_id = tok.user_id, member.id
        principal.label = f"{member.name} <{member.email}> via API token {tok.name!r}"
        # A token never carries more than its owner holds today: removing a role narrows every token.
        custom = {r.name: list(r.permissions) for r in session.execute(
            select(TenantRole.name, TenantRole.permissions).where(
                TenantRole.tenant_id == tok.tenant_id, TenantRole.active.is_(True),
                TenantRole.name.in_(list(member.roles))))}
        principal.permissions = frozenset(tok.scopes) & permissions_of(member.roles, custom)
    else:
        if row.client_row_id is None or row.client_revoked_at is not None:
            raise _unauthorized("the OAuth client of this token was revoked")
        principal.client_id = row.client_row_id
        principal.label = f"API client {row.client_name!r} ({row.client_id})"
        principal.permissions = frozenset(tok.scopes) & frozenset(row.client_scopes)
    principal.stamp_due = bool(row.touch)
    return principal


def stamp_token_use(session: Session, token_id: int) -> None:
    """Record that a token was used now (at most once a minute, so most requests write nothing)."""
    session.execute(update(ApiToken).where(
        ApiToken.id == token_id,
        or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < func.now() - timedelta(minutes=1)),
    ).values(last_used_at=func.now()))
