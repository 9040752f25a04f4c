"""`batchline gateway ...` (protocol bridges), `batchline simulate` and `batchline sensors ...` commands."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from app.core.errors import BatchlineError
from app.core.tenancy import TenantRef, control_session, tenant_ref, tenant_transaction
from app.sensors.gateway import IngestClient

SIMULATOR_GATEWAY = "batchline simulate"


def _ingest_client(url: str, client_id: str, secret: str) -> IngestClient:
    if not client_id or not secret:
        raise click.UsageError("give the gateway's --client-id and --secret (or BATCHLINE_GATEWAY_CLIENT_ID / "
                               "BATCHLINE_GATEWAY_SECRET)")
    return IngestClient(url.rstrip("/"), client_id, secret)


def _gateway_options(fn: Any) -> Any:
    fn = click.option("--url", default="http://127.0.0.1:8000", show_default=True,
                      help="Base URL of Batchline (the ingest API).")(fn)
    fn = click.option("--client-id", envvar="BATCHLINE_GATEWAY_CLIENT_ID", default="",
                      help="Gateway OAuth2 client id (Sensors > Gateways).")(fn)
    return click.option("--secret", envvar="BATCHLINE_GATEWAY_SECRET", default="",
                        help="Gateway client secret (prefer the environment variable).")(fn)


@click.group("gateway")
def gateway_group() -> None:
    """Protocol bridges that forward plant readings to the ingest API."""


@gateway_group.command("mqtt")
@_gateway_options
@click.option("--broker", default="127.0.0.1:1883", show_default=True, help="MQTT broker host:port.")
@click.option("--topic", "topics", multiple=True, required=True, help="Topic pattern to subscribe (repeatable).")
@click.option("--tag-level", type=int, default=None, help="Topic level holding the sensor tag (0-based).")
@click.option("--map", "mapping", multiple=True, help="TOPIC=TAG for topics without the tag in them.")
@click.option("--name", default="batchline-mqtt", show_default=True, help="MQTT client id / persistent session.")
@click.option("--flush", "flush_s", default=1.0, show_default=True, help="Seconds between forwards.")
def gateway_mqtt(url: str, client_id: str, secret: str, broker: str, topics: tuple[str, ...], tag_level: int | None,
                 mapping: tuple[str, ...], name: str, flush_s: float) -> None:
    """Subscribe to MQTT topics and forward them as readings (QoS 1, acknowledged after the API accepted)."""
    from app.sensors.bridges.mqtt import MqttBridge, MqttBridgeConfig

    host, _, port = broker.partition(":")
    tag_map = dict(item.split("=", 1) for item in mapping)
    if tag_level is None and not tag_map:
        raise click.UsageError("say how topics map to tags: --tag-level N or --map TOPIC=TAG")
    bridge = MqttBridge(MqttBridgeConfig(host=host, port=int(port or 1883), topics=list(topics), tag_level=tag_level,
                                         tag_map=tag_map, name=name, flush_s=flush_s),
                        _ingest_client(url, client_id, secret))
    signal.signal(signal.SIGTERM, lambda *_: bridge.stop())
    click.echo(f"forwarding {', '.join(topics)} from {broker} to {url}")
    try:
        bridge.run()
    except KeyboardInterrupt:
        bridge.stop()
    click.echo(json.dumps({"received": bridge.stats.received, "forwarded": bridge.stats.forwarded,
                           "refused": bridge.stats.refused}))


@gateway_group.command("opcua")
@_gateway_options
@click.option("--endpoint", required=True, help="OPC UA server, e.g. opc.tcp://plc:4840/")
@click.option("--node", "nodes", multiple=True, required=True, help="NODEID=TAG, e.g. 'ns=2;s=TT101=TT-101'.")
@click.option("--mode", type=click.Choice(["subscribe", "poll"]), default="subscribe", show_default=True)
@click.option("--period", "period_s", default=1.0, show_default=True, help="Sampling/publishing period (s).")
def gateway_opcua(url: str, client_id: str, secret: str, endpoint: str, nodes: tuple[str, ...], mode: str,
                  period_s: float) -> None:
    """Subscribe to (or poll) OPC UA nodes and forward their values with source time and status."""
    from app.sensors.bridges.opcua import OpcUaBridge, OpcUaBridgeConfig

    mapping = {}
    for item in nodes:
        node, sep, tag = item.rpartition("=")
        if not sep or not node or not tag:
            raise click.UsageError(f"--node {item!r} must be NODEID=TAG")
        mapping[node] = tag
    bridge = OpcUaBridge(OpcUaBridgeConfig(endpoint=endpoint, nodes=mapping, mode=mode, period_s=period_s),
                         _ingest_client(url, client_id, secret))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, bridge.stop)
        loop.add_signal_handler(signal.SIGINT, bridge.stop)
        await bridge.run()

    click.echo(f"forwarding {len(mapping)} nodes of {endpoint} to {url} ({mode})")
    asyncio.run(main())
    click.echo(json.dumps({"received": bridge.stats.received, "forwarded": bridge.stats.forwarded}))


def _tenant(slug: str) -> TenantRef:
    from app.tenancy.queries import tenant_by_slug

    db = current_app.extensions["batchline.db"]
    tenant = tenant_by_slug(db, slug)
    if tenant is None:
        raise click.UsageError(f"no tenant {slug!r}")
    return tenant_ref(tenant.id, db=db, slug=tenant.slug)


def simulator_credentials(ref: TenantRef) -> tuple[str, str]:
    """Return (client id, a fresh secret) of the tenant's simulator gateway, registering it the first time."""
    from app.api import services as api_services
    from app.api.models import OAuthClient

    with control_session() as session:
        row = session.scalar(select(OAuthClient).where(OAuthClient.tenant_id == ref.id,
                                                       OAuthClient.name == SIMULATOR_GATEWAY,
                                                       OAuthClient.revoked_at.is_(None)))
        if row is None:
            issued = api_services.create_oauth_client(session, tenant_id=ref.id, name=SIMULATOR_GATEWAY,
                                                      scopes=["ingest"], created_by_user_id=None)
        else:
            issued = api_services.rotate_oauth_client_secret(session, tenant_id=ref.id, client_row_id=row.id)
    return issued.client_id, issued.secret


