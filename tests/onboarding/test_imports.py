"""CSV/XLSX imports: a file with bad rows imports nothing and lists every bad row; a clean file imports once."""

from __future__ import annotations

import html
import io
import re

from openpyxl import Workbook, load_workbook
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.audit.services import verify_chain
from app.core.tenancy import tenant_transaction
from app.materials.models import Lot, LotMovement
from app.plant.models import Equipment
from tests.conftest import sign_in
from tests.factories import ALICE, make_line, make_material
from tests.plant.test_api_and_screens import _token

GOOD_EQUIPMENT = [
    ["tag", "name", "class", "line_code", "capacity", "capacity_unit", "single_use", "status"],
    ["BR-201", "Bioreactor 200 L", "bioreactor", "{line}", 200, "L", "no", "clean"],
    ["BAL-01", "Balance 6 kg", "balance", "{line}", 6.2, "kg", "", ""],
    ["BSC-01", "Biosafety cabinet", "bsc", "{line}", "", "", "", "dirty"],
]


def _xlsx(rows: list[list]) -> bytes:
    workbook = Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _csv(rows: list[list]) -> bytes:
    return "\n".join(",".join(str(c) for c in row) for row in rows).encode()


def _upload(client, slug: str, kind: str, name: str, data: bytes):
    return client.post(f"/t/{slug}/onboarding/import/{kind}",
                       data={"csrf_token": _token(client, slug), "file": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def _count(tenant, model) -> int:
    with tenant_transaction(tenant.ref) as session:
        return session.scalar(select(func.count()).select_from(model))


def _setup(client, make_tenant):
    tenant = make_tenant()
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        line = make_line(session).code
    sign_in(client, tenant.admin_email)
    return tenant, line


def test_mixed_file_imports_nothing_and_lists_every_bad_row_with_its_reason(client, make_tenant) -> None:
    tenant, line = _setup(client, make_tenant)
    rows = [r[:] for r in GOOD_EQUIPMENT]
    rows[1][3] = line
    rows[2][3] = line
    rows[3][3] = "NO-SUCH-LINE"  # line 4: unknown reference
    rows += [["BR 202", "Spaces", "bioreactor", line, "", "", "", ""],  # line 5: tag with a space
             ["FR-01", "Freezer", "toaster", line, "", "", "", ""],  # line 6: unknown class
             ["BR-201", "Again", "bioreactor", line, "", "", "", ""],  # line 7: duplicate in the file
             ["TANK-1", "Tank", "mixer", line, "-5", "L", "", ""],  # line 8: negative capacity
             ["", "No tag", "mixer", line, "", "", "", ""]]  # line 9: required value missing
    response = _upload(client, tenant.ref.slug, "equipment", "equipment.xlsx", _xlsx(rows))
    assert response.status_code == 303
    preview = client.get(response.headers["Location"])
    page = html.unescape(preview.get_data(as_text=True))
    assert preview.status_code == 422 and "6 rows with errors: nothing will be imported" in page
    for reason in ["line_code 'NO-SUCH-LINE' is not an existing line", "no spaces", "'toaster' is not one of",
                   "'BR-201' is already on line 2", "capacity must be greater than zero", "tag is required"]:
        assert reason in page, reason
    errors = re.findall(r'<tr class="error"><td>(\d+)</td>', page)
    assert errors == ["4", "5", "6", "7", "8", "9"]
    assert "Import " not in re.sub(r"<h1>.*?</h1>", "", page)  # no import button on a dirty file
    confirm = client.post(response.headers["Location"], data={"csrf_token": _token(client, tenant.ref.slug)})
    assert "nothing was imported" in client.get(confirm.headers["Location"]).get_data(as_text=True)
    assert _count(tenant, Equipment) == 0
    with tenant_transaction(tenant.ref) as session:  # the dry run left no audit events behind, and no gap
        assert session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.record_type == "equipment")) == 0
        assert verify_chain(session).ok


