"""engine.rpc.log_density: eth_getLogs span forecast from the per-block log counts just fetched."""

from __future__ import annotations

import random

from engine.rpc.log_density import (
    UNCERTAINTY_K,
    WINDOW_BLOCKS,
    _events,
    blocks_for,
    change_point,
    segments,
)


def poisson_blocks(rates: list[float], unit: int, seed: int) -> list[int]:
    """Logs per block: each block gets Poisson(rate / unit) events of ``unit`` logs."""
    rng = random.Random(seed)
    out = []
    for rate in rates:
        lam, k, p = rate / unit, 0, 1.0
        threshold = pow(2.718281828459045, -lam)
        while True:  # Knuth's method; rates here are small
            p *= rng.random()
            if p <= threshold:
                break
            k += 1
        out.append(k * unit)
    return out


def test_no_logs_gives_no_forecast() -> None:
    assert blocks_for([], 9000, 2000) is None
    assert blocks_for([0] * 500, 9000, 2000) is None


def test_steady_rate_spans_target_over_rate_minus_the_uncertainty_margin() -> None:
    # 10 logs in every block: read as 1,000 events of 10 logs (the event size is estimated as
    # sum(n^2) / sum(n)), so the margin is K / sqrt(1000) (K = 0.7: 2.2%).
    counts = [10] * 1000
    assert blocks_for(counts, 9000, 2000) == int(9000 / (1 + UNCERTAINTY_K * 1000**-0.5) / 10)


def test_fewer_events_mean_a_wider_margin() -> None:
    # Same 10 logs per block, but in events of 50 logs (200 events: margin K/sqrt(200) = 5%).
    coarse = [50 if i % 5 == 0 else 0 for i in range(1000)]
    fine = [10] * 1000
    coarse_span = blocks_for(coarse, 9000, 2000)
    assert coarse_span is not None
    assert coarse_span < blocks_for(fine, 9000, 2000)  # type: ignore[operator]
    # 900 / 1.05 = 858, give or take 3% for the slope fitted to the comb pattern
    expected = 900 / (1 + UNCERTAINTY_K / 200**0.5)
    assert 0.97 * expected <= coarse_span <= 1.03 * expected


def test_span_is_capped_by_the_block_limit() -> None:
    assert blocks_for([1] * 300, 9000, 2000) == 2000
    assert blocks_for([1] * 300, 9000, 150) == 150


def test_a_burst_that_began_in_the_last_request_is_measured_on_its_own() -> None:
    # 900 blocks at 5 logs per block, then 100 blocks at 40: the mean (8.5) would overshoot.
    counts = poisson_blocks([5.0] * 900 + [40.0] * 100, unit=1, seed=1)
    assert change_point(counts) >= 880
    span = blocks_for(counts, 9000, 2000)
    assert span is not None
    assert 9000 / 40 * 0.8 <= span <= 9000 / 40


def test_a_burst_that_ended_gives_the_quiet_rate_back() -> None:
    counts = poisson_blocks([40.0] * 300 + [5.0] * 400, unit=1, seed=2)
    span = blocks_for(counts, 9000, 2000)
    assert span is not None
    assert 9000 / 5 * 0.85 <= span <= 9000 / 5 * 1.15


def test_no_change_point_in_a_steady_noisy_stretch() -> None:
    counts = poisson_blocks([3.0] * 1200, unit=50, seed=3)
    assert change_point(counts) == 0


def test_a_trend_is_no_change_point() -> None:
    rising = poisson_blocks([2.0 + 8.0 * i / 1000 for i in range(1000)], unit=1, seed=4)
    assert change_point(rising) == 0


def test_a_burst_inside_the_window_is_cut_out_of_the_rate_after_it() -> None:
    # A rising rate (2 -> 4 logs per block over 1,200 blocks), with a x4 burst in 800..1099: the
    # rate after it is measured on the blocks before and after the burst, with their trend.
    rates = [2.0 + 2.0 * i / 1200 for i in range(1200)]
    burst = [r * 4 if 800 <= i < 1100 else r for i, r in enumerate(rates)]
    plain_counts = poisson_blocks(rates, unit=1, seed=5)
    burst_counts = poisson_blocks(burst, unit=1, seed=5)
    cuts = segments(_events(burst_counts)[0])
    assert len(cuts) == 3 and abs(cuts[1] - 800) <= 5 and abs(cuts[2] - 1100) <= 5
    plain = blocks_for(plain_counts, 3000, 2000)
    after = blocks_for(burst_counts, 3000, 2000)
    assert plain is not None and after is not None
    assert abs(after - plain) <= 0.08 * plain
    # The rate is 4 at the end and rising (1 / 600 per block): 3000 logs in ~650 blocks, not 750.
    assert 600 <= after <= 700


def test_a_rising_rate_gives_a_shorter_span_than_its_mean_and_a_falling_one_a_longer() -> None:
    rising = poisson_blocks([2.0 + 8.0 * i / 1000 for i in range(1000)], unit=1, seed=4)
    falling = list(reversed(rising))
    up, down = blocks_for(rising, 9000, 2000), blocks_for(falling, 9000, 2000)
    assert up is not None and down is not None
    mean_span = 9000 / (sum(rising) / len(rising))  # ~1500 blocks at the mean rate of 6
    assert up < 9000 / 9.0  # the rate at the end is ~10 and still rising
    assert down > mean_span


def test_only_the_latest_window_counts() -> None:
    old_dense = [100] * 5000
    recent = [2] * WINDOW_BLOCKS
    assert blocks_for(old_dense + recent, 1000, 2000) == blocks_for(recent, 1000, 2000)
