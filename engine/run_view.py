"""What the operator is told about the run, kept true: the Engine's glue to the run's books.

- `RunBook` (engine.run_book): staged rows (distinct keys) vs re-fetched rows; per-shard rows,
  days and restarts for the whole run (restarts and scales do not reset them).
- `HeartbeatBook` (engine.heartbeats): `worker_heartbeats` rows with the worker's last real
  heartbeat time and real state; shards scaled away are GONE.
- `EtaEstimator` (engine.eta): an ETA from the recent day times per worker and the request
  budget, none while paused or stalled. With BACKFILL_ETA_TRACE=<file> its inputs are written to
  that file as JSON lines (`bench/eta.py` replays them).
- The run's end: when the last day was COMPLETE, the rebuild's progress and verdict
  (`RunOutcome`), and the frozen elapsed time.

The Engine calls the `on_*` methods from its message handler, monitor and actions; `status()`
reads the results. Nothing here touches the store or a process.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from engine.days import blocks_text
from engine.decode import TABLES
from engine.eta import DayCost, Estimate, EtaEstimator
from engine.heartbeats import Beat, HeartbeatBook
from engine.run_book import RunBook
from engine.status import REFETCHED_LOGS_KEY, RunOutcome

#: Worker states whose shard makes no progress: the ETA clock stops, with this reason.
BLOCKING = ("STALLED", "FATAL")
#: A file to write the ETA's inputs to, as JSON lines (for bench/eta.py's replay).
TRACE_ENV = "BACKFILL_ETA_TRACE"


class EtaTrace:
    """The ETA's inputs as JSON lines [event, monotonic time, ...]; a no-op without a path."""

    def __init__(self, path: str | None) -> None:
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def write(self, *event: Any) -> None:
        if self.file is None:
            return
        with self.lock:
            self.file.write(json.dumps(event, separators=(",", ":")) + "\n")
            self.file.flush()