def test_clean_file_imports_everything_once(client, make_tenant) -> None:
    tenant, line = _setup(client, make_tenant)
    rows = [[c.format(line=line) if isinstance(c, str) else c for c in r] for r in GOOD_EQUIPMENT]
    for attempt in range(2):
        response = _upload(client, tenant.ref.slug, "equipment", "equipment.xlsx", _xlsx(rows))
        preview_url = response.headers["Location"]
        page = client.get(preview_url).get_data(as_text=True)
        if attempt == 0:
            assert "The file is clean: 3 to create, 0 already present" in page
            done = client.post(preview_url, data={"csrf_token": _token(client, tenant.ref.slug)})
            assert "Imported 3 equipment; 0 already present" in client.get(done.headers["Location"]).get_data(
                as_text=True)
        else:  # the same file again: everything is already there, nothing to import
            assert "The file is clean: 0 to create, 3 already present" in page
            assert 'type="submit">Import' not in page
    assert _count(tenant, Equipment) == 3
    with tenant_transaction(tenant.ref) as session:
        balance = session.scalar(select(Equipment).where(Equipment.tag == "BAL-01"))
        assert str(balance.capacity.normalize()) == "6.2"  # never 6.2000000000000002
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        assert [e.action for e in events if e.record_type in ("equipment", "data_import")] == \
            ["create", "create", "create", "import"]
        assert events[-1].new_values["created"] == 3 and events[-1].new_values["filename"] == "equipment.xlsx"


def test_changed_values_on_reimport_are_errors_not_silent_updates(client, make_tenant) -> None:
    tenant, _ = _setup(client, make_tenant)
    with tenant_transaction(tenant.ref, actor=ALICE) as session:
        material = make_material(session, code="RM-9", unit="kg")
    header = "lot_number,material_code,quantity,received_on,supplier,supplier_lot\n"
    first = (header + f"L-1,{material.code},10.5,2026-10-01,Sigma,S1\nL-2,{material.code},3,2026-10-01,Sigma,S2\n")
    response = _upload(client, tenant.ref.slug, "lots", "lots.csv", first.encode())
    client.post(response.headers["Location"], data={"csrf_token": _token(client, tenant.ref.slug)})
    assert _count(tenant, Lot) == 2 and _count(tenant, LotMovement) == 2
    second = header + f"L-1,{material.code},11,2026-10-01,Sigma,S1\n"
    page = client.get(_upload(client, tenant.ref.slug, "lots", "lots.csv", second.encode()).headers["Location"])
    assert "already exists with different values: quantity is 10.5 in the system, 11 in the file" in \
        html.unescape(page.get_data(as_text=True))
    with tenant_transaction(tenant.ref) as session:
        assert session.scalar(select(Lot.balance).where(Lot.lot_number == "L-1")) == 10.5


def test_file_level_problems_are_explained(client, make_tenant) -> None:
    tenant, _ = _setup(client, make_tenant)
    for name, data, message in [
        ("x.pdf", b"%PDF", "upload a .csv or .xlsx file"),
        ("x.csv", b"", "the file is empty"),
        ("x.csv", b"code,name,colour\nA,B,red\n", "unknown column(s) colour"),
        ("x.csv", b"code,name\nA,B\n", "required column(s) missing: type, unit"),
        ("x.xlsx", b"not a zip", "not a readable .xlsx"),
        ("x.csv", "code,name,type,unit\n".encode("utf-16"), "not UTF-8"),
    ]:
        response = _upload(client, tenant.ref.slug, "materials", name, data)
        assert response.status_code == 422 and message in html.unescape(response.get_data(as_text=True)), name


def test_templates_download_with_the_right_columns(client, make_tenant) -> None:
    tenant, _ = _setup(client, make_tenant)
    for kind, first in [("equipment", "tag"), ("sensors", "tag"), ("materials", "code"), ("lots", "lot_number")]:
        csv_body = client.get(f"/t/{tenant.ref.slug}/onboarding/import/{kind}/template.csv").get_data(as_text=True)
        assert csv_body.startswith(first + ",")
        xlsx = client.get(f"/t/{tenant.ref.slug}/onboarding/import/{kind}/template.xlsx")
        workbook = load_workbook(io.BytesIO(xlsx.data))
        assert workbook.sheetnames == [kind, "help"]
        assert [c.value for c in workbook[kind][1]] == csv_body.strip().split(",")
