"""The `@operation` registry: one decorator declares an endpoint, validates it and documents it.

An area adds endpoints in its own `api.py`:

    from app.api.registry import operation
    from app.plant.schemas import LineOut, LinePage, LineQuery

    @operation("GET", "/lines", summary="List lines", permission="plant.read", query=LineQuery,
               response=LinePage, tags=["plant"])
    def list_lines(principal, *, query):
        with tenant_transaction(principal.tenant) as session:
            return paginate(session, select_lines(...), query, to=LineOut)

and lists the module in `API_MODULES` below. The decorator registers the Flask route under `/api/v1`,
authenticates the bearer token, enforces the permission (`requires`), refuses writes in a read-only tenant,
parses the query string and the JSON body with the pydantic models (422 problem on error), serialises the
response model, and records everything the OpenAPI document needs.
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pydantic
from flask import Blueprint, Response, current_app, g, request
from sqlalchemy import Select
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from app.api.errors import ApiError
from app.api.schemas import Page, PageQuery
from app.api.services import ApiPrincipal, authenticate_bearer, stamp_token_use
from app.core.errors import NotFound
from app.core.tenancy import Actor, control_lookup, control_session, tenant_transaction
from app.core.web import MEMBER, PUBLIC, READ_ONLY_MESSAGE, SAFE_METHODS, problem, requires

#: Modules whose `@operation`s make up the API; an area adds its `api.py` here.
API_MODULES = ["app.api.resources", "app.billing.api", "app.sensors.api", "app.plant.public_api",
               "app.materials.public_api", "app.recipes.public_api", "app.batches.public_api",
               "app.review.public_api", "app.audit.public_api"]

api_v1 = Blueprint("api_v1", __name__, url_prefix="/api/v1")


@dataclass
class Operation:
    """One documented API operation."""

    method: str
    rule: str
    endpoint: str
    summary: str
    description: str
    permission: str
    tags: list[str]
    status: int
    response: type[pydantic.BaseModel] | None
    query: type[pydantic.BaseModel] | None
    body: type[pydantic.BaseModel] | None
    #: Status codes this operation answers besides the common ones, each with what it means here (a plain list
    #: of codes is read as codes with the generic meaning).
    errors: dict[int, str] | list[int] = field(default_factory=dict)


OPERATIONS: list[Operation] = []
MAX_ID = 2**63 - 1


def _validation_problem(exc: pydantic.ValidationError, where: str) -> ApiError:
    errors = [{"loc": ".".join(str(p) for p in e["loc"]) or where, "msg": e["msg"], "type": e["type"]}
              for e in exc.errors(include_url=False, include_input=False, include_context=False)]
    first = errors[0]
    return ApiError(422, "Validation failed", f"{where}: {first['loc']}: {first['msg']}", errors=errors)


def _query_values() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in request.args:
        many = request.args.getlist(key)
        if len(many) > 1:
            raise ApiError(422, "Validation failed", f"query parameter {key!r} given {len(many)} times; give it once")
        values[key] = many[0]
    return values


def _json_body() -> Any:
    if not request.is_json:
        raise ApiError(415, "Unsupported media type", "send the request body as application/json")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(422, "Validation failed", "the request body must be a JSON object")
    return body


def authenticate(permission: str) -> ApiPrincipal:
    """Authenticate the request's bearer token and check it carries `permission`."""
    db = current_app.extensions["batchline.db"]
    # The lookup is one statement in autocommit (no BEGIN/COMMIT); the usage stamp, due at most once a minute
    # per token, gets its own transaction.
    with control_lookup(db=db) as session:
        principal = authenticate_bearer(session, db, request.headers.get("Authorization"))
    if principal.stamp_due:
        with control_session(db=db) as session:
            stamp_token_use(session, principal.token_id)
    if permission not in (PUBLIC, MEMBER) and permission not in principal.permissions:
        raise ApiError(403, "Forbidden", f"this token lacks the scope {permission!r} (or its owner lost it)")
    g.tenant, g.tenant_status, g.permissions = principal.tenant, principal.tenant_status, principal.permissions
    g.api_principal = principal
    return principal


def api_actor(principal: ApiPrincipal) -> Actor:
    """The actor of a write made with this request's credential (audit events, records' `created_by`)."""
    request_id = request.headers.get("X-Request-Id") or g.setdefault("request_id", uuid.uuid4().hex)
    return principal.actor(request_id=request_id[:64], client_addr=(request.remote_addr or "")[:64] or None)


