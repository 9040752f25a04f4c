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
from tests.support_saas import live_server


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
    with live_server(app) as url:
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
