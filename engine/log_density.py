"""Log density forecast: how many blocks the next eth_getLogs request can span under a result cap.

Input: the per-block log counts of the stretch fetched just before (contiguous, oldest first).

1. Change point: the window (at most WINDOW_BLOCKS) is cut at the latest significant shift of the
   log rate (a compound Poisson test, |z| >= CHANGE_Z), repeatedly, so a burst that began or ended
   inside the last request is measured on its own instead of diluted by the stretch before it.
2. Uncertainty: logs come in events (a transaction emitting 50 logs is one event). The window's
   event size is estimated as sum(n^2) / sum(n); with E events the rate is known to ~1/sqrt(E),
   and the logs aimed at are lowered by that share (UNCERTAINTY_K / sqrt(E)).
3. Trend: with at least TREND_MIN_EVENTS events, a least-squares slope of the rate projects it
   over the next span (a rising rate gives a shorter span, a falling one a longer span).

Measured on ``bench/rpc_calls.py``'s synthetic days (see the module docstring there): fewer calls
than sizing by the last request's mean density, on both smooth and bursty days.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Most recent blocks looked at.
WINDOW_BLOCKS = 1500
#: |z| of a rate shift that cuts the window there.
CHANGE_Z = 4.0
#: Fewest blocks on either side of a change point.
MIN_SIDE_BLOCKS = 20
#: Margin for the rate's uncertainty: aim at target / (1 + K / sqrt(events)).
UNCERTAINTY_K = 1.0
#: Fewest events in the window for the trend (slope) to be used.
TREND_MIN_EVENTS = 100


def _prefix(counts: Sequence[int]) -> list[int]:
    out = [0]
    total = 0
    for n in counts:
        total += n
        out.append(total)
    return out


def change_point(counts: Sequence[int], z_min: float = CHANGE_Z) -> int:
    """Index where the latest homogeneous stretch of ``counts`` begins (0: no shift found).

    Splits are tried at geometrically spaced distances from the end; the most significant one
    above ``z_min`` cuts the window, and the test repeats on what is left.
    """
    pre = _prefix(counts)
    end = len(counts)
    lo = 0
    while end - lo >= 2 * MIN_SIDE_BLOCKS:
        n = end - lo
        total = pre[end] - pre[lo]
        if total <= 0:
            return lo
        unit = sum(x * x for x in counts[lo:end]) / total  # logs per event
        best, best_z = None, z_min
        k = MIN_SIDE_BLOCKS
        while k <= n - MIN_SIDE_BLOCKS:
            t = end - k
            recent = pre[end] - pre[t]
            expected = total * k / n
            se = (unit * total * (n - k) * k / (n * n)) ** 0.5
            if se > 0:
                z = abs(recent - expected) / se
                if z > best_z:
                    best, best_z = t, z
            k = int(k * 1.3) + 1
        if best is None:
            return lo
        lo = best
    return lo


def blocks_for(counts: Sequence[int], target_logs: float, max_span: int) -> int | None:
    """Blocks the next request may span to return about ``target_logs`` logs (1..max_span).

    ``counts``: logs per block of the blocks just fetched, oldest first, ending right before the
    next request. None when they hold no log (nothing to size by).
    """
    window = list(counts[-WINDOW_BLOCKS:])
    lo = change_point(window)
    seg = window[lo:]
    n = len(seg)
    total = sum(seg)
    if n == 0 or total <= 0:
        return None
    unit = sum(x * x for x in seg) / total
    events = total / unit
    target = target_logs / (1.0 + UNCERTAINTY_K / events**0.5)
    rate = total / n
    slope = 0.0
    if events >= TREND_MIN_EVENTS and n >= 2:
        mid = (n - 1) / 2
        sxx = sum((i - mid) ** 2 for i in range(n))
        slope = sum((i - mid) * x for i, x in enumerate(seg)) / sxx
        rate = max(rate * 0.25, rate + slope * (n - 0.5 - mid))  # the rate at the window's end
    # Logs over the next r blocks: rate * r + slope * r^2 / 2 = target.
    if abs(slope) < 1e-12:
        r = target / rate
    else:
        disc = rate * rate + 2.0 * slope * target
        r = float(max_span) if disc < 0 else (disc**0.5 - rate) / slope  # < 0: fades out first
    return max(1, min(max_span, int(r)))


__all__ = ["blocks_for", "change_point"]
