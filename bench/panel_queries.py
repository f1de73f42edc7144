"""Time every console panel query (engine/store/panels.py) on staging tables holding 10M rows.

    .venv/bin/python bench/panel_queries.py [--rows 10000000] [--runs 5] [--path DIR] [--keep]

Fills erc20_transfers_staging (70%) and erc1155_transfers_staging (30%) of an embedded chdb store
with synthetic rows (INSERT ... SELECT FROM numbers(), in chunks), adds 1% re-inserted rows as
duplicates waiting for a merge and a checkpoint per day, then prints the median (and min/max) time
of each panel query over several runs. Target: <= 100 ms per panel query. The duplicate check reads
every key (uniqExact and a FINAL count), so it is printed separately: the console runs it every
15 s on its own thread, never on the UI thread.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.store import panels  # noqa: E402
from engine.store.client import ChdbStore  # noqa: E402

DAYS = 1048
START_DATE = "2022-12-18"
CHAIN_ID = 137
CHUNK = 2_000_000
TARGET_MS = 100.0

ERC20_INSERT = """
INSERT INTO {db}.erc20_transfers_staging
    (tx_hash, log_index, block_number, block_timestamp, day_idx, token, from_address,
     to_address, value)
SELECT
    concat('0x', lower(hex(MD5(toString(intDiv(number, 4))))),
                 lower(hex(MD5(toString(intDiv(number, 4) + 7))))) AS tx_hash,
    toUInt32(number % 4) AS log_index,
    40000000 + intDiv(number, 40) AS block_number,
    toDateTime('{start} 00:00:00', 'UTC') + toUInt32(intDiv(number * 86400 * {days}, {total}))
        AS block_timestamp,
    toUInt32(intDiv(number * {days}, {total})) AS day_idx,
    '0x2791bca1f2de4661ed88a30c99a7a9449aa84174' AS token,
    concat('0x', lower(hex(SHA1(toString(number % 50000))))) AS from_address,
    concat('0x', lower(hex(SHA1(toString(number % 70001))))) AS to_address,
    toUInt256(number * 1000003) AS value
FROM numbers({first}, {count})
"""

ERC1155_INSERT = """
INSERT INTO {db}.erc1155_transfers_staging
    (tx_hash, log_index, batch_index, block_number, block_timestamp, day_idx, contract,
     operator, from_address, to_address, token_id, value)
SELECT
    concat('0x', lower(hex(MD5(toString(intDiv(number, 6) + 1000000000)))),
                 lower(hex(MD5(toString(intDiv(number, 6) + 7))))) AS tx_hash,
    toUInt32(intDiv(number % 6, 3)) AS log_index,
    toUInt32(number % 3) AS batch_index,
    40000000 + intDiv(number, 20) AS block_number,
    toDateTime('{start} 00:00:00', 'UTC') + toUInt32(intDiv(number * 86400 * {days}, {total}))
        AS block_timestamp,
    toUInt32(intDiv(number * {days}, {total})) AS day_idx,
    '0x4d97dcd97ec945f40cf65f87097ace5ea0476045' AS contract,
    '0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e' AS operator,
    concat('0x', lower(hex(SHA1(toString(number % 40000))))) AS from_address,
    concat('0x', lower(hex(SHA1(toString(number % 60001))))) AS to_address,
    toUInt256(number % 20000) * toUInt256('1000000000000000000000000000000') AS token_id,
    toUInt256(number * 999983) AS value
FROM numbers({first}, {count})
"""

CHECKPOINTS = """
INSERT INTO {db}.backfill_checkpoint
    (day_idx, status, shard_id, from_block, to_block, erc20_count, erc1155_count,
     resolution_count, registration_count, chain_id, start_date, error, updated_at)
SELECT toUInt32(number), if(number % 97 = 13, 'FAILED', 'COMPLETE'), toUInt16(number % 12),
       40000000 + number * 43200, 40000000 + number * 43200 + 43199, 6700, 2860, 3, 9,
       {chain}, toDate('{start}'), '', now64(3)
