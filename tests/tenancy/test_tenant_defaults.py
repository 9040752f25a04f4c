"""Tenant defaults: seeded at provisioning (audited, in the same transaction), and by migration for old tenants."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.audit.services import verify_chain
from app.core.tenancy import tenant_ref, tenant_transaction
from app.esign.defaults import default_routes
from app.esign.services import active_route
from app.tenancy import services as tenancy_services
from app.tenancy.schema import apply_tenant_grants, create_tenant_role, migrate_tenant_schema


def test_a_new_tenant_gets_the_recipe_route_audited_as_the_system(make_tenant) -> None:
    tenant = make_tenant(with_defaults=True)
    with tenant_transaction(tenant.ref) as session:
        route = active_route(session, "recipe_version")
        assert route is not None and route.version == 1
        assert [(s["meaning"], s["roles"]) for s in route.steps] == [
            ("authored", ["Process Engineer", "Admin"]), ("reviewed", ["Process Engineer", "QA"]),
            ("approved", ["QA"])]
        assert route.allow_same_signer is False
        (event,) = session.scalars(select(AuditEvent).where(AuditEvent.record_type == "signature_route")).all()
        assert (event.action, event.actor_label, event.actor_member_id) == ("create", "system", None)
        assert verify_chain(session).ok
    assert {r["record_type"] for r in default_routes()} == {"recipe_version"}


def test_a_failing_default_rolls_the_whole_provisioning_back(make_tenant, monkeypatch) -> None:
    def broken(session: Session) -> None:
        raise RuntimeError("default seed failed")

    import sys

    module = sys.modules[__name__]
    monkeypatch.setattr(module, "broken_default", broken, raising=False)
    monkeypatch.setattr(tenancy_services, "TENANT_DEFAULTS", [*tenancy_services.TENANT_DEFAULTS,
                                                              f"{__name__}:broken_default"])
    with pytest.raises(RuntimeError, match="default seed failed"):
        make_tenant("half-seeded", with_defaults=True)
    made = make_tenant("half-seeded")  # the slug was never taken: nothing of the failed attempt remains
    assert made.ref.slug == "half-seeded"


def test_migration_seeds_the_route_into_tenants_created_before_recipes(db) -> None:
    ref = tenant_ref(900101, db=db)
    with db.owner.connect() as conn:
        trans = conn.begin()
        try:
            create_tenant_role(conn, ref, db.roles)
            conn.execute(text(f'CREATE SCHEMA "{ref.schema}"'))
            migrate_tenant_schema(conn, ref, target="trc01")
            routes = conn.execute(text("SELECT count(*) FROM signature_routes")).scalar_one()
            assert routes == 0
            migrate_tenant_schema(conn, ref)
            apply_tenant_grants(conn, ref)
            session = Session(bind=conn)
            session.info["tenant"] = ref
            route = active_route(session, "recipe_version")
            assert route is not None and [s["meaning"] for s in route.steps] == ["authored", "reviewed", "approved"]
            assert route.steps == default_routes()[0]["steps"]  # the migration's copy matches the shipped file
            events = conn.execute(text("SELECT action, record_type, record_id FROM audit_events")).all()
            assert events == [("create", "signature_route", str(route.id))]
            assert verify_chain(session).ok
        finally:
            trans.rollback()
