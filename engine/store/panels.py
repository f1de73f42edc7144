"""Store queries behind the console's panels: day grid, duplicates, disk, staged rows.

Every function takes a store with `query(sql) -> list[tuple]` and a `database` attribute
(store/client.py), runs plain SQL that works the same on the local store server and a remote one,
and returns the plain dataclasses of engine/status.py. The console never sees SQL; it calls the
Engine, which calls these.

The duplicate check is written so that it can fail. Comparing `count()` with `uniqExact(key)` over
`FINAL` is always 0 and proves nothing; instead `count() FROM t FINAL` (rows after replacement) is
compared with `uniqExact(key) FROM t` (distinct keys in the raw table): they are equal exactly when
FINAL really collapses every duplicate key. The FINAL count is read first and the raw table second,
so rows inserted in between can only make the difference smaller, never invent a duplicate.

FINAL runs with `do_not_merge_across_partitions_select_final = 1`, i.e. exactly as background
merges and OPTIMIZE work (never across partitions). That is faster (partitions in parallel, a
merged partition is read as is), and it catches the duplicates merges can never remove: one key in
two partitions (the same log staged under two different day_idx values, e.g. after start_date
changed). A plain FINAL would collapse those at read time and hide them.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from engine.status import (
    DAY_DONE,
    DAY_FAILED,
    DAY_PENDING,
    DAY_RUNNING,
    DiskReport,
    DiskUsage,
    DuplicateCheck,
)

# Staging tables and their natural (ReplacingMergeTree ORDER BY) keys: engine/store/sql/schema.sql.
DUPLICATE_KEYS: dict[str, tuple[str, ...]] = {
    "erc20_transfers_staging": ("tx_hash", "log_index"),
    "erc1155_transfers_staging": ("tx_hash", "log_index", "batch_index"),
}
# Tables whose row counts the Progress panel shows (raw rows, duplicates waiting for a merge
# included: count() is answered from part metadata, so it stays cheap on any size).
STAGED_TABLES = (
    "erc20_transfers_staging",
    "erc1155_transfers_staging",
    "condition_resolutions",
    "token_registrations",
)


class QueryStore(Protocol):
    """The part of engine.store.Store these queries need."""

    database: str

    def query(self, sql: str) -> list[tuple]: ...

    def command(self, sql: str) -> None: ...


def _date_literal(start_date: dt.date | str) -> str:
    """A validated 'YYYY-MM-DD' literal (raises ValueError on anything else)."""
    if isinstance(start_date, dt.datetime):
        start_date = start_date.date()
    if isinstance(start_date, dt.date):
        return start_date.isoformat()
    return dt.date.fromisoformat(str(start_date)).isoformat()


def complete_days(
    store: QueryStore, days_total: int, start_date: dt.date | str, chain_id: int
) -> set[int]:
    """Day indexes with a COMPLETE checkpoint for this chain and calendar."""
    db = store.database
    rows = store.query(
        f"SELECT day_idx FROM {db}.backfill_checkpoint FINAL "
        f"WHERE status = 'COMPLETE' AND chain_id = {int(chain_id)} "
        f"AND start_date = '{_date_literal(start_date)}' AND day_idx < {int(days_total)}"
    )
    return {int(r[0]) for r in rows}


def day_grid(
    store: QueryStore,
    days_total: int,
    start_date: dt.date | str,
    chain_id: int,
    in_progress: set[int],
    failed: set[int],
) -> list[str]:
    """One DAY_* state per configured day: COMPLETE checkpoint > failed > in progress > pending."""
    done = complete_days(store, days_total, start_date, chain_id)
    return day_states(int(days_total), done, failed, in_progress)


def day_states(days_total: int, done: set[int], failed: set[int], running: set[int]) -> list[str]:
    """One DAY_* per day: COMPLETE > failed > in progress > pending."""
    grid: list[str] = []
    for d in range(days_total):
        if d in done:
            grid.append(DAY_DONE)
        elif d in failed:
            grid.append(DAY_FAILED)
        elif d in running:
            grid.append(DAY_RUNNING)
        else:
            grid.append(DAY_PENDING)
    return grid


def duplicates(store: QueryStore) -> list[DuplicateCheck]:
    """Per staging table: raw rows, unique keys (no FINAL), and duplicates that survive FINAL.

    raw_rows - unique_keys are duplicates waiting for a background merge (harmless, expected after
    retries and restarts). final_duplicates must be 0: FINAL row count minus distinct raw keys.
    This reads every key on every call; the console runs engine/store/duplicates.py, which keeps
    these figures per partition, and the tests and bench/panel_queries.py hold it to this one.
    """
    db = store.database
    out: list[DuplicateCheck] = []
    for table, key in DUPLICATE_KEYS.items():
        cols = ", ".join(key)
        # FINAL first (see the module docstring for why the order matters).
        final_rows = int(
            store.query(
                f"SELECT count() FROM {db}.{table} FINAL "
                "SETTINGS do_not_merge_across_partitions_select_final = 1"
            )[0][0]
        )
        raw, unique = store.query(f"SELECT count(), uniqExact({cols}) FROM {db}.{table}")[0]
        raw, unique = int(raw), int(unique)
        out.append(
            DuplicateCheck(
                table=table,
                raw_rows=raw,
                unique_keys=unique,
                final_duplicates=max(0, final_rows - unique),
            )
        )
    return out


def disk(store: QueryStore) -> DiskReport:
    """Active parts per table of our database (rows, bytes, parts) and free space on its disk(s)."""
    db = store.database
    # One pass over system.parts (per table and disk): it is the costly part of this panel.
    tables: dict[str, DiskUsage] = {}
    used: set[str] = set()
    for t, d, r, b, p in store.query(
        "SELECT table, disk_name, sum(rows), sum(bytes_on_disk), count() FROM system.parts "
        f"WHERE active AND database = '{db}' GROUP BY table, disk_name"
    ):
        u = tables.get(str(t)) or DiskUsage(table=str(t), rows=0, bytes_on_disk=0, parts=0)
        tables[str(t)] = DiskUsage(
            table=u.table,
            rows=u.rows + int(r),
            bytes_on_disk=u.bytes_on_disk + int(b),
            parts=u.parts + int(p),
        )
        used.add(str(d))
    for t in DUPLICATE_KEYS:  # the staging tables always appear, even before the first insert
        tables.setdefault(t, DiskUsage(table=t, rows=0, bytes_on_disk=0, parts=0))
    # The disk(s) holding our parts; the default disk before anything is written. When several
    # disks hold data, the one with the least free space is the one to watch.
    disks = {
        str(n): (int(f), int(t))
        for n, f, t in store.query("SELECT name, free_space, total_space FROM system.disks")
    }
    watched = [disks[n] for n in used if n in disks] or (
        [disks["default"]] if "default" in disks else list(disks.values())[:1]
    )
    free: int | None = None
    total: int | None = None
    if watched:
        free, total = min(watched)
    ordered = sorted(tables.values(), key=lambda u: (-u.bytes_on_disk, u.table))
    return DiskReport(tables=ordered, free_bytes=free, total_bytes=total)


def staged_rows(store: QueryStore) -> dict[str, int]:
    """Raw row count per data table (duplicates waiting for a merge included)."""
    db = store.database
    sql = " UNION ALL ".join(f"SELECT '{t}', count() FROM {db}.{t}" for t in STAGED_TABLES)
    counts = {str(t): int(n) for t, n in store.query(sql)}
    return {t: counts.get(t, 0) for t in STAGED_TABLES}


def checkpointed_rows(
    store: QueryStore, chain_id: int, start_date: dt.date, days: int
) -> dict[str, int]:
    """Rows per staging table of the COMPLETE days (their checkpoints' counts): distinct keys, what
    SQL counts for those days."""
    db = store.database
    rows = store.query(
        f"SELECT sum(erc20_count), sum(erc1155_count), sum(resolution_count), "
        f"sum(registration_count) FROM {db}.backfill_checkpoint FINAL "
        f"WHERE status = 'COMPLETE' AND chain_id = {int(chain_id)} "
        f"AND start_date = '{start_date.isoformat()}' AND day_idx < {int(days)}"
    )
    e20, e1155, res, reg = (int(v or 0) for v in (rows[0] if rows else (0, 0, 0, 0)))
    return {
        "erc20_transfers_staging": e20,
        "erc1155_transfers_staging": e1155,
        "condition_resolutions": res,
        "token_registrations": reg,
    }


def mark_heartbeats_gone(store: QueryStore, shards: int) -> None:
    """Rows of shards >= SHARDS (left by a run with more shards) become GONE, their updated_at
    (the last real heartbeat) kept: a later row with the same version replaces the old one."""
    db = store.database
    store.command(
        f"INSERT INTO {db}.worker_heartbeats SELECT worker_id, shard_id, shards, pid, 'GONE', "
        f"day_idx, from_block, to_block, rows, last_batch, "
        f"'gone: this run has SHARDS = {int(shards)}', updated_at "
        f"FROM {db}.worker_heartbeats FINAL WHERE shard_id >= {int(shards)} AND state != 'GONE'"
    )
