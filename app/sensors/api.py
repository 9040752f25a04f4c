"""`/api/v1/ingest` (gateways push readings) and the sensor read endpoints (trends, episodes)."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request

from app.api.errors import ApiError
from app.api.registry import OPERATIONS, Operation, api_v1, authenticate, operation
from app.api.services import ApiPrincipal
from app.core.errors import BatchlineError
from app.core.tenancy import tenant_transaction
from app.core.web import READ_ONLY_MESSAGE, requires
from app.plant.models import Sensor
from app.sensors import queries, services
from app.sensors.payloads import PayloadError, content_kind
from app.sensors.schemas import (
    EpisodeList,
    EpisodeOut,
    EpisodeQuery,
    IngestBody,
    IngestStatus,
    TrendOut,
    TrendQuery,
)

INGEST_SCOPE = "ingest"


def _source(principal: ApiPrincipal) -> str:
    """Who posted, as stored on the ingest row: the OAuth client or the member's personal token."""
    if principal.client_id is not None:
        return f"client:{principal.client_id}"
    return f"member:{principal.member_id}:token:{principal.token_id}"


@requires(INGEST_SCOPE)
def post_ingest() -> Any:
    """Accept a payload of readings (JSON or CSV): stored durably, then processed by the `ingest` queue."""
    principal = authenticate(INGEST_SCOPE)
    if principal.tenant_status == "read_only":
        raise ApiError(402, "Workspace is read-only", READ_ONLY_MESSAGE)
    limit = int(current_app.config["INGEST_MAX_BYTES"])
    if (request.content_length or 0) > limit:
        raise ApiError(413, "Payload too large", f"the payload is {request.content_length} bytes; the limit is "
                                                 f"{limit} bytes: split it into smaller messages")
    try:
        kind = content_kind(request.mimetype)
    except PayloadError as exc:
        raise ApiError(415, "Unsupported media type", str(exc)) from None
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise ApiError(413, "Payload too large", f"the payload exceeds the limit of {limit} bytes: split it")
    # The envelope is checked (one pass, no reading built) by `accept_payload`, the readings one by one by the
    # job: a full schema validation of tens of thousands of readings here would cost more than storing them.
    try:
        with tenant_transaction(principal.tenant) as session:
            accepted = services.accept_payload(session, body=body, kind=kind, source=_source(principal),
                                               max_bytes=limit)
            doc = services.ingest_summary(accepted.ingest, tenant_slug=principal.tenant.slug)
    except BatchlineError as exc:
        raise ApiError(exc.status_code, "Payload refused", str(exc)) from None
    doc["duplicate"] = accepted.duplicate
    response = Response(IngestStatus.model_validate(doc).model_dump_json(), status=202, mimetype="application/json")
    response.headers["Location"] = f"/api/v1/ingest/{doc['id']}"
    return response


api_v1.add_url_rule("/ingest", endpoint="post_ingest", view_func=post_ingest, methods=["POST"])
OPERATIONS.append(Operation(
    method="POST", rule="/ingest", endpoint="post_ingest", summary="Push sensor readings",
    description=(post_ingest.__doc__ or "") + " Answers 202 with the ingest id and a Location to poll; "
    "a repeated message_id answers the first ingest again. Also accepts text/csv (sensor,ts,value[,quality]). "
    "Payloads above INGEST_MAX_BYTES (default 10 MB) get 413.",
    permission=INGEST_SCOPE, tags=["sensors"], status=202, response=IngestStatus, query=None, body=IngestBody,
    errors=[413]))


@operation("GET", "/ingest/<int:ingest_id>", summary="Status of an ingest", permission=INGEST_SCOPE,
           response=IngestStatus, tags=["sensors"])
def get_ingest(principal: ApiPrincipal, *, ingest_id: int) -> IngestStatus:
    """Poll an ingest: queued, processed (counts and refused readings) or failed (why)."""
    with tenant_transaction(principal.tenant) as session:
        row = queries.ingest(session, ingest_id)
        if row is None:
            raise ApiError(404, "Not Found", f"no ingest {ingest_id} in this workspace")
        return IngestStatus.model_validate(services.ingest_summary(row, tenant_slug=principal.tenant.slug))


@operation("GET", "/sensors/<int:sensor_id>/trend", summary="Downsampled trend of a sensor",
           permission="plant.read", query=TrendQuery, response=TrendOut, tags=["sensors"])
def get_trend(principal: ApiPrincipal, *, sensor_id: int, query: TrendQuery) -> TrendOut:
    """Min, max and mean per bucket of a sensor's readings over a window (about `points` buckets)."""
    with tenant_transaction(principal.tenant) as session:
        if session.get(Sensor, sensor_id) is None:
            raise ApiError(404, "Not Found", f"no sensor {sensor_id} in this workspace")
        # An empty or reversed window has no readings: an empty trend, not an error.
        buckets = (queries.trend(session, sensor_id=sensor_id, start=query.start, end=query.end,
                                 points=query.points) if query.start < query.end else [])
    return TrendOut(sensor_id=sensor_id, bucket_s=queries.bucket_seconds(query.start, query.end, query.points),
                    buckets=buckets)


@operation("GET", "/sensors/episodes", summary="Exception episodes of sensors", permission="batches.read",
           query=EpisodeQuery, response=EpisodeList, tags=["sensors"])
def list_episodes(principal: ApiPrincipal, *, query: EpisodeQuery) -> EpisodeList:
    """Episodes newest first: one per excursion, with the rule, parameters and model version that raised it."""
    with tenant_transaction(principal.tenant) as session:
        rows = queries.episodes(session, batch_id=query.batch_id, sensor_id=query.sensor_id, kind=query.kind,
                                open_only=bool(query.open), limit=query.limit)
        items = [EpisodeOut.model_validate(queries.episode_doc(r, tenant_slug=principal.tenant.slug)) for r in rows]
    return EpisodeList(items=items)
