"""Time every console panel query (engine/store/panels.py) on staging tables holding 10M rows.

    .venv/bin/python bench/panel_queries.py [--rows 10000000] [--runs 5] [--path DIR] [--keep]
        [--arrive 20000] [--steady-runs 5] [--no-full]

Fills erc20_transfers_staging (70%) and erc1155_transfers_staging (30%) of a local store server
(engine/store/server.py, as the console uses it) with synthetic rows (INSERT ... SELECT FROM
numbers(), in chunks), adds 1% re-inserted rows as duplicates waiting for a merge and a
checkpoint per day, then prints the median (and min/max) time of each panel query over several
runs. Target: <= 100 ms per panel query.

The duplicate check (engine/store/duplicates.py, kept per partition) is timed as the console runs
it: a cold first run (builds its key index over every partition), a run with nothing new, then
`--steady-runs` runs each after `--arrive` new rows (half new keys, half re-inserted ones) landed
in the latest day, as while the backfill moves on. Target: <= 1 s per steady run. The whole-table
check (panels.duplicates, what the console ran before) is timed once beside it and must give the
same figures (--no-full skips it). Peak RSS of this process is printed before the whole-table
check runs (target < 2 GiB); a run that filled the store includes the fill in it, so measure with
a second run on a kept store (--keep, then --path).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.store import panels  # noqa: E402
from engine.store.client import Store  # noqa: E402
from engine.store.duplicates import DuplicateChecker  # noqa: E402
from engine.store.server import ensure_server  # noqa: E402

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


def fill(store: Store, total: int) -> None:
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


ARRIVE = """
INSERT INTO {db}.erc20_transfers_staging
    (tx_hash, log_index, block_number, block_timestamp, day_idx, token, from_address,
     to_address, value)
SELECT
    if(number % 2 = 0, concat('0xnew', toString({seq}), '_', toString(number)),
       concat('0x', lower(hex(MD5(toString(intDiv(number * 7919, 4))))),
              lower(hex(MD5(toString(intDiv(number * 7919, 4) + 7)))))) AS tx_hash,
    toUInt32(if(number % 2 = 0, 0, (number * 7919) % 4)) AS log_index,
    40000000 + number AS block_number,
    toDateTime('{start} 00:00:00', 'UTC') + toUInt32({day} * 86400 + number % 86400),
    toUInt32({day}) AS day_idx,
    '0x2791bca1f2de4661ed88a30c99a7a9449aa84174' AS token,
    '0xa' AS from_address,
    '0xb' AS to_address,
    toUInt256(number) AS value
FROM numbers({count})
"""


def arrive(store: Store, count: int, seq: int) -> None:
    """`count` rows into the latest day: half new keys, half keys staged before (other days)."""
    store.command(
        ARRIVE.format(db=store.database, start=START_DATE, day=DAYS - 1, count=count, seq=seq)
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def figures(checks: list) -> list[tuple[str, int, int, int]]:
    return [(c.table, c.raw_rows, c.unique_keys, c.final_duplicates) for c in checks]


def duplicate_check(store: Store, args: argparse.Namespace) -> bool:
    """Time the kept-per-partition check (cold, idle, steady) and compare with the whole table."""
    checker = DuplicateChecker(store, tag="bench")
    ok = True
    try:
        print(
            f"\n{'duplicate check (kept per partition)':<44} {'ms':>9} {'cpu ms':>9}"
            "  partitions read"
        )
        rows: list[tuple[str, float, float]] = []
        for name, n in [("cold (builds the key index)", 0), ("idle (nothing new)", 0)] + [
            (f"steady: after {args.arrive:,} new rows", args.arrive)
        ] * args.steady_runs:
            if n:
                arrive(store, n, len(rows))
            checks = checker.check()
            c = checker.last
            rows.append((name, c.seconds * 1000, c.cpu_seconds * 1000))
            print(
                f"{name:<44} {c.seconds * 1000:>9.1f} {c.cpu_seconds * 1000:>9.1f}  "
                f"{c.partitions_read}/"
                f"{c.partitions_total} ({c.rows_read:,} rows)"
            )
        steady = [(ms, cpu) for name, ms, cpu in rows if name.startswith("steady")]
        if steady:
            med = statistics.median(ms for ms, _ in steady)
            cpu = statistics.median(c for _, c in steady)
            ok = med <= 1000.0
            print(
                f"steady-state cost per run: median {med:.0f} ms wall, {cpu:.0f} ms CPU "
                "(target <= 1000 ms; `uptime` load shows how shared the machine was)"
            )
        print(f"peak RSS of this process so far: {peak_rss_mib():,.0f} MiB (target < 2048 MiB)")
        if not args.no_full:
            t0, c0 = time.perf_counter(), time.process_time()
            full = panels.duplicates(store)
            took = (time.perf_counter() - t0) * 1000
            took_cpu = (time.process_time() - c0) * 1000
            same = figures(full) == figures(checks)
            ok = ok and same
            print(
                f"whole-table check (panels.duplicates, before): {took:,.0f} ms wall, "
                f"{took_cpu:,.0f} ms CPU"
            )
            print(f"same figures as the whole-table check: {'yes' if same else 'NO'}")
            if not same:
                print(f"  kept: {figures(checks)}\n  full: {figures(full)}")
        for c in checks:
            print(
                f"{c.table}: raw {c.raw_rows:,} unique {c.unique_keys:,} "
                f"waiting {c.raw_rows - c.unique_keys:,} FINAL duplicates {c.final_duplicates}"
            )
    finally:
        checker.close()
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="staging rows (default 10M)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per query (median shown)")
    ap.add_argument("--path", help="store data dir (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir (reuse with --path)")
    ap.add_argument("--arrive", type=int, default=20_000, help="new rows before each steady run")
    ap.add_argument("--steady-runs", type=int, default=5, help="check runs after arrivals")
    ap.add_argument("--no-full", action="store_true", help="skip the whole-table duplicate check")
    args = ap.parse_args(argv)

    path = Path(args.path) if args.path else Path(tempfile.mkdtemp(prefix="bench-panels-"))
    server = ensure_server(path)
    store = Store(server.url, "bench_panels", server.user, server.password, server)
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
        cases: list[tuple[str, Callable[[], object]]] = [
            ("staged_rows (Progress rows)", lambda: panels.staged_rows(store)),
            (
                "day_grid (checkpoint FINAL)",
                lambda: panels.day_grid(store, DAYS, START_DATE, CHAIN_ID, in_progress, set()),
            ),
            ("disk (system.parts/disks)", lambda: panels.disk(store)),
        ]
        print(f"\n{'query':<40} {'median ms':>10} {'min':>8} {'max':>8}  target")
        worst_panel = 0.0
        for name, fn in cases:
            times, _ = timed(fn, args.runs)
            med = statistics.median(times)
            worst_panel = max(worst_panel, med)
            verdict = "ok" if med <= TARGET_MS else f"SLOW (> {TARGET_MS:.0f} ms)"
            print(f"{name:<40} {med:>10.1f} {min(times):>8.1f} {max(times):>8.1f}  {verdict}")
        ok = worst_panel <= TARGET_MS
        print(f"panel queries: worst median {worst_panel:.1f} ms -> {'PASS' if ok else 'FAIL'}")
        dup_ok = duplicate_check(store, args)
        print(f"duplicate check -> {'PASS' if dup_ok else 'FAIL'}")
        return 0 if ok and dup_ok else 1
    finally:
        store.close()
        if not args.keep and not args.path:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
