"""E-signature records, the tenant's signature meanings, and signature routes with their runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    DDL,
    BigInteger,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.audit.registry import gmp_table_info, protect_gmp_table, register_record_type
from app.core.db import CreatedAt, TenantBase

#: Meanings every tenant starts with (code, label); tenants add their own and deactivate unused ones.
DEFAULT_MEANINGS: list[tuple[str, str]] = [
    ("authored", "Authored"),
    ("reviewed", "Reviewed"),
    ("approved", "Approved"),
    ("verified", "Verified"),
    ("performed", "Performed"),
    ("released", "Released"),
    ("rejected", "Rejected"),
]
#: The meaning that sends a record back along its route; it cannot be deactivated.
REJECTED = "rejected"


class SignatureMeaning(CreatedAt, TenantBase):
    """A meaning a signature can carry in this tenant (§11.50(a)(3)); deactivated, never deleted."""

    __tablename__ = "signature_meanings"
    __table_args__ = {"info": gmp_table_info("signature_meaning")}

    #: Stable code stored on signatures and routes (`approved`).
    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    #: Label shown on the manifestation (`Approved`).
    label: Mapped[str] = mapped_column(String(80))
    #: What signing with this meaning attests to.
    description: Mapped[str] = mapped_column(Text, server_default=text("''"))
    #: Inactive meanings cannot be used for new signatures; old signatures keep them.
    active: Mapped[bool] = mapped_column(server_default=text("true"))


class SignatureRoute(CreatedAt, TenantBase):
    """One version of the ordered signing route of a record type; a change makes a new version."""

    __tablename__ = "signature_routes"
    __table_args__ = (
        UniqueConstraint("record_type", "version"),
        Index("ix_signature_routes_active", "record_type", unique=True, postgresql_where=text("active")),
        {"info": gmp_table_info("signature_route")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Record type the route applies to (`recipe_version`, `batch_record`, ...).
    record_type: Mapped[str] = mapped_column(String(60))
    #: 1, 2, ... per record type.
    version: Mapped[int] = mapped_column()
    #: Ordered steps: `[{"meaning": ..., "roles": [...], "status": <record status once signed>}, ...]`.
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    #: Whether one person may sign more than one step of a run (separation of duties when False).
    allow_same_signer: Mapped[bool] = mapped_column(server_default=text("false"))
    #: Record status while the first step is awaited (and after a rejection sends it back).
    pending_status: Mapped[str] = mapped_column(String(40), server_default=text("'draft'"))
    #: Only one version per record type is active; runs keep the version they started with.
    active: Mapped[bool] = mapped_column(server_default=text("true"))
    #: Membership that configured this version.
    created_by_member_id: Mapped[int | None] = mapped_column(BigInteger)


class SignatureRouteRun(CreatedAt, TenantBase):
    """One pass of one record along a route version; a rejection ends it, a resubmission starts the next cycle."""

    __tablename__ = "signature_route_runs"
    __table_args__ = (
        UniqueConstraint("record_type", "record_id", "cycle"),
        {"info": gmp_table_info("signature_route_run")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: The route version this run follows.
    route_id: Mapped[int] = mapped_column(ForeignKey("signature_routes.id"))
    #: Signed record's type.
    record_type: Mapped[str] = mapped_column(String(60))
    #: Signed record's id.
    record_id: Mapped[str] = mapped_column(String(100))
    #: 1 for the first pass, +1 after each rejection.
    cycle: Mapped[int] = mapped_column()
    #: Index of the next step to sign (= number of steps once completed).
    step_index: Mapped[int] = mapped_column(server_default=text("0"))
    #: in_progress / completed / rejected.
    status: Mapped[str] = mapped_column(String(20), server_default=text("'in_progress'"))
    #: Status the record has now according to the route (the record's own status follows it).
    record_status: Mapped[str] = mapped_column(String(40))
    #: Why the record was sent back (rejections only).
    rejected_reason: Mapped[str | None] = mapped_column(Text)


class Signature(TenantBase):
    """An electronic signature: its own record, frozen at signing (§11.50, §11.70). Inserted only."""

    __tablename__ = "signatures"
    __table_args__ = (
        Index("ix_signatures_record", "record_type", "record_id"),
        {"info": gmp_table_info("signature", privileges="append_only")},
    )

    #: Never reused.
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    #: Membership that signed.
    signer_member_id: Mapped[int] = mapped_column(BigInteger)
    #: Account that signed (unique forever).
    signer_user_id: Mapped[int] = mapped_column(BigInteger)
    #: Printed name as it was at signing (§11.50(a)(1)).
    printed_name: Mapped[str] = mapped_column(String(200))
    #: Sign-in name as it was at signing.
    signer_email: Mapped[str] = mapped_column(String(254))
    #: Roles held in the tenant at signing.
    signer_roles: Mapped[list[str]] = mapped_column(ARRAY(String(60)))
    #: Meaning code (§11.50(a)(3)).
    meaning: Mapped[str] = mapped_column(String(40))
    #: Meaning label as it was at signing.
    meaning_label: Mapped[str] = mapped_column(String(80))
    #: Database server time (UTC) of signing, set by a trigger (§11.50(a)(2)).
    signed_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    #: Signed record's type.
    record_type: Mapped[str] = mapped_column(String(60))
    #: Signed record's id.
    record_id: Mapped[str] = mapped_column(String(100))
    #: SHA-256 of the canonical signed content, bound to the record type and id (§11.70).
    content_hash: Mapped[str] = mapped_column(String(64))
    #: The signer's reason or comment.
    reason: Mapped[str | None] = mapped_column(Text)
    #: Route run the signature belongs to (None outside a route).
    route_run_id: Mapped[int | None] = mapped_column(ForeignKey("signature_route_runs.id"))
    #: Step of the route run it signed (None outside a route).
    step_index: Mapped[int | None] = mapped_column()
    #: Sequence number of the audit event recording the signature.
    audit_seq: Mapped[int | None] = mapped_column(BigInteger)


#: The server clock is the only source of the signing time; inserts cannot choose it, nothing can change it.
SIGNED_AT_SQL = """
CREATE FUNCTION esign_stamp_signed_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.signed_at := now();
  RETURN NEW;
END
$$
"""
SIGNATURE_TRIGGERS_SQL = [
    "CREATE TRIGGER signatures_signed_at BEFORE INSERT ON signatures FOR EACH ROW "
    "EXECUTE FUNCTION esign_stamp_signed_at()",
    "CREATE TRIGGER signatures_no_update BEFORE UPDATE ON signatures FOR EACH ROW "
    "EXECUTE FUNCTION gmp_refuse_change()",
]
SEED_MEANINGS_SQL = "INSERT INTO signature_meanings (code, label) VALUES " + ", ".join(  # noqa: S608 (constants)
    f"('{code}', '{label}')" for code, label in DEFAULT_MEANINGS
)

for _model in (SignatureMeaning, SignatureRoute, SignatureRouteRun, Signature):
    protect_gmp_table(_model.__table__)  # type: ignore[arg-type]
event.listen(Signature.__table__, "after_create", DDL(SIGNED_AT_SQL))
for _statement in SIGNATURE_TRIGGERS_SQL:
    event.listen(Signature.__table__, "after_create", DDL(_statement))
event.listen(SignatureMeaning.__table__, "after_create", DDL(SEED_MEANINGS_SQL))

register_record_type("signature", label="E-signature", table="signatures")
register_record_type("signature_meaning", label="Signature meaning", table="signature_meanings")
register_record_type("signature_route", label="Signature route", table="signature_routes")
register_record_type("signature_route_run", label="Signature route run", table="signature_route_runs")