def operation(method: str, rule: str, *, summary: str, permission: str,
              response: type[pydantic.BaseModel] | None = None, query: type[pydantic.BaseModel] | None = None,
              body: type[pydantic.BaseModel] | None = None, status: int = 200, tags: list[str] | None = None,
              errors: list[int] | dict[int, str] | None = None, read_only_ok: bool = False,
              description: str | None = None) -> Callable[[Callable[..., Any]], Any]:
    """Declare an API operation (see the module docstring).

    `errors` lists the statuses the operation answers besides the common ones (401, 403, 422, 429...); give
    them as `{409: "the lot number exists already"}` to say what each means here. `description` defaults to the
    function's docstring.
    """
    method = method.upper()

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        endpoint = fn.__name__
        if any(op.endpoint == endpoint for op in OPERATIONS):
            raise ValueError(f"API operation {endpoint!r} is declared twice")

        def view(**path_values: Any) -> Any:
            principal = authenticate(permission)
            if method not in SAFE_METHODS and principal.tenant_status == "read_only" and not read_only_ok:
                raise ApiError(402, "Workspace is read-only", READ_ONLY_MESSAGE)
            for name, value in path_values.items():
                if isinstance(value, int) and value > MAX_ID:  # ids are BIGINT: larger ones exist nowhere
                    raise ApiError(404, "Not Found", f"no record with {name} {value}")
            kwargs: dict[str, Any] = dict(path_values)
            if query is not None:
                try:
                    kwargs["query"] = query.model_validate(_query_values())
                except pydantic.ValidationError as exc:
                    raise _validation_problem(exc, "query") from None
            elif request.args:
                raise ApiError(422, "Validation failed", f"this operation takes no query parameters, got "
                                                         f"{', '.join(sorted(request.args))}")
            if body is not None:
                try:
                    kwargs["body"] = body.model_validate(_json_body())
                except pydantic.ValidationError as exc:
                    raise _validation_problem(exc, "body") from None
            result = fn(principal, **kwargs)
            if response is None:
                return Response(status=204)
            model = result if isinstance(result, response) else response.model_validate(result)
            return Response(model.model_dump_json(), status=status, mimetype="application/json")

        view.__name__ = endpoint
        view.__doc__ = fn.__doc__
        requires(permission)(view)
        api_v1.add_url_rule(rule, endpoint=endpoint, view_func=view, methods=[method])
        OPERATIONS.append(Operation(method=method, rule=rule, endpoint=endpoint, summary=summary,
                                    description=(description or fn.__doc__ or "").strip(), permission=permission,
                                    tags=list(tags or []), status=status, response=response, query=query, body=body,
                                    errors=dict(errors) if isinstance(errors, dict)
                                    else dict.fromkeys(errors or [], "")))
        return fn

    return register


@api_v1.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Any:
    response = problem(exc.status, exc.title, exc.detail, **exc.extra)
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


@api_v1.errorhandler(DataError)
def _unstorable(exc: DataError) -> Any:
    # Request models bound the ids they filter on, but some values only the database refuses: an id in a body
    # beyond BIGINT, a NUL character in text. Those are the client's mistake, never a server error; the
    # transaction was rolled back, so nothing of the request is stored.
    why = getattr(getattr(exc.orig, "diag", None), "message_primary", None) or str(exc.orig).splitlines()[0]
    return problem(422, "Value cannot be stored", f"a value in the request cannot be stored ({why}): check numbers "
                   "are within range and text holds no NUL characters")


def load_operations() -> Blueprint:
    """Import every API module (registering its operations) and return the blueprint."""
    for module in API_MODULES:
        importlib.import_module(module)
    return api_v1


PATH_PARAM_RE = re.compile(r"<(?:(int|string):)?(\w+)>")


def paginate(session: Session, stmt: Select[Any], query: PageQuery, id_column: Any,
             to: Callable[[Any], Any], *, cursor: str = "id") -> dict[str, Any]:
    """Keyset pagination by id: stable under concurrent inserts, cheap at any depth.

    Any ordering of `stmt` (an area's list query sorts for its screens) is replaced by the id, so pages never
    skip or repeat a record; `cursor` names the item field holding the id (`seq` for audit events).
    """
    if query.after is not None:
        stmt = stmt.where(id_column > query.after)
    rows = session.execute(stmt.order_by(None).order_by(id_column).limit(query.limit + 1)).all()
    more = len(rows) > query.limit
    items = [to(r) for r in rows[: query.limit]]
    return {"items": items, "next_after": items[-1][cursor] if more else None}


def page_of(principal: ApiPrincipal, stmt: Select[Any], query: PageQuery, id_column: Any,
            model: type[pydantic.BaseModel], *, parent: tuple[type, int, str] | None = None) -> dict[str, Any]:
    """One page of `select(Model)` rows in the caller's tenant through `model`; `parent` = (Model, id, noun) is
    a record that must exist first (a 404 names it), e.g. the lot whose movements are listed."""
    with tenant_transaction(principal.tenant) as session:
        if parent is not None and session.get(parent[0], parent[1]) is None:
            raise NotFound(f"no {parent[2]} {parent[1]} in this tenant")
        return paginate(session, stmt, query, id_column, rows_as(model))


def record_of(principal: ApiPrincipal, model: type, record_id: int, noun: str,
              out: type[pydantic.BaseModel]) -> Any:
    """One record of the caller's tenant by id through `out`, or a 404 that names it."""
    with tenant_transaction(principal.tenant) as session:
        found = session.get(model, record_id)
        if found is None:
            raise NotFound(f"no {noun} {record_id} in this tenant")
        return out.model_validate(found)


def paginate_list(records: Iterable[Any], query: PageQuery, to: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """The same keyset page over records an area's query function already built in memory (short lists)."""
    items = sorted((to(r) for r in records), key=lambda item: item["id"])
    if query.after is not None:
        items = [item for item in items if item["id"] > query.after]
    more = len(items) > query.limit
    items = items[: query.limit]
    return {"items": items, "next_after": items[-1]["id"] if more else None}


def rows_as(model: type[pydantic.BaseModel]) -> Callable[[Any], dict[str, Any]]:
    """`to` for `paginate` over `select(Model)`: each row's entity through an area's response schema."""
    return lambda row: model.model_validate(row[0]).model_dump()


__all__ = ["OPERATIONS", "Operation", "Page", "api_actor", "api_v1", "authenticate", "load_operations", "operation",
           "page_of", "paginate", "paginate_list", "record_of", "rows_as"]
