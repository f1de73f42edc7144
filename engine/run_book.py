"""Run totals that survive worker restarts and scales: rows staged vs re-fetched, per-shard counts.

The supervisor's `Shard` describes the current process (its rows and days start at 0 with every
process, and a scale replaces every Shard). The operator wants the run's figures:

- **staged** rows per table, what SQL counts (distinct keys): the checkpointed counts of the days
  COMPLETE when the run started and of those checkpointed since (the store's own counts), plus the
  decoded rows of the days in progress in their current attempt. Once every day is COMPLETE it
  equals `count()` of the staging tables after FINAL, exactly.
- **re-fetched**: what the attempts a restart or a scale interrupted had fetched (rows, or raw
  logs when workers send them undecoded); those days are fetched again and the store keeps one
  copy.
- per shard index: rows received, days finished and restarts this run (a new process for the shard,
  whatever started it: the supervisor, `r`/`R`, or a scale), so `2/95` never resets to `0/75`.

Pure bookkeeping: the Engine calls it from its worker-message handler, under its own lock.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping

from engine.status import REFETCHED_LOGS_KEY


class RunBook:
    """Per-table staged / re-fetched rows and per-shard run totals (thread-safe)."""

    def __init__(self, staged_at_start: Mapping[str, int] | None = None) -> None:
        self.lock = threading.RLock()
        self.base: dict[str, int] = dict(staged_at_start or {})
        self.finished: dict[str, int] = defaultdict(int)  # tables' rows of days checkpointed
        self.abandoned: dict[str, int] = defaultdict(int)  # rows (or raw logs) fetched in vain
        # shard -> day -> table (or "logs") -> what the day's current attempt has sent so far.
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

    def _abandon(self, days: dict[int, dict[str, int]]) -> None:
        for tables in days.values():
            for table, n in tables.items():
                self.abandoned[table] += n

    def process(self, shard: int, pid: int | None) -> None:
        """A message from `pid` for `shard`: a new process abandons the old one's attempts."""
        if pid is None:
            return
        with self.lock:
            if self.pid.get(shard) == pid:
                return
            self.pid[shard] = pid
            self.starts[shard] += 1
            self._abandon(self.attempts.pop(shard, {}))  # whoever does those days fetches again

    def rows(self, shard: int, pid: int | None, day: int, table: str, n: int) -> None:
        """Rows (decoded by the worker) or raw logs (table "logs") of a day's attempt."""
        self.process(shard, pid)
        with self.lock:
            self.rows_by_shard[shard] += n
            day_rows = self.attempts.setdefault(shard, {}).setdefault(day, {})
            day_rows[table] = day_rows.get(table, 0) + n

    def day_done(self, shard: int, pid: int | None, day: int) -> None:
        """The shard fetched the day whole (its checkpoint follows)."""
        self.process(shard, pid)
        with self.lock:
            self.days_by_shard[shard] += 1

    def checkpointed(self, shard: int, day: int, counts: Mapping[str, int]) -> None:
        """The day's COMPLETE checkpoint is in the store with these counts (table -> rows)."""
        with self.lock:
            self.attempts.get(shard, {}).pop(day, None)
            for table, n in counts.items():
                self.finished[table] += int(n)

    def forget_shards(self, keep: set[int]) -> None:
        """After a scale: shards outside `keep` have no process; their attempts are abandoned."""
        with self.lock:
            for shard in [s for s in self.attempts if s not in keep]:
                self._abandon(self.attempts.pop(shard))

    def staged(self) -> dict[str, int]:
        """Rows per table as SQL counts them (distinct keys): the days COMPLETE at the start and
        since (their checkpoints' counts) plus decoded rows of the days in progress."""
        with self.lock:
            now: dict[str, int] = defaultdict(int)
            for days in self.attempts.values():
                for tables in days.values():
                    for table, n in tables.items():
                        if table != REFETCHED_LOGS_KEY:  # raw logs are counted at their checkpoint
                            now[table] += n
            names = set(self.base) | set(self.finished) | set(now)
            return {t: self.base.get(t, 0) + self.finished.get(t, 0) + now.get(t, 0) for t in names}

    def refetched(self) -> dict[str, int]:
        """Rows (or raw logs, key "logs") fetched by attempts a restart or scale abandoned."""
        with self.lock:
            return {t: n for t, n in self.abandoned.items() if n > 0}

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], dict[int, tuple[int, int, int]]]:
        """(staged, re-fetched, shard -> totals) at one instant."""
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
