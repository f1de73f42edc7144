"""Run totals that survive worker restarts and scales: rows staged vs re-fetched, per-shard counts.

The supervisor's `Shard` describes the current process (its rows and days start at 0 with every
process, and a scale replaces every Shard). The operator wants the run's figures:

- **staged** rows per table, what SQL counts (distinct keys): the checkpointed counts of the days
  COMPLETE when the run started, plus the counts of the days finished since (their `day_done`), plus
  the rows of the days in progress in their current attempt. Once every day is COMPLETE it equals
  `count()` of the staging tables after FINAL, exactly.
- **re-fetched** rows: received again after a restart or a scale interrupted a day (the store keeps
  them once): every row received minus those counted as staged.
- per shard index: rows received, days finished and restarts this run (a new process for the shard,
  whatever started it: the supervisor, `r`/`R`, or a scale), so `2/95` never resets to `0/75`.

Pure bookkeeping: the Engine calls it from its worker-message handler, under its own lock.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping


class RunBook:
    """Per-table staged / re-fetched rows and per-shard run totals (thread-safe)."""

    def __init__(self, staged_at_start: Mapping[str, int] | None = None) -> None:
        self.lock = threading.RLock()
        self.base: dict[str, int] = dict(staged_at_start or {})
        self.received: dict[str, int] = defaultdict(int)
        self.finished: dict[str, int] = defaultdict(int)  # tables' rows of days done this run
        # shard -> day -> table -> rows of the day's current attempt (its process's rows).
        self.attempts: dict[int, dict[int, dict[str, int]]] = {}
        self.pid: dict[int, int] = {}  # the process each shard's messages come from
        self.starts: dict[int, int] = defaultdict(int)  # processes seen per shard this run
        self.rows_by_shard: dict[int, int] = defaultdict(int)
        self.days_by_shard: dict[int, int] = defaultdict(int)

    def set_base(self, staged_at_start: Mapping[str, int]) -> None:
        with self.lock:
            self.base = dict(staged_at_start)

    def rebase(self, checkpointed: Mapping[str, int]) -> None:
        """Every console's COMPLETE days as the store has them now (several hosts): the base is
        what they hold beyond the days this console finished."""
        with self.lock:
            self.base = {
                t: max(0, int(n) - self.finished.get(t, 0)) for t, n in checkpointed.items()
            }

    def process(self, shard: int, pid: int | None) -> None:
        """A message from `pid` for `shard`: a new process abandons the old one's attempts."""
        if pid is None:
            return
        with self.lock:
            if self.pid.get(shard) == pid:
                return
            self.pid[shard] = pid
            self.starts[shard] += 1
            self.attempts.pop(shard, None)  # those rows are re-fetched by whoever does the day

    def rows(self, shard: int, pid: int | None, day: int, table: str, n: int) -> None:
        self.process(shard, pid)
        with self.lock:
            self.received[table] += n
            self.rows_by_shard[shard] += n
            day_rows = self.attempts.setdefault(shard, {}).setdefault(day, {})
            day_rows[table] = day_rows.get(table, 0) + n

    def day_done(self, shard: int, pid: int | None, day: int, counts: Mapping[str, int]) -> None:
        """The day is fetched whole: its counts (table -> rows) are staged."""
        self.process(shard, pid)
        with self.lock:
            self.attempts.get(shard, {}).pop(day, None)
            for table, n in counts.items():
                self.finished[table] += int(n)
            self.days_by_shard[shard] += 1

    def forget_shards(self, keep: set[int]) -> None:
        """After a scale: shards outside `keep` have no process; their attempts are abandoned."""
        with self.lock:
            for shard in [s for s in self.attempts if s not in keep]:
                del self.attempts[shard]

    def _in_progress(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for days in self.attempts.values():
            for tables in days.values():
                for table, n in tables.items():
                    out[table] += n
        return out

    def staged(self) -> dict[str, int]:
        """Rows per table as SQL counts them (distinct keys), see the module docstring."""
        with self.lock:
            now = self._in_progress()
            tables = set(self.base) | set(self.finished) | set(now)
            return {
                t: self.base.get(t, 0) + self.finished.get(t, 0) + now.get(t, 0) for t in tables
            }

    def refetched(self) -> dict[str, int]:
        """Rows received more than once this run, per table (only tables with any)."""
        with self.lock:
            now = self._in_progress()
            out = {}
            for table, n in self.received.items():
                extra = n - self.finished.get(table, 0) - now.get(table, 0)
                if extra > 0:
                    out[table] = extra
            return out

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], dict[int, tuple[int, int, int]]]:
        """(staged, re-fetched, shard -> totals) at one instant: rows received by the shards add
        up to staged (less the rows staged before the run) plus re-fetched, exactly."""
        with self.lock:
            shards = set(self.rows_by_shard) | set(self.days_by_shard) | set(self.starts)
            totals = {k: self._totals(k) for k in shards}
            return self.staged(), self.refetched(), totals

    def _totals(self, shard: int) -> tuple[int, int, int]:
        return (
            self.rows_by_shard.get(shard, 0),
            self.days_by_shard.get(shard, 0),
            max(0, self.starts.get(shard, 0) - 1),
        )

    def shard_totals(self, shard: int) -> tuple[int, int, int]:
        """(rows received, days finished, restarts) of the shard this run."""
        with self.lock:
            return self._totals(shard)
