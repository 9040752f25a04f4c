"""Univariate detection for one sensor's window of readings: process anomalies, sensor health, episodes.

Every rule takes numpy arrays aligned sample by sample (timestamps, values, quality) and returns a
`Detection`: a boolean alarm per sample, the charted statistic, the `RuleSpec` (rule name, parameters, model
version) that reproduces it, and for the recursive charts the `ChartState` to carry into the next window.

Process rules (Nelson/Western Electric, EWMA, CUSUM, limits) say the *process* moved; health rules (stuck,
spike, data gap, physical range, quality flag) say the *sensor* cannot be trusted. They are kept apart by
`RuleSpec.kind` so a dead probe is never reported as a process deviation. Readings that are NaN are skipped by
the process charts: blank out unhealthy samples with `mask_unhealthy` before charting them.

Parameter choice. A chart is tuned by its in-control average run length (ARL0, samples between false alarms)
and its out-of-control ARL for the shift it must catch. The defaults target ARL0 >= 370 (the ARL0 of a 3-sigma
Shewhart chart) and a 1-sigma step caught within about 10 samples:

* CUSUM k = 0.5 (half the 1-sigma shift, the optimal reference value), h = 4.77: ARL0 371, ARL(1 sigma) 9.9
  by Siegmund's approximation;
* EWMA lambda = 0.2, L = 2.86: ARL0 371, ARL(1 sigma) 9.8 by the Brook-Evans Markov chain (Lucas &
  Saccucci, Technometrics 32 (1990) 1-12).

`design_cusum`, `design_ewma` and `design_detector` compute these for any ARL0 target rather than reading a
table, and `ewma_arl` / `cusum_arl` give the run lengths they promise.

Windows. Rules are causal: an alarm is raised on the sample that completes the pattern, so consecutive windows
give the same alarms as the whole series when the caller either carries `ChartState` (EWMA, CUSUM, AR(1)
whitening) or prepends the last `lookback` samples of the previous window (Nelson, stuck, spike) and drops
their alarms. `extend_episodes` does the same for episodes.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import warnings
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import IntEnum
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import optimize, signal, stats

#: Version of the detection maths; stored with every alarm so it can be replayed by the same code.
MODEL_VERSION = "batchline.detection/2"  # 2: the shift detector's statistics are held under ceilings

#: All Nelson rules, and the Western Electric set (WE1-WE4 are Nelson 1, 5, 6 and 2 with a run of 8).
NELSON_RULES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
WESTERN_ELECTRIC_RULES: tuple[int, ...] = (1, 2, 5, 6)
WESTERN_ELECTRIC_SAME_SIDE_RUN = 8

#: Samples a Nelson rule looks at: the window that completes the pattern (rule 2 is configurable).
_NELSON_WINDOW = {1: 1, 3: 6, 4: 14, 5: 3, 6: 5, 7: 15, 8: 8}

#: Consistency constant of the MAD for normal data (1 / Phi^-1(3/4)).
_MAD_TO_SIGMA = 1.482602218505602

RuleKind = Literal["process", "health"]


class LimitState(IntEnum):
    """Per-sample severity of a limit check; ordered so `max` gives the worst state of a span."""

    UNKNOWN = -1  # no finite reading: the health checks report why
    GREEN = 0
    AMBER = 1  # outside the alarm (alert) limits
    RED = 2  # outside the hard limits


class Quality(IntEnum):
    """Normalised reading quality, whatever the source protocol encodes."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """Describe a rule and its parameters so an alarm can be reproduced."""

    rule: str
    kind: RuleKind
    params: Mapping[str, Any] = field(default_factory=dict)
    model_version: str = MODEL_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able copy for storage next to the alarm."""
        # numpy scalars (np.int64 from an array, say) are not JSON types: store their Python value.
        params = {key: value.item() if isinstance(value, np.generic) else value
                  for key, value in self.params.items()}
        return {"rule": self.rule, "kind": self.kind, "params": params, "model_version": self.model_version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleSpec:
        """Rebuild a spec stored with `to_dict`."""
        return cls(rule=data["rule"], kind=data["kind"], params=dict(data["params"]),
                   model_version=data["model_version"])

    @property
    def fingerprint(self) -> str:
        """Return a stable hash of the spec, to group alarms raised under identical settings."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ChartState:
    """Carry a recursive chart across windows, so window-by-window equals the whole series."""

    ewma: float = 0.0  # EWMA of the standardised data
    cusum_up: float = 0.0  # C+ of the tabular CUSUM
    cusum_down: float = 0.0  # C- of the tabular CUSUM
    previous: float | None = None  # last finite reading, for AR(1) whitening

    def to_dict(self) -> dict[str, float | None]:
        """Return a JSON-able copy for storage with the sensor's processing cursor."""
        return asdict(self)


@dataclass(frozen=True, slots=True, eq=False)
class Detection:
    """Hold one rule's verdict on a window: alarm and statistic per sample, and how to reproduce it."""

    spec: RuleSpec
    alarm: np.ndarray  # bool, one per input sample
    statistic: np.ndarray  # float, the charted quantity (sigma units for standardised charts)
    state: ChartState | None = None  # for recursive charts: the state after the last sample
    level: np.ndarray | None = None  # for limit checks: the LimitState of each sample


@dataclass(frozen=True, slots=True)
class EwmaParams:
    """EWMA smoothing constant and limit width (in sigmas of the EWMA statistic)."""

    lam: float = 0.2
    L: float = 2.86

    def __post_init__(self) -> None:
        """Reject parameters that define no chart."""
        if not 0.0 < self.lam <= 1.0 or self.L <= 0.0:
            raise ValueError(f"EWMA needs 0 < lambda <= 1 and L > 0, got {self}")

    @property
    def limit(self) -> float:
        """Return the asymptotic control limit on the EWMA of standardised data."""
        return self.L * float(np.sqrt(self.lam / (2.0 - self.lam)))


@dataclass(frozen=True, slots=True)
class CusumParams:
    """Tabular CUSUM reference value k and decision interval h, in sigmas."""

    k: float = 0.5
    h: float = 4.77

    def __post_init__(self) -> None:
        """Reject parameters that define no chart."""
        if self.k < 0.0 or self.h <= 0.0:
            raise ValueError(f"CUSUM needs k >= 0 and h > 0, got {self}")


@dataclass(frozen=True, slots=True)
class DetectorDesign:
    """The recommended combined EWMA-or-CUSUM shift detector and the ARL0 it was designed for."""

    ewma: EwmaParams
    cusum: CusumParams
    arl0: float


@dataclass(frozen=True, slots=True)
class InControlModel:
    """In-control behaviour of a sensor: mean, innovation sigma and AR(1) coefficient."""

    mean: float
    sigma: float
    phi: float = 0.0


@dataclass(frozen=True, slots=True)
class Episode:
    """One excursion: consecutive alarms of one rule merged across short quiet gaps."""

    rule: str
    start_index: int  # first alarmed sample (global index)
    end_index: int  # last alarmed sample, inclusive
    start_time: Any  # timestamps[start_index], in the caller's time type
    end_time: Any
    peak_index: int  # alarmed sample with the largest |deviation| (earliest on ties)
    peak_value: float
    peak_deviation: float
    n_alarms: int  # alarmed samples in the episode (quiet bridged samples excluded)
    open: bool  # an alarm in the next window could still extend it


# --------------------------------------------------------------------------------------------- helpers


def _as_1d(values: np.ndarray | Collection[float], name: str = "values") -> np.ndarray:
    """Return a 1-D float array, refusing shapes the per-sensor rules cannot align."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _check_sigma(sigma: float) -> None:
    """Refuse a non-positive sigma, which would make every standardised value infinite."""
    if not np.isfinite(sigma) or sigma <= 0.0:
        raise ValueError(f"sigma must be finite and > 0, got {sigma}")


def _run_length(mask: np.ndarray) -> np.ndarray:
    """Return, per sample, how many consecutive True end there (0 where False)."""
    index = np.arange(mask.size)
    last_false = np.maximum.accumulate(np.where(mask, -1, index))
    return np.where(mask, index - last_false, 0)


def _window_count(mask: np.ndarray, width: int) -> np.ndarray:
    """Return the number of True in the trailing window of `width` (0 until the window is full)."""
    counts = np.zeros(mask.size, dtype=np.int64)
    if mask.size >= width:
        cumulative = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
        counts[width - 1 :] = cumulative[width:] - cumulative[:-width]
    return counts


def _lindley(increments: np.ndarray, start: float) -> np.ndarray:
    """Return S_t = max(0, S_{t-1} + y_t) along the last axis without a Python loop.

    Lindley's recursion unrolls to S_t = W_t - min(-S_0, min_{j<=t} W_j) with W the cumulative sum, so the
    CUSUM is two numpy accumulations. Rounding grows with |W|, about 1e-16 per unit: negligible for windows
    of up to millions of samples, and windows are re-based on the carried state.
    """
    cumulative = np.cumsum(increments, axis=-1)
    floor = np.minimum(np.minimum.accumulate(cumulative, axis=-1), -start)
    return np.maximum(cumulative - floor, 0.0)


def standardise(values: np.ndarray, *, mean: float, sigma: float) -> np.ndarray:
    """Return (x - mean) / sigma, the scale every chart parameter is expressed in."""
    _check_sigma(sigma)
    return (_as_1d(values) - mean) / sigma


def mask_unhealthy(values: np.ndarray, *health: Detection) -> np.ndarray:
    """Return a copy of values with NaN where any health check alarmed, so process charts skip them."""
    masked = _as_1d(values).copy()
    for detection in health:
        if detection.alarm.shape != masked.shape:
            raise ValueError(f"{detection.spec.rule} alarm is not aligned with the values")
        masked[detection.alarm] = np.nan
    return masked


# ------------------------------------------------------------------------------------- Nelson rules


def nelson_lookback(rules: Collection[int] = NELSON_RULES, *, same_side_run: int = 9) -> int:
    """Return how many samples of the previous window to prepend so the next one's alarms are exact."""
    windows = [same_side_run if rule == 2 else _NELSON_WINDOW[rule] for rule in rules]
    return max(windows, default=1) - 1


def _nelson_masks(z: np.ndarray, rules: Collection[int], same_side_run: int) -> dict[int, np.ndarray]:
    """Evaluate the requested Nelson rules on finite standardised data."""
    n = z.size
    step = np.diff(z)
    masks: dict[int, np.ndarray] = {}
    for rule in rules:
        if rule == 1:  # one point beyond 3 sigma
            mask = np.abs(z) > 3.0
        elif rule == 2:  # `same_side_run` points in a row on one side of the centre line
            mask = (_run_length(z > 0.0) >= same_side_run) | (_run_length(z < 0.0) >= same_side_run)
        elif rule == 3:  # six points in a row steadily increasing or decreasing: five steps one way
            rising, falling = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
            rising[1:], falling[1:] = step > 0.0, step < 0.0
            mask = (_run_length(rising) >= 5) | (_run_length(falling) >= 5)
        elif rule == 4:  # fourteen points alternating up and down: twelve sign changes between 13 steps
            flips = np.zeros(n, dtype=bool)
            flips[2:] = step[1:] * step[:-1] < 0.0
            mask = _run_length(flips) >= 12
        elif rule == 5:  # two of three points beyond 2 sigma, same side
            mask = (_window_count(z > 2.0, 3) >= 2) | (_window_count(z < -2.0, 3) >= 2)
        elif rule == 6:  # four of five points beyond 1 sigma, same side
            mask = (_window_count(z > 1.0, 5) >= 4) | (_window_count(z < -1.0, 5) >= 4)
        elif rule == 7:  # fifteen points in a row within 1 sigma: stratification, sigma overestimated
            mask = _run_length(np.abs(z) < 1.0) >= 15
        elif rule == 8:  # eight points in a row beyond 1 sigma, either side (Minitab's reading): mixture
            mask = _run_length(np.abs(z) > 1.0) >= 8
        else:
            raise ValueError(f"unknown Nelson rule {rule}")
        masks[rule] = mask
    return masks


def nelson_rules(
    values: np.ndarray,
    *,
    mean: float,
    sigma: float,
    rules: Collection[int] = NELSON_RULES,
    same_side_run: int = 9,
) -> dict[int, Detection]:
    """Apply the Nelson run rules so non-random patterns are caught, not only points beyond 3 sigma.

    An alarm sits on the sample completing the pattern. Rule 2 uses a run of 9 (Nelson); pass
    `rules=WESTERN_ELECTRIC_RULES, same_side_run=WESTERN_ELECTRIC_SAME_SIDE_RUN` for the Western Electric set.
    Each extra rule shortens the in-control ARL below rule 1's 370, so enable only those that are wanted.
    NaN readings are skipped (patterns run across them).
    """
    if same_side_run < 2:
        raise ValueError("same_side_run must be >= 2")
    z = standardise(values, mean=mean, sigma=sigma)
    finite = np.isfinite(z)
    masks = _nelson_masks(z[finite], tuple(rules), same_side_run)
    detections = {}
    for rule, mask in masks.items():
        alarm = np.zeros(z.size, dtype=bool)
        alarm[finite] = mask
        params: dict[str, Any] = {"mean": mean, "sigma": sigma}
        if rule == 2:
            params["same_side_run"] = same_side_run
        detections[rule] = Detection(RuleSpec(f"nelson_{rule}", "process", params), alarm, z)
    return detections


# --------------------------------------------------------------------------------- EWMA and CUSUM


def ewma(z: np.ndarray, lam: float, *, start: float = 0.0) -> np.ndarray:
    """Return the EWMA z_t = lam x_t + (1 - lam) z_{t-1} along the last axis.

    The recursion is a first-order IIR filter, so `scipy.signal.lfilter` runs it in C; `start` is z_0.
    """
    data = np.asarray(z, dtype=float)
    initial = np.full((*data.shape[:-1], 1), (1.0 - lam) * start)
    smoothed, _ = signal.lfilter([lam], [1.0, lam - 1.0], data, axis=-1, zi=initial)
    return smoothed


def cusum(
    z: np.ndarray, k: float, *, start: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Return the two-sided tabular CUSUM (C+, C-) of standardised data along the last axis.

    C+_t = max(0, C+_{t-1} + z_t - k) and C-_t = max(0, C-_{t-1} - z_t - k), vectorised by `_lindley`.
    """
    data = np.asarray(z, dtype=float)
    return _lindley(data - k, start[0]), _lindley(-data - k, start[1])


def ewma_chart(
    values: np.ndarray,
    *,
    mean: float,
    sigma: float,
    params: EwmaParams | None = None,
    state: ChartState | None = None,
) -> Detection:
    """Chart the EWMA of standardised readings against asymptotic limits, to catch small sustained shifts.

    Asymptotic limits +-L sqrt(lam / (2 - lam)) are those the published ARL tables assume and keep windowed
    processing identical to whole-series processing. The statistic estimates the mean shift in sigmas.
    """
    params = params or EwmaParams()
    state = state or ChartState()
    z = standardise(values, mean=mean, sigma=sigma)
    finite = np.isfinite(z)
    smoothed = ewma(z[finite], params.lam, start=state.ewma) if finite.any() else np.empty(0)
    alarm = np.zeros(z.size, dtype=bool)
    statistic = np.full(z.size, np.nan)
    alarm[finite] = np.abs(smoothed) > params.limit
    statistic[finite] = smoothed
    last = float(smoothed[-1]) if smoothed.size else state.ewma
    spec = RuleSpec("ewma", "process", {"mean": mean, "sigma": sigma, "lambda": params.lam, "L": params.L})
    return Detection(spec, alarm, statistic, replace(state, ewma=last))


def cusum_chart(
    values: np.ndarray,
    *,
    mean: float,
    sigma: float,
    params: CusumParams | None = None,
    state: ChartState | None = None,
) -> Detection:
    """Chart the two-sided tabular CUSUM of standardised readings, the fastest detector of a 2k-sigma step.

    The statistic is C+ where C+ >= C-, else -C-, so its sign says which way the process moved.
    """
    params = params or CusumParams()
    state = state or ChartState()
    z = standardise(values, mean=mean, sigma=sigma)
    finite = np.isfinite(z)
    up, down = cusum(z[finite], params.k, start=(state.cusum_up, state.cusum_down))
    alarm = np.zeros(z.size, dtype=bool)
    statistic = np.full(z.size, np.nan)
    alarm[finite] = (up > params.h) | (down > params.h)
    statistic[finite] = np.where(up >= down, up, -down)
    end = (float(up[-1]), float(down[-1])) if up.size else (state.cusum_up, state.cusum_down)
    spec = RuleSpec("cusum", "process", {"mean": mean, "sigma": sigma, "k": params.k, "h": params.h})
    return Detection(spec, alarm, statistic, replace(state, cusum_up=end[0], cusum_down=end[1]))


# ------------------------------------------------------------------------ run lengths and design


def ewma_arl(lam: float, L: float, shift: float = 0.0, *, states: int = 201) -> float:
    """Return the zero-state ARL of the EWMA chart by the Brook-Evans Markov chain.

    The in-control band is cut into `states` cells; the chart moves between cell midpoints with normal
    transition probabilities and the ARL solves (I - P) arl = 1. With 201 cells it agrees with the published
    tables to 0.1 %.
    """
    limit = EwmaParams(lam, L).limit
    width = 2.0 * limit / states
    mid = -limit + width * (np.arange(states) + 0.5)
    centre = (1.0 - lam) * mid[:, None]
    upper = (mid[None, :] + width / 2.0 - centre) / lam - shift
    lower = (mid[None, :] - width / 2.0 - centre) / lam - shift
    transition = stats.norm.cdf(upper) - stats.norm.cdf(lower)
    arl = np.linalg.solve(np.eye(states) - transition, np.ones(states))
    return float(arl[states // 2])


def cusum_arl(k: float, h: float, shift: float = 0.0) -> float:
    """Return the two-sided CUSUM ARL by Siegmund's approximation (accurate to a few % for h >= 3).

    One side: ARL = (exp(-2 d b) + 2 d b - 1) / (2 d^2) with d = shift - k and b = h + 1.166; the sides
    combine as 1/ARL = 1/ARL+ + 1/ARL-.
    """
    b = h + 1.166

    def one_sided(drift: float) -> float:
        if abs(drift) < 1e-9:
            return b * b
        return (np.exp(-2.0 * drift * b) + 2.0 * drift * b - 1.0) / (2.0 * drift * drift)

    return float(1.0 / (1.0 / one_sided(shift - k) + 1.0 / one_sided(-shift - k)))


#: What `design_ewma` / `design_cusum` return for the default detector (`design_detector(370)`), computed once
#: and checked against them by the tests: their root finding solves dozens of Markov chains, a second or more
#: on a loaded machine, and every forked RQ job process would otherwise pay it again.
PRECOMPUTED_DESIGNS: dict[tuple[str, float, float], EwmaParams | CusumParams] = {
    ("ewma", 740.0, 0.1): EwmaParams(lam=0.1, L=2.9555),
    ("cusum", 740.0, 0.5): CusumParams(k=0.5, h=5.4509),
}


@functools.cache  # pure, and ~0.1 s of root finding: shift_detector calls it per window
def design_ewma(arl0: float = 370.0, *, lam: float = 0.2) -> EwmaParams:
    """Return the EWMA limit width L giving the target in-control ARL for this lambda."""
    if arl0 <= 1.0:
        raise ValueError("arl0 must exceed 1 sample")
    known = PRECOMPUTED_DESIGNS.get(("ewma", float(arl0), float(lam)))
    if isinstance(known, EwmaParams):
        return known
    width = optimize.brentq(lambda L: ewma_arl(lam, L) - arl0, 0.5, 6.0, xtol=1e-6)
    return EwmaParams(lam=lam, L=round(float(width), 4))


@functools.cache
def design_cusum(arl0: float = 370.0, *, k: float = 0.5) -> CusumParams:
    """Return the CUSUM decision interval h giving the target in-control ARL for this k."""
    if arl0 <= 1.0:
        raise ValueError("arl0 must exceed 1 sample")
    known = PRECOMPUTED_DESIGNS.get(("cusum", float(arl0), float(k)))
    if isinstance(known, CusumParams):
        return known
    interval = optimize.brentq(lambda h: cusum_arl(k, h) - arl0, 1e-3, 50.0, xtol=1e-6)
    return CusumParams(k=k, h=round(float(interval), 4))


def design_detector(arl0: float = 370.0, *, lam: float = 0.1, k: float = 0.5) -> DetectorDesign:
    """Return the recommended EWMA-or-CUSUM detector whose combined in-control ARL is at least `arl0`.

    CUSUM with k = 0.5 is the fastest detector of the 1-sigma step the product must catch; an EWMA with a
    small lambda adds sensitivity to smaller steps and slow drifts. Each chart gets ARL0 = 2 x `arl0`: false
    alarm rates of the two charts add at most (Bonferroni), so the union keeps ARL0 >= `arl0`; the two
    statistics are strongly correlated, so in practice it lands higher (about 1.4 x, see the tests).
    """
    return DetectorDesign(design_ewma(2.0 * arl0, lam=lam), design_cusum(2.0 * arl0, k=k), arl0)


# --------------------------------------------------------------------- in-control model, whitening


def fit_in_control(reference: np.ndarray, *, autoregressive: bool = True) -> InControlModel:
    """Estimate mean, AR(1) coefficient and innovation sigma from in-control reference readings.

    Positive autocorrelation makes EWMA and CUSUM alarm far more often than their ARL0 promises; charting
    the one-step prediction errors of an AR(1) model (Montgomery, ch. 10) restores the design ARL0.
    """
    data = _as_1d(reference, "reference")
    data = data[np.isfinite(data)]
    if data.size < 10:
        raise ValueError("need at least 10 finite reference readings")
    mean = float(data.mean())
    centred = data - mean
    phi = float(np.dot(centred[1:], centred[:-1]) / np.dot(centred, centred)) if autoregressive else 0.0
    if not -1.0 < phi < 1.0:
        raise ValueError(f"reference readings are not stationary (phi = {phi:.3f})")
    innovations = centred[1:] - phi * centred[:-1]
    sigma = float(innovations.std(ddof=2 if autoregressive else 1))
    _check_sigma(sigma)
    return InControlModel(mean=mean, sigma=sigma, phi=phi)


def whiten(values: np.ndarray, *, model: InControlModel, previous: float | None = None) -> np.ndarray:
    """Return the AR(1) one-step prediction errors, standardised, of the finite readings (NaN kept as NaN).

    Missing readings are skipped, so the prediction after a gap uses the last finite reading. `previous` is
    the last finite reading of the preceding window; without it the first sample is predicted by the mean.
    """
    data = _as_1d(values)
    finite = np.isfinite(data)
    centred = data[finite] - model.mean
    lagged = np.concatenate(([0.0 if previous is None else previous - model.mean], centred[:-1]))
    residuals = np.full(data.size, np.nan)
    residuals[finite] = (centred - model.phi * lagged) / model.sigma
    return residuals


#: Ceilings of the shift detector's statistics, as multiples of their limits. Without one, a long or large
#: excursion piles up a sum that takes hundreds of samples to drain once the process is back on target, so
#: the episode ends that late. Restarting the sums at zero or at a head start after each signal ends it
#: quickly but splits a sustained 1-sigma shift, whose statistic hovers near the limit, into several episodes.
#: A ceiling keeps both: past the limit the statistic is held at most this far beyond it, so a persisting
#: shift keeps signalling while one that ended drains in a few samples (CUSUM: (ceiling - 1) h / k samples).
CUSUM_CEILING = 2.0
EWMA_CEILING = 1.5
#: First chunk scanned after a statistic met its ceiling; it doubles while none does (amortised scanning). A
#: window starts with one chunk of all of it: most windows never meet a ceiling, so they cost one pass.
_RESTART_CHUNK = 8


def _ceiling_charts(z: np.ndarray, design: DetectorDesign,
                    state: ChartState) -> tuple[np.ndarray, np.ndarray, ChartState]:
    """Run EWMA and CUSUM over finite standardised data with their statistics held under the ceilings.

    Returns (alarm, EWMA, state after the last sample). Between ceiling hits the charts are the vectorised
    recursions; a window is scanned whole, then in growing chunks from each hit, so a quiet window costs one
    numpy pass. The chunking changes only the work done, never the result: each chunk's recursions are exact
    prefixes, cut at the first hit.
    """
    lam, limit, k, h = design.ewma.lam, design.ewma.limit, design.cusum.k, design.cusum.h
    ewma_cap, cusum_cap = EWMA_CEILING * limit, CUSUM_CEILING * h
    n = z.size
    alarm, smoothed = np.zeros(n, dtype=bool), np.empty(n)
    level, up0, down0 = state.ewma, state.cusum_up, state.cusum_down
    position, chunk = 0, max(n, 1)
    while position < n:
        segment = z[position: position + chunk]
        e = ewma(segment, lam, start=level)
        up, down = _lindley(segment - k, up0), _lindley(-segment - k, down0)
        over = (np.abs(e) > ewma_cap) | (up > cusum_cap) | (down > cusum_cap)
        stop = int(np.argmax(over)) + 1 if over.any() else segment.size
        e, up, down = e[:stop], up[:stop], down[:stop]
        if over.any():  # hold the statistics at the ceiling and carry on from there
            e[-1] = np.clip(e[-1], -ewma_cap, ewma_cap)
            up[-1], down[-1] = min(up[-1], cusum_cap), min(down[-1], cusum_cap)
            chunk = _RESTART_CHUNK
        else:
            chunk *= 2
        alarm[position: position + stop] = (np.abs(e) > limit) | (up > h) | (down > h)
        smoothed[position: position + stop] = e
        level, up0, down0 = float(e[-1]), float(up[-1]), float(down[-1])
        position += stop
    return alarm, smoothed, replace(state, ewma=level, cusum_up=up0, cusum_down=down0)


def shift_detector(
    values: np.ndarray,
    *,
    model: InControlModel,
    design: DetectorDesign | None = None,
    state: ChartState | None = None,
) -> Detection:
    """Run the recommended detector: AR(1) whitening, then EWMA or CUSUM, each at 2 x the ARL0 target.

    Past their limits the statistics are held under CUSUM_CEILING / EWMA_CEILING, so an excursion raises one
    run of signals that stops within a few samples of the process returning to target instead of dragging on
    while a large sum drains. The statistic is the EWMA of the whitened readings (a running estimate of the
    shift in sigmas).
    """
    design = design or design_detector()
    state = state or ChartState()
    data = _as_1d(values)
    residuals = whiten(data, model=model, previous=state.previous)
    finite = np.isfinite(residuals)
    alarm, statistic = np.zeros(data.size, dtype=bool), np.full(data.size, np.nan)
    alarm[finite], statistic[finite], charts = _ceiling_charts(residuals[finite], design, state)
    finite_data = np.isfinite(data)
    previous = float(data[finite_data][-1]) if finite_data.any() else state.previous
    new_state = replace(charts, previous=previous)
    params = {"mean": model.mean, "sigma": model.sigma, "phi": model.phi, "arl0": design.arl0,
              "lambda": design.ewma.lam, "L": design.ewma.L, "k": design.cusum.k, "h": design.cusum.h,
              "cusum_ceiling": CUSUM_CEILING, "ewma_ceiling": EWMA_CEILING}
    spec = RuleSpec("shift", "process", params)
    return Detection(spec, alarm, statistic, new_state)


# ------------------------------------------------------------------------------------------ limits


def limit_states(
    values: np.ndarray,
    *,
    low: float | None = None,
    high: float | None = None,
    alarm_low: float | None = None,
    alarm_high: float | None = None,
) -> np.ndarray:
    """Return the LimitState of each reading: red beyond the hard limits, amber beyond the alarm limits.

    Alarm (alert) limits sit inside the hard limits: low <= alarm_low <= alarm_high <= high. A reading equal
    to a limit is inside it. Any limit may be None. Non-finite readings are UNKNOWN.
    """
    data = _as_1d(values)
    given = [limit for limit in (low, alarm_low, alarm_high, high) if limit is not None]
    if any(a > b for a, b in itertools.pairwise(given)):
        raise ValueError("limits must satisfy low <= alarm_low <= alarm_high <= high")
    state = np.full(data.size, LimitState.GREEN, dtype=np.int8)
    for limit, outside, level in (
        (alarm_low, np.less, LimitState.AMBER),
        (alarm_high, np.greater, LimitState.AMBER),
        (low, np.less, LimitState.RED),
        (high, np.greater, LimitState.RED),
    ):
        if limit is not None:
            state[outside(data, limit)] = level
    state[~np.isfinite(data)] = LimitState.UNKNOWN
    return state


def limit_check(
    values: np.ndarray,
    *,
    low: float | None = None,
    high: float | None = None,
    alarm_low: float | None = None,
    alarm_high: float | None = None,
) -> Detection:
    """Check readings against hard and alarm limits; alarm on amber or red, `level` holds the colour.

    The statistic is the distance outside the innermost limits (negative below), zero inside.
    """
    data = _as_1d(values)
    level = limit_states(data, low=low, high=high, alarm_low=alarm_low, alarm_high=alarm_high)
    inner_low = alarm_low if alarm_low is not None else low
    inner_high = alarm_high if alarm_high is not None else high
    inside = np.clip(
        data, -np.inf if inner_low is None else inner_low, np.inf if inner_high is None else inner_high
    )
    params = {"low": low, "high": high, "alarm_low": alarm_low, "alarm_high": alarm_high}
    spec = RuleSpec("limits", "process", params)
    return Detection(spec, level >= LimitState.AMBER, data - inside, level=level)


# ------------------------------------------------------------------------------------ sensor health


def stuck_check(values: np.ndarray, *, n: int = 10, epsilon: float = 0.0) -> Detection:
    """Flag a frozen sensor: `n` consecutive readings all within `epsilon` of each other.

    The alarm sits on the n-th stuck reading and every later one while the run lasts; prepend n - 1 readings
    of the previous window to carry a run across windows. The statistic is the range of the last n readings.
    """
    if n < 2 or epsilon < 0.0:
        raise ValueError("stuck check needs n >= 2 and epsilon >= 0")
    data = _as_1d(values)
    spread = np.full(data.size, np.nan)
    if data.size >= n:
        # Running max and min as n - 1 elementwise passes over shifted views: the same numbers (NaN included)
        # as reducing each window of a sliding view, about ten times faster for the usual n.
        m = data.size - n + 1
        high, low = data[:m].copy(), data[:m].copy()
        for k in range(1, n):
            np.maximum(high, data[k : k + m], out=high)
            np.minimum(low, data[k : k + m], out=low)
        spread[n - 1 :] = high - low
    with np.errstate(invalid="ignore"):
        alarm = spread <= epsilon
    return Detection(RuleSpec("health.stuck", "health", {"n": n, "epsilon": epsilon}), alarm, spread)


def spike_check(
    values: np.ndarray, *, half_window: int = 5, threshold: float = 5.0, min_scale: float = 0.0
) -> Detection:
    """Flag isolated spikes with a Hampel filter: |x - median| > threshold x 1.4826 MAD of the centred window.

    One outlier barely moves the window's median and MAD, so a glitch stands out, while a genuine step (more
    than `half_window` samples long) drags the median with it and does not. The window is centred: the last
    `half_window` readings of a window are judged once the next window arrives with the previous
    2 x half_window readings prepended. `min_scale` (e.g. the sensor resolution) stops a quantised,
    momentarily flat signal from making every change a spike.
    """
    if half_window < 1 or threshold <= 0.0 or min_scale < 0.0:
        raise ValueError("spike check needs half_window >= 1, threshold > 0, min_scale >= 0")
    data = _as_1d(values)
    width = 2 * half_window + 1
    score = np.full(data.size, np.nan)
    if data.size >= width:
        windows = sliding_window_view(data, width)
        if not np.isnan(data).any():
            # The window is odd, so its median is its middle order statistic: a partition, not a sort (the
            # same numbers as nanmedian, several times faster).
            median = np.partition(windows, half_window, axis=1)[:, half_window]
            mad = np.partition(np.abs(windows - median[:, None]), half_window, axis=1)[:, half_window]
        else:
            with warnings.catch_warnings():
                # A window of missing readings has no median: NaN score, no alarm, which is what we want.
                warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
                median = np.nanmedian(windows, axis=1)
                mad = np.nanmedian(np.abs(windows - median[:, None]), axis=1)
        deviation = data[half_window : data.size - half_window] - median
        with np.errstate(divide="ignore", invalid="ignore"):
            robust = deviation / np.maximum(_MAD_TO_SIGMA * mad, min_scale)
        robust[deviation == 0.0] = 0.0  # a reading equal to a flat median is no spike, whatever the scale
        score[half_window : data.size - half_window] = robust
    with np.errstate(invalid="ignore"):
        alarm = np.abs(score) > threshold
    params = {"half_window": half_window, "threshold": threshold, "min_scale": min_scale}
    return Detection(RuleSpec("health.spike", "health", params), alarm, score)


def _seconds(timestamps: np.ndarray) -> np.ndarray:
    """Return timestamps as float seconds (datetime64 arrays included) for gap arithmetic."""
    stamps = np.asarray(timestamps)
    if np.issubdtype(stamps.dtype, np.datetime64):
        return (stamps - np.datetime64(0, "s")) / np.timedelta64(1, "s")
    return stamps.astype(float)


def gap_check(
    timestamps: np.ndarray,
    *,
    period: float | np.timedelta64 | None = None,
    k: float = 3.0,
    previous: Any = None,
) -> Detection:
    """Flag the first reading after a dropout: a timestamp gap longer than k x the sampling period.

    `period` defaults to the median spacing of the window. A repeated or backwards timestamp is flagged too:
    the clock cannot be trusted. `previous` is the last timestamp of the preceding window. The statistic is
    the gap in sampling periods.
    """
    seconds = _seconds(timestamps)
    if seconds.ndim != 1:
        raise ValueError("timestamps must be 1-D")
    before = np.array([] if previous is None else [previous], dtype=np.asarray(timestamps).dtype)
    gaps = np.diff(np.concatenate((_seconds(before), seconds)))
    if previous is None:
        gaps = np.concatenate(([np.nan], gaps))
    if period is None:
        period_s = float(np.nanmedian(gaps)) if np.isfinite(gaps).any() else np.nan
    elif isinstance(period, np.timedelta64):
        period_s = float(period / np.timedelta64(1, "s"))
    else:
        period_s = float(period)
    if not period_s > 0.0:
        raise ValueError("sampling period must be > 0 (give it when the window has fewer than 2 readings)")
    ratio = gaps / period_s
    with np.errstate(invalid="ignore"):
        alarm = (ratio > k) | (ratio <= 0.0)
    return Detection(RuleSpec("health.gap", "health", {"period_s": period_s, "k": k}), alarm, ratio)


def range_check(values: np.ndarray, *, low: float, high: float) -> Detection:
    """Flag readings outside the sensor's physical measuring range, or not finite at all."""
    if not low < high:
        raise ValueError("physical range needs low < high")
    data = _as_1d(values)
    with np.errstate(invalid="ignore"):
        alarm = ~((data >= low) & (data <= high))
    return Detection(RuleSpec("health.range", "health", {"low": low, "high": high}), alarm, data)


def opcua_quality(status_codes: np.ndarray) -> np.ndarray:
    """Map OPC UA StatusCodes to Quality by their severity bits (00 good, 01 uncertain, 1x bad)."""
    severity = np.asarray(status_codes, dtype=np.uint32) >> np.uint32(30)
    return np.minimum(severity, Quality.BAD).astype(np.int8)


def quality_check(quality: np.ndarray, *, uncertain: bool = True) -> Detection:
    """Flag readings whose quality is bad, and uncertain ones unless `uncertain` is False."""
    flags = np.asarray(quality)
    if flags.ndim != 1:
        raise ValueError("quality must be 1-D")
    worst = Quality.UNCERTAIN if uncertain else Quality.BAD
    spec = RuleSpec("health.quality", "health", {"uncertain": uncertain})
    return Detection(spec, flags >= worst, flags.astype(float))


# ----------------------------------------------------------------------------------------- episodes


def _magnitude(deviation: float) -> float:
    """Return |deviation|, with NaN ranking below every real value."""
    return -np.inf if np.isnan(deviation) else abs(deviation)


def _window_episodes(
    alarm: np.ndarray,
    timestamps: np.ndarray,
    values: np.ndarray,
    deviation: np.ndarray,
    rule: str,
    tolerance: int,
    offset: int,
) -> list[Episode]:
    """Split one window's alarms into episodes, with global indices."""
    alarmed = np.flatnonzero(alarm)
    if alarmed.size == 0:
        return []
    breaks = np.diff(alarmed) - 1 >= tolerance
    starts = alarmed[np.concatenate(([True], breaks))]
    ends = alarmed[np.concatenate((breaks, [True]))]
    # Peaks are taken over alarmed samples only, so a split window sees the same candidates as the whole.
    magnitude = np.where(alarm, np.abs(deviation), -np.inf)
    magnitude[np.isnan(magnitude)] = -np.inf
    counts = np.cumsum(alarm)
    episodes = []
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):  # one iteration per excursion
        peak = start + int(np.argmax(magnitude[start : end + 1]))
        episodes.append(Episode(
            rule=rule, start_index=offset + start, end_index=offset + end,
            start_time=timestamps[start], end_time=timestamps[end],
            peak_index=offset + peak, peak_value=float(values[peak]), peak_deviation=float(deviation[peak]),
            n_alarms=int(counts[end] - (counts[start - 1] if start else 0)),
            open=alarm.size - 1 - end < tolerance,
        ))
    return episodes


