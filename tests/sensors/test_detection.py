"""Tests of the univariate detection rules, their run lengths, sensor health checks and episodes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.signal import lfilter

from app.sensors import detection as d

MEAN, SIGMA = 37.0, 0.2  # a bioreactor temperature in degC: charts must work in engineering units


def readings(z: np.ndarray | list[float]) -> np.ndarray:
    """Return engineering-unit readings whose standardised values are z."""
    return MEAN + SIGMA * np.asarray(z, dtype=float)


def nelson(z: np.ndarray | list[float], rule: int, **options: int) -> np.ndarray:
    """Return the alarm array of one Nelson rule on standardised values z."""
    return d.nelson_rules(readings(z), mean=MEAN, sigma=SIGMA, rules=(rule,), **options)[rule].alarm


def run_lengths(alarm: np.ndarray) -> np.ndarray:
    """Return the 1-based index of each row's first alarm; a row that never alarms counts as its length."""
    first = np.argmax(alarm, axis=1) + 1
    return np.where(alarm.any(axis=1), first, alarm.shape[1]).astype(float)


def reference_ewma(z: np.ndarray, lam: float, start: float) -> np.ndarray:
    """Return the EWMA by its textbook loop, to check the lfilter implementation against."""
    out, level = [], start
    for value in z:
        level = lam * value + (1.0 - lam) * level
        out.append(level)
    return np.asarray(out)


