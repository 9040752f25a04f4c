"""A tenant-configured route on a record type whose own page does not drive it (here: lot dispositions) is signed
on the generic route page over HTTP: order, role, separation of duties, rejection, and the status following it."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from app import esign
from app.core.tenancy import tenant_transaction
from app.esign.models import Signature
from app.materials.models import LotStatusChange
from tests.batches.conftest import SHORT_RECIPE, make_recipe_version
from tests.conftest import TEST_PASSWORD, csrf_token, sign_in
from tests.factories import admin_actor, make_lot, make_material

ROUTE = [{"meaning": "verified", "roles": ["QA"], "status": "verified"},
         {"meaning": "approved", "roles": ["QA"], "status": "approved"}]


def _disposition(tenant) -> int:
    """A lot released by QA: its disposition record, put on the tenant's route for dispositions."""
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        lot = make_lot(session, make_material(session))
        if esign.active_route(session, "lot_status_change") is None:
            esign.configure_route(session, record_type="lot_status_change", steps=ROUTE, pending_status="released")
        return session.scalar(select(LotStatusChange.id).where(LotStatusChange.lot_id == lot.id))


def _signatures(tenant, change_id: int) -> list[tuple[str, str]]:
    with tenant_transaction(tenant.ref) as session:
        return [(s.meaning, s.printed_name) for s in session.scalars(
            select(Signature).where(Signature.record_type == "lot_status_change",
                                    Signature.record_id == str(change_id), Signature.route_run_id.is_not(None))
            .order_by(Signature.id))]


def _as(client, member) -> None:
    client.post("/logout", data={"csrf_token": csrf_token(client, "/login")})
    sign_in(client, member.email)


def _sign(client, url: str, meaning: str, member, reason: str = "") -> int:
    data = {"csrf_token": csrf_token(client, url), "meaning": meaning, "signature_password": TEST_PASSWORD,
            "signature_user_id": member.email, "reason": reason}
    return client.post(url, data=data).status_code


def _status(client, url: str) -> str:
    return re.search(r'id="route-status"><strong>([^<]+)</strong>', client.get(url).get_data(as_text=True)).group(1)


def test_a_routed_disposition_is_signed_step_by_step_on_the_route_page(client, make_tenant, make_member) -> None:
    tenant = make_tenant()
    change_id = _disposition(tenant)
    first, second = make_member(tenant, ["QA"], name="Vera Verifier"), make_member(tenant, ["QA"], name="Abe Approver")
    operator = make_member(tenant, ["Operator"])
    slug = tenant.ref.slug
    url = f"/t/{slug}/signatures/route/lot_status_change/{change_id}"
    _as(client, first)
    history = client.get(f"/t/{slug}/audit/records/lot_status_change/{change_id}").get_data(as_text=True)
    assert f'href="{url}">Signature route</a>' in history
    page = client.get(url).get_data(as_text=True)
    assert _status(client, url) == "released" and "not yet signed on its route" in page
    assert 'name="signature_user_id"' in page and '<option value="verified">' in page
    assert _sign(client, url, "approved", first) == 409  # out of order
    assert _sign(client, url, "verified", first) == 302
    assert _status(client, url) == "verified"
    assert _sign(client, url, "approved", first) == 403  # separation of duties: not the verifier again
    _as(client, operator)
    assert _sign(client, url, "approved", operator) == 403  # the route wants QA
    _as(client, second)
    assert _sign(client, url, "approved", second) == 302
    page = client.get(url).get_data(as_text=True)
    assert _status(client, url) == "approved" and "route completed" in page and "<form" not in page.split("</h1>")[1]
    # The manifestation of both route signatures, valid against the disposition as it stands.
    assert re.search(r'meaning">Approved</strong>\s*by <span class="printed-name">Abe Approver</span>\s*'
                     r'<span class="roles">\(QA\)</span>\s*on <time[^>]+>[^<]+ UTC</time>', page)
    assert page.count('<span class="badge ok">valid</span>') == 3  # the release itself, verified, approved
    assert _signatures(tenant, change_id) == [("verified", "Vera Verifier"), ("approved", "Abe Approver")]
    with tenant_transaction(tenant.ref) as session:
        state = esign.route_state(session, record_type="lot_status_change", record_id=change_id)
        assert state.completed and state.record_status == "approved"


def test_rejection_on_the_route_page_sends_the_record_back_with_a_reason(client, make_tenant, make_member) -> None:
    tenant = make_tenant()
    change_id = _disposition(tenant)
    first, second = make_member(tenant, ["QA"]), make_member(tenant, ["QA"])
    url = f"/t/{tenant.ref.slug}/signatures/route/lot_status_change/{change_id}"
    _as(client, first)
    assert _sign(client, url, "verified", first) == 302
    _as(client, second)
    assert '<option value="rejected">' in client.get(url).get_data(as_text=True)
    assert _sign(client, url, "rejected", second) == 422  # a rejection needs its reason
    assert _sign(client, url, "rejected", second, reason="CoA from the wrong supplier site") == 302
    page = client.get(url).get_data(as_text=True)
    assert _status(client, url) == "released" and "sent back: CoA from the wrong supplier site" in page
    assert '<option value="verified">' in page  # a new cycle starts at the first step
    assert [m for m, _ in _signatures(tenant, change_id)] == ["verified", "rejected"]


def test_records_that_cannot_be_signed_here_are_refused_or_sent_to_their_own_page(client, make_tenant,
                                                                                   make_member) -> None:
    tenant = make_tenant()
    change_id = _disposition(tenant)
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        version_id = make_recipe_version(session, SHORT_RECIPE).id
    slug = tenant.ref.slug
    _as(client, make_member(tenant, ["QA"]))
    assert client.get(f"/t/{slug}/signatures/route/site/1").status_code == 404  # no signed content
    assert client.get(f"/t/{slug}/signatures/route/no_such_type/1").status_code == 404
    assert client.get(f"/t/{slug}/signatures/route/lot_status_change/{change_id + 999}").status_code == 404
    # Recipe versions follow their route on the recipe page, which also moves the version's status.
    response = client.get(f"/t/{slug}/signatures/route/recipe_version/{version_id}")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/recipes/versions/{version_id}")
    before = _signatures(tenant, change_id)
    url = f"/t/{slug}/signatures/route/recipe_version/{version_id}"
    assert client.post(url, data={"csrf_token": csrf_token(client, f"/t/{slug}/"), "meaning": "authored",
                                  "signature_password": TEST_PASSWORD}).status_code == 409
    with tenant_transaction(tenant.ref) as session:
        assert session.scalar(select(func.count()).select_from(Signature)
                              .where(Signature.record_type == "recipe_version")) == 0
    assert _signatures(tenant, change_id) == before
