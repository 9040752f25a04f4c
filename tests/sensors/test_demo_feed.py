"""Done-when of the sensor path: the demo batch's bioreactor gets a simulated feed through the real API, and a
planted 1-sigma temperature shift raises one exception episode on the step running at the time, within seconds."""

from __future__ import annotations

import json
import time

from sqlalchemy import select

from app.batches.demo import create_demo_people, seed_demo
from app.batches.models import Batch
from app.core.tenancy import tenant_transaction
from app.plant.models import Equipment, Sensor
from app.recipes.models import RecipeVersion
from app.sensors.cli import simulate
from app.sensors.models import SensorEpisode
from app.sensors.simulate import seed_demo_bioreactor
from tests.batches.demo_run import execute_demo_steps
from tests.sensors.conftest import settle
from tests.support import serve


def test_the_demo_batch_feed_raises_one_episode_on_the_running_step(app, make_tenant) -> None:
    tenant = make_tenant(with_defaults=True)
    people, password = create_demo_people(tenant.ref, domain=f"{tenant.ref.slug}.example.com")
    with tenant_transaction(tenant.ref) as session:
        batch_id = seed_demo(session, people=people, password=password).id
        seed_demo_bioreactor(session)
        reactor = session.scalar(select(Equipment.id).where(Equipment.tag == "BR-101"))
        temperature = session.scalar(select(Sensor.id).where(Sensor.tag == "TT-101"))
        version = session.get(RecipeVersion, session.get(Batch, batch_id).recipe_version_id)
        lots = {m["code"]: f"{m['code']}-L001" for m in version.document["materials"]}
    # The operator runs the batch until a step starts on the bioreactor; the feed lands in that step.
    step_id = execute_demo_steps(tenant.ref, people, password, batch_id, lots, stop_on_equipment=reactor)[-1].id

    # The in-control history (the baseline) then a 1-sigma step on TT-101 a little after it, for all 6 sensors.
    backfill, shift_at = 1100, 1110
    started = time.monotonic()
    with serve(app) as url:
        result = app.test_cli_runner().invoke(simulate, [
            "--tenant", tenant.ref.slug, "--batch", str(batch_id), "--url", url, "--backfill", str(backfill),
            "--samples", "150", "--fast", "--chunk", "400", "--seed", "11", "--fault", f"shift:TT-101:1.0@{shift_at}"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output.strip().splitlines()[-1])
        assert summary["equipment"] == reactor and summary["readings_posted"] == 6 * (backfill + 150)
        settle(tenant.ref)  # the worker's part: ingest jobs (COPY, attach to the step, analyse)
    elapsed = time.monotonic() - started

    with tenant_transaction(tenant.ref) as session:
        process = session.scalars(select(SensorEpisode).where(SensorEpisode.sensor_id == temperature,
                                                              SensorEpisode.kind == "process",
                                                              SensorEpisode.start_index >= shift_at)).all()
    assert [e.rule for e in process] == ["shift"], "one excursion, one exception episode"
    episode = process[0]
    assert (episode.batch_id, episode.step_id) == (batch_id, step_id)  # on the right batch and step
    assert episode.start_index - shift_at <= 40  # within ~10 samples typically (seconds at 1 Hz)
    # Posting 7,500 readings and processing them end to end takes seconds, not minutes, even on a loaded CI box.
    assert elapsed < 60, elapsed
    print(f"demo feed: shift caught {episode.start_index - shift_at + 1} samples after it began; "
          f"{summary['readings_posted']} readings posted, stored and analysed in {elapsed:.1f}s")