FROM numbers({days})
"""


def fill(store: ChdbStore, total: int) -> None:
    db = store.database
    n20 = total * 7 // 10
    n1155 = total - n20
    for sql, n in ((ERC20_INSERT, n20), (ERC1155_INSERT, n1155)):
        for first in range(0, n, CHUNK):
            count = min(CHUNK, n - first)
            store.command(
                sql.format(db=db, start=START_DATE, days=DAYS, total=n, first=first, count=count)
            )
        # 1% of the rows again, as a separate insert: duplicates waiting for a merge.
        store.command(
            sql.format(db=db, start=START_DATE, days=DAYS, total=n, first=0, count=n // 100)
        )
    store.command(CHECKPOINTS.format(db=db, chain=CHAIN_ID, start=START_DATE, days=DAYS))


def timed(fn: Callable[[], object], runs: int) -> tuple[list[float], object]:
    fn()  # warm-up (caches, first-touch of parts)
    out: list[float] = []
    result: object = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out, result


def final_count(store: ChdbStore, table: str) -> int:
    return int(store.query(f"SELECT count() FROM {store.database}.{table} FINAL")[0][0])


def raw_and_unique(store: ChdbStore, table: str) -> tuple[int, int]:
    cols = ", ".join(panels.DUPLICATE_KEYS[table])
    raw, uniq = store.query(f"SELECT count(), uniqExact({cols}) FROM {store.database}.{table}")[0]
    return int(raw), int(uniq)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="staging rows (default 10M)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per query (median shown)")
    ap.add_argument("--path", help="chdb data dir (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir (reuse with --path)")
    args = ap.parse_args(argv)

    path = Path(args.path) if args.path else Path(tempfile.mkdtemp(prefix="bench-panels-"))
    store = ChdbStore(path, "bench_panels")
    try:
        store.ensure_schema()
        have = panels.staged_rows(store)
        staged = have["erc20_transfers_staging"] + have["erc1155_transfers_staging"]
        if staged < args.rows:
            for t in (
                "erc20_transfers_staging",
                "erc1155_transfers_staging",
                "backfill_checkpoint",
            ):
                store.command(f"TRUNCATE TABLE {store.database}.{t}")
            t0 = time.perf_counter()
            fill(store, args.rows)
            print(f"filled {args.rows:,} rows (+1% duplicates) in {time.perf_counter() - t0:.1f}s")
        else:
            print(f"reusing {staged:,} staged rows in {path}")

        in_progress = set(range(600, 612))
        cases: list[tuple[str, str, Callable[[], object]]] = [
            ("panel", "staged_rows (Progress rows)", lambda: panels.staged_rows(store)),
            (
                "panel",
                "day_grid (checkpoint FINAL)",
                lambda: panels.day_grid(store, DAYS, START_DATE, CHAIN_ID, in_progress, set()),
            ),
            ("panel", "disk (system.parts/disks)", lambda: panels.disk(store)),
        ]
        for table in panels.DUPLICATE_KEYS:
            short = table.removesuffix("_transfers_staging")
            cases.append(
                ("dup", f"  {short}: count() FINAL", lambda t=table: final_count(store, t))
            )
            cases.append(
                (
                    "dup",
                    f"  {short}: count(), uniqExact(key)",
                    lambda t=table: raw_and_unique(store, t),
                )
            )
        cases.append(("dup", "duplicates() total (every 15 s)", lambda: panels.duplicates(store)))

        print(f"\n{'query':<40} {'median ms':>10} {'min':>8} {'max':>8}  target")
        worst_panel = 0.0
        for kind, name, fn in cases:
            times, _ = timed(fn, args.runs)
            med = statistics.median(times)
            if kind == "panel":
                worst_panel = max(worst_panel, med)
                verdict = "ok" if med <= TARGET_MS else f"SLOW (> {TARGET_MS:.0f} ms)"
            else:
                verdict = "(duplicate check: runs every 15 s off the UI thread)"
            print(f"{name:<40} {med:>10.1f} {min(times):>8.1f} {max(times):>8.1f}  {verdict}")
        checks = panels.duplicates(store)
        print()
        for c in checks:
            print(
                f"{c.table}: raw {c.raw_rows:,} unique {c.unique_keys:,} "
                f"waiting {c.raw_rows - c.unique_keys:,} FINAL duplicates {c.final_duplicates}"
            )
        ok = worst_panel <= TARGET_MS
        print(f"\npanel queries: worst median {worst_panel:.1f} ms -> {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        store.close()
        if not args.keep and not args.path:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
