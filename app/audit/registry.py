"""The GMP record registry: which tenant tables hold GMP records, their audit record type, and their pages.

The convention every area follows (a schema test enforces it):

* every tenant table declares `info["gmp"]`: `gmp_table_info(...)` for GMP records, `NOT_GMP` for plumbing;
* a GMP table is registered here with `register_record_type(...)` under its audit `record_type`;
* a GMP table gets the database trigger that refuses DELETE and TRUNCATE, even for the schema owner
  (`protect_gmp_table(Model.__table__)`, and the same `CREATE TRIGGER` statements in its migration);
* its services call `app.audit.services.record(...)` for every create, correction, status change and deletion
  attempt, in the same transaction as the change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import url_for
from sqlalchemy import DDL, MetaData, Table, event
from sqlalchemy.orm import Session
from werkzeug.routing import BuildError

#: `info` of a tenant table that holds no GMP record (job plumbing, caches, the audit trail itself).
NOT_GMP: dict[str, Any] = {"gmp": False}

#: Refuses DELETE / TRUNCATE on GMP tables: records are corrected by new entries, never removed.
REFUSE_DELETE_FUNCTION_SQL = """
CREATE FUNCTION gmp_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'GMP records are never deleted or overwritten: % refused on %', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def install_gmp_functions(metadata: MetaData) -> None:
    """Create the shared refusal function before any table of `metadata` (so triggers can use it)."""
    event.listen(metadata, "before_create", DDL(REFUSE_DELETE_FUNCTION_SQL.replace("%", "%%")))


def gmp_table_info(record_type: str, *, privileges: str = "read_write") -> dict[str, Any]:
    """`info` of a tenant table holding GMP records of `record_type`."""
    return {"gmp": True, "audit_record_type": record_type, "privileges": privileges}


def gmp_trigger_sql(table: str) -> list[str]:
    """The statements that make `table` refuse DELETE and TRUNCATE (copy them literally into the migration)."""
    return [
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} FOR EACH ROW "
        "EXECUTE FUNCTION gmp_refuse_change()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT "
        "EXECUTE FUNCTION gmp_refuse_change()",
    ]


def protect_gmp_table(table: Table) -> None:
    """Attach the delete-refusing triggers to a GMP table so `create_all` builds them."""
    for statement in gmp_trigger_sql(table.name):
        event.listen(table, "after_create", DDL(statement))


@dataclass(frozen=True)
class RecordType:
    """A kind of GMP record as the audit trail, signatures and review screens know it."""

    name: str
    label: str
    #: Tenant table holding the records (None for records that live elsewhere, e.g. the control plane).
    table: str | None = None
    #: Endpoint of the record's own page, called with `id_arg=<record id>`.
    endpoint: str | None = None
    id_arg: str = "record_id"
    #: `content(session, record_id) -> dict | None`: the canonical content a signature is bound to.
    content: Callable[[Session, str], dict[str, Any] | None] | None = None
    #: True when the record's own page drives its signature route (and copies the route status onto the record);
    #: otherwise a tenant-configured route is signed on the generic route page of `app.esign`.
    route_on_own_page: bool = False


RECORD_TYPES: dict[str, RecordType] = {}


def register_record_type(name: str, *, label: str, table: str | None = None, endpoint: str | None = None,
                         id_arg: str = "record_id",
                         content: Callable[[Session, str], dict[str, Any] | None] | None = None,
                         route_on_own_page: bool = False) -> RecordType:
    """Register (or re-register, on module reload) a GMP record type."""
    kind = RecordType(name=name, label=label, table=table, endpoint=endpoint, id_arg=id_arg, content=content,
                      route_on_own_page=route_on_own_page)
    RECORD_TYPES[name] = kind
    return kind


def record_type_label(name: str) -> str:
    """Human label of a record type (the raw name when unregistered)."""
    kind = RECORD_TYPES.get(name)
    return kind.label if kind else name


def record_history_url(record_type: str, record_id: Any) -> str:
    """URL of the audit history of one record, for a "History" link on any record page."""
    return url_for("audit.history", record_type=record_type, record_id=str(record_id))


def record_page_url(record_type: str, record_id: Any) -> str | None:
    """URL of the record's own page when its area registered one."""
    kind = RECORD_TYPES.get(record_type)
    if kind is None or kind.endpoint is None:
        return None
    try:
        return url_for(kind.endpoint, **{kind.id_arg: str(record_id)})
    except (BuildError, ValueError):  # an id the record's page cannot take (e.g. "L-1" for an integer route)
        return None
