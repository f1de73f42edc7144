"""UTC day arithmetic and day -> block range search over block timestamps.

Day d covers blocks whose timestamp lies in [start + d days, start + d + 1 days) UTC. The first
block at or after a time is found by a rate-guided search (a few calls on a chain with a steady
block time; a bracket that stops halving is bisected), memoising timestamps.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
from collections.abc import Callable

from engine.constants import SECONDS_PER_DAY

#: Half-width of the contiguous probe window around an estimated boundary block.
WINDOW = 2
#: A bracket with at most this many blocks inside is read whole in one round trip.
FILL_MAX = 32
#: Growth of the probe distances on both sides of the window.
STEP_FACTOR = 4
#: Probes per boundary per round trip before falling back to an even grid.
MAX_PROBES = 24
#: Fewest blocks over which the search re-measures the block rate it steps at.
RATE_BLOCKS_MIN = 4
#: Shortest time span over which a local block rate is measured for extrapolation.
RATE_SPAN_MIN_S = 3600


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
        self._rate_blocks = 0  # blocks and seconds of the days found so far (non-empty ones)
        self._rate_seconds = 0

    @property
    def day_rate(self) -> float | None:
        """Blocks per second over the days found so far; None before the first one."""
        return self._rate_blocks / self._rate_seconds if self._rate_seconds else None

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

        Timestamps are non-decreasing in block number. Once a day has been found, each probe
        steps from the bracket end nearer in time at the block rate of the days found so far and
        aims just past the estimated boundary, on the side that has not moved yet; a miss on the
        same side doubles that margin (galloping), so a good estimate costs two calls and a poor
        one a few more. Before that, each probe interpolates inside the bracket and overshoots
        the estimate by the same distance so the other end moves too. A bracket that stops
        halving is bisected.
        """
        if lo > hi or self.ts(hi) < target:
            return hi + 1
        if self.ts(lo) >= target:
            return lo
        lo, hi = self._bracket(target, lo, hi)  # invariant: ts(lo) < target <= ts(hi)
        if self._get_many is not None:
            return self._batched_search(target, lo, hi)
        last_side = 0
        margin = 0
        rate = self.day_rate
        patience = 5 if rate is not None else 3  # probes over which the bracket must halve
        widths = [hi - lo]
        while hi - lo > 1:
            t_lo, t_hi = self.ts(lo), self.ts(hi)
            est = lo + (target - t_lo) * (hi - lo) / max(1, t_hi - t_lo)
            if len(widths) >= patience and widths[-1] > widths[-patience] / 2:
                probe = (lo + hi) // 2  # the estimates are not converging: bisect
            elif rate is not None:
                # (Rounded: a measured rate is never exact, so ceil/floor would be off by one.)
                if target - t_lo <= t_hi - target:
                    first = lo + max(1, round((target - t_lo) * rate))
                else:
                    first = hi - round((t_hi - target) * rate)
                # After hi moved, aim below the estimate to move lo; otherwise above it.
                probe = first - 1 - margin if last_side > 0 else first + margin
            elif last_side < 0:  # lo moved last time: overshoot upwards to move hi
                probe = int(est) + 1 + max(1, int(est) - lo)
            elif last_side > 0:  # hi moved last time: overshoot downwards to move lo
                probe = int(est) - max(1, hi - int(est))
            else:
                probe = int(est) + 1
            probe = min(max(probe, lo + 1), hi - 1)
            t_probe = self.ts(probe)
            side = 1 if t_probe >= target else -1
            moved = hi if side > 0 else lo
            if rate is not None and abs(probe - moved) >= RATE_BLOCKS_MIN:
                # Secant step: the rate over the stretch just crossed predicts the next one.
                rate = abs(probe - moved) / max(1, abs(t_probe - self.cache[moved]))
            if side > 0:
                hi = probe
            else:
                lo = probe
            # The same end moved again: the estimate is off, widen the step past it.
            margin = max(1, 2 * margin) if side == last_side else 0
            last_side = side
            widths.append(hi - lo)
        return hi

    def estimate(self, target: int, lo: int, hi: int) -> int:
        """Best guess of the first block at or after `target` inside the bracket (lo, hi).

        Extrapolates from `lo` at the block rate measured just below it (a shard's previous day
        tells it the rate of the days that follow) when `lo` is nearer in time than `hi`;
        otherwise interpolates between the two.
        """
        t_lo, t_hi = self.ts(lo), self.ts(hi)
        est = lo + (target - t_lo) * (hi - lo) / max(1, t_hi - t_lo)
        if target - t_lo < t_hi - target:
            i = bisect.bisect_left(self._known, lo) - 1
            while i >= 0 and t_lo - self.cache[self._known[i]] < RATE_SPAN_MIN_S:
                i -= 1
            if i >= 0:
                q = self._known[i]
                rate = (lo - q) / (t_lo - self.cache[q])
                est = lo + (target - t_lo) * rate
        return min(max(int(round(est)), lo + 1), hi)

    def _probes(self, target: int, lo: int, hi: int, est: int | None = None) -> list[int]:
        """Blocks worth reading to find `target` in (lo, hi): a contiguous window around the
        estimate (one round trip when the estimate is within a couple of blocks) and a few
        probes at growing distances on both sides (a bracket at most 4x the miss otherwise)."""
        if est is None:
            est = self.estimate(target, lo, hi)
        probes = list(range(est - WINDOW, est + WINDOW + 1))
        step = 2 * WINDOW + 1
        while step < hi - lo:
            probes += [est - step, est + step]
            step *= STEP_FACTOR
        if len(probes) > MAX_PROBES:  # a wide bracket with a poor estimate: a grid as well
            probes = probes[: 2 * WINDOW + 1] + [lo + (hi - lo) * k // 8 for k in range(1, 8)]
        return [p for p in probes if lo < p < hi]

    def _batched_search(self, target: int, lo: int, hi: int) -> int:
        """One JSON-RPC batch per round trip until the bracket is tight."""
        return self._search_many({target: (lo, hi)}, {})[target]

    def _search_many(
        self, brackets: dict[int, tuple[int, int]], first_guess: dict[int, int]
    ) -> dict[int, int]:
        """Resolve several targets together, one batch per round for all of them.

        `brackets` maps target -> (lo, hi) with ts(lo) < target <= ts(hi); `first_guess` may
        give the first round's estimate for a target. Returns target -> first block.
        """
        found: dict[int, int] = {}
        guess = dict(first_guess)
        while True:
            probes: list[int] = []
            for target, (lo, hi) in list(brackets.items()):
                lo, hi = self._bracket(target, lo, hi)
                if hi - lo <= 1:
                    found[target] = hi
                    del brackets[target]
                    continue
                brackets[target] = (lo, hi)
                if hi - lo - 1 <= FILL_MAX:  # a narrow bracket: read all of it at once
                    probes += range(lo + 1, hi)
                else:
                    probes += self._probes(target, lo, hi, guess.pop(target, None))
            if not brackets:
                return found
            self.prefetch(probes)

    def day_range(self, start_ts: int, end_ts: int, lo: int, hi: int) -> tuple[int, int]:
        """Blocks [first, last] with start_ts <= ts < end_ts in [lo, hi]; empty if last < first."""
        if self._get_many is None or lo >= hi:
            first = self.first_at_or_after(start_ts, lo, hi)
            nxt = self.first_at_or_after(end_ts, first, hi) if first <= hi else first
            if nxt > first:
                self._rate_blocks += nxt - first
                self._rate_seconds += end_ts - start_ts
            return first, nxt - 1
        # Both boundaries searched together (one round trip per round); the end's first guess
        # is the start's guess plus a day at the same block rate.
        found: dict[int, int] = {}
        brackets: dict[int, tuple[int, int]] = {}
        for target in (start_ts, end_ts):
            if self.ts(hi) < target:
                found[target] = hi + 1
            elif self.ts(lo) >= target:
                found[target] = lo
            else:
                brackets[target] = self._bracket(target, lo, hi)
        guess: dict[int, int] = {}
        if start_ts in brackets:
            a, b = brackets[start_ts]
            est = guess[start_ts] = self.estimate(start_ts, a, b)
            if end_ts in brackets and est > a + 1:
                c, d = brackets[end_ts]
                rate = (est - a) / max(1, start_ts - self.ts(a))
                end_est = int(round(est + (end_ts - start_ts) * rate))
                guess[end_ts] = min(max(end_est, c + 1), d)
        found.update(self._search_many(brackets, guess))
        return found[start_ts], found[end_ts] - 1


def blocks_text(first: int | None, last: int | None) -> str:
    """'blocks 10-20', or 'no blocks (empty day)' (an empty day's last block is first - 1)."""
    if first is None or last is None:
        return "blocks ?"
    if last < first:
        return "no blocks (empty day)"
    return f"blocks {first}-{last}"