@click.command("simulate")
@click.option("--tenant", "slug", required=True)
@click.option("--batch", "batch_id", type=int, default=None, help="Simulate the equipment this batch runs on.")
@click.option("--equipment", "equipment_id", type=int, default=None, help="Simulate this equipment's sensors.")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Base URL of Batchline.")
@click.option("--backfill", default=1200, show_default=True,
              help="Samples posted at once, timestamped in the past (the in-control baseline).")
@click.option("--samples", default=600, show_default=True, help="Samples after the backfill.")
@click.option("--period", "period_s", default=1.0, show_default=True, help="Seconds between samples.")
@click.option("--realtime/--fast", default=True, show_default=True,
              help="Post the samples after the backfill as their time comes, or all at once.")
@click.option("--fault", "faults", multiple=True,
              help="kind:TAG[:sigmas]@sample[:length]; sample counts from the first backfilled sample.")
@click.option("--chunk", default=200, show_default=True, help="Samples per POST while back-filling.")
@click.option("--seed", default=0, show_default=True)
@click.option("--arl0", type=float, default=None,
              help="Once the backfill is stored, fit each sensor's baseline on it, designed for this in-control ARL.")
@with_appcontext
def simulate(slug: str, batch_id: int | None, equipment_id: int | None, url: str, backfill: int, samples: int,
             period_s: float, realtime: bool, faults: tuple[str, ...], chunk: int, seed: int,
             arl0: float | None) -> None:
    """Post a realistic bioreactor stream for a batch's (or an equipment's) sensors through the real API."""
    from app.plant.models import Sensor
    from app.sensors import simulate as sim
    from app.sensors.batch_link import equipment_of_batch, running_step_at

    ref = _tenant(slug)
    with tenant_transaction(ref) as session:
        if batch_id is not None:
            equipment = equipment_of_batch(session, batch_id)
            if not equipment:
                raise click.UsageError(f"batch {batch_id} runs on no known equipment (is the batches area "
                                       "installed?); use --equipment")
            equipment_id = equipment[0]
        if equipment_id is None:
            raise click.UsageError("give --batch or --equipment")
        sensors = session.scalars(select(Sensor).where(Sensor.equipment_id == equipment_id)
                                  .order_by(Sensor.tag)).all()
        if not sensors:
            raise click.UsageError(f"equipment {equipment_id} has no sensors")
        step = running_step_at(session, equipment_id, datetime.now(UTC))
        signals = []
        for sensor in sensors:
            limit = step.limits.get(sensor.quantity_kind) if step else None
            signals.append(sim.signal_for(sensor.quantity_kind, sensor.tag,
                                          target=limit.target if limit else None))
    try:
        planted = [sim.Fault.parse(text) for text in faults]
        now = datetime.now(UTC).replace(microsecond=0)
        stream = sim.iter_samples(signals, n=backfill + samples,
                                  start=now - timedelta(seconds=backfill * period_s), period_s=period_s, seed=seed,
                                  faults=planted)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    client_id, secret = simulator_credentials(ref)
    client = IngestClient(url.rstrip("/"), client_id, secret)
    posted = 0
    try:
        for i in range(0, backfill, chunk):
            batch = [r for sample in itertools.islice(stream, min(chunk, backfill - i)) for r in sample]
            doc = client.post(batch)
            posted += len(batch)
            click.echo(f"backfill: ingest {doc['id']} ({len(batch)} readings)")
        if arl0 is not None and backfill:
            _fit_baselines(ref, client, doc["id"], [s.tag for s in signals], now, backfill, period_s, arl0,
                           [f for f in planted if f.start < backfill])
        if not realtime:
            while batch := [r for sample in itertools.islice(stream, chunk) for r in sample]:
                doc = client.post(batch)
                posted += len(batch)
        else:
            for sample in stream:
                if not sample:
                    continue
                wait = (sample[0].ts - datetime.now(UTC)).total_seconds()
                if wait > 0:
                    time.sleep(wait)
                doc = client.post(sample)
                posted += len(sample)
    except KeyboardInterrupt:
        pass
    except BatchlineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(json.dumps({"tenant": slug, "equipment": equipment_id, "sensors": [s.tag for s in signals],
                           "readings_posted": posted, "faults": faults}))


