"""Sensor pages: live tiles and open alarms, trends, the episode review list, and gateway credentials."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import abort, g, jsonify, render_template, request
from flask_login import current_user

from app.api import services as api_services
from app.api.queries import oauth_clients
from app.core.errors import BatchlineError, ValidationError
from app.core.tenancy import control_session, tenant_transaction
from app.core.web import requires, tenant_blueprint
from app.plant.models import Sensor
from app.sensors import queries

bp = tenant_blueprint("sensors", __name__, template_folder="templates")

GATEWAY_SCOPES = ["ingest"]


def _equipment_arg() -> int | None:
    raw = request.args.get("equipment")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        abort(400, description="equipment must be an equipment id")
    return int(raw)


@bp.get("/sensors/")
@requires("plant.read")
def live() -> Any:
    """Live tiles of the sensors (optionally of one equipment) with their open alarms."""
    equipment_id = _equipment_arg()
    with tenant_transaction(g.tenant) as session:
        tiles = queries.tiles(session, equipment_id=equipment_id)
    return render_template("sensors/live.html", tiles=tiles, equipment_id=equipment_id)


@bp.get("/sensors/live.json")
@requires("plant.read")
def live_json() -> Any:
    """The tiles as JSON, polled by the live page (and by a step screen embedding `sensors/_tiles.html`)."""
    with tenant_transaction(g.tenant) as session:
        tiles = queries.tiles(session, equipment_id=_equipment_arg())
    return jsonify(tiles=tiles, at=datetime.now(UTC).isoformat())


def _window() -> tuple[datetime, datetime]:
    try:
        end = datetime.fromisoformat(request.args["end"]) if request.args.get("end") else datetime.now(UTC)
        start = (datetime.fromisoformat(request.args["start"]) if request.args.get("start")
                 else end - timedelta(minutes=30))
    except ValueError:
        abort(400, description="start and end must be RFC 3339 timestamps")
    if start.tzinfo is None or end.tzinfo is None or not start < end or (end - start).days > 400:
        abort(400, description="start and end need a UTC offset, end after start, at most 400 days apart")
    return start, end


@bp.get("/sensors/<int:sensor_id>/trend")
@requires("plant.read")
def trend(sensor_id: int) -> Any:
    """A sensor's trend (min/max band and mean) with its episodes in the window: the evidence of an alarm."""
    start, end = _window()
    with tenant_transaction(g.tenant) as session:
        sensor = session.get(Sensor, sensor_id)
        if sensor is None:
            abort(404)
        episodes = [queries.episode_doc(e, tenant_slug=g.tenant.slug)
                    for e in queries.episodes(session, sensor_id=sensor_id)
                    if e.start_ts < end and e.end_ts >= start]
        tag, unit = sensor.tag, sensor.unit
    return render_template("sensors/trend.html", sensor_id=sensor_id, tag=tag, unit=unit, start=start, end=end,
                           episodes=episodes)


@bp.get("/sensors/<int:sensor_id>/trend.json")
@requires("plant.read")
def trend_json(sensor_id: int) -> Any:
    """Downsampled buckets of a sensor over a window, for the trend chart."""
    start, end = _window()
    points = min(max(request.args.get("points", 600, type=int) or 600, 1), 5000)
    with tenant_transaction(g.tenant) as session:
        if session.get(Sensor, sensor_id) is None:
            abort(404)
        buckets = queries.trend(session, sensor_id=sensor_id, start=start, end=end, points=points)
    return jsonify(sensor_id=sensor_id, start=start.isoformat(), end=end.isoformat(), buckets=buckets)


@bp.get("/sensors/episodes")
@requires("batches.read")
def episodes() -> Any:
    """Review by exception: sensor episodes, newest first, open ones on top of the QA reviewer's list."""
    kind = request.args.get("kind") or None
    if kind not in (None, "process", "health", "multivariate"):
        abort(400, description="kind must be process, health or multivariate")
    batch = request.args.get("batch", type=int)
    with tenant_transaction(g.tenant) as session:
        rows = queries.episodes(session, kind=kind, batch_id=batch)
        items = [queries.episode_doc(r, tenant_slug=g.tenant.slug) for r in rows]
        tags = {s.id: s.tag for s in session.query(Sensor).filter(Sensor.id.in_({i["sensor_id"] for i in items}))}
    return render_template("sensors/episodes.html", items=items, tags=tags, kind=kind)


def _gateways_page(issued: dict[str, str] | None = None, error: str = "", status: int = 200) -> Any:
    with control_session() as session:
        gateways = [c for c in oauth_clients(session, tenant_id=g.tenant.id) if "ingest" in c["scopes"]]
    return render_template("sensors/gateways.html", gateways=gateways, issued=issued, error=error), status


@bp.get("/sensors/gateways")
@requires("settings.manage")
def gateways() -> Any:
    """Sensor gateways of the tenant: OAuth2 clients with the `ingest` scope."""
    return _gateways_page()


@bp.post("/sensors/gateways")
@requires("settings.manage")
def register_gateway() -> Any:
    """Register a gateway: an OAuth2 client id and secret (shown once) with scope `ingest`."""
    try:
        with control_session() as session:
            issued = api_services.create_oauth_client(session, tenant_id=g.tenant.id,
                                                      name=request.form.get("name", ""), scopes=GATEWAY_SCOPES,
                                                      created_by_user_id=current_user.id)
    except BatchlineError as exc:
        return _gateways_page(error=str(exc), status=exc.status_code)
    return _gateways_page(issued={"client_id": issued.client_id, "secret": issued.secret}, status=201)


def _own_gateway(session: Any, client_id: int) -> None:
    if not any(c["id"] == client_id and "ingest" in c["scopes"]
               for c in oauth_clients(session, tenant_id=g.tenant.id)):
        raise ValidationError("no such active gateway in this workspace")


@bp.post("/sensors/gateways/<int:client_id>/rotate")
@requires("settings.manage")
def rotate_gateway(client_id: int) -> Any:
    """Give a gateway a new secret; the old one and its tokens stop working at once."""
    try:
        with control_session() as session:
            _own_gateway(session, client_id)
            issued = api_services.rotate_oauth_client_secret(session, tenant_id=g.tenant.id, client_row_id=client_id)
    except BatchlineError as exc:
        return _gateways_page(error=str(exc), status=exc.status_code)
    return _gateways_page(issued={"client_id": issued.client_id, "secret": issued.secret})


@bp.post("/sensors/gateways/<int:client_id>/revoke")
@requires("settings.manage")
def revoke_gateway(client_id: int) -> Any:
    """Revoke a gateway and every token it holds."""
    try:
        with control_session() as session:
            _own_gateway(session, client_id)
            api_services.revoke_oauth_client(session, tenant_id=g.tenant.id, client_row_id=client_id)
    except BatchlineError as exc:
        return _gateways_page(error=str(exc), status=exc.status_code)
    return _gateways_page()
