"""JSON API plumbing every area's `api.py` uses: request bodies through pydantic, errors as problem documents."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic
from flask import Blueprint, request

from app.core.web import problem

M = TypeVar("M", bound=pydantic.BaseModel)


class ApiModel(pydantic.BaseModel):
    """Base of request schemas: unknown fields are refused (a typo must not be silently ignored)."""

    model_config = pydantic.ConfigDict(extra="forbid", str_strip_whitespace=True)


class OutModel(pydantic.BaseModel):
    """Base of response schemas: built from ORM objects by attribute, never returned as ORM objects."""

    model_config = pydantic.ConfigDict(from_attributes=True)


def parse_body(model: type[M]) -> M:
    """Validate the JSON body against `model` (422 with every field error on failure)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BodyError("the request body must be a JSON object (Content-Type: application/json)")
    return model.model_validate(body)


def parse_args(model: type[M]) -> M:
    """Validate query-string arguments against `model`."""
    return model.model_validate(request.args.to_dict())


class BodyError(Exception):
    """The body is not JSON at all."""


def register_api_errors(bp: Blueprint) -> None:
    """Render pydantic and body errors of this blueprint as RFC 9457 problems."""

    @bp.errorhandler(pydantic.ValidationError)
    def _invalid(exc: pydantic.ValidationError) -> Any:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
                  for e in exc.errors(include_url=False)]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "ValidationError", detail, errors=errors)

    @bp.errorhandler(BodyError)
    def _no_json(exc: BodyError) -> Any:
        return problem(400, "Bad Request", str(exc))


def page(items: list[Any], model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """A list response: `{"items": [...], "count": n}`."""
    return {"items": [model.model_validate(i).model_dump(mode="json") for i in items], "count": len(items)}


def one(item: Any, model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """A single-record response."""
    return model.model_validate(item).model_dump(mode="json")


def signing_credentials(body: pydantic.BaseModel, user_id: int) -> dict[str, Any] | None:
    """The credentials of `esign.sign(...)` from a body with `signature_password` / `signature_user_id`."""
    from app.esign.forms import identification_required

    password = getattr(body, "signature_password", None)
    if not password:
        return None
    return {"user_id": user_id, "password": password,
            "identification": (getattr(body, "signature_user_id", None) or "").strip() or None,
            "identification_required": identification_required()}
