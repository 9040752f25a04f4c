"""Input cleaning shared by the areas: exact decimals, dates, codes that survive a barcode, messages a person
can act on (each names the field). Raises `ValidationError` (422); nothing is stored on a refusal."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import ValidationError

#: Codes and tags go on labels and through barcode scanners: no spaces, no ':' (the scan prefix separator).
CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/#+-]*$")
def clean_text(value: Any, field: str, *, max_len: int, required: bool = True) -> str:
    """Strip a text input and check its length; the message names the field."""
    text_value = "" if value is None else str(value).strip()
    if required and not text_value:
        raise ValidationError(f"{field} is required")
    if len(text_value) > max_len:
        raise ValidationError(f"{field} is too long (at most {max_len} characters)")
    return text_value


def clean_code(value: Any, field: str, *, max_len: int) -> str:
    """A code or tag that can be printed as a barcode and typed by a scanner."""
    code = clean_text(value, field, max_len=max_len)
    if not CODE_RE.match(code):
        raise ValidationError(f"{field} {code!r} may hold only letters, digits and . _ / # + - (no spaces)")
    return code


def clean_choice(value: Any, field: str, choices: Iterable[str]) -> str:
    """One of a fixed set of values; the message lists them."""
    allowed = list(choices)
    choice = clean_text(value, field, max_len=60)
    if choice not in allowed:
        raise ValidationError(f"{field} {choice!r} is not one of: {', '.join(allowed)}")
    return choice


def clean_decimal(value: Any, field: str, *, required: bool = True, positive: bool = False) -> Decimal | None:
    """An exact decimal (never a float)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError(f"{field} is required")
        return None
    if isinstance(value, float):
        value = repr(value)
    try:
        number = Decimal(str(value).strip().replace(",", "."))
    except ArithmeticError as exc:
        raise ValidationError(f"{field} {value!r} is not a number") from exc
    if not number.is_finite():
        raise ValidationError(f"{field} {value!r} is not a number")
    if abs(number) >= Decimal(10) ** 12 or number != number.quantize(Decimal("0.000001")):
        raise ValidationError(f"{field} {value!r} is out of range (at most 12 digits and 6 decimals)")
    if positive and number <= 0:
        raise ValidationError(f"{field} must be greater than zero")
    return number


def clean_int(value: Any, field: str, *, required: bool = False, positive: bool = True) -> int | None:
    """A whole number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError(f"{field} is required")
        return None
    try:
        number = int(str(value).strip())
    except ValueError as exc:
        raise ValidationError(f"{field} {value!r} is not a whole number") from exc
    if positive and number <= 0:
        raise ValidationError(f"{field} must be greater than zero")
    if number > 10**9:
        raise ValidationError(f"{field} {value!r} is too large")
    return number


def clean_date(value: Any, field: str, *, required: bool = False) -> date | None:
    """A calendar date (ISO 8601, YYYY-MM-DD)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError(f"{field} is required")
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise ValidationError(f"{field} {value!r} is not a date (use YYYY-MM-DD)") from exc


def clean_bool(value: Any, field: str) -> bool:
    """yes/no, true/false, 1/0."""
    if isinstance(value, bool):
        return value
    word = "" if value is None else str(value).strip().lower()
    if word in ("", "0", "no", "n", "false", "f", "off", "reusable"):
        return False
    if word in ("1", "yes", "y", "true", "t", "on", "single-use", "single_use"):
        return True
    raise ValidationError(f"{field} {value!r} is not yes or no")


def clean_timezone(value: Any) -> str:
    """An IANA timezone name such as Europe/Zurich."""
    name = clean_text(value, "timezone", max_len=64)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"timezone {name!r} is not a known IANA timezone (e.g. Europe/Zurich)") from exc
    return name


def db_now(session: Session) -> datetime:
    """The database server's clock (GMP times never come from the client)."""
    return session.execute(select(func.now())).scalar_one()
