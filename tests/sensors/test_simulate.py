"""`batchline simulate`: a realistic stream with planted faults, posted through the real API."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import select

from app.core.tenancy import tenant_transaction
from app.sensors import simulate as sim
from app.sensors.analysis import BASELINE_N
from app.sensors.cli import simulate
from app.sensors.models import SensorEpisode
from tests.sensors.conftest import burst
from tests.support import serve

START = datetime(2026, 11, 2, tzinfo=UTC)


def test_signals_are_noisy_autocorrelated_and_carry_the_planted_faults() -> None:
    tt = sim.signal_for("temperature", "TT")
    faults = [sim.Fault.parse("shift:TT:2@2500"), sim.Fault.parse("stuck:TT@1500:30"),
              sim.Fault.parse("dropout:TT@1800:20"), sim.Fault.parse("spike:TT:15@1200")]
    values = sim.series(tt, 4000, np.random.default_rng(1), faults)
    base = values[:1000]
    assert abs(base.mean() - 37.0) < 0.02 and 0.03 < base.std() < 0.08
    centred = base - base.mean()
    assert np.dot(centred[1:], centred[:-1]) / np.dot(centred, centred) > 0.2  # autocorrelated, not white
    assert values[1200] - 37.0 > 10 * tt.sigma
    assert np.ptp(values[1500:1530]) == 0.0
    assert np.isnan(values[1800:1820]).all() and np.isfinite(values[1820])
    assert abs(values[2600:].mean() - 37.0 - 2 * tt.sigma) < 0.5 * tt.sigma
    with pytest.raises(ValueError, match="kind:TAG"):
        sim.Fault.parse("wobble:TT@1")
    with pytest.raises(ValueError, match="size"):
        sim.Fault.parse("shift:TT@10")
    with pytest.raises(ValueError, match="not simulated"):
        sim.readings([tt], n=10, start=START, period_s=1, faults=[sim.Fault.parse("spike:PH:3@1")])


def test_simulate_posts_through_the_api_and_a_1_sigma_shift_raises_one_episode(app, make_plant) -> None:
    plant = make_plant()
    tt = plant.tag("TT")
    shift_at = BASELINE_N + 100
    with serve(app) as url:
        result = app.test_cli_runner().invoke(simulate, [
            "--tenant", plant.ref.slug, "--equipment", str(plant.equipment_id), "--url", url,
            "--backfill", str(shift_at), "--samples", "150", "--fast", "--chunk", "300", "--seed", "3",
            "--fault", f"shift:{tt}:1.0@{shift_at}"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["readings_posted"] == 4 * (shift_at + 150)
    burst()
    with tenant_transaction(plant.ref) as session:
        shifts = session.scalars(select(SensorEpisode).where(SensorEpisode.sensor_id == plant.sensors["TT"],
                                                             SensorEpisode.rule == "shift",
                                                             SensorEpisode.start_index >= shift_at)).all()
    assert len(shifts) == 1, "one excursion, one episode"
    assert shifts[0].start_index - shift_at <= 40 and shifts[0].is_open
