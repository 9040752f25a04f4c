"""Labels: the printed PDF carries a barcode that a real decoder reads, and the scan field finds the object."""

from __future__ import annotations

import subprocess

import pytest

from app.core.tenancy import tenant_transaction
from app.plant.scan import resolve_scan
from tests.conftest import sign_in
from tests.factories import admin_actor, make_equipment, make_line, make_lot, make_material


def _decode(pdf: bytes, tmp_path) -> list[str]:
    """Rasterise the PDF (poppler) and decode every symbol on it (zbar), as a scanner would."""
    path = tmp_path / "labels.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "200", "-png", str(path), str(tmp_path / "page")], check=True)
    pages = sorted(str(p) for p in tmp_path.glob("page*.png"))
    done = subprocess.run(["zbarimg", "-q", "--raw", *pages], capture_output=True, text=True, check=False)
    return done.stdout.split()


@pytest.mark.parametrize("symbology", ["qr", "code128"])
def test_equipment_and_lot_labels_decode_to_codes_that_resolve(client, make_tenant, tmp_path, symbology) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        eq = make_equipment(session, make_line(session), tag="BR-101")
        lot = make_lot(session, make_material(session), "10", lot_number="G-2026-001")
    sign_in(client, tenant.admin_email)
    slug = tenant.ref.slug
    pdf = client.get(f"/t/{slug}/plant/equipment/{eq.id}/label.pdf?symbology={symbology}")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    (tmp_path / "eq").mkdir()
    assert _decode(pdf.data, tmp_path / "eq") == ["EQ:BR-101"]
    containers = client.get(f"/t/{slug}/materials/lots/{lot.id}/labels.pdf?containers=3&symbology={symbology}")
    (tmp_path / "lot").mkdir()
    codes = _decode(containers.data, tmp_path / "lot")
    assert codes == [f"LOT:G-2026-001#{i}/3" for i in (1, 2, 3)]
    with tenant_transaction(tenant.ref) as session:
        assert resolve_scan(session, "EQ:BR-101") == ("equipment", eq.id)
        assert all(resolve_scan(session, code) == ("lot", lot.id) for code in codes)
    # Scanning into the scan field of any page (a keyboard wedge types the code and Enter) opens the record.
    scanned = client.get(f"/t/{slug}/scan", query_string={"code": codes[1]})
    assert scanned.status_code == 302 and scanned.headers["Location"] == f"/t/{slug}/materials/lots/{lot.id}"
    assert 'data-scan' in client.get(f"/t/{slug}/plant/").get_data(as_text=True)


def test_scan_of_unknown_or_foreign_codes_finds_nothing(client, make_tenant) -> None:
    tenant, other = make_tenant(), make_tenant()
    with tenant_transaction(other.ref, actor=admin_actor(tenant)) as session:
        make_equipment(session, make_line(session), tag="OTHER-1")
    with tenant_transaction(tenant.ref) as session:
        assert resolve_scan(session, "EQ:OTHER-1") is None  # another tenant's label means nothing here
        assert resolve_scan(session, "") is None
    sign_in(client, tenant.admin_email)
    response = client.get(f"/t/{tenant.ref.slug}/scan?code=EQ:OTHER-1")
    assert response.status_code == 404 and "Nothing in this tenant is labelled" in response.get_data(as_text=True)


def test_bad_label_requests_are_refused(client, make_tenant) -> None:
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=admin_actor(tenant)) as session:
        lot = make_lot(session, make_material(session))
    sign_in(client, tenant.admin_email)
    assert client.get(f"/t/{tenant.ref.slug}/materials/lots/{lot.id}/labels.pdf?containers=9999").status_code == 422
    assert client.get(f"/t/{tenant.ref.slug}/materials/lots/{lot.id}/labels.pdf?symbology=ean").status_code == 422
