"""Exceptions of the public API, rendered as RFC 9457 problem documents."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An API failure with its HTTP status, a title, a detail a person can act on, and optional extras."""

    def __init__(self, status: int, title: str, detail: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers, self.extra = status, title, detail, headers or {}, extra
