"""E-signatures: re-authentication, frozen manifestation, content binding, routes (order, role, SoD, rejection)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from app import esign
from app.audit.models import AuditEvent
from app.core.errors import Conflict, ValidationError
from app.core.tenancy import control_session, tenant_transaction
from app.esign.models import Signature, SignatureRouteRun
from app.esign.services import add_meaning, set_meaning_active
from tests.conftest import TEST_PASSWORD

RECIPE = {"name": "mAb-01 upstream", "version": 3, "steps": [{"op": "inoculate", "volume_l": "2.5"}]}
ROUTE = [
    {"meaning": "authored", "roles": ["Process Engineer"], "status": "in_review"},
    {"meaning": "reviewed", "roles": ["Process Engineer"], "status": "reviewed"},
    {"meaning": "approved", "roles": ["QA"], "status": "approved"},
]


def _sign(tenant, member, meaning="approved", *, record_id=1, content=None, password=TEST_PASSWORD,
          record_type="recipe_version", **kwargs):
    with tenant_transaction(tenant.ref, actor=member.actor) as session:
        return esign.sign(session, record_type=record_type, record_id=record_id,
                          content=RECIPE if content is None else content, meaning=meaning, password=password,
                          actor=member.actor, user_id=member.user_id, **kwargs)


def _count(tenant, sql: str) -> int:
    with tenant_transaction(tenant.ref) as session:
        return session.execute(text(sql)).scalar_one()


def _configure(tenant, steps=ROUTE, **kwargs) -> None:
    with tenant_transaction(tenant.ref) as session:
        esign.configure_route(session, record_type="recipe_version", steps=steps, **kwargs)


def test_signature_freezes_manifestation_binds_content_and_is_audited(make_tenant, make_member) -> None:
    tenant = make_tenant()
    qa = make_member(tenant, ["QA"], name="Quinn Assurance")
    sig = _sign(tenant, qa, reason="batch record reviewed")
    with control_session() as cp:  # the person changes their name afterwards
        cp.execute(text("UPDATE users SET name = 'Quinn Married-Name' WHERE id = :u"), {"u": qa.user_id})
    with tenant_transaction(tenant.ref) as session:
        stored = session.get_one(Signature, sig.id)
        now = session.execute(text("SELECT now()")).scalar_one()
        assert (stored.printed_name, stored.signer_roles, stored.meaning_label) == ("Quinn Assurance", ["QA"],
                                                                                   "Approved")
        assert stored.signed_at <= now and stored.signed_at.utcoffset() is not None
        assert esign.verify_signature(session, stored, RECIPE)
        event = session.get_one(AuditEvent, stored.audit_seq)
        assert (event.action, event.record_type, event.record_id) == ("sign", "recipe_version", "1")
        assert event.new_values["content_hash"] == stored.content_hash
        assert event.reason == "batch record reviewed" and event.occurred_at == stored.signed_at
    assert "Approved by Quinn Assurance (QA) on " in esign.manifestation_text(stored)
    assert esign.manifestation_text(stored).split(" on ")[1].startswith(str(stored.signed_at.year))


def test_changed_record_or_copied_signature_is_invalid(db, make_tenant, make_member) -> None:
    tenant = make_tenant()
    qa = make_member(tenant, ["QA"])
    sig = _sign(tenant, qa, record_id=1)
    changed = {**RECIPE, "steps": [{"op": "inoculate", "volume_l": "3.0"}]}
    with tenant_transaction(tenant.ref) as session:
        assert esign.verify_signature(session, sig, RECIPE)
        assert not esign.verify_signature(session, sig, changed)
    # Copy the signature row onto record 2 (same content) as a superuser would: it must not verify there.
    with db.owner.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path TO "{tenant.ref.schema}"'))
        conn.execute(text(
            "INSERT INTO signatures (signer_member_id, signer_user_id, printed_name, signer_email, signer_roles, "
            "meaning, meaning_label, record_type, record_id, content_hash, reason, audit_seq) "
            "SELECT signer_member_id, signer_user_id, printed_name, signer_email, signer_roles, meaning, "
            "meaning_label, record_type, '2', content_hash, reason, audit_seq FROM signatures WHERE id = :id"),
            {"id": sig.id})
    with tenant_transaction(tenant.ref) as session:
        copied = esign.signatures_of(session, record_type="recipe_version", record_id=2)
        assert len(copied) == 1
        assert not esign.verify_signature(session, copied[0], RECIPE)
        checks = esign.check_signatures(session, esign.signatures_of(session, record_type="recipe_version",
                                                                     record_id=1), changed)
        assert [c.valid for c in checks] == [False]


def test_a_rewritten_signature_hash_is_caught_by_its_audit_event(db, make_tenant, make_member) -> None:
    tenant = make_tenant()
    qa = make_member(tenant, ["QA"])
    sig = _sign(tenant, qa)
    changed = {**RECIPE, "name": "something else"}
    forged = esign.content_hash("recipe_version", 1, changed)
    with db.owner.begin() as conn:  # change the record AND re-point the signature at the new content
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f'SET LOCAL search_path TO "{tenant.ref.schema}"'))
        conn.execute(text("UPDATE signatures SET content_hash = :h WHERE id = :id"), {"h": forged, "id": sig.id})
    with tenant_transaction(tenant.ref) as session:
        assert not esign.verify_signature(session, session.get_one(Signature, sig.id), changed)


def test_password_is_re_asked_and_user_id_when_required(make_tenant, make_member) -> None:
    tenant = make_tenant()
    qa = make_member(tenant, ["QA"])
    with pytest.raises(ValidationError, match="enter your password"):
        _sign(tenant, qa, password="")
    with pytest.raises(esign.SignatureRefused, match="not correct"):
        _sign(tenant, qa, password="not my password")
    with pytest.raises(ValidationError, match="user ID"):
        _sign(tenant, qa, identification_required=True)
    with pytest.raises(esign.SignatureRefused, match="does not match"):
        _sign(tenant, qa, identification="someone.else@example.com", identification_required=True)
    assert _count(tenant, "SELECT count(*) FROM signatures") == 0
    assert _count(tenant, "SELECT count(*) FROM audit_events") == 0
    _sign(tenant, qa, identification=qa.email.upper(), identification_required=True)
    assert _count(tenant, "SELECT count(*) FROM signatures") == 1


def test_wrong_signing_passwords_count_toward_lockout(make_tenant, make_member) -> None:
    tenant = make_tenant()
    qa = make_member(tenant, ["QA"])
    for _ in range(10):
        with pytest.raises(esign.SignatureRefused):
            _sign(tenant, qa, password="guess")
    with pytest.raises(esign.SignatureRefused, match="locked"):  # now even the right password is refused
        _sign(tenant, qa)
    assert _count(tenant, "SELECT count(*) FROM signatures") == 0


def test_signatures_are_append_only(db, make_tenant, make_member) -> None:
    tenant = make_tenant()
    sig = _sign(tenant, make_member(tenant, ["QA"]))
    for statement in ("UPDATE signatures SET printed_name = 'x'", "DELETE FROM signatures"):
        with pytest.raises(ProgrammingError, match="permission denied"), tenant_transaction(tenant.ref) as s:
            s.execute(text(statement))
        with pytest.raises(DBAPIError, match="never deleted or overwritten"), db.owner.begin() as conn:
            conn.execute(text(f'SET LOCAL search_path TO "{tenant.ref.schema}"'))
            conn.execute(text(statement))
    with pytest.raises(ProgrammingError, match="permission denied"), tenant_transaction(tenant.ref) as s:
        s.execute(text("TRUNCATE signatures"))
    with tenant_transaction(tenant.ref) as session:  # the signing time is the server's, whatever was inserted
        session.execute(text(
            "INSERT INTO signatures (signer_member_id, signer_user_id, printed_name, signer_email, signer_roles, "
            "meaning, meaning_label, signed_at, record_type, record_id, content_hash) "
            "VALUES (1, 1, 'x', 'x', '{}', 'approved', 'A', '2000-01-01', 'r', '1', 'h')"))
        assert session.execute(text("SELECT min(extract(year FROM signed_at)) FROM signatures")).scalar_one() > 2000
    assert sig.id


def test_route_enforces_order_role_and_separation_of_duties(make_tenant, make_member) -> None:
    tenant = make_tenant()
    _configure(tenant)
    author = make_member(tenant, ["Process Engineer"], name="Ann Author")
    reviewer = make_member(tenant, ["Process Engineer"], name="Rita Reviewer")
    qa = make_member(tenant, ["QA"], name="Quentin QA")
    operator = make_member(tenant, ["Operator"])

    with tenant_transaction(tenant.ref) as session:
        state = esign.require_route(session, record_type="recipe_version", record_id=1)
        assert (state.record_status, state.next_step.meaning, state.cycle) == ("draft", "authored", 1)
    with pytest.raises(esign.RouteViolation, match="awaiting 'authored'"):
        _sign(tenant, qa, "approved")
    with pytest.raises(esign.SignerNotPermitted, match="Process Engineer"):
        _sign(tenant, operator, "authored")
    _sign(tenant, author, "authored")
    with pytest.raises(esign.SignerNotPermitted, match="separation of duties"):
        _sign(tenant, author, "reviewed")
    with pytest.raises(esign.RouteViolation, match="awaiting 'reviewed'"):
        _sign(tenant, qa, "approved")
    _sign(tenant, reviewer, "reviewed")
    with pytest.raises(esign.SignerNotPermitted, match="QA"):
        _sign(tenant, reviewer, "approved")
    _sign(tenant, qa, "approved")
    with tenant_transaction(tenant.ref) as session:
        state = esign.route_state(session, record_type="recipe_version", record_id=1)
        assert state.completed and state.record_status == "approved" and state.next_step is None
        assert [s.printed_name for s in state.signatures] == ["Ann Author", "Rita Reviewer", "Quentin QA"]
        changes = session.scalars(select(AuditEvent.new_values).where(
            AuditEvent.record_type == "signature_route_run", AuditEvent.action == "status_change")
            .order_by(AuditEvent.seq)).all()
        assert [c["record_status"] for c in changes] == ["in_review", "reviewed", "approved"]
    with pytest.raises(esign.RouteViolation, match="already completed"):
        _sign(tenant, qa, "approved")
    # A signature with a meaning outside the route is not a route step: allowed, route untouched.
    _sign(tenant, operator, "verified")


def test_route_that_allows_the_same_signer(make_tenant, make_member) -> None:
    tenant = make_tenant()
    _configure(tenant, steps=ROUTE[:2], allow_same_signer=True)
    engineer = make_member(tenant, ["Process Engineer"])
    _sign(tenant, engineer, "authored")
    _sign(tenant, engineer, "reviewed")
    with tenant_transaction(tenant.ref) as session:
        assert esign.route_state(session, record_type="recipe_version", record_id=1).completed


def test_rejection_sends_the_record_back_with_a_reason_and_a_new_cycle_starts(make_tenant, make_member) -> None:
    tenant = make_tenant()
    _configure(tenant)
    author = make_member(tenant, ["Process Engineer"])
    reviewer = make_member(tenant, ["Process Engineer"])
    _sign(tenant, author, "authored")
    with pytest.raises(ValidationError, match="reason is required to reject"):
        _sign(tenant, reviewer, "rejected")
    with pytest.raises(esign.SignerNotPermitted, match="separation of duties"):  # the author cannot reject own
        _sign(tenant, author, "rejected", reason="withdrawn")
    with tenant_transaction(tenant.ref, actor=reviewer.actor) as session:
        esign.reject(session, record_type="recipe_version", record_id=1, content=RECIPE, password=TEST_PASSWORD,
                     actor=reviewer.actor, user_id=reviewer.user_id, reason="volume has no tolerance")
    with tenant_transaction(tenant.ref) as session:
        state = esign.route_state(session, record_type="recipe_version", record_id=1)
        assert (state.status, state.record_status, state.rejected_reason) == ("rejected", "draft",
                                                                              "volume has no tolerance")
    with pytest.raises(esign.RouteViolation, match="must first be signed 'authored'"):
        _sign(tenant, reviewer, "reviewed")
    revised = {**RECIPE, "tolerance": "0.1"}
    _sign(tenant, author, "authored", content=revised)  # resubmission: cycle 2
    _sign(tenant, reviewer, "reviewed", content=revised)
    with tenant_transaction(tenant.ref) as session:
        state = esign.route_state(session, record_type="recipe_version", record_id=1)
        assert (state.cycle, state.record_status, state.next_step.meaning) == (2, "reviewed", "approved")
        runs = session.scalars(select(SignatureRouteRun).order_by(SignatureRouteRun.cycle)).all()
        assert [r.status for r in runs] == ["rejected", "in_progress"]


def test_route_configuration_is_validated_versioned_and_audited(make_tenant, make_member) -> None:
    tenant = make_tenant()
    with pytest.raises(Conflict, match="no signature route"), tenant_transaction(tenant.ref) as session:
        esign.require_route(session, record_type="recipe_version", record_id=1)
    with pytest.raises(ValidationError, match="not an active signature meaning"):
        _configure(tenant, steps=[{"meaning": "blessed", "roles": ["QA"]}])
    with pytest.raises(ValidationError, match="at least one role"):
        _configure(tenant, steps=[{"meaning": "approved", "roles": []}])
    _configure(tenant)
    with pytest.raises(ValidationError, match="reason is required"):
        _configure(tenant, steps=ROUTE[2:])
    author = make_member(tenant, ["Process Engineer"])
    _sign(tenant, author, "authored", record_id=7)  # run 7 follows version 1
    _configure(tenant, steps=ROUTE[2:], reason="QA-only approval for minor changes")
    qa = make_member(tenant, ["QA"])
    _sign(tenant, qa, "approved", record_id=8)  # a new record follows version 2
    with tenant_transaction(tenant.ref) as session:
        assert esign.route_state(session, record_type="recipe_version", record_id=8).completed
        old = esign.route_state(session, record_type="recipe_version", record_id=7)
        assert old.route_version == 1 and old.next_step.meaning == "reviewed"
        actions = session.execute(select(AuditEvent.action, AuditEvent.record_type)
                                  .where(AuditEvent.record_type == "signature_route")).all()
        assert sorted(actions) == [("create", "signature_route"), ("create", "signature_route"),
                                   ("status_change", "signature_route")]


def test_meanings_are_configurable_per_tenant(make_tenant, make_member) -> None:
    tenant, other = make_tenant(), make_tenant()
    with tenant_transaction(tenant.ref) as session:
        add_meaning(session, code="witnessed", label="Witnessed")
    witness = make_member(tenant, ["Operator"])
    assert _sign(tenant, witness, "witnessed").meaning_label == "Witnessed"
    with pytest.raises(ValidationError, match="not an active signature meaning"):
        _sign(other, make_member(other, ["Operator"]), "witnessed")
    with pytest.raises(ValidationError, match="reason is required"), tenant_transaction(tenant.ref) as session:
        set_meaning_active(session, code="witnessed", active=False, reason="")
    with tenant_transaction(tenant.ref) as session:
        set_meaning_active(session, code="witnessed", active=False, reason="no longer in the SOP")
    with pytest.raises(ValidationError, match="not an active signature meaning"):
        _sign(tenant, witness, "witnessed")
    with pytest.raises(ValidationError, match="cannot be deactivated"), tenant_transaction(tenant.ref) as session:
        set_meaning_active(session, code="rejected", active=False, reason="x")
