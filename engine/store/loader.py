"""The console's single store writer: batches worker rows, then checkpoints, then heartbeats.

Ordering rule (DESIGN.md 4): a day's checkpoint is inserted only in the same flush as, or a
later flush than, every row of that day. Rows and checkpoints are swapped out of the buffers
together under one lock, rows are inserted first, and a failed row insert keeps everything for
the next attempt, so a checkpoint can never reach the store ahead of its rows.

Raw log chunks (workers' eth_getLogs answers, engine/store/raw_logs.py) go in the same way, before
the checkpoints; a checkpoint whose day came as chunks takes its counts from what the store
decoded (decode_counts) and is written only when the store parsed every log the worker sent.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.decode import TABLES, DecodeFilter
from engine.store import raw_logs
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

#: How ClickHouse (server or chdb) and the OS say a write failed for lack of disk space.
DISK_FULL_WORDS = (
    "not_enough_space",  # Code: 243. DB::Exception: ... (NOT_ENOUGH_SPACE)
    "not enough space",  # Cannot reserve 1.00 MiB, not enough space
    "no space left on device",  # errno ENOSPC (CANNOT_WRITE_TO_FILE_DESCRIPTOR, ...)
    "code: 243.",
)


def disk_full(message: str) -> bool:
    """Whether a store error says the disk is full (the write can succeed once space returns)."""
    text = message.lower()
    return any(w in text for w in DISK_FULL_WORDS)


def _now_ms() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass
class _Pending:
    rows: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    row_counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    checkpoints: list[list[Any]] = field(default_factory=list)
    # Per checkpoint (same order): (first chunk id, last chunk id, logs) when its day came as
    # raw chunks, else None.
    spans: list[tuple[int, int, int] | None] = field(default_factory=list)
    ranges: list[list[Any]] = field(default_factory=list)
    chunks: list[raw_logs.Chunk] = field(default_factory=list)
    chunk_logs: int = 0
    chunk_bytes: int = 0

    def total_rows(self) -> int:
        return sum(self.row_counts.values()) + self.chunk_logs

    def empty(self) -> bool:
        return not (self.total_rows() or self.checkpoints or self.ranges or self.chunks)


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
        decode_filter: DecodeFilter | None = None,
        on_skip: Callable[[int, int, str, int], None] | None = None,
        max_buffered_bytes: int = 256 << 20,
    ) -> None:
        self.store = store
        self.chain_id = chain_id
        self.start_date = start_date.isoformat()
        self.on_checkpoint = on_checkpoint or (lambda day: None)
        #: (shard, day, kind -> rows) of each checkpoint written: the store's counts of the day.
        self.on_counts: Callable[[int, int, dict[str, int]], None] = lambda shard, day, c: None
        self.on_error = on_error or (lambda msg: None)
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_buffered_rows = max_buffered_rows
        self.heartbeat_interval_s = heartbeat_interval_s
        self.decode_filter = decode_filter
        self.on_skip = on_skip or (lambda shard, day, reason, n: None)
        self.max_buffered_bytes = max_buffered_bytes
        self._entry = ""  # the raw chunks' entry table, once its views exist
        self._pending = _Pending()
        self._heartbeats: dict[str, list[Any]] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._soon = False  # flush without waiting for the timer or the row threshold
        self._thread = threading.Thread(target=self._run, name="loader", daemon=True)
        self.rows_written: dict[str, int] = defaultdict(int)
        self.checkpoints_written = 0
        self.last_error = ""
        #: Unix time of the latest successful write (rows, checkpoints or heartbeats).
        self.last_write_ok_at = 0.0
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

    def add_chunk(self, chunk: raw_logs.Chunk) -> None:
        """A piece of a raw eth_getLogs answer (decoded by the store on insert)."""
        if self.decode_filter is None:
            raise ValueError("raw log chunks need the loader's decode_filter")
        with self._cond:
            p = self._pending
            while (
                p.total_rows() >= self.max_buffered_rows or p.chunk_bytes >= self.max_buffered_bytes
            ) and not self._stop:
                self._cond.wait(0.5)  # back-pressure: the worker's pipe fills and it waits
                p = self._pending
            p.chunks.append(chunk)
            p.chunk_logs += chunk.logs
            p.chunk_bytes += len(chunk.data)
            if p.total_rows() >= self.flush_rows or p.chunk_bytes >= self.max_buffered_bytes // 4:
                self._cond.notify_all()

    def add_checkpoint(
        self,
        shard: int,
        day: int,
        first: int,
        last: int,
        counts: Mapping[str, int],
        chunks: tuple[int, int] | None = None,
        logs: int = 0,
    ) -> None:
        """The day's COMPLETE checkpoint, written after every row added before it.

        With ``chunks`` (the day's first and last raw chunk id) the counts come from the store
        once those chunks are in, and the checkpoint is written only if the store parsed
        ``logs`` logs of them."""
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
            self._pending.spans.append(None if chunks is None else (chunks[0], chunks[1], logs))
            self._cond.notify_all()

    def add_range(self, day: int, first: int, last: int) -> None:
        n = max(0, last - first + 1)
        row = [self.chain_id, self.start_date, day, first, max(0, last), n]
        with self._cond:
            self._pending.ranges.append(row)

    def set_heartbeat(self, worker_id: str, row: list[Any]) -> None:
        """A changed heartbeat row (HEARTBEAT_COLUMNS, updated_at included: the worker's last
        real heartbeat, engine.heartbeats). Written once at the next heartbeat flush."""
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
        cur.spans = batch.spans + cur.spans
        cur.ranges = batch.ranges + cur.ranges
        cur.chunks = batch.chunks + cur.chunks
        cur.chunk_logs += batch.chunk_logs
        cur.chunk_bytes += batch.chunk_bytes

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
            if batch.chunks:
                if not self._entry:
                    assert self.decode_filter is not None
                    self._entry = raw_logs.ensure_views(self.store, self.decode_filter)
                insert_id = random.getrandbits(63)
                raw_logs.insert_chunks(self.store, self._entry, insert_id, batch.chunks)
                batch.chunks = []
                batch.chunk_logs = batch.chunk_bytes = 0
            if batch.ranges:
                self.store.insert_json_rows(f"{db}.day_blocks", DAY_BLOCKS_COLUMNS, batch.ranges)
                batch.ranges = []
            if batch.checkpoints:
                rows, decoded = self._counted(batch)
                if rows:
                    self.store.insert_json_rows(
                        f"{db}.backfill_checkpoint", CHECKPOINT_COLUMNS, rows
                    )
                self.checkpoints_written += len(rows)
                for row in rows:
                    dc = decoded.get(int(row[0]))
                    if dc is not None:
                        for kind, n in dc.rows.items():
                            self.rows_written[kind] += n
                        for reason in raw_logs.REPORTED_SKIPS:
                            if dc.skipped.get(reason):
                                self.on_skip(int(row[2]), int(row[0]), reason, dc.skipped[reason])
                    self.on_counts(
                        int(row[2]),
                        int(row[0]),
                        {
                            "erc20": int(row[5]),
                            "erc1155": int(row[6]),
                            "resolutions": int(row[7]),
                            "registrations": int(row[8]),
                        },
                    )
                    self.on_checkpoint(int(row[0]))
                batch.checkpoints = []
                batch.spans = []
        except Exception as exc:
            self.last_error = f"insert failed: {exc}"
            log.error("%s", self.last_error)
            self.on_error(self.last_error)
            return False
        self.last_flush_at = self.last_write_ok_at = time.time()
        return True

    def _counted(self, batch: _Pending) -> tuple[list[list[Any]], dict[int, raw_logs.DayCounts]]:
        """The batch's checkpoint rows, counts filled from the store for days that came as
        chunks; a day whose chunks the store did not parse whole is left out (and reported)."""
        spans = [
            (int(row[0]), sp[0], sp[1])
            for row, sp in zip(batch.checkpoints, batch.spans, strict=True)
            if sp is not None
        ]
        decoded = raw_logs.day_counts(self.store, spans) if spans else {}
        rows: list[list[Any]] = []
        for row, sp in zip(batch.checkpoints, batch.spans, strict=True):
            if sp is None:
                rows.append(row)
                continue
            day = int(row[0])
            dc = decoded[day]
            if dc.logs != sp[2]:
                msg = (
                    f"day {day}: the store parsed {dc.logs} of the {sp[2]} logs sent (malformed "
                    "JSON from the node?); not marked COMPLETE, a rerun fetches it again"
                )
                log.error("%s", msg)
                self.on_error(msg)
                decoded.pop(day)
                continue
            row[5:9] = [
                dc.rows["erc20"],
                dc.rows["erc1155"],
                dc.rows["resolutions"],
                dc.rows["registrations"],
            ]
            rows.append(row)
        return rows, decoded

    def _flush_heartbeats(self) -> None:
        """Write the rows changed since the last flush, each with its own updated_at (never
        re-stamped: the playbook reads now() - updated_at as the worker's silence)."""
        with self._cond:
            batch, self._heartbeats = self._heartbeats, {}
        if not batch:
            return
        try:
            self.store.insert_json_rows(
                f"{self.store.database}.worker_heartbeats", HEARTBEAT_COLUMNS, list(batch.values())
            )
            self.last_write_ok_at = time.time()
        except Exception as exc:
            with self._cond:  # a newer row set meanwhile wins
                for worker_id, row in batch.items():
                    self._heartbeats.setdefault(worker_id, row)
            self.on_error(f"heartbeat insert failed: {exc}")
