"""Fixtures of the sensor path: a tenant with a bioreactor and its sensors, and a real RQ worker in burst mode."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import current_app
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import func, select

from app.core.jobs import QUEUES, OutboxMessage, redis_connection, relay_tenant
from app.core.tenancy import TenantRef, tenant_transaction
from app.plant import services as plant
from app.tenancy.services import ProvisionedTenant
from tests.factories import make_equipment, make_line

#: quantity kind, unit, range, sampling period of the bioreactor's sensors
BIOREACTOR_SENSORS = {
    "TT": ("temperature", "°C", 0, 60),
    "PH": ("pH", "pH", 0, 14),
    "DO": ("dissolved oxygen", "%", 0, 200),
    "PT": ("pressure", "bar", 0, 5),
}


@dataclass
class Plant:
    """A tenant with one bioreactor and its sensors (tag -> id)."""

    tenant: ProvisionedTenant
    equipment_id: int
    sensors: dict[str, int] = field(default_factory=dict)

    @property
    def ref(self) -> TenantRef:
        return self.tenant.ref

    def tag(self, short: str) -> str:
        return f"{short}-{self.equipment_id}"


@pytest.fixture
def make_plant(make_tenant) -> Callable[..., Plant]:
    """Factory: a tenant with a bioreactor carrying TT, PH, DO and PT sensors sampled every `period` seconds."""

    def make(period: float = 1.0) -> Plant:
        tenant = make_tenant()
        with tenant_transaction(tenant.ref) as session:
            equipment = make_equipment(session, make_line(session))
            made = Plant(tenant, equipment.id)
            for short, (kind, unit, low, high) in BIOREACTOR_SENSORS.items():
                sensor = plant.create_sensor(session, tag=f"{short}-{equipment.id}", equipment_id=equipment.id,
                                             quantity_kind=kind, unit=unit, range_low=low, range_high=high,
                                             sampling_period_s=period)
                made.sensors[short] = sensor.id
        return made

    return make


def burst(conn: redis.Redis | None = None) -> None:
    """Run every queued job (and the jobs they queue) in this process, as a real RQ worker does."""
    SimpleWorker(list(QUEUES), connection=conn or redis_connection(),
                 serializer=JSONSerializer).work(burst=True)


def settle(ref: TenantRef, *, timeout_s: float = 60.0) -> None:
    """Run the tenant's jobs until none is unfinished, as the relay and a worker with a scheduler would.

    On a loaded machine a push to Redis can time out after the commit (the row waits for the relay) and a job
    can fail once and wait for its retry: a single `burst()` then returns with work left. This relays what
    waits, runs what is queued or due, and stops when every outbox row of the tenant is finished.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout_s
    while True:
        relay_tenant(app, ref, min_age_s=0, lost_after_s=0)
        SimpleWorker(list(QUEUES), connection=redis_connection(),
                     serializer=JSONSerializer).work(burst=True, with_scheduler=True)
        with tenant_transaction(ref) as session:
            waiting = session.scalar(select(func.count()).select_from(OutboxMessage)
                                     .where(OutboxMessage.finished_at.is_(None)))
        if not waiting:
            return
        assert time.monotonic() < deadline, f"{waiting} jobs of tenant {ref.slug} still unfinished after {timeout_s}s"
        time.sleep(0.5)


T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def readings_json(tag: str, values: list[float], *, start: datetime = T0, period_s: float = 1.0,
                  message_id: str | None = None, quality: list[str] | None = None) -> bytes:
    """A JSON ingest payload of one sensor's readings at a fixed period."""
    readings: list[dict[str, Any]] = []
    for i, value in enumerate(values):
        item: dict[str, Any] = {"sensor": tag, "ts": (start + timedelta(seconds=i * period_s)).isoformat(),
                                "value": value}
        if quality is not None:
            item["quality"] = quality[i]
        readings.append(item)
    doc: dict[str, Any] = {"readings": readings}
    if message_id:
        doc["message_id"] = message_id
    return json.dumps(doc).encode()


@dataclass(frozen=True)
class GatewayCredentials:
    """An OAuth2 client with the `ingest` scope, as a tenant admin registers it."""

    client_id: str
    secret: str


@pytest.fixture
def gateway_for() -> Callable[[Plant], GatewayCredentials]:
    """Factory: register a gateway (OAuth2 client, scope `ingest`) for a plant's tenant."""
    from app.api import services as api_services
    from app.core.tenancy import control_session

    def make(plant: Plant) -> GatewayCredentials:
        with control_session() as session:
            issued = api_services.create_oauth_client(session, tenant_id=plant.ref.id, name="test gateway",
                                                      scopes=["ingest"], created_by_user_id=None)
        return GatewayCredentials(issued.client_id, issued.secret)

    return make
