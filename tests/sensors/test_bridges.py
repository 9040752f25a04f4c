"""Protocol bridges end to end: a real MQTT broker and a real OPC UA server, the real ingest API over HTTP."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta

import paho.mqtt.client as mqtt
from sqlalchemy import select

from app.core.tenancy import tenant_transaction
from app.sensors.bridges.mqtt import MqttBridge, MqttBridgeConfig
from app.sensors.gateway import IngestClient
from app.sensors.models import SensorIngest, SensorReading
from tests.sensors.conftest import T0, burst
from tests.support import serve


def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_mqtt_bridge_forwards_topics_as_readings(app, make_plant, gateway_for) -> None:
    plant = make_plant()
    creds = gateway_for(plant)
    prefix = f"bl-test/{uuid.uuid4().hex[:8]}"
    config = MqttBridgeConfig(host="127.0.0.1", topics=[f"{prefix}/#"], tag_level=2,
                              name=f"bl-test-{uuid.uuid4().hex[:8]}", flush_s=0.2, batch_size=25)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    publisher.connect("127.0.0.1", 1883)
    publisher.loop_start()
    with serve(app) as url:
        bridge = MqttBridge(config, IngestClient(url, creds.client_id, creds.secret))
        runner = threading.Thread(target=bridge.run, daemon=True)
        runner.start()
        try:
            assert bridge.connected.wait(10), "bridge did not connect to the broker"
            sent = []
            for i in range(40):
                ts = (T0 + timedelta(seconds=i)).isoformat()
                sent.append(publisher.publish(f"{prefix}/{plant.tag('TT')}",
                                              json.dumps({"value": 37.0 + i / 100, "ts": ts}), qos=1))
            sent.append(publisher.publish(f"{prefix}/{plant.tag('PH')}",
                                          json.dumps({"value": 7.0, "ts": T0.isoformat(), "quality": "uncertain"}),
                                          qos=1))
            sent.append(publisher.publish(f"{prefix}/{plant.tag('DO')}", b"41.5", qos=1))  # bare number: now
            sent.append(publisher.publish(f"{prefix}/GHOST-1", json.dumps({"value": 1, "ts": T0.isoformat()}),
                                          qos=1))
            sent.append(publisher.publish(f"{prefix}/{plant.tag('PT')}", b"not a number", qos=1))
            for info in sent:
                info.wait_for_publish(10)
            _wait(lambda: bridge.stats.received == 44)
        finally:
            bridge.stop()
            runner.join(30)
            publisher.loop_stop()
            publisher.disconnect()
    assert bridge.stats.refused == 1 and bridge.stats.forwarded == 43
    burst()
    with tenant_transaction(plant.ref) as session:
        counts = {sid: n for sid, n in session.execute(
            select(SensorReading.sensor_id, SensorReading.quality)).all()}
        tt = session.scalars(select(SensorReading.value).where(SensorReading.sensor_id == plant.sensors["TT"])
                             .order_by(SensorReading.ts)).all()
        ingests = session.scalars(select(SensorIngest).where(SensorIngest.id.in_(bridge.stats.ingest_ids))).all()
    assert len(tt) == 40 and tt[0] == 37.0 and tt[-1] == 37.39
    assert counts[plant.sensors["PH"]] == 1  # uncertain quality kept as a flag
    assert plant.sensors["DO"] in counts
    assert sum(i.readings_rejected for i in ingests) == 1  # the unknown tag, reported by the server
    assert all(i.source.startswith("client:") and i.message_id.startswith("mqtt-") for i in ingests)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _opcua_scenario(url: str, creds, plant, mode: str):
    """Serve three variables on a real asyncua server; write good, uncertain and bad values with source times."""
    import asyncio

    from asyncua import Server, ua

    from app.sensors.bridges.opcua import OpcUaBridge, OpcUaBridgeConfig

    server = Server()
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{_free_port()}/batchline-test/"
    server.set_endpoint(endpoint)
    idx = await server.register_namespace("urn:batchline:test")
    reactor = await server.nodes.objects.add_object(idx, "BR")
    variables = {}
    for short, start in (("TT", 37.0), ("PH", 7.0), ("DO", 40.0)):
        variables[short] = await reactor.add_variable(ua.NodeId(plant.tag(short), idx), short, start)
    async with server:
        config = OpcUaBridgeConfig(endpoint=endpoint, mode=mode, period_s=0.1, flush_s=0.2, name="test",
                                   nodes={variables[s].nodeid.to_string(): plant.tag(s) for s in variables})
        bridge = OpcUaBridge(config, IngestClient(url, creds.client_id, creds.secret))
        task = asyncio.create_task(bridge.run())
        await asyncio.wait_for(bridge.ready.wait(), 10)

        async def write(short: str, value, status: int, seconds: int) -> None:
            variant = ua.Variant(value, ua.VariantType.Double) if value is not None else ua.Variant()
            await variables[short].write_value(ua.DataValue(
                variant, StatusCode=ua.StatusCode(status), SourceTimestamp=T0 + timedelta(seconds=seconds)))
            await asyncio.sleep(0.3)  # one sample per notification or poll

        await write("TT", 37.5, ua.StatusCodes.Good, 10)
        await write("PH", 7.2, ua.StatusCodes.UncertainLastUsableValue, 11)
        await write("DO", 41.0, ua.StatusCodes.BadSensorFailure, 12)
        await write("TT", None, ua.StatusCodes.BadNoCommunication, 13)
        await asyncio.sleep(0.5)
        bridge.stop()
        await asyncio.wait_for(task, 30)
    return bridge


def _check_opcua(plant, bridge) -> None:
    burst()
    with tenant_transaction(plant.ref) as session:
        rows = session.execute(select(SensorReading.sensor_id, SensorReading.ts, SensorReading.value,
                                      SensorReading.quality)).all()
    by_source_time = {(r.sensor_id, r.ts): (r.value, r.quality) for r in rows}
    # The server's source timestamps and status codes are kept: Uncertain and Bad are quality flags.
    assert by_source_time[(plant.sensors["TT"], T0 + timedelta(seconds=10))] == (37.5, 0)
    assert by_source_time[(plant.sensors["PH"], T0 + timedelta(seconds=11))] == (7.2, 1)
    # The server drops the number of a Bad value: the flag is kept, no number is invented.
    assert by_source_time[(plant.sensors["DO"], T0 + timedelta(seconds=12))] == (None, 2)
    assert by_source_time[(plant.sensors["TT"], T0 + timedelta(seconds=13))] == (None, 2)


def test_opcua_bridge_subscribes_and_keeps_source_time_and_status(app, make_plant, gateway_for) -> None:
    import asyncio

    plant = make_plant()
    creds = gateway_for(plant)
    with serve(app) as url:
        bridge = asyncio.run(_opcua_scenario(url, creds, plant, "subscribe"))
    _check_opcua(plant, bridge)


def test_opcua_bridge_polls(app, make_plant, gateway_for) -> None:
    import asyncio

    plant = make_plant()
    creds = gateway_for(plant)
    with serve(app) as url:
        bridge = asyncio.run(_opcua_scenario(url, creds, plant, "poll"))
    _check_opcua(plant, bridge)