def reference_cusum(z: np.ndarray, k: float, start: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Return the tabular CUSUM by its textbook loop, to check the vectorised one against."""
    up, down, ups, downs = start[0], start[1], [], []
    for value in z:
        up, down = max(0.0, up + value - k), max(0.0, down - value - k)
        ups.append(up)
        downs.append(down)
    return np.asarray(ups), np.asarray(downs)


# ------------------------------------------------------------------------------------------ rule specs


def test_rule_spec_round_trips_through_json_and_fingerprints_its_parameters() -> None:
    detection = d.cusum_chart(readings([0.0, 1.0]), mean=MEAN, sigma=SIGMA)
    stored = json.loads(json.dumps(detection.spec.to_dict()))
    restored = d.RuleSpec.from_dict(stored)
    assert restored == detection.spec
    assert restored.fingerprint == detection.spec.fingerprint
    assert stored == {"rule": "cusum", "kind": "process", "model_version": d.MODEL_VERSION,
                      "params": {"mean": MEAN, "sigma": SIGMA, "k": 0.5, "h": 4.77}}
    other = d.cusum_chart(readings([0.0, 1.0]), mean=MEAN, sigma=SIGMA, params=d.CusumParams(0.5, 5.0))
    assert other.spec.fingerprint != detection.spec.fingerprint


# --------------------------------------------------------------------------------------- Nelson rules


def test_nelson_1_flags_a_point_beyond_three_sigma() -> None:
    rng = np.random.default_rng(1)
    z = np.clip(rng.normal(0.0, 1.0, 40), -2.5, 2.5)
    z[17] = -3.2
    assert np.flatnonzero(nelson(z, 1)).tolist() == [17]
    z[17] = -2.99
    assert not nelson(z, 1).any()


def test_nelson_1_in_control_alarm_rate_is_the_normal_tail() -> None:
    z = np.random.default_rng(2).standard_normal(400_000)
    rate = nelson(z, 1).mean()
    expected = 0.0027  # P(|Z| > 3): the 370-sample ARL0 every other chart is matched to
    assert abs(rate - expected) < 4 * np.sqrt(expected * (1 - expected) / z.size)


def test_nelson_2_flags_nine_points_on_one_side() -> None:
    rng = np.random.default_rng(3)
    z = np.concatenate(([-0.4], rng.uniform(0.05, 1.5, 9)))
    assert np.flatnonzero(nelson(z, 2)).tolist() == [9]
    broken = np.concatenate((rng.uniform(0.05, 1.5, 8), [-0.1], rng.uniform(0.05, 1.5, 8)))
    assert not nelson(broken, 2).any()
    assert not nelson(-z[:-1], 2).any()


def test_western_electric_run_of_eight_is_configurable() -> None:
    z = np.random.default_rng(4).uniform(-1.5, -0.05, 8)
    assert not nelson(z, 2).any()
    assert np.flatnonzero(nelson(z, 2, same_side_run=d.WESTERN_ELECTRIC_SAME_SIDE_RUN)).tolist() == [7]


def test_nelson_3_flags_six_points_steadily_rising_or_falling() -> None:
    rng = np.random.default_rng(5)
    rising = np.sort(rng.uniform(-2.0, 2.0, 6))
    assert np.flatnonzero(nelson(rising, 3)).tolist() == [5]
    assert np.flatnonzero(nelson(rising[::-1], 3)).tolist() == [5]
    five_then_drop = np.concatenate((rising[:5], [rising[0] - 0.5], rising[1:5] + 0.1))
    assert not nelson(five_then_drop, 3).any()
    tied = rising.copy()
    tied[3] = tied[2]  # a repeated value is not "increasing"
    assert not nelson(tied, 3).any()


def test_nelson_4_flags_fourteen_points_alternating() -> None:
    rng = np.random.default_rng(6)
    alternating = np.where(np.arange(14) % 2 == 0, 1.0, -1.0) * rng.uniform(0.2, 0.9, 14)
    assert np.flatnonzero(nelson(alternating, 4)).tolist() == [13]
    assert not nelson(alternating[:13], 4).any()
    broken = alternating.copy()
    broken[7] = broken[6] + 0.1 * np.sign(broken[6])  # continues the previous step's direction
    assert not nelson(broken, 4).any()


def test_nelson_5_flags_two_of_three_beyond_two_sigma_same_side() -> None:
    rng = np.random.default_rng(7)
    base = rng.uniform(-0.5, 0.5, 4)
    positive = base.copy()
    positive[[1, 3]] = [2.3, 2.6]
    assert np.flatnonzero(nelson(positive, 5)).tolist() == [3]
    opposite = base.copy()
    opposite[[1, 3]] = [2.3, -2.6]
    assert not nelson(opposite, 5).any()
    too_far_apart = np.concatenate(([2.3], base[:2], [2.6]))
    assert not nelson(too_far_apart, 5).any()


def test_nelson_6_flags_four_of_five_beyond_one_sigma_same_side() -> None:
    rng = np.random.default_rng(8)
    positive = -rng.uniform(1.05, 1.9, 5)
    positive[2] = 0.3
    assert np.flatnonzero(nelson(positive, 6)).tolist() == [4]
    three_of_five = positive.copy()
    three_of_five[0] = 0.2
    assert not nelson(three_of_five, 6).any()
    mixed = positive.copy()
    mixed[0] = 1.5
    assert not nelson(mixed, 6).any()


def test_nelson_7_flags_fifteen_points_hugging_the_centre_line() -> None:
    rng = np.random.default_rng(9)
    hugging = rng.uniform(-0.95, 0.95, 15)
    assert np.flatnonzero(nelson(hugging, 7)).tolist() == [14]
    interrupted = np.concatenate((hugging[:14], [1.4], hugging[:14]))
    assert not nelson(interrupted, 7).any()


def test_nelson_8_flags_eight_points_avoiding_the_centre_zone() -> None:
    rng = np.random.default_rng(10)
    avoiding = rng.choice([-1.0, 1.0], 8) * rng.uniform(1.1, 2.8, 8)
    assert np.flatnonzero(nelson(avoiding, 8)).tolist() == [7]
    interrupted = np.concatenate((avoiding[:7], [0.4], avoiding[:7]))
    assert not nelson(interrupted, 8).any()


def test_nelson_rules_skip_missing_readings_and_never_alarm_on_them() -> None:
    z = np.concatenate(([-0.4], np.full(4, 0.5), [np.nan], np.full(5, 0.5)))
    alarm = nelson(z, 2)
    assert np.flatnonzero(alarm).tolist() == [10]  # the NaN neither counts nor breaks the run
    assert not alarm[5]


def test_nelson_windows_with_lookback_match_the_whole_series() -> None:
    rng = np.random.default_rng(11)
    z = rng.standard_normal(3000) + np.repeat(rng.normal(0.0, 1.0, 30), 100)  # shifts make patterns
    values = readings(z)
    whole = d.nelson_rules(values, mean=MEAN, sigma=SIGMA)
    lookback = d.nelson_lookback()
    cuts = np.sort(rng.choice(np.arange(1, values.size), 25, replace=False))
    for rule, detection in whole.items():
        pieces = []
        for start, stop in zip(np.r_[0, cuts], np.r_[cuts, values.size], strict=True):
            begin = max(0, start - lookback)
            window = d.nelson_rules(values[begin:stop], mean=MEAN, sigma=SIGMA, rules=(rule,))[rule]
            pieces.append(window.alarm[start - begin :])
        assert np.array_equal(np.concatenate(pieces), detection.alarm), f"rule {rule}"
        assert detection.alarm.any(), f"rule {rule} never fired: the comparison proves nothing"


def test_nelson_rejects_an_unknown_rule() -> None:
    with pytest.raises(ValueError, match="unknown Nelson rule"):
        d.nelson_rules(readings([0.0]), mean=MEAN, sigma=SIGMA, rules=(9,))


# ------------------------------------------------------------------------------------ EWMA and CUSUM


def test_ewma_and_cusum_match_their_textbook_recursions() -> None:
    z = np.random.default_rng(12).normal(0.3, 1.0, 500)
    assert np.allclose(d.ewma(z, 0.2, start=0.7), reference_ewma(z, 0.2, 0.7), rtol=0, atol=1e-12)
    up, down = d.cusum(z, 0.5, start=(1.5, 0.25))
    ref_up, ref_down = reference_cusum(z, 0.5, (1.5, 0.25))
    assert np.allclose(up, ref_up, rtol=0, atol=1e-10)
    assert np.allclose(down, ref_down, rtol=0, atol=1e-10)


def test_ewma_chart_catches_a_one_sigma_step_but_not_an_isolated_outlier() -> None:
    rng = np.random.default_rng(13)
    z = rng.normal(0.0, 0.5, 200)  # quiet noise so only the planted event can matter
    stepped = z.copy()
    stepped[100:] += 1.0
    alarm = d.ewma_chart(readings(stepped), mean=MEAN, sigma=SIGMA).alarm
    assert not alarm[:100].any()
    assert 0 < np.flatnonzero(alarm)[0] - 100 < 25
    outlier = z.copy()
    outlier[100] = 2.8
    assert not d.ewma_chart(readings(outlier), mean=MEAN, sigma=SIGMA).alarm.any()


def test_cusum_chart_catches_a_one_sigma_step_but_not_an_isolated_outlier() -> None:
    rng = np.random.default_rng(14)
    z = rng.normal(0.0, 0.5, 200)
    stepped = z.copy()
    stepped[100:] -= 1.0
    detection = d.cusum_chart(readings(stepped), mean=MEAN, sigma=SIGMA)
    assert not detection.alarm[:100].any()
    first = np.flatnonzero(detection.alarm)[0]
    assert 0 < first - 100 < 25
    assert detection.statistic[first] < -4.77  # the sign says the process went down
    outlier = z.copy()
    outlier[100] = 4.0
    assert not d.cusum_chart(readings(outlier), mean=MEAN, sigma=SIGMA).alarm.any()


def test_published_parameters_give_an_in_control_arl_near_370_by_simulation() -> None:
    rng = np.random.default_rng(15)
    ewma_params, cusum_params = d.EwmaParams(0.2, 2.86), d.CusumParams(0.5, 4.77)
    ewma_runs, cusum_runs = [], []
    for _ in range(4):  # 4 x 1000 runs of 3000 samples: a run that never alarms (p ~ 3e-4) counts as 3000
        z = rng.standard_normal((1000, 3000))
        ewma_runs.append(run_lengths(np.abs(d.ewma(z, ewma_params.lam)) > ewma_params.limit))
        up, down = d.cusum(z, cusum_params.k)
        cusum_runs.append(run_lengths((up > cusum_params.h) | (down > cusum_params.h)))
    ewma_arl0, cusum_arl0 = np.mean(np.concatenate(ewma_runs)), np.mean(np.concatenate(cusum_runs))
    # The standard error of a mean of 4000 near-geometric run lengths is ~6 samples: +-10 % is ~6 of them.
    assert abs(ewma_arl0 / d.ewma_arl(0.2, 2.86) - 1) < 0.10
    assert abs(cusum_arl0 / d.cusum_arl(0.5, 4.77) - 1) < 0.10
    assert min(ewma_arl0, cusum_arl0) > 0.9 * 370


def test_published_parameters_catch_a_one_sigma_shift_within_about_ten_samples() -> None:
    z = np.random.default_rng(16).standard_normal((20_000, 200)) + 1.0
    ewma_delay = run_lengths(np.abs(d.ewma(z, 0.2)) > d.EwmaParams(0.2, 2.86).limit).mean()
    up, down = d.cusum(z, 0.5)
    cusum_delay = run_lengths((up > 4.77) | (down > 4.77)).mean()
    assert abs(ewma_delay / d.ewma_arl(0.2, 2.86, shift=1.0) - 1) < 0.05
    assert abs(cusum_delay / d.cusum_arl(0.5, 4.77, shift=1.0) - 1) < 0.05
    assert max(ewma_delay, cusum_delay) < 11.0


def test_design_reproduces_the_published_tables() -> None:
    assert abs(d.design_cusum(370.0).h - 4.77) < 0.01  # Siegmund, k = 0.5
    assert abs(d.design_ewma(370.0, lam=0.2).L - 2.86) < 0.01
    # Montgomery, Introduction to SQC, table 9.11: L for ARL0 = 500.
    for lam, published in ((0.05, 2.615), (0.1, 2.814), (0.2, 2.962), (0.4, 3.054)):
        assert abs(d.design_ewma(500.0, lam=lam).L - published) < 0.005, lam
    # Montgomery table 9.3: ARL0 of k = 0.5 CUSUMs with h = 4 and h = 5.
    assert abs(d.cusum_arl(0.5, 4.0) / 168 - 1) < 0.02
    assert abs(d.cusum_arl(0.5, 5.0) / 465 - 1) < 0.02
    assert d.design_cusum(1000.0).h > d.design_cusum(370.0).h


def test_the_precomputed_default_design_is_what_the_design_functions_compute(monkeypatch) -> None:
    table = dict(d.PRECOMPUTED_DESIGNS)
    assert d.design_detector(370.0) == d.DetectorDesign(table["ewma", 740.0, 0.1], table["cusum", 740.0, 0.5], 370.0)
    monkeypatch.setattr(d, "PRECOMPUTED_DESIGNS", {})  # compute them again, bypassing the table and the cache
    for (kind, arl0, parameter), expected in table.items():
        if kind == "ewma":
            assert d.design_ewma.__wrapped__(arl0, lam=parameter) == expected
        else:
            assert d.design_cusum.__wrapped__(arl0, k=parameter) == expected


def test_recommended_detector_keeps_its_arl0_and_catches_one_sigma_in_about_ten() -> None:
    design = d.design_detector(370.0)
    rng = np.random.default_rng(17)
    runs = []
    for _ in range(4):
        z = rng.standard_normal((1000, 4000))
        up, down = d.cusum(z, design.cusum.k)
        runs.append(run_lengths((np.abs(d.ewma(z, design.ewma.lam)) > design.ewma.limit)
                               | (up > design.cusum.h) | (down > design.cusum.h)))
    assert np.mean(np.concatenate(runs)) > 370.0 * 1.2  # Bonferroni is conservative: ~520 measured
    shifted = rng.standard_normal((20_000, 200)) + 1.0
    up, down = d.cusum(shifted, design.cusum.k)
    delay = run_lengths((np.abs(d.ewma(shifted, design.ewma.lam)) > design.ewma.limit)
                        | (up > design.cusum.h) | (down > design.cusum.h))
    assert delay.mean() < 11.5
    assert np.median(delay) <= 10


def test_shift_detector_whitens_autocorrelated_readings() -> None:
    rng = np.random.default_rng(18)

    def ar1(n: int) -> np.ndarray:
        return 6.8 + 0.05 * lfilter([1.0], [1.0, -0.7], rng.standard_normal(n))

    model = d.fit_in_control(ar1(20_000))
    assert abs(model.phi - 0.7) < 0.02
    assert abs(model.sigma - 0.05) < 0.002
    quiet = ar1(20_000)
    whitened = d.shift_detector(quiet, model=model).alarm
    naive = d.cusum_chart(quiet, mean=model.mean, sigma=float(np.std(quiet))).alarm
    # Charted raw, AR(1) readings alarm far more often than designed; whitened they keep ARL0 near 370+.
    assert np.count_nonzero(np.diff(whitened.astype(int)) == 1) < 20_000 / 370 * 1.5
    assert np.count_nonzero(np.diff(naive.astype(int)) == 1) > 3 * np.count_nonzero(
        np.diff(whitened.astype(int)) == 1
    )
    stepped = ar1(600)
    stepped[300:] += 2.0 * 0.05 / np.sqrt(1 - 0.7**2)  # 2 sigma of the readings
    alarm = d.shift_detector(stepped, model=model).alarm
    assert np.flatnonzero(alarm[300:]).size and np.flatnonzero(alarm[300:])[0] < 30


@pytest.mark.parametrize("chart", ["ewma", "cusum", "shift"])
def test_charts_carry_state_so_windows_match_the_whole_series(chart: str) -> None:
    rng = np.random.default_rng(19)
    values = readings(rng.standard_normal(2000) + np.repeat(rng.normal(0.0, 0.8, 20), 100))
    values[rng.choice(values.size, 30, replace=False)] = np.nan
    model = d.InControlModel(mean=MEAN, sigma=SIGMA, phi=0.2)

    def run(window: np.ndarray, state: d.ChartState) -> d.Detection:
        if chart == "ewma":
            return d.ewma_chart(window, mean=MEAN, sigma=SIGMA, state=state)
        if chart == "cusum":
            return d.cusum_chart(window, mean=MEAN, sigma=SIGMA, state=state)
        return d.shift_detector(window, model=model, state=state)

    whole = run(values, d.ChartState())
    cuts = np.sort(rng.choice(np.arange(1, values.size), 40, replace=False))
    state, alarms, statistics = d.ChartState(), [], []
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, values.size], strict=True):
        window = run(values[start:stop], state)
        assert window.state is not None
        state = d.ChartState(**json.loads(json.dumps(window.state.to_dict())))  # as stored between jobs
        alarms.append(window.alarm)
        statistics.append(window.statistic)
    assert whole.alarm.any()
    assert np.array_equal(np.concatenate(alarms), whole.alarm)
    assert np.allclose(np.concatenate(statistics), whole.statistic, rtol=0, atol=1e-9, equal_nan=True)
    assert not whole.alarm[np.isnan(values)].any()


# ------------------------------------------------------------------------------------------- limits


def test_limit_states_colour_each_reading() -> None:
    values = np.array([36.0, 36.5, 36.8, 37.0, 37.2, 37.5, 38.0, np.nan])
    states = d.limit_states(values, low=36.5, alarm_low=36.8, alarm_high=37.2, high=37.5)
    g, a, r, u = d.LimitState.GREEN, d.LimitState.AMBER, d.LimitState.RED, d.LimitState.UNKNOWN
    assert states.tolist() == [r, a, g, g, g, a, r, u]  # a reading on a limit is inside it


def test_limit_check_alarms_on_amber_and_red_only() -> None:
    rng = np.random.default_rng(20)
    inside = rng.uniform(36.85, 37.15, 50)
    quiet = d.limit_check(inside, low=36.5, alarm_low=36.8, alarm_high=37.2, high=37.5)
    assert not quiet.alarm.any()
    assert np.all(quiet.statistic == 0.0)
    excursion = inside.copy()
    excursion[[10, 30]] = [37.3, 36.2]
    loud = d.limit_check(excursion, low=36.5, alarm_low=36.8, alarm_high=37.2, high=37.5)
    assert np.flatnonzero(loud.alarm).tolist() == [10, 30]
    assert loud.level is not None
    assert loud.level[[10, 30]].tolist() == [d.LimitState.AMBER, d.LimitState.RED]
    assert loud.statistic[[10, 30]] == pytest.approx([0.1, -0.6])


def test_limits_must_be_nested() -> None:
    with pytest.raises(ValueError, match="limits must satisfy"):
        d.limit_states(np.zeros(3), low=1.0, alarm_low=0.5)


# ------------------------------------------------------------------------------------- sensor health


def test_stuck_check_flags_identical_readings_and_spares_live_noise() -> None:
    rng = np.random.default_rng(21)
    live = 7.0 + rng.normal(0.0, 0.01, 60)
    assert not d.stuck_check(live, n=10).alarm.any()
    frozen = live.copy()
    frozen[20:35] = frozen[19]
    alarm = d.stuck_check(frozen, n=10).alarm
    assert np.flatnonzero(alarm).tolist() == list(range(28, 35))  # 19..28 are the first ten equal readings
    quantised = np.round(frozen, 2)
    quantised[40:52] = 7.0 + rng.choice([0.0, 0.001], 12)  # jitter below the sensor's resolution
    assert d.stuck_check(quantised, n=10, epsilon=0.0015).alarm[49:52].all()
    assert not d.stuck_check(quantised, n=10, epsilon=0.0).alarm[49:52].any()
    assert d.stuck_check(quantised, n=10, epsilon=0.0015).spec.kind == "health"


def test_spike_check_flags_a_glitch_but_not_a_genuine_step() -> None:
    rng = np.random.default_rng(22)
    signal = 6.8 + rng.normal(0.0, 0.02, 200)
    assert not d.spike_check(signal).alarm.any()
    glitch = signal.copy()
    glitch[80] += 0.5
    assert np.flatnonzero(d.spike_check(glitch).alarm).tolist() == [80]
    stepped = signal.copy()
    stepped[100:] += 0.5  # a real process move is not a sensor glitch
    assert not d.spike_check(stepped).alarm.any()


def test_spike_check_scores_are_the_hampel_statistic_with_or_without_missing_readings() -> None:
    rng = np.random.default_rng(5)
    values = 37.0 + rng.normal(0.0, 0.05, 600)
    values[[60, 333]] += 1.0
    h = 7
    windows = np.lib.stride_tricks.sliding_window_view(values, 2 * h + 1)
    median = np.sort(windows, axis=1)[:, h]  # by definition: the middle of the sorted window
    mad = np.sort(np.abs(windows - median[:, None]), axis=1)[:, h]
    expected = (values[h:-h] - median) / (1.482602218505602 * mad)
    np.testing.assert_allclose(d.spike_check(values, half_window=h).statistic[h:-h], expected)
    # A missing reading takes the NaN-aware path; windows that do not contain it score the same.
    holed = values.copy()
    holed[500] = np.nan
    score = d.spike_check(holed, half_window=h).statistic
    np.testing.assert_allclose(score[h:500 - h], expected[:500 - 2 * h])
    assert np.flatnonzero(d.spike_check(holed, half_window=h, threshold=10.0).alarm).tolist() == [60, 333]


def test_spike_check_respects_a_resolution_floor_on_flat_signals() -> None:
    flat = np.full(30, 20.0)
    flat[15] = 20.1
    detection = d.spike_check(flat)
    assert np.flatnonzero(detection.alarm).tolist() == [15]
    assert detection.statistic[15] == np.inf
    assert detection.statistic[10] == 0.0  # on the flat median, with zero MAD: no deviation, not undefined
    assert not d.spike_check(flat, min_scale=0.05).alarm.any()


def test_gap_check_flags_the_reading_after_a_dropout() -> None:
    rng = np.random.default_rng(23)
    jitter = rng.integers(-10, 11, 40).astype("timedelta64[s]")
    stamps = np.datetime64("2024-06-01T08:00:00") + np.arange(40) * np.timedelta64(60, "s") + jitter
    assert not d.gap_check(stamps, period=np.timedelta64(60, "s")).alarm.any()
    dropped = np.delete(stamps, np.arange(20, 25))  # five readings lost: a six-minute hole
    alarm = d.gap_check(dropped, period=np.timedelta64(60, "s")).alarm
    assert np.flatnonzero(alarm).tolist() == [20]
    assert np.flatnonzero(d.gap_check(dropped).alarm).tolist() == [20]  # period estimated from the window
    seconds = np.array([0.0, 60.0, 120.0, 100.0, 180.0])
    assert np.flatnonzero(d.gap_check(seconds, period=60.0).alarm).tolist() == [3]  # clock went backwards
    assert d.gap_check(np.array([500.0]), period=60.0, previous=120.0).alarm.tolist() == [True]


def test_range_check_flags_physically_impossible_readings() -> None:
    values = np.array([7.0, 14.5, -0.1, np.nan, np.inf, 0.0, 14.0])
    alarm = d.range_check(values, low=0.0, high=14.0).alarm  # a pH probe
    assert alarm.tolist() == [False, True, True, True, True, False, False]


def test_quality_flags_map_from_opc_ua_and_raise_health_alarms() -> None:
    codes = np.array([0x00000000, 0x40920000, 0x80340000, 0x00A20000, 0xC0000000], dtype=np.uint32)
    quality = d.opcua_quality(codes)
    good, uncertain, bad = d.Quality.GOOD, d.Quality.UNCERTAIN, d.Quality.BAD
    assert quality.tolist() == [good, uncertain, bad, good, bad]
    assert d.quality_check(quality).alarm.tolist() == [False, True, True, False, True]
    assert d.quality_check(quality, uncertain=False).alarm.tolist() == [False, False, True, False, True]


def test_health_alarms_are_kept_out_of_process_charts() -> None:
    rng = np.random.default_rng(24)
    values = readings(rng.normal(0.0, 0.5, 100))
    values[40] = MEAN + 40 * SIGMA  # a glitch, not a process event
    raw = d.nelson_rules(values, mean=MEAN, sigma=SIGMA, rules=(1,))[1]
    assert raw.alarm[40]
    spike = d.spike_check(values)
    assert spike.spec.kind == "health"
    assert spike.alarm[40]
    clean = d.nelson_rules(d.mask_unhealthy(values, spike), mean=MEAN, sigma=SIGMA, rules=(1,))[1]
    assert not clean.alarm.any()


# ---------------------------------------------------------------------------------------- episodes


def test_episodes_merge_alarms_across_short_gaps() -> None:
    alarm = np.zeros(20, dtype=bool)
    alarm[[2, 3, 4, 7, 8, 15]] = True
    stamps = np.arange(20) * 60.0
    values = np.arange(20, dtype=float) % 7
    episodes = d.find_episodes(alarm, stamps, values, rule="ewma", gap_tolerance=3)
    assert [(e.start_index, e.end_index, e.n_alarms) for e in episodes] == [(2, 8, 5), (15, 15, 1)]
    first = episodes[0]
    assert (first.start_time, first.end_time) == (120.0, 480.0)
    assert (first.peak_index, first.peak_value) == (4, 4.0)  # values 2,3,4,0,1 on the alarmed samples
    assert not first.open
    assert len(d.find_episodes(alarm, stamps, values, rule="ewma", gap_tolerance=2)) == 3
    assert len(d.find_episodes(alarm, stamps, values, rule="ewma", gap_tolerance=0)) == 3
    tail = d.find_episodes(alarm, stamps, values, rule="ewma", gap_tolerance=5)
    assert tail[-1].open  # 4 quiet samples after 15 < 5: the next window may extend it


def test_episode_peak_ranks_by_deviation() -> None:
    alarm = np.array([False, True, True, True, False])
    values = np.array([37.0, 37.3, 37.6, 37.4, 37.0])
    deviation = np.array([0.0, 5.1, -4.0, -6.2, 0.0])
    (episode,) = d.find_episodes(alarm, np.arange(5), values, rule="cusum", deviation=deviation)
    assert (episode.peak_index, episode.peak_value, episode.peak_deviation) == (3, 37.4, -6.2)


def test_chained_windows_give_the_same_episodes_as_the_whole_series() -> None:
    rng = np.random.default_rng(25)
    carried_over = 0
    for trial in range(300):
        n = int(rng.integers(1, 120))
        # Clustered alarms, integer deviations (ties) and NaNs exercise merging, tie-breaking and ranking.
        alarm = rng.random(n) < rng.choice([0.05, 0.3, 0.7])
        alarm = np.convolve(alarm, np.ones(int(rng.integers(1, 4))))[:n] > 0
        values = rng.integers(-3, 4, n).astype(float)
        deviation = values.copy()
        deviation[rng.random(n) < 0.1] = np.nan
        stamps = np.datetime64("2024-01-01T00:00") + np.arange(n) * np.timedelta64(1, "m")
        tolerance = int(rng.integers(0, 7))
        whole = d.find_episodes(alarm, stamps, values, rule="r", deviation=deviation, gap_tolerance=tolerance)
        cuts = np.sort(rng.choice(np.arange(1, n), min(n - 1, int(rng.integers(0, 10))), replace=False))
        chained: list[d.Episode] = []
        open_episode = None
        for start, stop in zip(np.r_[0, cuts], np.r_[cuts, n], strict=True):
            found = d.extend_episodes(
                open_episode, alarm[start:stop], stamps[start:stop], values[start:stop], rule="r",
                deviation=deviation[start:stop], gap_tolerance=tolerance, index_offset=int(start),
            )
            if open_episode is not None and found and found[0].end_index > open_episode.end_index:
                carried_over += found[0].start_index == open_episode.start_index
            open_episode = found.pop() if found and found[-1].open else None
            chained.extend(found)
        if open_episode is not None:
            chained.append(open_episode)
        assert [repr(e) for e in chained] == [repr(e) for e in whole], f"trial {trial}"  # repr: NaN == NaN
    assert carried_over > 50  # episodes really did span window boundaries


def test_extending_refuses_overlapping_windows_and_foreign_rules() -> None:
    alarm = np.array([False, True, True])
    (episode,) = d.find_episodes(alarm, np.arange(3), np.ones(3), rule="ewma")
    assert episode.open
    with pytest.raises(ValueError, match="overlaps"):
        d.extend_episodes(episode, alarm, np.arange(3), np.ones(3), rule="ewma", index_offset=2)
    with pytest.raises(ValueError, match="cannot extend"):
        d.extend_episodes(episode, alarm, np.arange(3), np.ones(3), rule="cusum", index_offset=3)


def test_an_excursion_episode_ends_within_a_few_samples_of_the_return_to_target() -> None:
    """The shift detector holds its statistics under ceilings, so a large excursion leaves no big sum to drain.

    Without them the episode of a 3-sigma excursion of 200 samples outlasts it by 600+ samples, and a 1-sigma
    one by ~90 (median); with them, by a few samples, and a sustained 1-sigma shift still stays one episode.
    """
    model_rng = np.random.default_rng(30)
    model = d.fit_in_control(37.0 + 0.05 * lfilter([1.0], [1.0, -0.3], model_rng.standard_normal(5000)))
    sigma = 0.05 / np.sqrt(1 - 0.3**2)  # of the readings
    for size in (1.0, 3.0, 6.0):
        late, split = [], 0
        for seed in range(20):
            rng = np.random.default_rng(seed)
            values = 37.0 + 0.05 * lfilter([1.0], [1.0, -0.3], rng.standard_normal(1200))
            values[400:600] += size * sigma  # 200 samples away from target, then back
            alarm = d.shift_detector(values, model=model).alarm
            episodes = d.find_episodes(alarm, np.arange(values.size), values, rule="shift", gap_tolerance=30)
            excursion = [e for e in episodes if e.start_index < 600 and e.end_index >= 400]
            split += len(excursion) != 1
            late.append(excursion[-1].end_index - 599)  # samples the episode outlasts the excursion
        assert np.median(late) <= 10, (size, late)
        assert split <= (2 if size == 1.0 else 0), (size, split)
