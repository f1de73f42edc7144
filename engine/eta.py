"""The ETA: an estimate good enough to plan by, or no estimate and the reason.

Model. Each shard's worker fetches its days one after another, so the run ends when the shard
with the most work left is done, plus the store's lag from a day fetched (DayDone) to its
checkpoint (COMPLETE):

    ETA = max over shards of (rest of the day in progress + (days left - 1) x D_shard) + lag

- **D, a day's time for one worker**, is measured per shard between two consecutive DayDones of
  the same worker process (its first day, which holds process start-up and a day search from
  scratch, is kept apart as the start-up overhead; its next WARM_UP intervals are left out once
  enough others are measured). The recent intervals of every shard are pooled: those of the last
  WINDOW_SHARE of the active time (paused time does not count), at least the last `working`
  ones. Each day left counts as one recent day: their rows are unknown,
  and the recent days' mean is the best guess, so weighting by rows gives the same pace; a day
  with more logs costs more requests, which the budget term below turns into time.
- **The request budget.** Every DayDone carries the worker's figures of that day: its seconds,
  how long it waited for a budget token, its provider calls, and the worker's budget share
  (requests/s, all URLs; 0 = unlimited). A day costs about max(L, calls / share) seconds, L being
  the time not spent waiting. A measured interval is carried over to another share by that
  ratio. So a scale changes the projection at once: under a tight budget SHARDS x 2 halves every
  share and doubles D (the run ends at the same time, as the budget says it must); with room to
  spare D stays and the days left per shard halve.
- **The day in progress**: D minus the time since the shard's last DayDone (at least 5% of D);
  a worker started since (scale, restart) first pays the measured start-up overhead.

No estimate while paused ("none while paused") or stalled (the state's reason), and
"calculating" until MIN_WINDOW_S of active time have passed and at least MIN_INTERVALS day
intervals are measured (a first day alone says little: it holds the start-up).

Pure: fed with times and events; `bench/eta.py` replays recorded runs through it.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

MIN_INTERVALS = 1
MIN_WINDOW_S = 10.0
WINDOW_SHARE = 0.5
#: The rest of a day in progress is at least this share of a day (it may be late).
MIN_REST = 0.05
#: A worker's first day intervals that say less about its pace (its day search still learns the
#: block rate: measured 9 calls vs ~6.5 later on the devchain); left out once enough others are.
WARM_UP = 1


@dataclass(frozen=True)
class Estimate:
    seconds: float | None
    note: str  # "" with an estimate; else why there is none ("calculating", "none while paused")


@dataclass(frozen=True)
class DayCost:
    """A worker's own figures of one fetched day (0s when it did not report them)."""

    seconds: float = 0.0  # from the day's start to its DayDone
    wait_s: float = 0.0  # of which waiting for a request-budget token
    calls: int = 0  # provider calls (every call of a batch)
    share: float = 0.0  # the worker's budget, requests/s over all its URLs; 0 = unlimited

    def ideal(self, share: float) -> float | None:
        """The day's seconds at another budget share: max(time not waiting, calls / share)."""
        if self.seconds <= 0:
            return None
        busy = max(0.0, self.seconds - self.wait_s)
        return max(busy, self.calls / share if share > 0 else 0.0)


def carried(seconds: float, cost: DayCost | None, share: float | None) -> float:
    """A measured day interval carried over to a worker with budget `share` (None: unknown,
    the interval as it is)."""
    if cost is None or share is None:
        return seconds
    old, new = cost.ideal(cost.share), cost.ideal(share)
    if old is None or new is None or old <= 0:
        return seconds
    return seconds * new / old


@dataclass
class ShardClock:
    share: float | None  # this worker's budget (requests/s, all URLs; 0 = unlimited)
    mark: float  # active time of the worker's start or of its last DayDone
    started: bool = True  # the mark is the worker's start: its first day is pending
    measured: int = 0  # day intervals measured since the worker started


