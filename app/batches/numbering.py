"""Batch numbers from the tenant's pattern, gap-free per scope and never reused."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.core.errors import ValidationError

TOKEN_RE = re.compile(r"\{([a-z]+)(?::(\d{1,2}))?\}")
TOKENS = ("recipe", "product", "line", "yyyy", "yy", "mm", "dd", "seq")
#: What a rendered batch number may contain (it is printed on labels and typed by scanners).
NUMBER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


def check_pattern(pattern: str) -> str:
    """Refuse a pattern without exactly one {seq} or with unknown tokens; the message says how to fix it."""
    pattern = (pattern or "").strip()
    if not pattern or len(pattern) > 100:
        raise ValidationError("the batch number pattern is required (at most 100 characters)")
    names = [m.group(1) for m in TOKEN_RE.finditer(pattern)]
    unknown = sorted(set(names) - set(TOKENS))
    if unknown:
        raise ValidationError(f"unknown token(s) {', '.join('{' + u + '}' for u in unknown)} in the batch number "
                              f"pattern; use {', '.join('{' + t + '}' for t in TOKENS)}")
    if names.count("seq") != 1:
        raise ValidationError("the batch number pattern needs exactly one {seq} (e.g. {seq:04}) so numbers are unique")
    literal = TOKEN_RE.sub("", pattern)
    if literal and not re.fullmatch(r"[A-Za-z0-9._/-]*", literal):
        raise ValidationError("the batch number pattern may contain only letters, digits and . _ / - besides tokens")
    return pattern


def _clean(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._/-]+", "-", value).strip("-")


def render(pattern: str, *, at: datetime, seq: int | None, **values: Any) -> str:
    """Render a pattern; with `seq=None` the sequence is left as `#` (the counter's scope)."""
    fields = {"yyyy": f"{at:%Y}", "yy": f"{at:%y}", "mm": f"{at:%m}", "dd": f"{at:%d}",
              **{k: _clean(str(v)) for k, v in values.items()}}

    def token(match: re.Match[str]) -> str:
        name, width = match.group(1), match.group(2)
        if name == "seq":
            return "#" if seq is None else str(seq).zfill(int(width or 1))
        return fields.get(name, "")

    return TOKEN_RE.sub(token, pattern)


def next_batch_number(session: Session, *, pattern: str, at: datetime, recipe: str, product: str,
                      line: str) -> str:
    """Take the next number of the pattern's scope (row-locked counter); skip numbers already taken."""
    values = {"recipe": recipe, "product": product, "line": line}
    scope = render(pattern, at=at, seq=None, **values)[:120]
    from app.batches.models import Batch

    while True:
        seq = session.execute(text(
            "INSERT INTO batch_number_counters (scope, last_value) VALUES (:s, 1) "
            "ON CONFLICT (scope) DO UPDATE SET last_value = batch_number_counters.last_value + 1 "
            "RETURNING last_value"), {"s": scope}).scalar_one()
        number = render(pattern, at=at, seq=seq, **values)
        if len(number) > 60 or not NUMBER_RE.match(number):
            raise ValidationError(f"the batch number pattern renders {number!r}, which is not a valid batch number "
                                  "(at most 60 letters, digits and . _ / -)")
        # A number can already exist when the pattern was changed to one that renders older numbers.
        if session.scalar(select(Batch.id).where(Batch.batch_number == number)) is None:
            return number
