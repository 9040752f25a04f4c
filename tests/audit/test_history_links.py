"""Every record page links to its audit history (Part 11 §11.10(e)); signed logbook entries show their manifestation."""

from __future__ import annotations

import re

from app.core.tenancy import tenant_transaction
from app.plant.services import change_equipment_status, create_sensor
from tests.conftest import sign_in
from tests.factories import admin_actor, credentials, make_equipment, make_line, make_lot, make_material

HISTORY_LINK = re.compile(r'<a class="button" rel="history" href="([^"]+)">History</a>')


def _records(tenant) -> dict[str, tuple[str, str]]:
    """One record of each plant and material type: record type -> (its page, its audit record id)."""
    slug = tenant.ref.slug
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        line = make_line(session, signature_routes=("equipment.status_change",))
        eq = make_equipment(session, line, status="dirty")
        sensor = create_sensor(session, tag=f"{eq.tag}.TT01", equipment_id=eq.id, quantity_kind="temperature",
                               unit="°C", range_low="0", range_high="60", sampling_period_s="10")
        change_equipment_status(session, equipment_id=eq.id, to_status="clean", reason="cleaned per SOP-CL-7",
                                credentials=credentials(session))
        material = make_material(session)
        lot = make_lot(session, material)
        return {"site": (f"/t/{slug}/plant/sites/{line.site_id}", str(line.site_id)),
                "line": (f"/t/{slug}/plant/lines/{line.id}", str(line.id)),
                "equipment": (f"/t/{slug}/plant/equipment/{eq.id}", str(eq.id)),
                "sensor": (f"/t/{slug}/plant/sensors/{sensor.id}", str(sensor.id)),
                "material": (f"/t/{slug}/materials/{material.id}", str(material.id)),
                "lot": (f"/t/{slug}/materials/lots/{lot.id}", str(lot.id))}


def test_each_record_page_links_to_its_own_history(client, make_tenant) -> None:
    tenant = make_tenant()
    records = _records(tenant)
    sign_in(client, tenant.admin_email)
    for record_type, (page, record_id) in records.items():
        response = client.get(page)
        assert response.status_code == 200, page
        links = HISTORY_LINK.findall(response.get_data(as_text=True))
        assert links == [f"/t/{tenant.ref.slug}/audit/records/{record_type}/{record_id}"], (record_type, links)
        history = client.get(links[0]).get_data(as_text=True)
        assert f"{record_id}</h1>" in history and "create" in history, record_type
    # The equipment's history shows its status change with the reason; the lot's its QA release.
    assert "cleaned per SOP-CL-7" in client.get(HISTORY_LINK.findall(
        client.get(records["equipment"][0]).get_data(as_text=True))[0]).get_data(as_text=True)
    assert "CoA reviewed" in client.get(HISTORY_LINK.findall(
        client.get(records["lot"][0]).get_data(as_text=True))[0]).get_data(as_text=True)


def test_signed_logbook_entry_shows_its_manifestation_on_the_equipment_page(client, make_tenant) -> None:
    tenant = make_tenant()
    page = _records(tenant)["equipment"][0]
    sign_in(client, tenant.admin_email)
    html = client.get(page).get_data(as_text=True)
    # §11.50(b): printed name, meaning, date and time with the zone, next to the signed status change.
    assert re.search(r'class="manifestation">Performed by [^<]+ on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC'
                     r' — cleaned per SOP-CL-7', html), html


def test_members_without_audit_read_see_no_history_link(client, make_tenant, make_member) -> None:
    tenant = make_tenant()
    records = _records(tenant)
    operator = make_member(tenant, ["Operator"])
    sign_in(client, operator.email)
    for page, _ in records.values():
        response = client.get(page)
        assert response.status_code == 200 and not HISTORY_LINK.search(response.get_data(as_text=True)), page
