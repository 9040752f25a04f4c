"""Default signature routes shipped in ``tenants/defaults/signature_routes.json``, applied to every new tenant.

Each area that needs a route for its record type adds it to that file (data, not code): the provisioning hook
`seed_default_routes` (listed in `app.tenancy.services.TENANT_DEFAULTS`) configures every route whose record
type has no active route yet, so re-running it never creates a second version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.core.errors import ConfigurationError
from app.esign.services import active_route, configure_route

DEFAULT_ROUTES_FILE = Path(__file__).resolve().parents[2] / "tenants" / "defaults" / "signature_routes.json"
ROUTES_SCHEMA = "batchline.signature-routes/1"


def default_routes(path: Path = DEFAULT_ROUTES_FILE) -> list[dict[str, Any]]:
    """Read the shipped default routes, refusing a file of another schema."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema") != ROUTES_SCHEMA:
        raise ConfigurationError(f"{path}: not a {ROUTES_SCHEMA} file")
    return list(data["routes"])


def seed_default_routes(session: Session) -> list[str]:
    """Configure each shipped default route whose record type has no active route; return the record types set."""
    seeded = []
    for route in default_routes():
        if active_route(session, route["record_type"]) is not None:
            continue
        configure_route(session, record_type=route["record_type"], steps=route["steps"],
                        allow_same_signer=bool(route.get("allow_same_signer", False)),
                        pending_status=route.get("pending_status", "draft"))
        seeded.append(route["record_type"])
    return seeded
