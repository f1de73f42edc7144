"""UTC day arithmetic and day -> block range search over block timestamps.

Day d covers blocks whose timestamp lies in [start + d days, start + d + 1 days) UTC. The first
block at or after a time is found by an interpolation-guided binary search (a few calls on a chain
with a steady block time, at most twice the probes of a plain bisection), memoising timestamps.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
from collections.abc import Callable

from engine.constants import SECONDS_PER_DAY


def day_start_ts(start_date: dt.date, day_idx: int) -> int:
    """Unix time of 00:00:00 UTC on start_date + day_idx days."""
    midnight = calendar.timegm(start_date.timetuple())
    return midnight + day_idx * SECONDS_PER_DAY


def day_of_ts(start_date: dt.date, ts: int) -> int:
    """Day index of a unix time (negative before start_date)."""
    return (ts - day_start_ts(start_date, 0)) // SECONDS_PER_DAY


def shard_days(days_total: int, shards: int, shard_id: int) -> list[int]:
    """The days a shard owns: day_idx % shards == shard_id."""
    return [d for d in range(days_total) if d % shards == shard_id]


class BlockClock:
    """Block timestamps through a getter, memoised; finds first blocks at or after a time."""

    def __init__(
        self,
        get_timestamp: Callable[[int], int],
        get_many: Callable[[list[int]], list[int]] | None = None,
    ) -> None:
        self._get = get_timestamp
        self._get_many = get_many  # one round trip for several blocks (JSON-RPC batch)
        self.cache: dict[int, int] = {}
        self._known: list[int] = []  # sorted cached block numbers
        self.calls = 0

    def prefetch(self, blocks: list[int]) -> None:
        """Fetch the timestamps of several uncached blocks in one call (when batching is on)."""
        todo = sorted({b for b in blocks if b not in self.cache})
        if not todo:
            return
        if self._get_many is None or len(todo) == 1:
            for b in todo:
                self.ts(b)
            return
        self.calls += 1
        for b, t in zip(todo, self._get_many(todo), strict=True):
            self.cache[b] = t
            bisect.insort(self._known, b)

    def ts(self, block: int) -> int:
        t = self.cache.get(block)
        if t is None:
            self.calls += 1
            t = self._get(block)
            self.cache[block] = t
            bisect.insort(self._known, block)
        return t

    def _bracket(self, target: int, lo: int, hi: int) -> tuple[int, int]:
        """Tighten (lo, hi) with cached points: ts(lo) < target <= ts(hi) stays true."""
        i = bisect.bisect_left(self._known, lo)
        j = bisect.bisect_right(self._known, hi)
        for b in self._known[i:j]:
            t = self.cache[b]
            if t < target:
                lo = max(lo, b)
            elif b < hi:
                hi = b
                break
        return lo, hi

    def first_at_or_after(self, target: int, lo: int, hi: int) -> int:
        """Smallest block in [lo, hi] with timestamp >= target; hi + 1 when there is none.

        Timestamps are non-decreasing in block number. Each probe is an interpolation inside
        the current bracket; when a probe moved only one end, the next probe overshoots past the
        estimate by the same distance so the other end moves too (a tight bracket in a few calls
        on a chain with a steady block time), and a bracket that stops halving is bisected.
        """
        if lo > hi or self.ts(hi) < target:
            return hi + 1
        if self.ts(lo) >= target:
            return lo
        lo, hi = self._bracket(target, lo, hi)  # invariant: ts(lo) < target <= ts(hi)
        if self._get_many is not None:
            return self._batched_search(target, lo, hi)
        last_side = 0
        widths = [hi - lo]
        while hi - lo > 1:
            t_lo, t_hi = self.ts(lo), self.ts(hi)
            est = lo + (target - t_lo) * (hi - lo) / max(1, t_hi - t_lo)
            if len(widths) >= 3 and widths[-1] > widths[-3] / 2:
                probe = (lo + hi) // 2  # interpolation is not converging: bisect
            elif last_side < 0:  # lo moved last time: overshoot upwards to move hi
                probe = int(est) + 1 + max(1, int(est) - lo)
            elif last_side > 0:  # hi moved last time: overshoot downwards to move lo
                probe = int(est) - max(1, hi - int(est))
            else:
                probe = int(est) + 1
            probe = min(max(probe, lo + 1), hi - 1)
            if self.ts(probe) >= target:
                hi, last_side = probe, 1
            else:
                lo, last_side = probe, -1
            widths.append(hi - lo)
        return hi

    def _probes(self, target: int, lo: int, hi: int) -> list[int]:
        """Blocks worth reading to find `target` in (lo, hi): around the interpolated estimate
        and on an even grid (so each round trip shrinks the bracket at least 8-fold)."""
        t_lo, t_hi = self.ts(lo), self.ts(hi)
        est = lo + int((target - t_lo) * (hi - lo) / max(1, t_hi - t_lo))
        probes = [est + o for o in (-16, -4, -2, -1, 0, 1, 2, 4, 16)]
        probes += [lo + (hi - lo) * k // 8 for k in range(1, 8)]
        return [p for p in probes if lo < p < hi]

    def _batched_search(self, target: int, lo: int, hi: int) -> int:
        """One JSON-RPC batch per round trip until the bracket is tight."""
        while hi - lo > 1:
            self.prefetch(self._probes(target, lo, hi))
            lo, hi = self._bracket(target, lo, hi)
        return hi

    def day_range(self, start_ts: int, end_ts: int, lo: int, hi: int) -> tuple[int, int]:
        """Blocks [first, last] with start_ts <= ts < end_ts in [lo, hi]; empty if last < first."""
        if self._get_many is not None and lo < hi and self.ts(lo) < start_ts <= self.ts(hi):
            # Both boundaries' first probes in one round trip.
            a, b = self._bracket(start_ts, lo, hi)
            c, d = self._bracket(end_ts, lo, hi)
            probes = self._probes(start_ts, a, b)
            if self.ts(d) >= end_ts:
                probes += self._probes(end_ts, c, d)
            self.prefetch(probes)
        first = self.first_at_or_after(start_ts, lo, hi)
        nxt = self.first_at_or_after(end_ts, first, hi) if first <= hi else first
        return first, nxt - 1