class EtaEstimator:
    """Feed `started()` per worker start, `fetched()` per DayDone, `completed()` per checkpoint
    and `tick()` with the state; ask `estimate()`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active_s = 0.0  # running time since start, pauses and stalls excluded
        self.last_tick: float | None = None
        self.running = True
        self.clocks: dict[int, ShardClock] = {}
        # (active time of its end, active seconds, the day's cost) per interval between two
        # DayDones of one worker.
        self.intervals: deque[tuple[float, float, DayCost | None, int]] = deque(maxlen=4096)
        # First days of a worker: (active seconds from its start, its share).
        self.firsts: deque[tuple[float, float | None]] = deque(maxlen=64)
        self.fetched_at: dict[int, float] = {}  # day -> active time of its DayDone
        self.lags: deque[float] = deque(maxlen=32)  # DayDone -> checkpoint, active seconds

    # ---- events -------------------------------------------------------------------------------
    def tick(self, now: float, running: bool) -> None:
        """Advance to `now` (monotonic seconds); `running` False while paused or stalled."""
        with self.lock:
            self._advance(now)
            self.running = running

    def _advance(self, now: float) -> None:
        if self.last_tick is not None and self.running:
            self.active_s += max(0.0, now - self.last_tick)
        self.last_tick = now if self.last_tick is None else max(self.last_tick, now)

    def started(self, now: float, shard: int, share: float) -> None:
        """A worker (re)started for `shard` with budget `share` (requests/s, all URLs)."""
        with self.lock:
            self._advance(now)
            self.clocks[shard] = ShardClock(share=max(0.0, share), mark=self.active_s)

    def fetched(self, now: float, shard: int, day: int, cost: DayCost | None = None) -> None:
        """The worker of `shard` sent DayDone for `day`, with its figures of the day."""
        with self.lock:
            self._advance(now)
            t = self.active_s
            self.fetched_at[day] = t
            clock = self.clocks.get(shard)
            if clock is None:  # no start seen (a worker from before): its next day is measured
                self.clocks[shard] = ShardClock(cost.share if cost else None, t, started=False)
                return
            if clock.started:
                self.firsts.append((t - clock.mark, clock.share))
            else:
                self.intervals.append((t, t - clock.mark, cost, clock.measured))
                clock.measured += 1
            clock.mark, clock.started = t, False

    def completed(self, now: float, day: int) -> None:
        """`day` is COMPLETE (its checkpoint is written)."""
        with self.lock:
            self._advance(now)
            at = self.fetched_at.pop(day, None)
            if at is not None:
                self.lags.append(self.active_s - at)

    # ---- the estimate -------------------------------------------------------------------------
    def _window(self, working: int) -> list[tuple[float, float, DayCost | None, int]]:
        items = list(self.intervals)
        warm = [iv for iv in items if iv[3] >= WARM_UP]
        if len(warm) >= max(MIN_INTERVALS, working):
            items = warm
        since = self.active_s - max(MIN_WINDOW_S, WINDOW_SHARE * self.active_s)
        recent = [iv for iv in items if iv[0] >= since]
        need = max(MIN_INTERVALS, working)
        return recent if len(recent) >= need else items[-need:]

    def day_seconds(self, share: float | None, working: int = 1) -> float | None:
        """A day's active seconds for a worker with budget `share`; None until settled."""
        with self.lock:
            return self._day_seconds(share, working)

    def _day_seconds(self, share: float | None, working: int) -> float | None:
        if self.active_s < MIN_WINDOW_S or len(self.intervals) < MIN_INTERVALS:
            return None
        window = self._window(working)
        return sum(carried(s, c, share) for _, s, c, _ in window) / len(window)

    def _overhead(self, working: int) -> float:
        """Start-up overhead of a worker: its first day's time beyond an ordinary day."""
        firsts = list(self.firsts)[-max(2, working) :]
        extra = [max(0.0, s - (self._day_seconds(share, working) or s)) for s, share in firsts]
        return sum(extra) / len(extra) if extra else 0.0

    def estimate(self, left_by_shard: dict[int, int], blocked: str = "") -> Estimate:
        """Seconds until the shard with most work left is done, or why there is no estimate.

        `left_by_shard`: days without DayDone per working shard; `blocked`: a reason (paused,
        stalled) that stops the clock."""
        if blocked:
            return Estimate(None, blocked)
        working = {k: n for k, n in left_by_shard.items() if n > 0}
        if not working:
            return Estimate(0.0, "")
        with self.lock:
            n = len(working)
            if self._day_seconds(None, n) is None:
                return Estimate(None, "calculating")
            overhead = self._overhead(n)
            lag = sum(self.lags) / len(self.lags) if self.lags else 0.0
            worst = 0.0
            for k, left in working.items():
                clock = self.clocks.get(k) or ShardClock(share=None, mark=self.active_s)
                d = self._day_seconds(clock.share, n) or 0.0
                due = clock.mark + d + (overhead if clock.started else 0.0)
                rest = max(MIN_REST * d, due - self.active_s)
                worst = max(worst, rest + (left - 1) * d)
            return Estimate(worst + lag, "")
