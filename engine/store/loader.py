"""The console's single store writer: batches worker rows, then checkpoints, then heartbeats.

Ordering rule (DESIGN.md 4): a day's checkpoint is inserted only in the same flush as, or a
later flush than, every row of that day. Rows and checkpoints are swapped out of the buffers
together under one lock, rows are inserted first, and a failed row insert keeps everything for
the next attempt, so a checkpoint can never reach the store ahead of its rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.decode import TABLES
from engine.store.client import Store

log = logging.getLogger("loader")

CHECKPOINT_COLUMNS = [
    "day_idx",
    "status",
    "shard_id",
    "from_block",
    "to_block",
    "erc20_count",
    "erc1155_count",
    "resolution_count",
    "registration_count",
    "chain_id",
    "start_date",
    "error",
    "updated_at",
]
HEARTBEAT_COLUMNS = [
    "worker_id",
    "shard_id",
    "shards",
    "pid",
    "state",
    "day_idx",
    "from_block",
    "to_block",
    "rows",
    "last_batch",
    "last_error",
    "updated_at",
]
DAY_BLOCKS_COLUMNS = ["chain_id", "start_date", "day_idx", "from_block", "to_block", "n_blocks"]


def _now_ms() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass
class _Pending:
    rows: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    row_counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    checkpoints: list[list[Any]] = field(default_factory=list)
    ranges: list[list[Any]] = field(default_factory=list)

    def total_rows(self) -> int:
        return sum(self.row_counts.values())

    def empty(self) -> bool:
        return not (self.total_rows() or self.checkpoints or self.ranges)


class Loader:
    """Thread that owns every insert. Feed it from worker reader threads."""

    def __init__(
        self,
        store: Store,
        chain_id: int,
        start_date: dt.date,
        on_checkpoint: Callable[[int], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        flush_rows: int = 50_000,
        flush_interval_s: float = 1.0,
        max_buffered_rows: int = 500_000,
        heartbeat_interval_s: float = 5.0,
    ) -> None:
        self.store = store
        self.chain_id = chain_id
        self.start_date = start_date.isoformat()
        self.on_checkpoint = on_checkpoint or (lambda day: None)
        self.on_error = on_error or (lambda msg: None)
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_buffered_rows = max_buffered_rows
        self.heartbeat_interval_s = heartbeat_interval_s
        self._pending = _Pending()
        self._heartbeats: dict[str, list[Any]] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._soon = False  # flush without waiting for the timer or the row threshold
        self._thread = threading.Thread(target=self._run, name="loader", daemon=True)
        self.rows_written: dict[str, int] = defaultdict(int)
        self.checkpoints_written = 0
        self.last_error = ""
        self.last_flush_at = 0.0

    # ---- producers (reader threads) -----------------------------------------------------------
    def add_rows(self, kind: str, data: bytes, n: int) -> None:
        if kind not in TABLES:
            raise ValueError(f"unknown row kind {kind!r}")
        with self._cond:
            while self._pending.total_rows() >= self.max_buffered_rows and not self._stop:
                self._cond.wait(0.5)  # back-pressure: the worker's pipe fills and it waits
            self._pending.rows[kind].append(data)
            self._pending.row_counts[kind] += n
            if self._pending.total_rows() >= self.flush_rows:
                self._cond.notify_all()

    def add_checkpoint(
        self, shard: int, day: int, first: int, last: int, counts: Mapping[str, int]
    ) -> None:
        """The day's COMPLETE checkpoint, written after every row added before it."""
        row = [
            day,
            "COMPLETE",
            shard,
            first,
            max(0, last),
            int(counts.get("erc20", 0)),
            int(counts.get("erc1155", 0)),
            int(counts.get("resolutions", 0)),
            int(counts.get("registrations", 0)),
            self.chain_id,
            self.start_date,
            "",
            _now_ms(),
        ]
        with self._cond:
            self._pending.checkpoints.append(row)
            self._cond.notify_all()

    def add_range(self, day: int, first: int, last: int) -> None:
        n = max(0, last - first + 1)
        row = [self.chain_id, self.start_date, day, first, max(0, last), n]
        with self._cond:
            self._pending.ranges.append(row)

    def set_heartbeat(self, worker_id: str, row: list[Any]) -> None:
        """Latest heartbeat per worker (HEARTBEAT_COLUMNS without updated_at)."""
        with self._cond:
            self._heartbeats[worker_id] = row

    def flush_soon(self) -> None:
        """Write what is pending now (e.g. a worker finished: its last checkpoints are waiting)."""
        with self._cond:
            self._soon = True
            self._cond.notify_all()

    # ---- writer -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 60.0) -> None:
        """Flush everything pending, then stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def pending_rows(self) -> int:
        with self._cond:
            return self._pending.total_rows()

    def _run(self) -> None:
        last_hb = 0.0
        while True:
            with self._cond:
                deadline = time.monotonic() + self.flush_interval_s
                while (
                    not self._stop
                    and not self._soon
                    and self._pending.total_rows() < self.flush_rows
                ):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                self._soon = False
                batch, self._pending = self._pending, _Pending()
                stopping = self._stop
                self._cond.notify_all()
            ok = self._flush(batch)
            if not ok:
                with self._cond:  # put it back in front, keep order, try again shortly
                    self._merge_back(batch)
                time.sleep(1.0)
                if stopping:
                    # One last try was made; do not spin forever on shutdown.
                    if not self._flush_final_attempt():
                        log.error("giving up on %d pending rows at shutdown", self.pending_rows())
                    return
                continue
            if time.monotonic() - last_hb >= self.heartbeat_interval_s or stopping:
                last_hb = time.monotonic()
                self._flush_heartbeats()
            if stopping:
                return

    def _merge_back(self, batch: _Pending) -> None:
        cur = self._pending
        for kind, chunks in batch.rows.items():
            cur.rows[kind] = chunks + cur.rows[kind]
            cur.row_counts[kind] += batch.row_counts[kind]
        cur.checkpoints = batch.checkpoints + cur.checkpoints
        cur.ranges = batch.ranges + cur.ranges

    def _flush_final_attempt(self) -> bool:
        with self._cond:
            batch, self._pending = self._pending, _Pending()
        return self._flush(batch)

    def _flush(self, batch: _Pending) -> bool:
        if batch.empty():
            return True
        db = self.store.database
        try:
            for kind, chunks in batch.rows.items():
                if chunks:
                    table, columns = TABLES[kind]
                    self.store.insert_jsonl(f"{db}.{table}", columns, b"".join(chunks))
            # Rows are in: only now may this batch's checkpoints be written.
            for kind, n in batch.row_counts.items():
                self.rows_written[kind] += n
            batch.rows.clear()
            batch.row_counts.clear()
            if batch.ranges:
                self.store.insert_json_rows(f"{db}.day_blocks", DAY_BLOCKS_COLUMNS, batch.ranges)
                batch.ranges = []
            if batch.checkpoints:
                self.store.insert_json_rows(
                    f"{db}.backfill_checkpoint", CHECKPOINT_COLUMNS, batch.checkpoints
                )
                self.checkpoints_written += len(batch.checkpoints)
                for row in batch.checkpoints:
                    self.on_checkpoint(int(row[0]))
                batch.checkpoints = []
        except Exception as exc:
            self.last_error = f"insert failed: {exc}"
            log.error("%s", self.last_error)
            self.on_error(self.last_error)
            return False
        self.last_flush_at = time.time()
        return True

    def _flush_heartbeats(self) -> None:
        with self._cond:
            rows = list(self._heartbeats.values())
        if not rows:
            return
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        try:
            self.store.insert_json_rows(
                f"{self.store.database}.worker_heartbeats",
                HEARTBEAT_COLUMNS,
                [[*r, now] for r in rows],
            )
        except Exception as exc:
            self.on_error(f"heartbeat insert failed: {exc}")
