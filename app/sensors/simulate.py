"""A realistic bioreactor stream for demos and benchmarks, with optional planted faults.

Each signal is its setpoint plus an AR(1) process disturbance (slow wander, phi 0.5) plus white probe noise,
sampled every `period_s`. `sigma` below is the standard deviation of the resulting readings, the unit the
planted faults are given in:

* `shift:TAG:SIGMAS@START` a step of SIGMAS (0.5-2 typical) from sample START on;
* `drift:TAG:SIGMAS_PER_SAMPLE@START` a slow ramp;
* `stuck:TAG@START:LENGTH` the probe repeats its last value;
* `spike:TAG:SIGMAS@START` one glitch;
* `dropout:TAG@START:LENGTH` no readings at all.

Setpoints come from the running step's parameter targets (the batch record) when a batch source is installed,
else from `DEFAULT_SIGNALS` by the sensor's quantity kind.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from scipy import signal

from app.sensors.gateway import Reading

#: quantity kind -> (setpoint, reading sigma) of a mammalian-cell fed-batch bioreactor.
DEFAULT_SIGNALS: dict[str, tuple[float, float]] = {
    "temperature": (37.0, 0.05),
    "pH": (7.0, 0.01),
    "dissolved oxygen": (40.0, 0.8),
    "pressure": (0.2, 0.004),
    "agitation": (150.0, 1.0),
    "feed": (0.5, 0.01),
}
PHI = 0.5
#: Share of the reading variance that is probe noise (the rest is process wander).
NOISE_SHARE = 0.3

FAULT_RE = re.compile(r"^(?P<kind>shift|drift|spike|stuck|dropout):(?P<tag>[^:@]+)(?::(?P<size>-?[0-9.]+))?"
                      r"@(?P<start>\d+)(?::(?P<length>\d+))?$")


@dataclass(frozen=True)
class SimSensor:
    """One simulated signal."""

    tag: str
    setpoint: float
    sigma: float


@dataclass(frozen=True)
class Fault:
    """One planted fault (see the module docstring)."""

    kind: str
    tag: str
    start: int
    size: float = 0.0
    length: int = 0

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Parse `kind:TAG[:size]@start[:length]`, refusing what would plant nothing."""
        match = FAULT_RE.match(text.strip())
        if match is None:
            raise ValueError(f"fault {text!r} is not kind:TAG[:size]@start[:length], e.g. shift:TT-1:1.0@600")
        kind = match["kind"]
        size = float(match["size"]) if match["size"] else 0.0
        length = int(match["length"]) if match["length"] else 0
        if kind in ("shift", "drift", "spike") and size == 0.0:
            raise ValueError(f"fault {text!r} needs a non-zero size in sigmas")
        if kind in ("stuck", "dropout") and length <= 0:
            raise ValueError(f"fault {text!r} needs a length in samples")
        return cls(kind=kind, tag=match["tag"], start=int(match["start"]), size=size, length=length)


#: The demo bioreactor's sensors: tag suffix, quantity kind, unit, physical range.
DEMO_SENSORS = [("TT", "temperature", "°C", 0, 60), ("PH", "pH", "pH", 0, 14),
                ("DO", "dissolved oxygen", "%", 0, 200), ("PT", "pressure", "bar", 0, 5),
                ("AG", "agitation", "rpm", 0, 1000), ("FD", "feed", "L/h", 0, 10)]


def seed_demo_bioreactor(session: Any) -> int:
    """Give the demo bioreactor BR-101 its six sensors once (creating the item if the demo has none)."""
    from sqlalchemy import select

    from app.plant import services as plant
    from app.plant.models import Equipment, Sensor

    equipment_id = session.scalar(select(Equipment.id).where(Equipment.tag == "BR-101"))
    if equipment_id is None:
        site = plant.create_site(session, code="DEMO", name="Demo suite", timezone="UTC")
        line = plant.create_line(session, site_id=site.id, code="USP-1", name="Upstream line 1")
        equipment_id = plant.create_equipment(session, tag="BR-101", name="50 L single-use bioreactor",
                                              equipment_class="bioreactor", line_id=line.id, capacity="50",
                                              capacity_unit="L", single_use=True).id
    existing = set(session.scalars(select(Sensor.tag).where(Sensor.equipment_id == equipment_id)))
    for short, kind, unit, low, high in DEMO_SENSORS:
        if f"{short}-101" not in existing:
            plant.create_sensor(session, tag=f"{short}-101", equipment_id=equipment_id, quantity_kind=kind,
                                unit=unit, range_low=low, range_high=high, sampling_period_s=1)
    return int(equipment_id)


def signal_for(kind: str, tag: str, *, target: float | None = None) -> SimSensor:
    """Return the simulated signal of a sensor of this quantity kind (setpoint from the recipe if given)."""
    setpoint, sigma = DEFAULT_SIGNALS.get(kind, (50.0, 0.5))
    if target is not None:
        sigma = sigma * abs(target / setpoint) if setpoint else sigma
        setpoint = target
    return SimSensor(tag=tag, setpoint=setpoint, sigma=sigma)


def series(sensor: SimSensor, n: int, rng: np.random.Generator, faults: Sequence[Fault] = ()) -> np.ndarray:
    """Return n readings of one signal (NaN where a dropout left no reading), faults applied."""
    process_sd = sensor.sigma * np.sqrt(1.0 - NOISE_SHARE)
    innovations = rng.normal(0.0, process_sd * np.sqrt(1.0 - PHI**2), n)
    innovations[0] = rng.normal(0.0, process_sd)  # start in the stationary distribution
    wander = signal.lfilter([1.0], [1.0, -PHI], innovations)
    values = sensor.setpoint + wander + rng.normal(0.0, sensor.sigma * np.sqrt(NOISE_SHARE), n)
    for fault in faults:
        if fault.tag != sensor.tag or fault.start >= n:
            continue
        s = fault.start
        if fault.kind == "shift":
            values[s:] += fault.size * sensor.sigma
        elif fault.kind == "drift":
            values[s:] += fault.size * sensor.sigma * np.arange(1, n - s + 1)
        elif fault.kind == "spike":
            values[s] += fault.size * sensor.sigma
        elif fault.kind == "stuck":
            values[s:s + fault.length] = values[s - 1] if s else values[0]
        elif fault.kind == "dropout":
            values[s:s + fault.length] = np.nan
    return values


def readings(sensors: Sequence[SimSensor], *, n: int, start: datetime, period_s: float, seed: int = 0,
             faults: Sequence[Fault] = ()) -> list[list[Reading]]:
    """Return n samples, each the list of every sensor's reading at that time (dropouts left out)."""
    return list(iter_samples(sensors, n=n, start=start, period_s=period_s, seed=seed, faults=faults))


def iter_samples(sensors: Sequence[SimSensor], *, n: int, start: datetime, period_s: float, seed: int = 0,
                 faults: Sequence[Fault] = ()) -> Iterator[list[Reading]]:
    """Yield n samples lazily (the values are drawn up front, the Reading objects as they are needed)."""
    rng = np.random.default_rng(seed)
    known = {sensor.tag for sensor in sensors}
    unknown = sorted({f.tag for f in faults} - known)
    if unknown:
        raise ValueError(f"faults name sensors that are not simulated: {', '.join(unknown)}")
    columns = {sensor.tag: series(sensor, n, rng, [f for f in faults if f.tag == sensor.tag]) for sensor in sensors}
    for i in range(n):
        stamp = start + timedelta(seconds=i * period_s)
        yield [Reading(sensor=tag, ts=stamp, value=round(float(values[i]), 6))
               for tag, values in columns.items() if np.isfinite(values[i])]
