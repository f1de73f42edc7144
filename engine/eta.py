"""The ETA: an estimate good enough to plan by, or no estimate and the reason.

Model. Each shard works through its days one after another, so the run ends when the shard with
the most work left finishes it. A shard's pace (active seconds per day) is pooled over all shards
from the recent completions: pace = shard-seconds worked (active seconds x shards working, as
that changes; paused time does not count) since a recent completion / days completed since. The
window keeps the last WINDOW_SHARE of the active time since the layout began, so it follows a pace
that drifts (heavier days later in history). Days are counted, not rows: the rows of the days left
are unknown, and their best guess (the recent days' mean) gives the same pace. The request budget
enters through that measured pace: a worker's share of `requests_per_second` is fixed while it
runs, and a scale (new shares, new day ownership) starts a new window.

    ETA = max over shards of (days left of the shard) x pace

No estimate while paused ("none while paused") or stalled (the state's reason), and "calculating"
until, after a first completion, the window holds at least one completion per working shard and
MIN_COMPLETIONS in all, and has lasted MIN_WINDOW_S of active time; after a scale it starts over.

Pure: fed with times and events; `bench/eta.py` replays real runs through the live product.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import dataclass

MIN_COMPLETIONS = 3
MIN_WINDOW_S = 10.0
WINDOW_SHARE = 0.5


@dataclass(frozen=True)
class Estimate:
    seconds: float | None
    note: str  # "" with an estimate; else why there is none ("calculating", "none while paused")


class EtaEstimator:
    """Feed `completed()` per day COMPLETE and `tick()` with the state; ask `estimate()`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active_s = 0.0  # running time since start, pauses and stalls excluded
        self.shard_s = 0.0  # the same, times the shards working
        self.last_tick: float | None = None
        self.running = True
        self.working = 0
        self.layout_at = 0.0  # active time the current shard layout began
        self.events: deque[tuple[float, int]] = deque(maxlen=4096)  # (active time, rows)
        # (active time, shard-seconds) every second or so: shard-seconds at a window's start.
        self.samples: list[tuple[float, float]] = [(0.0, 0.0)]

    def tick(self, now: float, running: bool, working: int | None = None) -> None:
        """Advance to `now` (monotonic seconds); `running` False while paused or stalled;
        `working`: shards with days left and a live worker (None: unchanged)."""
        with self.lock:
            if self.last_tick is not None and self.running:
                dt = max(0.0, now - self.last_tick)
                self.active_s += dt
                self.shard_s += dt * self.working
            self.last_tick = now
            self.running = running
            if working is not None:
                self.working = working
            step = max(1.0, self.active_s / 20000)
            if self.active_s - self.samples[-1][0] >= step:
                self.samples.append((self.active_s, self.shard_s))

    def completed(self, now: float, rows: int) -> None:
        """One day COMPLETE with `rows` rows (all tables)."""
        self.tick(now, self.running)
        with self.lock:
            self.events.append((self.active_s, max(0, rows)))

    def new_layout(self, now: float) -> None:
        """A scale: shard count and ownership changed; the pace is measured again."""
        self.tick(now, self.running)
        with self.lock:
            self.layout_at = self.active_s
            self.events.clear()

    def _shard_s_at(self, t: float) -> float:
        i = bisect.bisect_right(self.samples, (t, float("inf"))) - 1
        a, sa = self.samples[max(0, i)]
        if i + 1 < len(self.samples):
            b, sb = self.samples[i + 1]
            if b > a:
                return sa + (sb - sa) * (t - a) / (b - a)
        return sa + (self.shard_s - sa) * (t - a) / max(1e-9, self.active_s - a)

    def pace(self, working: int) -> float | None:
        """Active seconds per average day for one shard; None until settled."""
        with self.lock:
            span = self.active_s - self.layout_at
            if span < MIN_WINDOW_S or working <= 0:
                return None
            events = list(self.events)
            need = max(MIN_COMPLETIONS, working)
            if len(events) < need + 1:
                return None
            since = self.active_s - max(MIN_WINDOW_S, WINDOW_SHARE * span)
            first = next((i for i, e in enumerate(events) if e[0] >= since), len(events))
            # Never from the layout's start: worker start-up and the first day's search are not
            # the pace of the days left (measured: +92% / +138% at 10% with them).
            first = max(1, min(first, len(events) - need))
            # The window starts at a completion, so it holds whole days: the days in progress
            # at its start and now are alike and cancel out.
            start = events[first - 1][0]
            worked = self.shard_s - self._shard_s_at(start)
            done = len(events) - first
            return worked / done if worked > 0 else None

    def estimate(self, left_by_shard: dict[int, int], blocked: str = "") -> Estimate:
        """Seconds until the shard with most days left is done, or why there is no estimate.

        `left_by_shard`: days not COMPLETE per working shard; `blocked`: a reason (paused,
        stalled) that stops the clock."""
        if blocked:
            return Estimate(None, blocked)
        working = {k: n for k, n in left_by_shard.items() if n > 0}
        if not working:
            return Estimate(0.0, "")
        pace = self.pace(len(working))
        if pace is None:
            return Estimate(None, "calculating")
        return Estimate(max(working.values()) * pace, "")
