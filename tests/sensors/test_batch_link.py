"""The sensor path against the real batch record: readings attach to the step in force, its limits are checked,
and the step's tablet screen shows the equipment's live tiles."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select, text

from app.core.tenancy import tenant_transaction
from app.plant import services as plant
from app.sensors import services
from app.sensors.batch_link import equipment_of_batch, running_step_at
from app.sensors.models import SensorEpisode, SensorReading
from tests.batches.conftest import make_floor  # noqa: F401  (the batches area's factory fixture)
from tests.conftest import sign_in
from tests.sensors.conftest import burst, readings_json


def test_readings_attach_to_the_real_step_in_force_and_its_recipe_limits_raise_an_episode(
        app, client, make_floor) -> None:  # noqa: F811
    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.do_charge(batch_id)  # the charge step (parameter temp: alarm 36.5-37.5, hard 36-38 degC) is in force
    with floor.tx() as s:
        tt = plant.create_sensor(s, tag=f"TT-{floor.reactor_id}", equipment_id=floor.reactor_id,
                                 quantity_kind="temperature", unit="°C", range_low=0, range_high=60,
                                 sampling_period_s=1).id
        start = s.execute(text("SELECT now()")).scalar_one() + timedelta(seconds=1)
        charge = floor.step(batch_id, "charge")
        assert running_step_at(s, floor.reactor_id, start).step_id == charge.id
        assert running_step_at(s, floor.reactor_id, start).limits["temperature"].alarm_high == 37.5
        assert equipment_of_batch(s, batch_id) == [floor.reactor_id]
    wobble = [0.0, 0.01, -0.01, 0.02, -0.02]
    values = ([37.0 + wobble[i % 5] for i in range(20)] + [37.8 + wobble[i % 5] for i in range(15)]
              + [37.0 + wobble[i % 5] for i in range(20)])  # 15 s above the alarm limit, inside the hard one
    with tenant_transaction(floor.tenant.ref) as s:
        services.accept_payload(s, body=readings_json(f"TT-{floor.reactor_id}", values, start=start), kind="json",
                                source="t", max_bytes=10**7)
    burst()
    with tenant_transaction(floor.tenant.ref) as s:
        attached = s.execute(select(SensorReading.batch_id, SensorReading.step_id)
                             .where(SensorReading.sensor_id == tt).distinct()).all()
        limits = s.scalars(select(SensorEpisode).where(SensorEpisode.rule == "limits")).all()
    assert attached == [(batch_id, charge.id)]
    assert [(e.start_ts, e.n_alarms, e.severity, e.batch_id, e.step_id) for e in limits] == [
        (start + timedelta(seconds=20), 15, "amber", batch_id, charge.id)]
    assert limits[0].spec["params"]["by_step"][str(charge.id)]["alarm_high"] == 37.5

    sign_in(client, floor.tenant.admin_email)
    page = client.get(f"/t/{floor.tenant.ref.slug}/batches/{batch_id}/steps/{charge.id}").get_data(as_text=True)
    assert f"TT-{floor.reactor_id}" in page and "sensor-tile state-amber" in page
    assert json.dumps(f"TT-{floor.reactor_id}")[1:-1] in page
