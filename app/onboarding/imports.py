"""CSV/XLSX imports of equipment, sensors, materials and lots.

Upload -> preview -> import. The preview runs every row through the real services inside a savepoint that is
rolled back, so it finds exactly the errors the import would hit (bad values, unknown references, duplicates
within the file or against stored records) and stores nothing. The import runs the rows again, for real, in
one transaction: all rows or none. A row whose record already exists with the same values is skipped, so
importing a file twice creates nothing the second time.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.audit.services import current_actor, record
from app.billing.services import require_capacity
from app.core.errors import BatchlineError, Conflict, NotFound, PaymentRequired, ValidationError
from app.core.validation import clean_date, clean_decimal, clean_int
from app.materials import services as materials
from app.materials.models import MATERIAL_TYPES, Lot, Material
from app.onboarding.models import DataImport
from app.plant import services as plant
from app.plant.models import EQUIPMENT_CLASSES, QUALIFICATION_STATUSES, Equipment, Line, Sensor

MAX_BYTES = 5 * 1024 * 1024
MAX_ROWS = 5000


@dataclass(frozen=True)
class Column:
    """One column of an import file."""

    name: str
    required: bool
    help: str


COLUMNS: dict[str, list[Column]] = {
    "equipment": [
        Column("tag", True, "Equipment ID as painted on it, e.g. BR-101 (no spaces)"),
        Column("name", True, "Descriptive name"),
        Column("class", True, "One of: " + ", ".join(EQUIPMENT_CLASSES)),
        Column("line_code", True, "Code of an existing line, e.g. USP1"),
        Column("capacity", False, "Working capacity, a number"),
        Column("capacity_unit", False, "Unit of the capacity (L, kg...); required with a capacity"),
        Column("single_use", False, "yes / no"),
        Column("clean_hold_hours", False, "Hours a clean item stays clean"),
        Column("qualification_status", False, "One of: " + ", ".join(QUALIFICATION_STATUSES)),
        Column("qualified_until", False, "YYYY-MM-DD"),
        Column("calibration_due", False, "YYYY-MM-DD"),
        Column("status", False, "Status now: dirty (default), clean, maintenance, out_of_service"),
    ],
    "sensors": [
        Column("tag", True, "Tag as the gateway reports it, e.g. BR-101.TT01"),
        Column("equipment_tag", True, "Tag of existing equipment"),
        Column("quantity_kind", True, "temperature, pH, dissolved oxygen, pressure..."),
        Column("unit", True, "Engineering unit"),
        Column("range_low", True, "Lowest valid reading"),
        Column("range_high", True, "Highest valid reading"),
        Column("sampling_period_s", True, "Seconds between readings"),
    ],
    "materials": [
        Column("code", True, "Material code, e.g. RM-0001"),
        Column("name", True, "Name"),
        Column("type", True, "One of: " + ", ".join(MATERIAL_TYPES)),
        Column("unit", True, "Unit of measure (kg, g, L, mL, ea)"),
        Column("storage_conditions", False, "e.g. 2-8 °C"),
        Column("shelf_life_days", False, "Days"),
    ],
    "lots": [
        Column("lot_number", True, "Internal lot number (no spaces)"),
        Column("material_code", True, "Code of an existing material"),
        Column("quantity", True, "Quantity received, in the material unit"),
        Column("unit", False, "Must be the material unit if given"),
        Column("received_on", True, "YYYY-MM-DD"),
        Column("supplier", True, "Supplier name"),
        Column("supplier_lot", False, "Supplier's lot number"),
        Column("expiry_date", False, "YYYY-MM-DD (empty: from the material shelf life)"),
        Column("retest_date", False, "YYYY-MM-DD"),
    ],
}
KINDS = tuple(COLUMNS)
#: The permission an import of each kind needs (the same as creating one record of it on its screen).
KIND_PERMISSION = {"equipment": "plant.manage", "sensors": "plant.manage", "materials": "materials.manage",
                   "lots": "materials.manage"}


@dataclass
class RowVerdict:
    """What the import would do with one row."""

    line: int
    values: dict[str, str]
    outcome: str = "new"  # new / present / error
    errors: list[str] = field(default_factory=list)


@dataclass
class Preview:
    """The verdicts of every row of a file."""

    kind: str
    rows: list[RowVerdict]
    #: The whole file is refused: its new records would take the tenant beyond its plan.
    refusal: PaymentRequired | None = None

    @property
    def clean(self) -> bool:
        """True when no row has an error and the plan has room for the file."""
        return self.refusal is None and all(r.outcome != "error" for r in self.rows)

    def count(self, outcome: str) -> int:
        """Rows with the given outcome."""
        return sum(1 for r in self.rows if r.outcome == outcome)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == datetime.min.time() else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")  # the shortest decimal that round-trips, never binary noise
    return str(value).strip()


def _header(name: Any) -> str:
    return _cell(name).lower().replace(" ", "_").replace("-", "_")


def parse_file(kind: str, filename: str, data: bytes) -> list[dict[str, Any]]:
    """Read a CSV or XLSX file into rows `{"line": n, "values": {column: text}}`; file-level problems raise."""
    if kind not in COLUMNS:
        raise NotFound(f"unknown import kind {kind!r}")
    if not data:
        raise ValidationError("the file is empty")
    if len(data) > MAX_BYTES:
        raise ValidationError(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MB; split it")
    lower = filename.lower()
    if lower.endswith(".xlsx"):
        table = _read_xlsx(data)
    elif lower.endswith((".csv", ".txt")):
        table = _read_csv(data)
    else:
        raise ValidationError("upload a .csv or .xlsx file (use the template)")
    if not table:
        raise ValidationError("the file has no header row")
    header = [_header(h) for h in table[0]]
    while header and not header[-1]:
        header.pop()
    known = {c.name for c in COLUMNS[kind]}
    unknown = [h for h in header if h and h not in known]
    if unknown:
        raise ValidationError(f"unknown column(s) {', '.join(unknown)}; the {kind} template has: "
                              f"{', '.join(c.name for c in COLUMNS[kind])}")
    missing = [c.name for c in COLUMNS[kind] if c.required and c.name not in header]
    if missing:
        raise ValidationError(f"required column(s) missing: {', '.join(missing)}")
    if len(set(header)) != len(header):
        raise ValidationError("a column appears twice in the header")
    rows = []
    for number, raw in enumerate(table[1:], start=2):
        cells = [_cell(v) for v in raw]
        if not any(cells):
            continue  # blank lines are not rows
        values = {name: (cells[i] if i < len(cells) else "") for i, name in enumerate(header) if name}
        rows.append({"line": number, "values": values})
    if not rows:
        raise ValidationError("the file has a header but no rows")
    if len(rows) > MAX_ROWS:
        raise ValidationError(f"the file has {len(rows)} rows; at most {MAX_ROWS} per import")
    return rows


def _read_csv(data: bytes) -> list[list[Any]]:
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError("the CSV file is not UTF-8 text; save it as 'CSV UTF-8'") from exc
    try:
        dialect = csv.Sniffer().sniff(content.splitlines()[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return list(csv.reader(io.StringIO(content), dialect))


def _read_xlsx(data: bytes) -> list[list[Any]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a damaged or foreign file
        raise ValidationError("the file is not a readable .xlsx workbook") from exc
    try:
        sheet = workbook.worksheets[0]
        return [list(row) for row in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()


# --- one function per kind: (existing record or None, whether it equals the row, create the record) ---

def _line_id(session: Session, code: str) -> int:
    found = session.scalar(select(Line.id).where(Line.code == code.strip()))
    if found is None:
        raise ValidationError(f"line_code {code!r} is not an existing line")
    return found


def _equipment_id(session: Session, tag: str) -> int:
    found = session.scalar(select(Equipment.id).where(Equipment.tag == tag.strip()))
    if found is None:
        raise ValidationError(f"equipment_tag {tag!r} is not existing equipment")
    return found


def _material_id(session: Session, code: str) -> int:
    found = session.scalar(select(Material.id).where(Material.code == code.strip()))
    if found is None:
        raise ValidationError(f"material_code {code!r} is not an existing material")
    return found


def _show(value: Any) -> str:
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, date):
        return value.isoformat()
    return "(empty)" if value in (None, "") else str(value)


def _differs(pairs: list[tuple[str, Any, Any]]) -> list[str]:
    return [f"{name} is {_show(stored)} in the system, {_show(given)} in the file" for name, stored, given in pairs
            if stored != given]


def _equipment(session: Session, v: dict[str, str]) -> tuple[Any, list[str], Callable[[], Any]]:
    existing = session.scalar(select(Equipment).where(Equipment.tag == v["tag"].strip()))
    diffs = []
    if existing is not None:
        diffs = _differs([("name", existing.name, v["name"].strip()),
                          ("class", existing.equipment_class, v["class"].strip()),
                          ("line_code", session.get(Line, existing.line_id).code, v["line_code"].strip())])
    return existing, diffs, lambda: plant.create_equipment(
        session, tag=v["tag"], name=v["name"], equipment_class=v["class"], line_id=_line_id(session, v["line_code"]),
        capacity=v.get("capacity"), capacity_unit=v.get("capacity_unit", ""), single_use=v.get("single_use"),
        clean_hold_hours=v.get("clean_hold_hours"), calibration_due=v.get("calibration_due"),
        qualification_status=v.get("qualification_status") or "not_qualified",
        qualified_until=v.get("qualified_until"), status=v.get("status") or "dirty")


def _sensor(session: Session, v: dict[str, str]) -> tuple[Any, list[str], Callable[[], Any]]:
    existing = session.scalar(select(Sensor).where(Sensor.tag == v["tag"].strip()))
    diffs = []
    if existing is not None:
        diffs = _differs([
            ("equipment_tag", session.get(Equipment, existing.equipment_id).tag, v["equipment_tag"].strip()),
            ("unit", existing.unit, v["unit"].strip()),
            ("range_low", existing.range_low, clean_decimal(v["range_low"], "range_low")),
            ("range_high", existing.range_high, clean_decimal(v["range_high"], "range_high")),
            ("sampling_period_s", existing.sampling_period_s, clean_decimal(v["sampling_period_s"], "period"))])
    return existing, diffs, lambda: plant.create_sensor(
        session, tag=v["tag"], equipment_id=_equipment_id(session, v["equipment_tag"]),
        quantity_kind=v["quantity_kind"], unit=v["unit"], range_low=v["range_low"], range_high=v["range_high"],
        sampling_period_s=v["sampling_period_s"])


def _material(session: Session, v: dict[str, str]) -> tuple[Any, list[str], Callable[[], Any]]:
    existing = session.scalar(select(Material).where(Material.code == v["code"].strip()))
    diffs = []
    if existing is not None:
        diffs = _differs([("name", existing.name, v["name"].strip()), ("type", existing.material_type,
                                                                        v["type"].strip()),
                          ("unit", existing.unit, v["unit"].strip()),
                          ("shelf_life_days", existing.shelf_life_days,
                           clean_int(v.get("shelf_life_days"), "shelf_life_days"))])
    return existing, diffs, lambda: materials.create_material(
        session, code=v["code"], name=v["name"], material_type=v["type"], unit=v["unit"],
        storage_conditions=v.get("storage_conditions", ""), shelf_life_days=v.get("shelf_life_days"))


def _lot(session: Session, v: dict[str, str]) -> tuple[Any, list[str], Callable[[], Any]]:
    existing = session.scalar(select(Lot).where(Lot.lot_number == v["lot_number"].strip()))
    diffs = []
    if existing is not None:
        diffs = _differs([
            ("material_code", session.get(Material, existing.material_id).code, v["material_code"].strip()),
            ("quantity", existing.quantity, clean_decimal(v["quantity"], "quantity")),
            ("received_on", existing.received_on, clean_date(v["received_on"], "received_on")),
            ("supplier", existing.supplier, v["supplier"].strip()),
            ("supplier_lot", existing.supplier_lot, v.get("supplier_lot", "").strip())])
    return existing, diffs, lambda: materials.receive_lot(
        session, material_id=_material_id(session, v["material_code"]), lot_number=v["lot_number"],
        quantity=v["quantity"], unit=v.get("unit") or None, received_on=v["received_on"], supplier=v["supplier"],
        supplier_lot=v.get("supplier_lot", ""), expiry_date=v.get("expiry_date"), retest_date=v.get("retest_date"))


HANDLERS = {"equipment": _equipment, "sensors": _sensor, "materials": _material, "lots": _lot}
#: The column that names a record; two rows of one file may not name the same record.
KEY_COLUMN = {"equipment": "tag", "sensors": "tag", "materials": "code", "lots": "lot_number"}


#: Kinds whose records a plan limits: kind -> (entitlement, the column naming a record).
LIMITED_KINDS: dict[str, tuple[str, Any]] = {"sensors": ("sensors", Sensor.tag)}


def capacity_refusal(session: Session, kind: str, rows: list[dict[str, Any]]) -> PaymentRequired | None:
    """Whether the plan has room for every record the file would create: the whole file is refused, with the
    count, when it has not (the rows' own services check again, one by one)."""
    if kind not in LIMITED_KINDS:
        return None
    entitlement, key_column = LIMITED_KINDS[kind]
    keys = {str(row["values"].get(KEY_COLUMN[kind], "") or "").strip() for row in rows} - {""}
    present = set(session.scalars(select(key_column).where(key_column.in_(keys)))) if keys else set()
    try:
        require_capacity(session, tenant_id=session.info["tenant"].id, entitlement=entitlement,
                         adding=len(keys - present))
    except PaymentRequired as exc:
        return exc
    return None


def _run_rows(session: Session, kind: str, rows: list[dict[str, Any]]) -> Preview:
    """Run every row through the services, each in its own savepoint; collect verdicts (caller keeps or drops)."""
    refusal = capacity_refusal(session, kind, rows)
    verdicts = []
    seen: dict[str, int] = {}
    for row in rows:
        verdict = RowVerdict(line=row["line"], values=row["values"])
        values = {c.name: str(row["values"].get(c.name, "") or "") for c in COLUMNS[kind]}
        missing = [c.name for c in COLUMNS[kind] if c.required and not values[c.name].strip()]
        if missing:
            verdict.outcome, verdict.errors = "error", [f"{name} is required" for name in missing]
            verdicts.append(verdict)
            continue
        key = values[KEY_COLUMN[kind]].strip()
        if key in seen:
            verdict.outcome = "error"
            verdict.errors = [f"{KEY_COLUMN[kind]} {key!r} is already on line {seen[key]} of this file"]
            verdicts.append(verdict)
            continue
        seen[key] = row["line"]
        savepoint = session.begin_nested()
        try:
            existing, diffs, create = HANDLERS[kind](session, values)
            if existing is not None and not diffs:
                verdict.outcome = "present"
            elif existing is not None:
                verdict.outcome = "error"
                verdict.errors = ["already exists with different values: " + "; ".join(diffs)]
            else:
                create()
            savepoint.commit()
        except PaymentRequired:
            savepoint.rollback()
            verdict.outcome, verdict.errors = "error", [f"beyond your plan's limit of {kind}"]
        except BatchlineError as exc:
            savepoint.rollback()
            verdict.outcome, verdict.errors = "error", [str(exc)]
        verdicts.append(verdict)
    return Preview(kind=kind, rows=verdicts, refusal=refusal)


def preview_file(session: Session, *, kind: str, filename: str, data: bytes) -> tuple[DataImport, Preview]:
    """Parse and dry-run an uploaded file; store the upload (not its records) for the import step."""
    rows = parse_file(kind, filename, data)
    dry_run = session.begin_nested()
    try:
        preview = _run_rows(session, kind, rows)
    finally:
        dry_run.rollback()  # nothing of the dry run is kept: not the records, not their audit events
    upload = DataImport(kind=kind, filename=filename[:255], sha256=hashlib.sha256(data).hexdigest(), rows=rows,
                        created_by=current_actor(session).member_id)
    session.add(upload)
    session.flush()
    return upload, preview


def preview_stored(session: Session, upload: DataImport) -> Preview:
    """Dry-run a stored upload again (the data may have changed since it was uploaded)."""
    dry_run = session.begin_nested()
    try:
        return _run_rows(session, upload.kind, upload.rows)
    finally:
        dry_run.rollback()


def import_upload(session: Session, *, import_id: int) -> Preview:
    """Import every row of a clean upload in the caller's transaction (all or nothing), once."""
    upload = session.scalar(select(DataImport).where(DataImport.id == import_id).with_for_update())
    if upload is None:
        raise NotFound(f"no import {import_id}")
    if upload.state == "imported":
        raise Conflict(f"{upload.filename} was already imported (import #{upload.id})")
    refusal = capacity_refusal(session, upload.kind, upload.rows)
    if refusal is not None:
        raise refusal  # before any row runs: nothing of the file is stored
    preview = _run_rows(session, upload.kind, upload.rows)
    if not preview.clean:
        bad = [r for r in preview.rows if r.outcome == "error"]
        raise Conflict(f"nothing was imported: {len(bad)} row(s) have errors, first on line {bad[0].line}: "
                       f"{'; '.join(bad[0].errors)}")
    upload.state = "imported"
    upload.imported_at = session.execute(text("SELECT now()")).scalar_one()
    upload.created_count, upload.skipped_count = preview.count("new"), preview.count("present")
    record(session, action="import", record_type="data_import", record_id=upload.id,
           new={"kind": upload.kind, "filename": upload.filename, "sha256": upload.sha256,
                "created": upload.created_count, "skipped_already_present": upload.skipped_count})
    return preview


def template_csv(kind: str) -> bytes:
    """A CSV template: the header row."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([c.name for c in COLUMNS[kind]])
    return buffer.getvalue().encode("utf-8")


def template_xlsx(kind: str) -> bytes:
    """An XLSX template: the header row on the first sheet, the column help on a second sheet."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = kind
    sheet.append([c.name for c in COLUMNS[kind]])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    help_sheet = workbook.create_sheet("help")
    help_sheet.append(["column", "required", "meaning"])
    for column in COLUMNS[kind]:
        help_sheet.append([column.name, "yes" if column.required else "no", column.help])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
