"""Sign records, verify signatures, and enforce signature routes, inside the caller's tenant transaction."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.accounts.models import Membership, User
from app.accounts.reauth import ReauthRefused, SsoProof, sso_reauth_for
from app.accounts.reauth import consume as consume_reauth
from app.accounts.security import verify_user_password
from app.audit.models import AuditEvent
from app.audit.services import plain_json, record
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.tenancy import Actor, TenantRef, control_session
from app.esign.errors import RouteViolation, SignatureRefused, SignerNotPermitted
from app.esign.models import REJECTED, Signature, SignatureMeaning, SignatureRoute, SignatureRouteRun

CODE_RE = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
RECORD_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{1,59}$")


# ---------------------------------------------------------------------------------------------------------------
# Content binding (§11.70)


def canonical_content(record_type: str, record_id: Any, content: dict[str, Any]) -> str:
    """The exact text a signature's hash covers: the record's type, id and content as sorted, compact JSON."""
    body = {"record_type": record_type, "record_id": str(record_id), "content": plain_json(content)}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(record_type: str, record_id: Any, content: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical content; binds a signature to one record in one state."""
    return hashlib.sha256(canonical_content(record_type, record_id, content).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Routes


@dataclass(frozen=True)
class RouteStep:
    """One step of a route: who signs, with which meaning, and the record status once it is signed."""

    index: int
    meaning: str
    roles: tuple[str, ...]
    status: str


@dataclass(frozen=True)
class RouteState:
    """Where a record stands on its route: the record's status follows `record_status`."""

    run_id: int
    route_id: int
    route_version: int
    record_type: str
    record_id: str
    cycle: int
    status: str
    record_status: str
    step_index: int
    steps: tuple[RouteStep, ...]
    allow_same_signer: bool
    rejected_reason: str | None
    signatures: tuple[Signature, ...] = field(default=())

    @property
    def next_step(self) -> RouteStep | None:
        """The step awaiting a signature (None once completed or rejected)."""
        if self.status != "in_progress":
            return None
        return self.steps[self.step_index]

    @property
    def completed(self) -> bool:
        """True once every step is signed."""
        return self.status == "completed"


def _steps_of(route: SignatureRoute) -> tuple[RouteStep, ...]:
    return tuple(RouteStep(index=i, meaning=s["meaning"], roles=tuple(s["roles"]), status=s["status"])
                 for i, s in enumerate(route.steps))


def _state(session: Session, run: SignatureRouteRun, route: SignatureRoute) -> RouteState:
    signatures = session.scalars(
        select(Signature).where(Signature.route_run_id == run.id).order_by(Signature.id)
    ).all()
    return RouteState(run_id=run.id, route_id=route.id, route_version=route.version, record_type=run.record_type,
                      record_id=run.record_id, cycle=run.cycle, status=run.status, record_status=run.record_status,
                      step_index=run.step_index, steps=_steps_of(route), allow_same_signer=route.allow_same_signer,
                      rejected_reason=run.rejected_reason, signatures=tuple(signatures))


def _lock_record(session: Session, record_type: str, record_id: str) -> None:
    """Serialise route work on one record (two signers pressing "sign" at once see each other's result)."""
    tenant: TenantRef = session.info["tenant"]
    session.execute(text("SELECT pg_advisory_xact_lock(:t, hashtext(:k))"),
                    {"t": tenant.id, "k": f"esign:{record_type}:{record_id}"})


def active_route(session: Session, record_type: str) -> SignatureRoute | None:
    """The route version new runs of `record_type` follow, or None."""
    return session.scalar(select(SignatureRoute).where(SignatureRoute.record_type == record_type,
                                                       SignatureRoute.active.is_(True)))


def _latest_run(session: Session, record_type: str, record_id: str) -> SignatureRouteRun | None:
    return session.scalar(
        select(SignatureRouteRun)
        .where(SignatureRouteRun.record_type == record_type, SignatureRouteRun.record_id == record_id)
        .order_by(SignatureRouteRun.cycle.desc()).limit(1)
    )


def _start_run(session: Session, route: SignatureRoute, record_type: str, record_id: str,
               previous: SignatureRouteRun | None) -> SignatureRouteRun:
    run = SignatureRouteRun(route_id=route.id, record_type=record_type, record_id=record_id,
                            cycle=(previous.cycle + 1) if previous else 1, step_index=0, status="in_progress",
                            record_status=route.pending_status)
    session.add(run)
    session.flush()
    record(session, action="create", record_type="signature_route_run", record_id=run.id,
           new={"route_id": route.id, "route_version": route.version, "record_type": record_type,
                "record_id": record_id, "cycle": run.cycle, "record_status": run.record_status})
    return run


def require_route(session: Session, *, record_type: str, record_id: Any) -> RouteState:
    """Put a record on its type's route (or return where it stands); a rejected record starts a new cycle."""
    record_id = str(record_id)
    _lock_record(session, record_type, record_id)
    run = _latest_run(session, record_type, record_id)
    if run is not None and run.status != "rejected":
        return _state(session, run, session.get_one(SignatureRoute, run.route_id))
    route = active_route(session, record_type)
    if route is None:
        raise Conflict(f"no signature route is configured for {record_type} records; an administrator sets one "
                       "under Settings → Signatures")
    return _state(session, _start_run(session, route, record_type, record_id, run), route)


def route_state(session: Session, *, record_type: str, record_id: Any) -> RouteState | None:
    """Where a record stands on its route (latest cycle), or None if it never entered one."""
    run = _latest_run(session, record_type, str(record_id))
    if run is None:
        return None
    return _state(session, run, session.get_one(SignatureRoute, run.route_id))


def _meanings_of(route: SignatureRoute) -> set[str]:
    return {step["meaning"] for step in route.steps}


def _validate_steps(session: Session, steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if not steps:
        raise ValidationError("a signature route needs at least one step")
    meanings = {m.code: m for m in session.scalars(select(SignatureMeaning))}
    clean = []
    for n, step in enumerate(steps, start=1):
        meaning = str(step.get("meaning") or "").strip()
        roles = [str(r).strip() for r in (step.get("roles") or []) if str(r).strip()]
        if meaning not in meanings or not meanings[meaning].active:
            raise ValidationError(f"step {n}: {meaning!r} is not an active signature meaning of this tenant")
        if meaning == REJECTED:
            raise ValidationError(f"step {n}: 'rejected' sends a record back; it cannot be a step")
        if not roles:
            raise ValidationError(f"step {n} ({meaning}): name at least one role that may sign it")
        status = str(step.get("status") or meaning).strip()[:40]
        clean.append({"meaning": meaning, "roles": roles, "status": status})
    return clean


def configure_route(session: Session, *, record_type: str, steps: Sequence[dict[str, Any]],
                    allow_same_signer: bool = False, pending_status: str = "draft",
                    reason: str | None = None) -> SignatureRoute:
    """Make a new version of a record type's route active; runs already started keep their version."""
    if not RECORD_TYPE_RE.match(record_type or ""):
        raise ValidationError(f"record type {record_type!r} is invalid: lower-case letters, digits and '_'")
    clean = _validate_steps(session, steps)
    pending_status = (pending_status or "draft").strip()[:40]
    actor = session.info.get("actor")
    previous = active_route(session, record_type)
    if previous is not None:
        if not (reason or "").strip():
            raise ValidationError(f"a reason is required to change the signature route of {record_type}")
        previous.active = False
        session.flush()
        record(session, action="status_change", record_type="signature_route", record_id=previous.id,
               old={"active": True}, new={"active": False}, reason=reason)
    version = (session.scalar(select(func.max(SignatureRoute.version))
                              .where(SignatureRoute.record_type == record_type)) or 0) + 1
    route = SignatureRoute(record_type=record_type, version=version, steps=clean,
                           allow_same_signer=allow_same_signer, pending_status=pending_status, active=True,
                           created_by_member_id=getattr(actor, "member_id", None))
    session.add(route)
    session.flush()
    record(session, action="create", record_type="signature_route", record_id=route.id,
           new={"record_type": record_type, "version": version, "steps": clean,
                "allow_same_signer": allow_same_signer, "pending_status": pending_status}, reason=reason)
    return route


def retire_route(session: Session, *, record_type: str, reason: str) -> SignatureRoute:
    """Stop new runs of a record type from following any route (runs in progress keep theirs)."""
    route = active_route(session, record_type)
    if route is None:
        raise NotFound(f"no active signature route for {record_type}")
    record(session, action="status_change", record_type="signature_route", record_id=route.id,
           old={"active": True}, new={"active": False}, reason=reason)
    route.active = False
    session.flush()
    return route


# ---------------------------------------------------------------------------------------------------------------
# Meanings


def meanings(session: Session, *, active_only: bool = False) -> list[SignatureMeaning]:
    """The tenant's signature meanings, active first."""
    query = select(SignatureMeaning).order_by(SignatureMeaning.active.desc(), SignatureMeaning.code)
    if active_only:
        query = query.where(SignatureMeaning.active.is_(True))
    return list(session.scalars(query))


def add_meaning(session: Session, *, code: str, label: str, description: str = "") -> SignatureMeaning:
    """Add a signature meaning to the tenant."""
    code, label = (code or "").strip().lower(), (label or "").strip()
    if not CODE_RE.match(code):
        raise ValidationError(f"meaning code {code!r} is invalid: 2-40 lower-case letters, digits or '_'")
    if not label or len(label) > 80:
        raise ValidationError("a meaning needs a label of at most 80 characters")
    if session.get(SignatureMeaning, code) is not None:
        raise Conflict(f"the meaning {code!r} already exists")
    meaning = SignatureMeaning(code=code, label=label, description=(description or "").strip(), active=True)
    session.add(meaning)
    session.flush()
    record(session, action="create", record_type="signature_meaning", record_id=code,
           new={"code": code, "label": label, "description": meaning.description})
    return meaning


def set_meaning_active(session: Session, *, code: str, active: bool, reason: str) -> SignatureMeaning:
    """Deactivate or reactivate a meaning (a reason is required; meanings are never deleted)."""
    meaning = session.get(SignatureMeaning, code)
    if meaning is None:
        raise NotFound(f"no signature meaning {code!r}")
    if not active and code == REJECTED:
        raise ValidationError("'rejected' is how records are sent back along a route; it cannot be deactivated")
    if not active:
        in_use = [r.record_type for r in session.scalars(select(SignatureRoute).where(SignatureRoute.active))
                  if any(s["meaning"] == code for s in r.steps)]
        if in_use:
            raise Conflict(f"the meaning {code!r} is a step of the active route of {', '.join(sorted(in_use))}; "
                           "change those routes first")
    if meaning.active == active:
        return meaning
    record(session, action="status_change", record_type="signature_meaning", record_id=code,
           old={"active": meaning.active}, new={"active": active}, reason=reason)
    meaning.active = active
    session.flush()
    return meaning


# ---------------------------------------------------------------------------------------------------------------
# Signing (§11.50, §11.100, §11.200, §11.300)


@dataclass(frozen=True)
class Signer:
    """The signer as the control plane knows them at this moment (copied onto the signature)."""

    user_id: int
    member_id: int
    name: str
    email: str
    roles: tuple[str, ...]


def _load_signer(tenant: TenantRef, *, user_id: int, member_id: int | None) -> Signer:
    if member_id is None:
        raise SignatureRefused("an electronic signature is made by a signed-in person, not by the system")
    with control_session() as cp:
        row = cp.execute(
            select(User.id, User.name, User.email, User.active, Membership.id.label("member_id"),
                   Membership.roles, Membership.active.label("member_active"))
            .join(Membership, Membership.user_id == User.id)
            .where(User.id == user_id, Membership.id == member_id, Membership.tenant_id == tenant.id)
        ).first()
    if row is None or not row.active or not row.member_active:
        raise SignatureRefused("this account cannot sign in this tenant (unknown, deactivated or not a member)")
    return Signer(user_id=row.id, member_id=row.member_id, name=row.name, email=row.email, roles=tuple(row.roles))


def _meaning(session: Session, code: str) -> SignatureMeaning:
    meaning = session.get(SignatureMeaning, code)
    if meaning is None or not meaning.active:
        known = ", ".join(m.code for m in meanings(session, active_only=True))
        raise ValidationError(f"{code!r} is not an active signature meaning here (use one of: {known})")
    return meaning


def _check_route(session: Session, signer: Signer, *, record_type: str, record_id: str,
                 meaning: str) -> tuple[SignatureRouteRun | None, SignatureRoute | None]:
    """Enforce order, role and separation of duties; return the run and route the signature belongs to."""
    run = _latest_run(session, record_type, record_id)
    route = session.get_one(SignatureRoute, run.route_id) if run is not None else None
    if run is None or run.status != "in_progress":
        candidate = active_route(session, record_type)
        on_route = candidate is not None and (meaning == REJECTED or meaning in _meanings_of(candidate))
        was_on_route = route is not None and (meaning == REJECTED or meaning in _meanings_of(route))
        if not on_route and not was_on_route:
            return None, None  # a signature outside any route (e.g. `performed` on a batch step)
        if run is not None and run.status == "completed":
            raise RouteViolation(f"the signature route of this {record_type} is already completed "
                                 f"({run.record_status}); it cannot be signed {meaning!r} again")
        if candidate is None:
            raise RouteViolation(f"this {record_type} was sent back and no signature route is active for "
                                 f"{record_type} any more; an administrator must configure one first")
        if meaning == REJECTED:
            raise RouteViolation(f"this {record_type} is not awaiting a signature; there is nothing to reject")
        first = candidate.steps[0]["meaning"]
        if meaning != first:
            raise RouteViolation(f"this {record_type} must first be signed {first!r} (step 1 of "
                                 f"{len(candidate.steps)}); {meaning!r} cannot be signed now")
        run, route = _start_run(session, candidate, record_type, record_id, run), candidate
    if route is None:  # unreachable: an in-progress run always has its route
        raise RouteViolation(f"the route of this {record_type} cannot be found")
    step = route.steps[run.step_index]
    if meaning not in (step["meaning"], REJECTED):
        raise RouteViolation(f"this {record_type} is awaiting {step['meaning']!r} (step {run.step_index + 1} of "
                             f"{len(route.steps)}); {meaning!r} cannot be signed now")
    if not set(step["roles"]) & set(signer.roles):
        raise SignerNotPermitted(f"step {run.step_index + 1} ({step['meaning']}) is signed by "
                                 f"{' or '.join(step['roles'])}; your roles are {', '.join(signer.roles) or 'none'}")
    if not route.allow_same_signer:
        earlier = session.scalar(
            select(Signature.meaning).where(Signature.route_run_id == run.id, Signature.meaning != REJECTED,
                                            Signature.signer_member_id == signer.member_id).limit(1)
        )
        if earlier is not None:
            raise SignerNotPermitted(f"separation of duties: you already signed this {record_type} as "
                                     f"{earlier!r}; another person must sign {step['meaning']!r}")
    return run, route


def _advance(session: Session, run: SignatureRouteRun, route: SignatureRoute, signature: Signature) -> None:
    old = {"status": run.status, "step_index": run.step_index, "record_status": run.record_status}
    if signature.meaning == REJECTED:
        run.status, run.record_status, run.rejected_reason = "rejected", route.pending_status, signature.reason
        why = f"rejected by {signature.printed_name}: {signature.reason}"
    else:
        step = route.steps[run.step_index]
        run.step_index += 1
        run.record_status = step["status"]
        if run.step_index == len(route.steps):
            run.status = "completed"
        why = f"signed {step['meaning']} by {signature.printed_name}"
    session.flush()
    record(session, action="status_change", record_type="signature_route_run", record_id=run.id, old=old,
           new={"status": run.status, "step_index": run.step_index, "record_status": run.record_status},
           reason=why)


def _purpose_check(*, record_type: str, record_id: str, meaning: str,
                   digest: str) -> Callable[[Mapping[str, str]], str | None]:
    """Why an SSO proof's binding is not this signature (None when it is): record, meaning, content hash."""

    def check(bound: Mapping[str, str]) -> str | None:
        if (bound.get("record_type"), bound.get("record_id")) != (record_type, record_id):
            return (f"this re-authentication was made to sign another record ({bound.get('record_type')} "
                    f"{bound.get('record_id')}), not {record_type} {record_id}")
        if bound.get("meaning") != meaning:
            return f"this re-authentication was made to sign as {bound.get('meaning')!r}, not as {meaning!r}"
        if not hmac.compare_digest(str(bound.get("content_hash") or ""), digest):
            return (f"this {record_type} changed after you re-authenticated (its content no longer matches); "
                    "re-authenticate to sign it as it is now")
        return None

    return check


def _reauthenticate(tenant: TenantRef, signer: Signer, *, record_type: str, record_id: str, meaning: str,
                    digest: str, password: str, identification: str | None, identification_required: bool,
                    sso_proof: SsoProof | None) -> dict[str, Any]:
    """Re-verify the signer (§11.200(a)) by password (and user ID when asked) or by a single-use proof of a fresh
    login at the identity provider; return how, for the audit event. Failures count toward the lockout."""
    if sso_proof is not None and sso_proof.token.strip():
        try:
            verified = consume_reauth(proof=sso_proof, tenant_id=tenant.id, user_id=signer.user_id,
                                      check_purpose=_purpose_check(record_type=record_type, record_id=record_id,
                                                                   meaning=meaning, digest=digest))
        except ReauthRefused as exc:
            raise SignatureRefused(str(exc)) from exc
        return {"method": "sso", "issuer": verified.issuer, "subject": verified.subject,
                "auth_time": datetime.fromtimestamp(verified.auth_time, UTC).isoformat()}
    via_sso = sso_reauth_for(tenant_id=tenant.id, user_id=signer.user_id)
    if via_sso is not None:
        if password:
            raise SignatureRefused(f"your signatures are re-authenticated with {via_sso.provider} (single sign-on), "
                                   "not with a password; use the re-authenticate button")
        raise ValidationError(f"re-authenticate with {via_sso.provider} to sign: every signature asks you to log "
                              "in there again")
    if identification_required and not (identification or "").strip():
        raise ValidationError("enter your user ID (email) as well as your password to sign")
    if not password:
        raise ValidationError("enter your password to sign: every signature re-asks for it")
    if identification is not None and identification.strip() and \
            identification.strip().lower() != signer.email.lower():
        raise SignatureRefused("the user ID does not match the signed-in user; sign in as yourself to sign")
    if not verify_user_password(user_id=signer.user_id, password=password, tenant_id=tenant.id):
        raise SignatureRefused("the password is not correct, or the account is locked; the failed attempt counts "
                               "toward the lockout")
    return {"method": "password"}


def sign(session: Session, *, record_type: str, record_id: Any, content: dict[str, Any], meaning: str,
         actor: Actor, user_id: int, password: str = "", reason: str | None = None,
         identification: str | None = None, identification_required: bool = False,
         sso_proof: SsoProof | None = None) -> Signature:
    """Sign a record: re-verify the signer, enforce its route, and store the signature and its audit event.

    The signer proves themselves with `password` (and `identification` when required) or, for accounts that sign
    in through SSO, with `sso_proof`: a single-use proof of a fresh login at the provider bound to this record,
    meaning and content.
    """
    tenant: TenantRef = session.info["tenant"]
    record_id = str(record_id)
    reason = (reason or "").strip() or None
    meaning_row = _meaning(session, (meaning or "").strip())
    if meaning_row.code == REJECTED and not reason:
        raise ValidationError("a reason is required to reject: say what must change before it is resubmitted")
    digest = content_hash(record_type, record_id, content)
    signer = _load_signer(tenant, user_id=user_id, member_id=actor.member_id)
    how = _reauthenticate(tenant, signer, record_type=record_type, record_id=record_id, meaning=meaning_row.code,
                          digest=digest, password=password, identification=identification,
                          identification_required=identification_required, sso_proof=sso_proof)
    _lock_record(session, record_type, record_id)
    run, route = _check_route(session, signer, record_type=record_type, record_id=record_id,
                              meaning=meaning_row.code)
    # The signature's id is taken first so the audit event (which the signature row then points to) names it.
    signature_id = session.execute(text("SELECT nextval(pg_get_serial_sequence('signatures', 'id'))")).scalar_one()
    step_index = run.step_index if run is not None else None
    event = record(session, action="sign", record_type=record_type, record_id=record_id, reason=reason, actor=actor,
                   new={"signature_id": signature_id, "meaning": meaning_row.code, "meaning_label": meaning_row.label,
                        "printed_name": signer.name, "signer_email": signer.email, "roles": list(signer.roles),
                        "content_hash": digest, "route_run_id": run.id if run else None, "step_index": step_index,
                        "reauthentication": how})
    signature = Signature(id=signature_id, signer_member_id=signer.member_id, signer_user_id=signer.user_id,
                          printed_name=signer.name, signer_email=signer.email, signer_roles=list(signer.roles),
                          meaning=meaning_row.code, meaning_label=meaning_row.label, record_type=record_type,
                          record_id=record_id, content_hash=digest, reason=reason,
                          route_run_id=run.id if run else None, step_index=step_index, audit_seq=event.seq)
    session.add(signature)
    session.flush()
    session.refresh(signature, ["signed_at"])
    if run is not None and route is not None:
        _advance(session, run, route, signature)
    return signature


def reject(session: Session, *, record_type: str, record_id: Any, content: dict[str, Any], actor: Actor,
           user_id: int, reason: str, password: str = "", identification: str | None = None,
           identification_required: bool = False, sso_proof: SsoProof | None = None) -> Signature:
    """Send a record back along its route with a signed rejection and a reason."""
    return sign(session, record_type=record_type, record_id=record_id, content=content, meaning=REJECTED,
                password=password, actor=actor, user_id=user_id, reason=reason, identification=identification,
                identification_required=identification_required, sso_proof=sso_proof)


# ---------------------------------------------------------------------------------------------------------------
# Verification


def signatures_of(session: Session, *, record_type: str, record_id: Any) -> list[Signature]:
    """Every signature of a record, oldest first."""
    return list(session.scalars(select(Signature).where(Signature.record_type == record_type,
                                                        Signature.record_id == str(record_id))
                                .order_by(Signature.id)))


def _matches_event(signature: Signature, event: AuditEvent | None) -> bool:
    """The signature row agrees with the hash-chained audit event written when it was made."""
    if event is None or event.action != "sign" or not event.new_values:
        return False
    new = event.new_values
    return (event.record_type == signature.record_type and event.record_id == signature.record_id
            and new.get("signature_id") == signature.id and new.get("content_hash") == signature.content_hash
            and new.get("meaning") == signature.meaning and new.get("printed_name") == signature.printed_name
            and event.actor_member_id == signature.signer_member_id and event.occurred_at == signature.signed_at)


def verify_signature(session: Session, signature: Signature, current_content: dict[str, Any]) -> bool:
    """True if the record still has the content that was signed and the signature row is as it was written."""
    expected = content_hash(signature.record_type, signature.record_id, current_content)
    if not hmac.compare_digest(signature.content_hash, expected):
        return False
    event = session.get(AuditEvent, signature.audit_seq) if signature.audit_seq is not None else None
    return _matches_event(signature, event)


@dataclass(frozen=True)
class SignatureCheck:
    """A signature with the outcome of verifying it against the record's current content."""

    signature: Signature
    valid: bool


def check_signatures(session: Session, signatures: Iterable[Signature],
                     current_content: dict[str, Any] | None) -> list[SignatureCheck]:
    """Verify many signatures of one record at once (None content: the record cannot be read, all invalid)."""
    signatures = list(signatures)
    events = _sign_events(session, signatures)
    return [_check(sig, current_content, events) for sig in signatures]


def check_record_signatures(session: Session, *, record_type: str,
                            contents: dict[Any, dict[str, Any] | None]) -> dict[str, list[SignatureCheck]]:
    """Verify the signatures of many records of one type at once, each against its record's current content.

    Two queries whatever the number of records (a batch review checks every step); keyed by record id as text,
    each list oldest first, exactly as `check_signatures(signatures_of(...), content)` per record.
    """
    by_id = {str(record_id): content for record_id, content in contents.items()}
    signatures = list(session.scalars(select(Signature).where(Signature.record_type == record_type,
                                                              Signature.record_id.in_(list(by_id)))
                                      .order_by(Signature.id))) if by_id else []
    events = _sign_events(session, signatures)
    out: dict[str, list[SignatureCheck]] = {record_id: [] for record_id in by_id}
    for sig in signatures:
        out[sig.record_id].append(_check(sig, by_id[sig.record_id], events))
    return out


def _sign_events(session: Session, signatures: list[Signature]) -> dict[int, AuditEvent]:
    seqs = [s.audit_seq for s in signatures if s.audit_seq is not None]
    return {e.seq: e for e in session.scalars(select(AuditEvent).where(AuditEvent.seq.in_(seqs)))} if seqs else {}


def _check(sig: Signature, current_content: dict[str, Any] | None, events: dict[int, AuditEvent]) -> SignatureCheck:
    valid = current_content is not None and hmac.compare_digest(
        sig.content_hash, content_hash(sig.record_type, sig.record_id, current_content)
    ) and _matches_event(sig, events.get(sig.audit_seq or -1))
    return SignatureCheck(signature=sig, valid=bool(valid))