def _fit_baselines(ref: TenantRef, client: IngestClient, last_ingest: int, tags: list[str], now: datetime,
                   backfill: int, period_s: float, arl0: float, early_faults: list[Any]) -> None:
    """Wait until the backfill is stored, then fit every simulated sensor's baseline on it."""
    from app.plant.models import Sensor
    from app.sensors.services import fit_baseline

    if early_faults:
        raise click.UsageError("--arl0 fits the baselines on the backfill: plant faults after it")
    deadline = time.monotonic() + 300
    while client.status(last_ingest)["status"] == "queued":
        if time.monotonic() > deadline:
            raise click.ClickException("the backfill was not processed within 5 minutes: is a worker running?")
        time.sleep(0.5)
    start = now - timedelta(seconds=backfill * period_s)
    with tenant_transaction(ref) as session:
        sensor_ids = sorted(session.scalars(select(Sensor.id).where(Sensor.tag.in_(tags))))
    for sensor_id in sensor_ids:  # one short transaction each, in id order like the analysis job's locks
        with tenant_transaction(ref) as session:
            fit_baseline(session, sensor_id=sensor_id, start=start, end=now, arl0=arl0)
    click.echo(f"baselines fitted on the backfill for ARL0 {arl0:g}")


@click.group("sensors")
def sensors_group() -> None:
    """Sensor data: partitions, baselines, PCA models."""


@sensors_group.command("partitions")
@click.option("--months", default=3, show_default=True, help="Months ahead to create.")
@with_appcontext
def partitions(months: int) -> None:
    """Create this month's and the next months' readings partitions in every tenant."""
    from app.sensors.jobs import ensure_partitions_ahead
    from app.tenancy.queries import active_tenant_refs

    for ref in active_tenant_refs(current_app._get_current_object()):  # type: ignore[attr-defined]
        with tenant_transaction(ref) as session:
            made = ensure_partitions_ahead(session, months=months)
        click.echo(f"{ref.slug}: {', '.join(made['partitions'])}")


def _when(text: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an RFC 3339 timestamp") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


@sensors_group.command("baseline")
@click.option("--tenant", "slug", required=True)
@click.option("--sensor", "tag", required=True, help="Sensor tag.")
@click.option("--start", required=True, help="Start of the in-control reference window (RFC 3339).")
@click.option("--end", required=True, help="End of the window.")
@click.option("--arl0", default=370.0, show_default=True, help="In-control average run length to design for.")
@click.option("--nelson", default="", help="Nelson rules to enable, e.g. 1,2,5 (each shortens the ARL0).")
@with_appcontext
def baseline(slug: str, tag: str, start: str, end: str, arl0: float, nelson: str) -> None:
    """Fit a sensor's in-control model on a qualified window and restart its charts under it."""
    from app.plant.models import Sensor
    from app.sensors.services import fit_baseline

    rules = [int(r) for r in nelson.split(",") if r.strip()]
    with tenant_transaction(_tenant(slug)) as session:
        sensor = session.scalar(select(Sensor).where(Sensor.tag == tag))
        if sensor is None:
            raise click.UsageError(f"no sensor {tag!r}")
        try:
            doc = fit_baseline(session, sensor_id=sensor.id, start=_when(start), end=_when(end), arl0=arl0,
                               nelson=rules)
        except BatchlineError as exc:
            raise click.UsageError(str(exc)) from None
    click.echo(json.dumps(doc))


@sensors_group.command("train-pca")
@click.option("--tenant", "slug", required=True)
@click.option("--equipment", "equipment_id", type=int, required=True)
@click.option("--start", required=True, help="Start of the reference window (RFC 3339).")
@click.option("--end", required=True, help="End of the window.")
@click.option("--bucket", "bucket_s", default=60, show_default=True, help="Seconds per aligned sample.")
@click.option("--phase", default="", help="Phase key the model applies to (empty: all).")
@with_appcontext
def train_pca(slug: str, equipment_id: int, start: str, end: str, bucket_s: int, phase: str) -> None:
    """Fit a PCA (T² / SPE) monitor on an equipment's reference readings; new readings are scored against it."""
    from app.sensors.multivariate import PcaMonitor
    from app.sensors.services import train_pca_model

    with tenant_transaction(_tenant(slug)) as session:
        try:
            model = train_pca_model(session, equipment_id=equipment_id, start=_when(start), end=_when(end),
                                    bucket_s=bucket_s, phase=phase)
        except BatchlineError as exc:
            raise click.UsageError(str(exc)) from None
        monitor = PcaMonitor.from_dict(model.document)
        click.echo(json.dumps({"id": model.id, "model_version": model.model_version,
                               "components": monitor.n_components, "variables": model.sensor_ids}))
