"""Benchmark the recommended shift detector on simulated bioreactor-like sensor readings.

Run `python tests/benchmarks/bench_detection.py`. Readings are an AR(1) process (phi = 0.3) plus white
measurement noise: a slowly wandering process seen through a noisy probe, so the AR(1) model the detector
fits is deliberately not the exact truth. The in-control model is fitted on a separate reference series, as
it would be from a qualified batch; sigma below is the standard deviation of the readings themselves. Each
run has 50 in-control samples (runs that alarm there are discarded, so delays are conditional steady-state
ones), then a step of 0.5, 1 or 2 sigma, or a drift of 0.02 sigma per sample. The delay counts shifted
samples seen up to and including the alarm (1 = caught on the first shifted sample); the median over the
runs is printed. False alarms are episodes (alarms more than 5 quiet samples apart count twice) on
in-control data, per 10,000 samples.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import signal

# Runnable as a plain script from any folder: put the repository root on the path before importing `app`.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.sensors import detection

PHI = 0.3
INNOVATION_SIGMA = 1.0
MEASUREMENT_SIGMA = 0.5
WARM_UP = 50
HORIZON = 400
RUNS = 2000
IN_CONTROL_SERIES = 100
IN_CONTROL_LENGTH = 10_000
DRIFT_PER_SAMPLE = 0.02
GAP_TOLERANCE = 5


def simulate(rng: np.random.Generator, runs: int, length: int) -> np.ndarray:
    """Return in-control readings: a stationary AR(1) process plus measurement noise, one run per row."""
    innovations = rng.normal(0.0, INNOVATION_SIGMA, (runs, length))
    innovations[:, 0] /= np.sqrt(1.0 - PHI**2)  # start in the stationary distribution
    process = signal.lfilter([1.0], [1.0, -PHI], innovations, axis=-1)
    return 50.0 + process + rng.normal(0.0, MEASUREMENT_SIGMA, (runs, length))


def reading_sigma() -> float:
    """Return the standard deviation of the readings, the unit the planted shifts are expressed in."""
    return float(np.sqrt(INNOVATION_SIGMA**2 / (1.0 - PHI**2) + MEASUREMENT_SIGMA**2))


def detection_delays(
    rng: np.random.Generator,
    model: detection.InControlModel,
    design: detection.DetectorDesign,
    offset: np.ndarray,
) -> np.ndarray:
    """Return the delay of each run that was quiet during warm-up, for a mean offset starting after it."""
    readings = simulate(rng, RUNS, WARM_UP + HORIZON)
    readings[:, WARM_UP:] += offset
    delays = []
    for run in readings:
        alarm = detection.shift_detector(run, model=model, design=design).alarm
        if alarm[:WARM_UP].any():
            continue
        after = np.flatnonzero(alarm[WARM_UP:])
        delays.append(after[0] + 1 if after.size else np.inf)
    return np.asarray(delays)


def false_alarms_per_10k(
    rng: np.random.Generator, model: detection.InControlModel, design: detection.DetectorDesign
) -> float:
    """Return alarm episodes per 10,000 in-control samples."""
    episodes = 0
    for run in simulate(rng, IN_CONTROL_SERIES, IN_CONTROL_LENGTH):
        alarm = detection.shift_detector(run, model=model, design=design).alarm
        stamps = np.arange(run.size, dtype=float)
        found = detection.find_episodes(alarm, stamps, run, rule="shift", gap_tolerance=GAP_TOLERANCE)
        episodes += len(found)
    return episodes * 10_000 / (IN_CONTROL_SERIES * IN_CONTROL_LENGTH)


def main() -> None:
    """Print the detection delays and the false alarm rate of the recommended detector."""
    rng = np.random.default_rng(20240611)
    model = detection.fit_in_control(simulate(rng, 1, 5000)[0])
    design = detection.design_detector(370.0)
    sigma = reading_sigma()
    scenarios = {
        "0_5sigma": np.full(HORIZON, 0.5 * sigma),
        "1sigma": np.full(HORIZON, 1.0 * sigma),
        "2sigma": np.full(HORIZON, 2.0 * sigma),
        "drift": DRIFT_PER_SAMPLE * sigma * np.arange(1, HORIZON + 1),
    }
    for name, offset in scenarios.items():
        delays = detection_delays(rng, model, design, offset)
        print(f"bench.detect_delay_samples_{name}: {np.median(delays):.1f} samples")
    print(f"bench.false_alarms_per_10k: {false_alarms_per_10k(rng, model, design):.1f} alarms")


if __name__ == "__main__":
    main()
