"""Batchline: a multi-tenant MES for life-science SMEs.

`create_app` is imported lazily so that pure modules (detection maths, recipe documents) import
without pulling in Flask and the database layer.
"""

from __future__ import annotations

from typing import Any


def create_app(overrides: dict[str, Any] | None = None) -> Any:
    """Build the Flask application (see `app.factory.create_app`)."""
    from app.factory import create_app as _create_app

    return _create_app(overrides)
