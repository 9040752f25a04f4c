"""Parse ingest payloads (JSON or CSV) into readings, and refuse each bad reading with a reason a person can act on.

Two levels, on purpose: `check_envelope` runs in the web request and refuses a payload whose *shape* is wrong
(not JSON, no `readings` list, too large, wrong CSV columns) with a 4xx, storing nothing; `parse_readings` runs
in the ingest job and sorts every reading into accepted or refused (unknown sensors are decided later, against
the plant's sensors), so one bad reading never costs the good ones.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.core.errors import ValidationError

QUALITIES = {"good": 0, "uncertain": 1, "bad": 2}
QUALITY_NAMES = {value: name for name, value in QUALITIES.items()}
#: Refused readings listed one by one per ingest; the counts per reason are always complete.
MAX_ERRORS_LISTED = 1000


class PayloadError(ValidationError):
    """The payload as a whole cannot be read; nothing in it was stored."""


@dataclass
class ParsedReadings:
    """Readings of one payload that passed the per-reading checks, column by column, and the refusals."""

    tags: list[str] = field(default_factory=list)
    stamps: list[datetime] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    qualities: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)  # position of each reading in the payload
    total: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)

    def refuse(self, index: int, sensor: Any, reason: str) -> None:
        """Record one refused reading (listed while under the cap, always counted)."""
        self.error_counts[reason] = self.error_counts.get(reason, 0) + 1
        if len(self.errors) < MAX_ERRORS_LISTED:
            self.errors.append({"index": index, "sensor": str(sensor)[:80] if sensor is not None else None,
                                "reason": reason})

    @property
    def rejected(self) -> int:
        """Readings refused so far."""
        return sum(self.error_counts.values())


def content_kind(mimetype: str | None) -> str:
    """Map a Content-Type to `json` or `csv`, refusing anything else."""
    kind = (mimetype or "").split(";")[0].strip().lower()
    if kind in ("application/json", "application/x-ndjson") or kind.endswith("+json"):
        return "json"
    if kind in ("text/csv", "application/csv"):
        return "csv"
    raise PayloadError(f"Content-Type {kind or '(none)'!r} is not accepted: send application/json or text/csv")


def check_envelope(body: bytes, kind: str) -> str | None:
    """Check the payload's shape before it is stored; return its `message_id` (JSON only) or None."""
    if not body:
        raise PayloadError("the payload is empty")
    if kind == "json":
        return _json_document(body).get("message_id")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"the CSV payload is not UTF-8: {exc}") from exc
    rows = _csv_rows(text)
    first = next(rows, None)
    if first is None:
        raise PayloadError("the CSV payload has no rows")
    if not 3 <= len(first) <= 4:
        raise PayloadError("CSV rows must be sensor,ts,value[,quality]; the first row has "
                           f"{len(first)} columns")
    return None


def _json_document(body: bytes) -> dict[str, Any]:
    """Parse a JSON payload and check its envelope; return the document."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"the payload is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("readings"), list):
        raise PayloadError('the payload must be a JSON object with a "readings" list')
    if not document["readings"]:
        raise PayloadError('"readings" is empty: send at least one reading')
    message_id = document.get("message_id")
    if message_id is not None and (not isinstance(message_id, str) or not 0 < len(message_id) <= 200):
        raise PayloadError('"message_id" must be a string of 1 to 200 characters')
    return document


def _csv_rows(text: str) -> Any:
    return (row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row))


def parse_timestamp(raw: Any) -> datetime | None:
    """Parse an RFC 3339 timestamp with a UTC offset into an aware UTC datetime, or None if it is not one."""
    if not isinstance(raw, str) or not 10 < len(raw) <= 40 or "T" not in raw.upper():
        return None
    try:
        stamp = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return None
    return stamp.astimezone(UTC)


def _accept(out: ParsedReadings, index: int, sensor: Any, ts: Any, value: Any, quality: Any) -> None:
    if not isinstance(sensor, str) or not 0 < len(sensor.strip()) <= 80:
        out.refuse(index, sensor, "sensor tag missing or longer than 80 characters")
        return
    stamp = parse_timestamp(ts)
    if stamp is None:
        out.refuse(index, sensor, "ts is not an RFC 3339 timestamp with a UTC offset")
        return
    if quality is None or quality == "":
        code = 0
    elif isinstance(quality, str) and quality.strip().lower() in QUALITIES:
        code = QUALITIES[quality.strip().lower()]
    else:
        out.refuse(index, sensor, "quality must be good, uncertain or bad")
        return
    if (value is None or value == "") and code == QUALITIES["bad"]:
        value = math.nan  # a bad reading with no number: stored as a quality flag with a NULL value
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        out.refuse(index, sensor, "value is not a finite number (only a bad-quality reading may have none)")
        return
    out.tags.append(sensor.strip())
    out.stamps.append(stamp)
    out.values.append(float(value))
    out.qualities.append(code)
    out.indices.append(index)


def _number(cell: str) -> float | str | None:
    """Parse a CSV cell as a number, or return it unchanged so the reading is refused as non-numeric."""
    if cell == "":
        return None
    try:
        return float(cell)
    except ValueError:
        return cell


def parse_readings(body: bytes, kind: str) -> ParsedReadings:
    """Sort every reading of a stored payload into accepted (columns) or refused (with the reason)."""
    out = ParsedReadings()
    if kind == "json":
        for index, item in enumerate(_json_document(body)["readings"]):
            out.total += 1
            if not isinstance(item, dict):
                out.refuse(index, None, "reading is not an object with sensor, ts and value")
                continue
            _accept(out, index, item.get("sensor"), item.get("ts"), item.get("value"), item.get("quality"))
        return out
    check_envelope(body, kind)
    rows = _csv_rows(body.decode("utf-8-sig"))
    for index, row in enumerate(rows):
        if index == 0 and [cell.strip().lower() for cell in row[:3]] == ["sensor", "ts", "value"]:
            continue  # a header line
        out.total += 1
        if not 3 <= len(row) <= 4:
            out.refuse(index, row[0] if row else None, "CSV row must be sensor,ts,value[,quality]")
            continue
        quality = row[3] if len(row) == 4 else None
        _accept(out, index, row[0], row[1].strip(), _number(row[2].strip()), quality)
    return out
