"""OPC UA bridge: subscribe to (or poll) configured node ids and forward their values as readings.

The reading's time is the server's *source* timestamp (when the device measured it), not the bridge's clock,
and the OPC UA StatusCode becomes the reading's quality by its severity bits: Good -> good, Uncertain ->
uncertain, Bad -> bad. Quality is a flag next to the value, never the value itself: the analysis job treats
uncertain/bad readings as a sensor-health matter. A Bad value that carries no number at all cannot be a
reading value: it is forwarded as a bad-quality reading with no value (a flag, never an invented number).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from asyncua import Client, ua

from app.sensors.detection import opcua_quality
from app.sensors.gateway import IngestClient, Reading
from app.sensors.payloads import QUALITY_NAMES

log = logging.getLogger(__name__)


@dataclass
class OpcUaBridgeConfig:
    """Which server, which nodes (node id -> sensor tag), and how to collect them."""

    endpoint: str
    nodes: dict[str, str]
    #: "subscribe" (data-change notifications) or "poll" (read every `period_s`).
    mode: str = "subscribe"
    period_s: float = 1.0
    flush_s: float = 1.0
    batch_size: int = 500
    name: str = "opcua-bridge"


@dataclass
class OpcUaStats:
    """What the bridge did so far."""

    received: int = 0
    forwarded: int = 0
    skipped: int = 0
    ingest_ids: list[int] = field(default_factory=list)


def to_reading(tag: str, value: ua.DataValue) -> Reading | None:
    """Turn an OPC UA DataValue into a Reading (source time, quality from the status), or None without a number."""
    number = value.Value.Value if value.Value is not None else None
    status = value.StatusCode.value if value.StatusCode is not None else 0
    quality = QUALITY_NAMES[int(opcua_quality(np.array([status]))[0])]
    if isinstance(number, bool) or not isinstance(number, int | float):
        if quality != "bad":
            return None
        number = None  # servers drop the value of a Bad DataValue: keep the flag, invent no number
    stamp = value.SourceTimestamp or value.ServerTimestamp or datetime.now(UTC)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)  # OPC UA DateTime is UTC
    return Reading(sensor=tag, ts=stamp, value=None if number is None else float(number), quality=quality)


class _Handler:
    def __init__(self, bridge: OpcUaBridge) -> None:
        self.bridge = bridge

    def datachange_notification(self, node: Any, _value: Any, data: Any) -> None:
        self.bridge.collect(node.nodeid.to_string(), data.monitored_item.Value)


class OpcUaBridge:
    """Collect node values and forward them in batches through the ingest API."""

    def __init__(self, config: OpcUaBridgeConfig, ingest: IngestClient) -> None:
        self.config, self.ingest, self.stats = config, ingest, OpcUaStats()
        self.pending: list[Reading] = []
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._tags = {ua.NodeId.from_string(node).to_string(): tag for node, tag in config.nodes.items()}

    def collect(self, node_id: str, value: ua.DataValue) -> None:
        """Queue one DataValue of a node."""
        self.stats.received += 1
        reading = to_reading(self._tags[node_id], value)
        if reading is None:
            self.stats.skipped += 1
            log.warning("OPC UA node %s sent no numeric value (status %s)", node_id, value.StatusCode)
            return
        self.pending.append(reading)

    async def flush(self) -> None:
        """Forward what is pending; returns once the ingest API acknowledged it."""
        while self.pending:
            batch, self.pending = self.pending[: self.config.batch_size], self.pending[self.config.batch_size:]
            message_id = f"opcua-{self.config.name}-{uuid.uuid4().hex}"
            doc = await asyncio.to_thread(self.ingest.post, batch, message_id=message_id)
            self.stats.forwarded += len(batch)
            self.stats.ingest_ids.append(int(doc["id"]))

    async def run(self) -> None:
        """Connect, collect and forward until `stop()`."""
        async with Client(self.config.endpoint) as client:
            nodes = [client.get_node(node_id) for node_id in self.config.nodes]
            if self.config.mode == "subscribe":
                subscription = await client.create_subscription(int(self.config.period_s * 1000), _Handler(self))
                await subscription.subscribe_data_change(nodes)
            elif self.config.mode != "poll":
                raise ValueError("mode must be 'subscribe' or 'poll'")
            self.ready.set()
            while not self._stop.is_set():
                if self.config.mode == "poll":
                    for node in nodes:
                        value = await node.read_data_value(raise_on_bad_status=False)
                        self.collect(node.nodeid.to_string(), value)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=min(self.config.flush_s, self.config.period_s))
                await self.flush()
            await self.flush()

    def stop(self) -> None:
        """Ask `run()` to flush and return."""
        self._stop.set()
