"""MQTT bridge: subscribe to topic patterns on a broker, map topics to sensor tags, forward in batches.

Messages are subscribed with QoS 1 on a persistent session and acknowledged to the broker (manual acks) only
after the ingest API acknowledged the batch that carries them: if the bridge dies in between, the broker
redelivers them, and the batch's message id makes a repeated post count once.

A message payload is either JSON `{"value": 37.1, "ts": "<RFC 3339>", "quality": "good|uncertain|bad"}`
(`ts` and `quality` optional) or a bare number; without `ts` the bridge's receive time is used.
The tag is a topic level (`tag_level`, e.g. 2 for `plant/suite2/TT-101`) or an explicit `tag_map`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt

from app.sensors.gateway import IngestClient, Reading
from app.sensors.payloads import QUALITIES, parse_timestamp

log = logging.getLogger(__name__)


@dataclass
class MqttBridgeConfig:
    """Where to subscribe and how topics become sensor tags."""

    host: str
    topics: list[str]
    port: int = 1883
    tag_level: int | None = None
    tag_map: dict[str, str] = field(default_factory=dict)
    #: MQTT client id; also names the persistent session the broker keeps for the bridge.
    name: str = "batchline-bridge"
    batch_size: int = 500
    flush_s: float = 1.0
    username: str | None = None
    password: str | None = None


@dataclass
class BridgeStats:
    """What the bridge did so far."""

    received: int = 0
    forwarded: int = 0
    batches: int = 0
    refused: int = 0
    ingest_ids: list[int] = field(default_factory=list)


def parse_message(topic: str, payload: bytes, config: MqttBridgeConfig) -> Reading | str:
    """Turn one MQTT message into a Reading, or return why it cannot be one."""
    tag = config.tag_map.get(topic)
    if tag is None and config.tag_level is not None:
        levels = topic.split("/")
        tag = levels[config.tag_level] if len(levels) > config.tag_level else None
    if not tag:
        return f"topic {topic!r} maps to no sensor tag"
    try:
        doc: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"payload on {topic!r} is neither JSON nor a number"
    if isinstance(doc, int | float) and not isinstance(doc, bool):
        doc = {"value": doc}
    if not isinstance(doc, dict) or isinstance(doc.get("value"), bool) or \
            (not isinstance(doc.get("value"), int | float) and not (doc.get("value") is None and
                                                                   doc.get("quality") == "bad")):
        return f"payload on {topic!r} has no numeric value"
    stamp = parse_timestamp(doc["ts"]) if "ts" in doc else datetime.now(UTC)
    if stamp is None:
        return f"payload on {topic!r} has a ts that is not RFC 3339 with an offset"
    quality = str(doc.get("quality") or "good").lower()
    if quality not in QUALITIES:
        return f"payload on {topic!r} has an unknown quality {quality!r}"
    value = doc.get("value")
    return Reading(sensor=tag, ts=stamp, value=None if value is None else float(value), quality=quality)


class MqttBridge:
    """Subscribe, batch and forward; `run()` blocks until `stop()`."""

    def __init__(self, config: MqttBridgeConfig, ingest: IngestClient) -> None:
        self.config, self.ingest, self.stats = config, ingest, BridgeStats()
        self._pending: list[tuple[Reading | None, int]] = []  # (reading or None if refused, mid)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.name, clean_session=False)
        self.client.manual_ack_set(True)
        if config.username:
            self.client.username_pw_set(config.username, config.password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connection refused: %s", reason)
            return
        client.subscribe([(topic, 1) for topic in self.config.topics])

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: Any, _props: Any) -> None:
        if any(reason.is_failure for reason in reasons):
            log.error("MQTT subscription refused: %s", reasons)
            return
        self.connected.set()  # only now does the broker route messages to us

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        parsed = parse_message(message.topic, message.payload, self.config)
        with self._lock:
            self.stats.received += 1
            if isinstance(parsed, str):
                self.stats.refused += 1
                log.warning("MQTT message refused: %s", parsed)
                self._pending.append((None, message.mid))
            else:
                self._pending.append((parsed, message.mid))

    def flush(self) -> None:
        """Forward what is pending (blocking until acknowledged), then acknowledge it to the broker."""
        with self._lock:
            batch, self._pending = self._pending[: self.config.batch_size], self._pending[self.config.batch_size:]
        readings = [reading for reading, _ in batch if reading is not None]
        if readings:
            doc = self.ingest.post(readings, message_id=f"mqtt-{self.config.name}-{uuid.uuid4().hex}")
            self.stats.forwarded += len(readings)
            self.stats.batches += 1
            self.stats.ingest_ids.append(int(doc["id"]))
        for _, mid in batch:
            self.client.ack(mid, 1)

    def run(self) -> None:
        """Connect and forward until stopped."""
        self.client.connect(self.config.host, self.config.port, keepalive=30)
        self.client.loop_start()
        try:
            last = time.monotonic()
            while not self._stop.is_set():
                self._stop.wait(0.05)
                with self._lock:
                    due = len(self._pending) >= self.config.batch_size or (
                        self._pending and time.monotonic() - last >= self.config.flush_s)
                if due:
                    self.flush()
                    last = time.monotonic()
            while self._pending:
                self.flush()
        finally:
            self.client.loop_stop()
            self.client.disconnect()

    def stop(self) -> None:
        """Ask `run()` to flush what it holds and return."""
        self._stop.set()
