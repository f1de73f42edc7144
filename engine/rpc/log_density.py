"""Log density forecast: how many blocks the next eth_getLogs request can span under a result cap.

Input: the per-block log counts of the stretch fetched just before (contiguous, oldest first).

0. Events: logs come in events (a transaction emitting 50 logs is one event). The window's event
   size is estimated as sum(n^2) / sum(n) and every count is read in events, so the Poisson
   statistics below hold for bursty emitters too.
1. Segments: the window (at most WINDOW_BLOCKS) is split where the rate steps, by binary
   segmentation: a stretch is cut at its most significant step when that step, tested against a
   straight line fitted to the stretch (a trend alone is no step), has a Poisson deviance of at
   least CHANGE_DEV. Exact Poisson deviances keep a few events in a short stretch from looking
   like a shift.
2. Base: the latest segment, plus earlier segments whose rate matches it (MERGE_DEV), so the rate
   after a burst is measured on the stretches before and after it, without the burst.
3. Trend: with at least TREND_MIN_EVENTS events over TREND_MIN_BLOCKS blocks in the base, a
   least-squares line through its blocks gives the rate at the window's end and its slope, which
   is projected over the next span (a rising rate gives a shorter span, a falling one a longer
   span, never below FLOOR of the base's mean rate).
4. Uncertainty: with E events in the base the rate is known to ~1/sqrt(E); the events aimed at
   are lowered by UNCERTAINTY_K / sqrt(E).

Measured on ``bench/rpc_calls.py``'s synthetic days (see the module docstring there): fewer calls
than sizing by the last request's mean density, on both smooth and bursty days.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Most recent blocks looked at.
WINDOW_BLOCKS = 1500
#: Poisson deviance (leverage-adjusted, ~z^2) of a rate step that cuts a stretch there.
CHANGE_DEV = 16.0
#: Fewest blocks on either side of a cut.
MIN_SIDE_BLOCKS = 10
#: Splits are tried at every distance from a stretch's end up to this, then geometrically.
FINE_SPLITS = 60
#: Ratio between consecutive split distances beyond FINE_SPLITS.
SPLIT_STEP = 1.08
#: Rounds of binary segmentation (at most 2^depth - 1 cuts).
MAX_DEPTH = 3
#: An earlier segment joins the base when its rate and the latest one's differ by less than this
#: two-sample Poisson deviance.
MERGE_DEV = 10.0
#: Fewest events in the base for the trend (slope) to be used.
TREND_MIN_EVENTS = 100
#: Fewest blocks in the base for the trend to be used.
TREND_MIN_BLOCKS = 300
#: Margin for the rate's uncertainty: aim at target / (1 + K / sqrt(events)).
UNCERTAINTY_K = 0.7
#: Lowest projected rate, as a share of the base's mean rate (also the floor of a trend line).
FLOOR = 0.25


def _deviance(observed: float, expected: float) -> float:
    """Poisson deviance of ``observed`` events where ``expected`` were expected."""
    if expected <= 0.0:
        return 0.0
    if observed <= 0.0:
        return 2.0 * expected
    return 2.0 * (observed * math.log(observed / expected) - (observed - expected))


def _best_split(p0: list[float], p1: list[float], lo: int, end: int) -> int | None:
    """Most significant rate step in events[lo:end] (its first index), None below CHANGE_DEV.

    ``p0``/``p1``: prefix sums of events and of index * events. The null is a least-squares line
    through the stretch; a split at t compares the events from t on with the line's expectation
    (Poisson deviance), scaled by k / |step regressor orthogonal to the line|^2 so that it reads
    as the z^2 of a step added to the line.
    """
    n = end - lo
    total = p0[end] - p0[lo]
    if total <= 0.0 or n < 2 * MIN_SIDE_BLOCKS:
        return None
    center = (lo + end - 1) / 2
    mean = total / n
    sxx = n * (n * n - 1) / 12
    slope = ((p1[end] - p1[lo]) - center * total) / sxx
    best, best_dev = None, CHANGE_DEV
    k = MIN_SIDE_BLOCKS
    while k <= n - MIN_SIDE_BLOCKS:
        t = end - k
        offset = (t + end - 1) / 2 - center  # of the tail's center from the stretch's
        expected = max(k * (mean + slope * offset), FLOOR * mean * k)
        leverage = k - k * k / n - (k * offset) ** 2 / sxx
        if leverage > 0.0:
            dev = _deviance(p0[end] - p0[t], expected) * k / leverage
            if dev > best_dev:
                best, best_dev = t, dev
        k = k + 1 if k < FINE_SPLITS else int(k * SPLIT_STEP) + 1
    return best


def _events(counts: Sequence[int]) -> tuple[list[float], float]:
    """Counts in events, and the event size sum(n^2) / sum(n) they were divided by.

    ([], 0.0) when ``counts`` hold no log.
    """
    total = sum(counts)
    if total <= 0:
        return [], 0.0
    unit = sum(x * x for x in counts) / total
    return [x / unit for x in counts], unit


def segments(events: Sequence[float]) -> list[int]:
    """First indices of the homogeneous stretches of ``events`` (sorted, starting with 0)."""
    p0, p1 = [0.0], [0.0]
    for i, x in enumerate(events):
        p0.append(p0[-1] + x)
        p1.append(p1[-1] + i * x)
    cuts = {0}
    todo = [(0, len(events), 0)]
    while todo:
        lo, end, depth = todo.pop()
        t = _best_split(p0, p1, lo, end) if depth < MAX_DEPTH else None
        if t is not None:
            cuts.add(t)
            todo += [(lo, t, depth + 1), (t, end, depth + 1)]
    return sorted(cuts)


def change_point(counts: Sequence[int]) -> int:
    """Index where the latest homogeneous stretch of ``counts`` begins (0: no shift found)."""
    events, _unit = _events(counts)
    return segments(events)[-1] if events else 0


def _base(events: list[float]) -> list[tuple[int, int]]:
    """The latest segment and the earlier ones whose rate matches it, as (start, end) pairs."""
    cuts = segments(events)
    bounds = list(zip(cuts, [*cuts[1:], len(events)], strict=True))
    lo, end = bounds[-1]
    base = [(lo, end)]
    e_base, n_base = sum(events[lo:end]), end - lo
    for a, b in reversed(bounds[:-1]):
        e, n = sum(events[a:b]), b - a
        pooled = (e + e_base) / (n + n_base)
        if _deviance(e, pooled * n) + _deviance(e_base, pooled * n_base) < MERGE_DEV:
            base.append((a, b))
            e_base += e
            n_base += n
    return base


def _span(rate: float, slope: float, floor: float, target: float) -> float:
    """Blocks r with integral_0^r max(floor, rate + slope * s) ds = target (inf: never)."""
    if slope >= 0.0:
        if slope < 1e-15:
            return target / rate
        return (math.sqrt(rate * rate + 2.0 * slope * target) - rate) / slope
    to_floor = (rate - floor) / -slope  # blocks until the line reaches the floor
    area = rate * to_floor + slope * to_floor * to_floor / 2
    if target > area:
        return to_floor + (target - area) / floor if floor > 0.0 else math.inf
    return (rate - math.sqrt(rate * rate + 2.0 * slope * target)) / -slope


def blocks_for(counts: Sequence[int], target_logs: float, max_span: int) -> int | None:
    """Blocks the next request may span to return about ``target_logs`` logs (1..max_span).

    ``counts``: logs per block of the blocks just fetched, oldest first, ending right before the
    next request. None when they hold no log (nothing to size by).
    """
    events, unit = _events(counts[-WINDOW_BLOCKS:])
    if not events:
        return None
    base = _base(events)
    n = sum(b - a for a, b in base)
    total = sum(sum(events[a:b]) for a, b in base)
    if total <= 0.0:
        return None
    mean = total / n
    rate, slope = mean, 0.0
    if total >= TREND_MIN_EVENTS and n >= max(2, TREND_MIN_BLOCKS):
        # Least squares through the base's blocks, x = block offset from the window's end.
        end = len(events) - 0.5
        xm = sum((a + b - 1) / 2 * (b - a) for a, b in base) / n - end
        sxx = sxy = 0.0
        for a, b in base:
            for i in range(a, b):
                dx = i - end - xm
                sxx += dx * dx
                sxy += dx * events[i]
        slope = sxy / sxx
        rate = mean - slope * xm  # at the window's end
    floor = FLOOR * mean
    target = target_logs / unit / (1.0 + UNCERTAINTY_K / math.sqrt(total))
    r = _span(max(rate, floor), slope, floor, target)
    return max(1, int(r)) if r < max_span else max_span


__all__ = ["blocks_for", "change_point", "segments"]
