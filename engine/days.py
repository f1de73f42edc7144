"""UTC day arithmetic and day -> block range search over block timestamps.

Day d covers blocks whose timestamp lies in [start + d days, start + d + 1 days) UTC. The first
block at or after a time is found by an interpolation-guided binary search (a few calls on a chain
with a steady block time, at most twice the probes of a plain bisection), memoising timestamps.
"""

from __future__ import annotations

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

    def __init__(self, get_timestamp: Callable[[int], int]) -> None:
        self._get = get_timestamp
        self.cache: dict[int, int] = {}
        self.calls = 0

    def ts(self, block: int) -> int:
        t = self.cache.get(block)
        if t is None:
            self.calls += 1
            t = self._get(block)
            self.cache[block] = t
        return t

    def first_at_or_after(self, target: int, lo: int, hi: int) -> int:
        """Smallest block in [lo, hi] with timestamp >= target; hi + 1 when there is none.

        Timestamps are non-decreasing in block number. Each step narrows (lo, hi) with an
        interpolated probe, falling back to the midpoint when interpolation makes slow progress.
        """
        if lo > hi or self.ts(hi) < target:
            return hi + 1
        if self.ts(lo) >= target:
            return lo
        # Invariant: ts(lo) < target <= ts(hi)
        steps = 0
        while hi - lo > 1:
            t_lo, t_hi = self.ts(lo), self.ts(hi)
            if steps % 2 == 0 and t_hi > t_lo:
                probe = lo + int((target - t_lo) * (hi - lo) / (t_hi - t_lo))
                probe = min(max(probe, lo + 1), hi - 1)
            else:
                probe = (lo + hi) // 2
            steps += 1
            if self.ts(probe) >= target:
                hi = probe
            else:
                lo = probe
        return hi

    def day_range(self, start_ts: int, end_ts: int, lo: int, hi: int) -> tuple[int, int]:
        """Blocks [first, last] with start_ts <= ts < end_ts in [lo, hi]; empty if last < first."""
        first = self.first_at_or_after(start_ts, lo, hi)
        nxt = self.first_at_or_after(end_ts, first, hi) if first <= hi else first
        return first, nxt - 1
