"""Backfill progress of one console: which days are COMPLETE, waiting, failed; rows/s.

The Engine feeds it from worker messages (day_done, range, day_failed) and loader callbacks
(checkpoint written); plans, the day grid and the completion check read it (the ETA is
engine.eta). It has its
own lock: every method may be called from any thread.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import date

from engine.store import panels
from engine.store.client import Store

#: Window of the rows/s figure, in seconds.
RATE_WINDOW_S = 10.0


class Progress:
    """Days COMPLETE / waiting for their checkpoint / failed, block ranges, rows/s."""

    def __init__(self, days_total: int, started_at: float) -> None:
        self.days_total = days_total
        self.started_at = started_at
        self.lock = threading.RLock()
        self.complete: set[int] = set()
        self.pending_checkpoint: set[int] = set()  # day_done received, checkpoint not written
        self.failed: dict[int, str] = {}  # day -> last failure, until the day is COMPLETE
        self.ranges: dict[int, tuple[int, int]] = {}  # day -> (first block, last block)
        self.rows_at_start: dict[str, int] = {}
        self.rate_samples: deque[tuple[float, int]] = deque(maxlen=600)
        self.rate_history: deque[float] = deque(maxlen=120)

    # ---- loading ------------------------------------------------------------------------------
    def load(self, store: Store, chain_id: int, start_date: date) -> None:
        """COMPLETE days and known day ranges of this chain and start date, from the store."""
        db = store.database
        sd = start_date.isoformat()
        rows = store.query(
            f"SELECT day_idx FROM {db}.backfill_checkpoint FINAL WHERE status = 'COMPLETE' "
            f"AND chain_id = {chain_id} AND start_date = '{sd}' "
            f"AND day_idx < {self.days_total}"
        )
        complete = {int(r[0]) for r in rows}
        rows = store.query(
            f"SELECT day_idx, from_block, to_block, n_blocks FROM {db}.day_blocks FINAL "
            f"WHERE chain_id = {chain_id} AND start_date = '{sd}'"
        )
        ranges = {int(d): (int(f), int(t) if int(n) > 0 else int(f) - 1) for d, f, t, n in rows}
        staged = panels.staged_rows(store)
        with self.lock:
            self.complete = complete
            self.ranges = ranges
            self.rows_at_start = staged

    def merge_from_store(
        self, complete: set[int], staged: dict[str, int], written: dict[str, int]
    ) -> None:
        """Other consoles' progress (--shard-ids): COMPLETE days and staged rows as the store
        has them now; ``written`` (table -> rows) is this console's loader total so far."""
        with self.lock:
            self.complete |= complete
            self.rows_at_start = {t: n - written.get(t, 0) for t, n in staged.items()}

    # ---- events -------------------------------------------------------------------------------
    def day_done(self, day: int, first: int, last: int) -> None:
        """A worker finished a day: it waits for its checkpoint (not planned again meanwhile)."""
        with self.lock:
            self.pending_checkpoint.add(day)
            self.ranges[day] = (first, last)

    def set_range(self, day: int, first: int, last: int) -> None:
        with self.lock:
            self.ranges[day] = (first, last)

    def day_failed(self, day: int, message: str) -> None:
        with self.lock:
            self.failed[day] = message

    def checkpointed(self, day: int) -> None:
        """The day's COMPLETE checkpoint is written (its rows before it)."""
        with self.lock:
            self.complete.add(day)
            self.pending_checkpoint.discard(day)
            self.failed.pop(day, None)

    # ---- queries ------------------------------------------------------------------------------
    def todo(self) -> list[int]:
        """Days neither COMPLETE nor waiting for their checkpoint."""
        with self.lock:
            skip = self.complete | self.pending_checkpoint
        return [d for d in range(self.days_total) if d not in skip]

    def plan_ranges(self, days: list[int]) -> dict[int, tuple[int, int]]:
        """Known block ranges of these days (a plan carries them)."""
        with self.lock:
            return {d: self.ranges[d] for d in days if d in self.ranges}

    def missing(self, days: list[int]) -> list[int]:
        with self.lock:
            return [d for d in days if d not in self.complete]

    def counts(self) -> tuple[int, int]:
        """(days COMPLETE, days failed)."""
        with self.lock:
            return len(self.complete), len(self.failed)

    def complete_and_failed(self) -> tuple[set[int], set[int]]:
        with self.lock:
            return set(self.complete), set(self.failed)

    def rows_staged(self, written: dict[str, int]) -> dict[str, int]:
        """Rows per table: those in the store at start plus ``written`` since (table -> rows)."""
        rows = dict(self.rows_at_start)
        for table, n in written.items():
            rows[table] = rows.get(table, 0) + n
        return rows

    # ---- rate ---------------------------------------------------------------------------------
    def sample_rate(self, now: float, total_rows: int) -> None:
        """Record the loader's total rows at monotonic time ``now``; rows/s over RATE_WINDOW_S."""
        self.rate_samples.append((now, total_rows))
        window = [s for s in self.rate_samples if now - s[0] <= RATE_WINDOW_S]
        rate = 0.0
        if len(window) >= 2 and window[-1][0] > window[0][0]:
            rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
        self.rate_history.append(rate)

    def rate(self) -> float:
        return self.rate_history[-1] if self.rate_history else 0.0