def extend_episodes(
    open_episode: Episode | None,
    alarm: np.ndarray,
    timestamps: np.ndarray,
    values: np.ndarray,
    *,
    rule: str,
    deviation: np.ndarray | None = None,
    gap_tolerance: int = 1,
    index_offset: int = 0,
) -> list[Episode]:
    """Continue episode detection into the next window, so windows chained give the whole-series episodes.

    `open_episode` is the last episode of the previous window if it was still open; `index_offset` is the
    global index of this window's first sample (windows must be consecutive, without overlap). The result
    lists the carried episode first (extended, or closed if this window's quiet start ended it), then the
    new ones; only the last can be open.
    """
    flags = np.asarray(alarm, dtype=bool)
    data = _as_1d(values)
    if flags.shape != data.shape or len(timestamps) != data.size:
        raise ValueError("alarm, timestamps and values must be aligned")
    deviations = data if deviation is None else _as_1d(deviation, "deviation")
    if deviations.shape != data.shape:
        raise ValueError("deviation must be aligned with values")
    if gap_tolerance < 0:
        raise ValueError("gap_tolerance must be >= 0")
    # Adjacent alarms always belong together, so a tolerance of 0 behaves like 1.
    tolerance = max(gap_tolerance, 1)
    episodes = _window_episodes(flags, timestamps, data, deviations, rule, tolerance, index_offset)
    if open_episode is None:
        return episodes
    if open_episode.rule != rule:
        raise ValueError(f"cannot extend a {open_episode.rule} episode with {rule} alarms")
    if open_episode.end_index >= index_offset:
        raise ValueError("the new window overlaps the open episode")
    if episodes and episodes[0].start_index - open_episode.end_index - 1 < tolerance:
        first = episodes[0]
        # Strictly greater: on a tie the earlier peak wins, as argmax does over the whole series.
        later_higher = _magnitude(first.peak_deviation) > _magnitude(open_episode.peak_deviation)
        peak = first if later_higher else open_episode
        merged = replace(
            open_episode, end_index=first.end_index, end_time=first.end_time, peak_index=peak.peak_index,
            peak_value=peak.peak_value, peak_deviation=peak.peak_deviation,
            n_alarms=open_episode.n_alarms + first.n_alarms, open=first.open,
        )
        return [merged, *episodes[1:]]
    window_end = index_offset + data.size - 1
    return [replace(open_episode, open=window_end - open_episode.end_index < tolerance), *episodes]


def find_episodes(
    alarm: np.ndarray,
    timestamps: np.ndarray,
    values: np.ndarray,
    *,
    rule: str,
    deviation: np.ndarray | None = None,
    gap_tolerance: int = 1,
    index_offset: int = 0,
) -> list[Episode]:
    """Group per-sample alarms into episodes so one excursion is reported, reviewed and signed once.

    Alarms separated by fewer than `gap_tolerance` quiet samples merge (adjacent alarms always do). The peak
    is the alarmed sample of largest |deviation| (default: the values); pass the rule's statistic to rank by
    how far the chart went.
    """
    return extend_episodes(
        None, alarm, timestamps, values, rule=rule, deviation=deviation,
        gap_tolerance=gap_tolerance, index_offset=index_offset,
    )