class ShardLike(Protocol):
    @property
    def shard(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def last_error(self) -> str: ...


def table_of(kind: str) -> str:
    """'erc20' -> 'erc20_transfers_staging' (the rows message names the kind)."""
    return TABLES[kind][0] if kind in TABLES else kind


class RunView:
    """Run totals, heartbeat rows, ETA and the end of the run, for one Engine."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.book = RunBook()
        self.heartbeats = HeartbeatBook()
        self.eta = EtaEstimator()
        self.trace = EtaTrace(os.environ.get(TRACE_ENV))
        self.lock = threading.Lock()
        self.backfill_done_at: float | None = None  # unix time the last day was COMPLETE
        self.finished_at: float | None = None  # unix time the run ended (elapsed stops)
        self.rebuild_started: float | None = None
        self.outcome: RunOutcome | None = None

    # ---- worker messages ----------------------------------------------------------------------
    def on_rows(self, shard: int, pid: int | None, day: int, kind: str, n: int) -> None:
        self.book.rows(shard, pid, day, table_of(kind), n)

    def on_logs(self, shard: int, pid: int | None, day: int, n: int) -> None:
        self.book.rows(shard, pid, day, REFETCHED_LOGS_KEY, n)

    def on_day_done(self, shard: int, pid: int | None, day: int, cost: DayCost) -> None:
        self.book.day_done(shard, pid, day)
        now = time.monotonic()
        self.eta.fetched(now, shard, day, cost)
        self.trace.write("fetched", now, shard, day, cost.seconds, cost.wait_s, cost.calls)

    def on_start(self, shard: int, share: float) -> None:
        """A worker (re)starts for `shard` with this request budget (requests/s, all URLs)."""
        now = time.monotonic()
        self.eta.started(now, shard, share)
        self.trace.write("start", now, shard, share)

    def on_checkpoint_counts(self, shard: int, day: int, counts: Mapping[str, int]) -> None:
        """The checkpoint written, with the store's counts of the day (kind -> rows)."""
        self.book.checkpointed(shard, day, {table_of(k): int(n) for k, n in counts.items()})

    def on_beat(
        self,
        sh: ShardLike,
        shards: int,
        day: int | None,
        first: int | None,
        last: int | None,
        rows: int | None,
        phase: str,
    ) -> None:
        self.book.process(sh.shard, sh.pid)
        batch = f"day {day} {blocks_text(first, last)} {phase}".strip() if day is not None else ""
        self.heartbeats.beat(
            Beat(
                shard=sh.shard,
                shards=shards,
                pid=sh.pid or 0,
                state=str(sh.state),
                day=int(day if day is not None else -1),
                block_from=int(first or 0),
                block_to=int(last or 0),
                rows=int(rows or 0),
                last_batch=batch,
                last_error=sh.last_error,
                at=self.clock(),
            )
        )

    def on_checkpoint(self, day: int) -> None:
        now = time.monotonic()
        self.eta.completed(now, day)
        self.trace.write("done", now, day)

    # ---- monitor ------------------------------------------------------------------------------
    def tick(
        self, shards: Mapping[int, ShardLike], total: int, paused: bool, left: Mapping[int, int]
    ) -> None:
        """Every monitor tick: heartbeat rows follow the supervisor's states; the ETA's clock
        (`left`: days without DayDone per shard of this console, for the trace)."""
        now = self.clock()
        for k, sh in list(shards.items()):
            self.heartbeats.state(k, total, str(sh.state), sh.pid, now, sh.last_error)
        mono = time.monotonic()
        self.eta.tick(mono, not paused)
        if self.trace.file is not None:
            working = {str(k): n for k, n in left.items() if n and k in shards}
            blocked = "none while paused" if paused else self.blocked(shards)
            self.trace.write("tick", mono, not paused, blocked, working)

    @staticmethod
    def blocked(shards: Mapping[int, ShardLike]) -> str:
        """Why no ETA can be given from the shards' states ('' when none)."""
        for state in BLOCKING:
            ids = sorted(k for k, sh in shards.items() if str(sh.state) == state)
            if ids:
                word = {"STALLED": "stalled", "FATAL": "FATAL"}[state]
                return f"none: shard {', '.join(map(str, ids[:4]))} {word}"
        return ""

    def heartbeat_rows(self) -> list[list[Any]]:
        return self.heartbeats.take()

    # ---- operator actions ---------------------------------------------------------------------
    def on_scale(self, old: int, new: int) -> None:
        keep = set(range(new))
        self.heartbeats.gone(keep, f"scaled away: SHARDS {old} -> {new}")
        self.book.forget_shards(keep)
        self.trace.write("scale", time.monotonic(), old, new)

    # ---- the end ------------------------------------------------------------------------------
    def backfill_complete(self) -> None:
        with self.lock:
            if self.backfill_done_at is None:
                self.backfill_done_at = self.clock()

    def rebuild_step(self, text: str) -> None:
        """A line of the rebuild's log: the end screen shows the latest while it runs."""
        with self.lock:
            if self.rebuild_started is None:
                self.rebuild_started = self.clock()
            self.outcome = RunOutcome("rebuilding", text.strip()[:160])

    def rebuild_done(self, swapped: bool, reason: str, snapshot: str, failed: bool) -> None:
        with self.lock:
            phase = "failed" if failed else ("swapped" if swapped else "not_swapped")
            self.outcome = RunOutcome(phase, reason, snapshot)
            self.finished_at = self.clock()

    def finish(self) -> None:
        """The run ended (complete without rebuild, aborted, stopped): elapsed stops here."""
        with self.lock:
            if self.finished_at is None:
                self.finished_at = self.clock()

    def outcome_now(self, started_at: float) -> RunOutcome | None:
        """The outcome with its times filled in (backfill, rebuild so far or in all)."""
        with self.lock:
            o = self.outcome
            if o is None:
                return None
            backfill = None if self.backfill_done_at is None else self.backfill_done_at - started_at
            rebuild = None
            if self.rebuild_started is not None:
                end = self.finished_at if self.finished_at is not None else self.clock()
                rebuild = max(0.0, end - self.rebuild_started)
            return RunOutcome(o.phase, o.detail, o.snapshot, backfill, rebuild)

    def estimate(self, left_by_shard: dict[int, int], paused: bool, shards: Mapping) -> Estimate:
        blocked = "none while paused" if paused else self.blocked(shards)
        return self.eta.estimate(left_by_shard, blocked)
