"""Materials API: receive, disposition, consume, usability, trace; QA permission for dispositions."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import update

from app.accounts.models import Membership
from app.core.tenancy import control_session
from tests.conftest import TEST_PASSWORD, sign_in
from tests.plant.test_api_and_screens import _api


def test_lot_lifecycle_through_the_api(client, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    post, get = _api(client, tenant.ref.slug)
    raw = post("/materials/materials", {"code": "RM-1", "name": "Glucose", "material_type": "raw", "unit": "kg",
                                        "shelf_life_days": 365}).get_json()
    product = post("/materials/materials", {"code": "FP-1", "name": "mAb DS", "material_type": "product",
                                            "unit": "L"}).get_json()
    lot = post("/materials/lots", {"material_id": raw["id"], "lot_number": "G-001", "quantity": "25.5",
                                   "received_on": "2026-11-01", "supplier": "Sigma", "supplier_lot": "SLB1"})
    assert lot.status_code == 201, lot.get_json()
    lot = lot.get_json()
    assert lot["status"] == "quarantine" and lot["expiry_date"] == "2027-11-01" and lot["expired"] is False
    verdict = get(f"/materials/lots/{lot['id']}/usable?quantity=30").get_json()
    assert [r["code"] for r in verdict["reasons"]] == ["quarantined", "insufficient_quantity"]
    refused = post(f"/materials/lots/{lot['id']}/movements", {"kind": "consume", "quantity": "1",
                                                               "batch_number": "B-1"})
    assert refused.status_code == 409 and "quarantine" in refused.get_json()["detail"]
    unsigned = post(f"/materials/lots/{lot['id']}/status", {"status": "released", "reason": "CoA OK"})
    assert unsigned.status_code == 422 and unsigned.get_json()["errors"][0]["field"] == "signature_password"
    no_user_id = post(f"/materials/lots/{lot['id']}/status", {"status": "released", "reason": "CoA OK",
                                                               "signature_password": TEST_PASSWORD})
    assert no_user_id.status_code == 422 and "user ID" in no_user_id.get_json()["detail"]  # first signature
    wrong = post(f"/materials/lots/{lot['id']}/status", {"status": "released", "reason": "CoA OK",
                                                          "signature_password": "not my password",
                                                          "signature_user_id": tenant.admin_email})
    assert wrong.status_code == 403 and "password is not correct" in wrong.get_json()["detail"]
    released = post(f"/materials/lots/{lot['id']}/status", {"status": "released", "reason": "CoA OK",
                                                             "signature_password": TEST_PASSWORD,
                                                             "signature_user_id": tenant.admin_email})
    assert released.status_code == 201 and released.get_json()["signature_id"] is not None
    page = client.get(f"/t/{tenant.ref.slug}/materials/lots/{lot['id']}").get_data(as_text=True)
    assert "Released by " in page and " — CoA OK" in page and "INVALID" not in page
    used = post(f"/materials/lots/{lot['id']}/movements", {"kind": "consume", "quantity": "0.1",
                                                            "batch_number": "B-1"})
    assert used.status_code == 201 and Decimal(used.get_json()["balance_after"]) == Decimal("25.4")
    wrong = get(f"/materials/lots/{lot['id']}/usable?quantity=1&material_id={product['id']}").get_json()
    assert [r["code"] for r in wrong["reasons"]] == ["wrong_material"]
    made = post("/materials/lots/produced", {"material_id": product["id"], "lot_number": "DS-001",
                                             "quantity": "2", "batch_number": "B-1"})
    assert made.status_code == 201
    trace = get(f"/materials/lots/{lot['id']}/trace").get_json()
    assert [n["lot_number"] for n in trace["recall_impact"]["finished_lots"]] == ["DS-001"]
    assert trace["recall_impact"]["finished_lots"][0]["status"] == "quarantine"
    back = get(f"/materials/lots/{made.get_json()['id']}/trace").get_json()
    assert back["sources"]["suppliers"] == ["Sigma"] and back["backward"]["edges"][0]["batch_number"] == "B-1"
    ledger = get(f"/materials/lots/{lot['id']}/movements").get_json()["items"]
    assert [(m["kind"], m["quantity"]) for m in ledger] == [("receive", "25.500000"), ("consume", "-0.100000")]
    overdraw = post(f"/materials/lots/{lot['id']}/movements", {"kind": "adjust", "quantity": "-100",
                                                                "reason": "count"})
    assert overdraw.status_code == 409 and "holds 25.4 kg" in overdraw.get_json()["detail"]
    assert get(f"/materials/lots/{lot['id']}").get_json()["balance"] == "25.400000"
    assert get("/scan?code=LOT:G-001%231/3").get_json()["id"] == lot["id"]  # a container label finds its lot
    page = client.get(f"/t/{tenant.ref.slug}/materials/lots/{lot['id']}/trace").get_data(as_text=True)
    assert "Recall impact: 1 finished lot" in page and "DS-001" in page


def test_only_qa_dispositions_lots(client, db, make_tenant) -> None:
    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    post, _ = _api(client, tenant.ref.slug)
    raw = post("/materials/materials", {"code": "RM-1", "name": "Salt", "material_type": "raw", "unit": "kg"})
    lot = post("/materials/lots", {"material_id": raw.get_json()["id"], "lot_number": "S-1", "quantity": "1",
                                   "received_on": "2026-11-01", "supplier": "X"}).get_json()
    with control_session(db=db) as session:
        session.execute(update(Membership).where(Membership.tenant_id == tenant.ref.id).values(roles=["Supervisor"]))
    signed = {"signature_password": TEST_PASSWORD, "signature_user_id": tenant.admin_email}
    refused = post(f"/materials/lots/{lot['id']}/status", {"status": "released", "reason": "ok", **signed})
    assert refused.status_code == 403 and "materials.disposition" in refused.get_json()["detail"]
    with control_session(db=db) as session:
        session.execute(update(Membership).where(Membership.tenant_id == tenant.ref.id).values(roles=["QA"]))
    assert post(f"/materials/lots/{lot['id']}/status", {"status": "released", "reason": "ok",
                                                        **signed}).status_code == 201


def test_qa_signs_a_disposition_on_the_lot_screen(client, make_tenant) -> None:
    import html
    import re

    tenant = make_tenant()
    sign_in(client, tenant.admin_email)
    post, _ = _api(client, tenant.ref.slug)
    raw = post("/materials/materials", {"code": "RM-1", "name": "Salt", "material_type": "raw", "unit": "kg"})
    lot = post("/materials/lots", {"material_id": raw.get_json()["id"], "lot_number": "S-1", "quantity": "1",
                                   "received_on": "2026-11-01", "supplier": "X"}).get_json()
    url = f"/t/{tenant.ref.slug}/materials/lots/{lot['id']}"
    page = client.get(url).get_data(as_text=True)
    assert 'name="signature_password"' in page and 'name="signature_user_id"' in page  # first signature
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = {"csrf_token": token, "status": "released", "reason": "CoA reviewed",
            "signature_user_id": tenant.admin_email}
    client.post(url + "/status", data={**form, "signature_password": "wrong"})
    page = html.unescape(client.get(url).get_data(as_text=True))
    assert "the password is not correct" in page and "Quarantine</span>" in page
    client.post(url + "/status", data={**form, "signature_password": TEST_PASSWORD})
    page = html.unescape(client.get(url).get_data(as_text=True))
    assert "Lot status changed to released (signed)." in page
    assert re.search(r"Released by [^<]+ on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC — CoA reviewed", page)
    assert 'name="signature_user_id"' not in page  # within the continuous signing session: password only
