"""The OpenAPI 3.1 document, generated from the `@operation` registry and its pydantic models."""

from __future__ import annotations

import copy
from typing import Any

import pydantic

from app.api.registry import OPERATIONS, PATH_PARAM_RE, Operation
from app.api.schemas import Problem
from app.core.permissions import PERMISSIONS
from app.core.web import MEMBER

REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    400: "Bad request", 401: "Missing, unknown, expired or revoked token", 402: "The workspace is read-only",
    403: "The token lacks the scope", 404: "Not found in this tenant", 409: "Conflicts with what is stored",
    413: "Payload too large", 415: "Body is not JSON",
    422: "Validation failed", 429: "Rate limit exceeded",
}


def _hoist(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    return schema


#: What pydantic accepts as a decimal written as a string (its own schema says only "string").
DECIMAL_STRING = r"^[+-]?(\d{1,30}(\.\d{0,30})?|\.\d{1,30})([eE][+-]?\d{1,3})?$"


def _decimal_strings(schema: Any) -> Any:
    """Give the string form of every decimal field its pattern, so the document accepts what validation does."""
    if isinstance(schema, list):
        return [_decimal_strings(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    options = schema.get("anyOf")
    if (isinstance(options, list) and len(options) >= 2 and options[0].get("type") == "number"
            and options[1] == {"type": "string"}):
        options[1] = {"type": "string", "pattern": DECIMAL_STRING}
    return {key: _decimal_strings(value) for key, value in schema.items()}


def _schema_of(model: type[pydantic.BaseModel], components: dict[str, Any], mode: Any) -> dict[str, str]:
    name = model.__name__
    schema = _hoist(_decimal_strings(model.model_json_schema(ref_template=REF, mode=mode)), components)
    if components.setdefault(name, schema) != schema:
        # Components are keyed by class name: two different models with one name would document one of them
        # under the other's name. Give the API's model its own name instead.
        raise ValueError(f"two different API schemas are named {name!r}; rename one of them")
    return {"$ref": REF.format(model=name)}


def _component(model: type[pydantic.BaseModel], components: dict[str, Any]) -> dict[str, str]:
    return _schema_of(model, components, "serialization")


def _request_component(model: type[pydantic.BaseModel], components: dict[str, Any]) -> dict[str, str]:
    return _schema_of(model, components, "validation")


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is optional by absence; `null` is not a value a query string can carry."""
    schema = copy.deepcopy(schema)
    options = schema.pop("anyOf", None)
    if options:
        kept = [o for o in options if o.get("type") != "null"]
        schema.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
    if schema.get("default") is None:
        schema.pop("default", None)
    schema.pop("title", None)
    return schema


def _query_parameters(model: type[pydantic.BaseModel], components: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _hoist(_decimal_strings(model.model_json_schema(ref_template=REF, mode="validation")), components)
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        param = {"name": name, "in": "query", "required": name in required, "schema": _without_null(prop)}
        if prop.get("description"):
            param["description"] = prop["description"]
        params.append(param)
    return params


def _path(op: Operation) -> tuple[str, list[dict[str, Any]]]:
    params = []
    for converter, name in PATH_PARAM_RE.findall(op.rule):
        schema = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1} if converter == "int" else {"type": "string"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return "/api/v1" + PATH_PARAM_RE.sub(lambda m: "{" + m.group(2) + "}", op.rule), params


def _problem(status: int, meaning: str = "") -> dict[str, Any]:
    return {"description": meaning or ERROR_TEXT.get(status, "Error"),
            "content": {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}}}


def openapi_document(*, title: str = "Batchline API", version: str = "1") -> dict[str, Any]:
    """Build the OpenAPI 3.1 document of every registered operation."""
    components: dict[str, Any] = {}
    _component(Problem, components)
    paths: dict[str, dict[str, Any]] = {}
    for op in sorted(OPERATIONS, key=lambda o: (o.rule, o.method)):
        path, parameters = _path(op)
        if op.query is not None:
            parameters += _query_parameters(op.query, components)
        responses: dict[str, Any] = {}
        if op.response is None:
            responses[str(op.status)] = {"description": "Done"}
        else:
            responses[str(op.status)] = {"description": op.summary,
                                         "content": {"application/json": {"schema": _component(op.response,
                                                                                                components)}}}
        meanings = op.errors if isinstance(op.errors, dict) else dict.fromkeys(op.errors, "")
        codes = {401, 429, *meanings}
        if op.permission != MEMBER:
            codes.add(403)
        if op.query is not None or op.body is not None or parameters:
            codes.add(422)
        if op.body is not None:
            codes.add(415)
        if op.method not in ("GET", "HEAD"):
            codes.add(402)
        if any(p["in"] == "path" for p in parameters):
            codes.add(404)
        for code in sorted(codes):
            responses[str(code)] = _problem(code, meanings.get(code, ""))
        entry: dict[str, Any] = {
            "operationId": op.endpoint, "summary": op.summary, "description": op.description, "tags": op.tags,
            "parameters": parameters, "responses": responses,
            "security": [{"bearerAuth": []}, {"oauth2": [] if op.permission == MEMBER else [op.permission]}],
            "x-permission": op.permission,
        }
        if op.body is not None:
            entry["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": _request_component(op.body,
                                                                                                  components)}}}
        paths.setdefault(path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "The Batchline public API. Every credential is bound to one tenant. Errors are "
                                "RFC 9457 problem documents; lists use keyset pagination (`after`, `limit`)."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "A personal API token (`blp_...`) or an OAuth2 access token"},
                "oauth2": {"type": "oauth2", "flows": {"clientCredentials": {
                    "tokenUrl": "/oauth/token", "scopes": dict(sorted(PERMISSIONS.items()))}}},
            },
        },
    }
