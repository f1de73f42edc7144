"""Rebuild and hard gate at the real job's volume: wall time and peak RSS for N synthetic trades.

    .venv/bin/python bench/analytics_scale.py [--trades 2000000 10000000 ...] [--path DIR]
        [--keep] [--skip-hard-gate] [--skip-incremental] [--max-memory-gib G]

For each N it fills a local store server SQL-side (INSERT ... SELECT FROM numbers(), like
bench/panel_queries.py) with a structurally realistic history over 1,048 days:
- markets (N / 1,250, between 1,700 and 8,000) with real ConditionalTokens position ids, a
  TokenRegistered pair on the day each opens and a one-hot ConditionResolution 30 days later;
- N trades: a TransferSingle exchange <-> wallet of one open market's outcome token plus the
  opposite USDC leg, in one tx;
- N / 10 splits (USDC wallet -> ConditionalTokens, both outcome tokens minted to the wallet);
- N / 10 redemptions of resolved markets (winning tokens burned, the same USDC paid out);
- one COMPLETE checkpoint per day with the day's exact counts, except the last day, which is left
  without a checkpoint for the incremental step.
Then, each in a fresh process (which starts the store server), with wall time and, for the console
and the store server apart, peak RSS and CPU seconds (sampled every 0.1 s):
1. `rebuild` (build into *_new, hard gate, swap, snapshot) of the 1,047 COMPLETE days;
2. the standalone `hard-gate` (build into *_check, strict gates);
3. the last day marked COMPLETE, then `rebuild` again over one configured day more (the case an
   incremental rebuild would serve; the rebuild is a full one today, so this is its time).
The gates' thresholds are widened in the bench config (random synthetic PnL is no data-quality
signal); every gate query still runs. Prints a table per N and the three slowest statements of
each step (from on-complete.log's timings). Disk: about 0.5 GB per 1M trades while it runs; the
data is dropped afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DAYS = 1048
START_DATE = "2022-12-18"
DAY0 = 1671321600  # 2022-12-18 00:00:00 UTC
LIFETIME = 30  # days a market trades before it resolves
REDEEM_WINDOW = 60  # redemptions pick markets resolved within this many days
CHUNK = 2_000_000
USDC = "0x2791bca1f2de4661ed88a30c99a7a9449aa84174"
CTF = "0x4d97dcd97ec945f40cf65f87097ace5ea0476045"
EXCHANGE = "0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e"
ORACLE = "0x6a9d222616c90fca5754cd1333cfd9b7fb6a4f74"
ZERO = "0x" + "0" * 40
DB = "bench_analytics"

# --------------------------------------------------------------------------------------------
# Fill (SQL-side). {db}, {n} (events of this kind), {m} markets, {w} wallets, {first}, {count}.

MARKETS_DDL = """
CREATE TABLE IF NOT EXISTS {db}.bench_markets
(m UInt32, condition_id String, token0 UInt256, token1 UInt256, winner UInt8)
ENGINE = MergeTree ORDER BY m
"""

# The day of event i of n, its second in the day, and a market open on that day.
_DAY = "toUInt32(intDiv(number * {days}, {n}))"
_SEC = "toUInt32(intDiv((number * {days} - intDiv(number * {days}, {n}) * {n}) * 86400, {n}))"

TRADES = """
INSERT INTO {db}.{table}
SELECT {columns}
FROM
(
    SELECT
        number,
        {day} AS d,
        toUInt32(greatest(toInt64(d) - {shift}, 0)) AS wd,
        {sec} AS sec,
        cityHash64(number, {salt}) AS h,
        toUInt32(intDiv(greatest(toInt64(wd) - {life} + 1, 0) * {m} + {days} - 1, {days})) AS lo,
        toUInt32(intDiv((toInt64(wd) + 1) * {m} + {days} - 1, {days})) AS hi,
        toUInt32(lo + h % greatest(hi - lo, 1)) AS mk,
        concat('0x', lower(hex(MD5(toString(number + {salt})))),
               lower(hex(MD5(toString(number + {salt} + 1))))) AS tx_hash,
        40000000 + d * 43200 + intDiv(sec, 2) AS block_number,
        toDateTime({day0} + d * 86400 + sec, 'UTC') AS block_timestamp,
        concat('0x', lower(hex(SHA1(toString(sipHash64(number, {salt}, 'w') % {w}))))) AS wallet,
        bitShiftRight(h, 8) % 3 != 0 AS buy,
        bitShiftRight(h, 16) % 2 AS outcome,
        toUInt256(1000000 + bitShiftRight(h, 20) % 500000000) AS tokens,
        toUInt256(intDiv(tokens * (5 + bitShiftRight(h, 40) % 90), 100)) AS usdc
    FROM numbers({first}, {count})
) AS e
INNER JOIN {db}.bench_markets AS k ON e.mk = k.m
WHERE toInt64(e.d) >= {shift}
"""

TRADE_CASH = """
    tx_hash, 0, block_number, block_timestamp, d, '{usdc}',
    if(buy, wallet, '{exchange}'), if(buy, '{exchange}', wallet), usdc, now64(3)
"""
TRADE_TOKEN = """
    tx_hash, 1, 0, block_number, block_timestamp, d, '{ctf}', '{exchange}',
    if(buy, '{exchange}', wallet), if(buy, wallet, '{exchange}'),
    if(outcome = 0, k.token0, k.token1), tokens, now64(3)
"""
SPLIT_CASH = """
    tx_hash, 0, block_number, block_timestamp, d, '{usdc}', wallet, '{ctf}', tokens, now64(3)
"""
SPLIT_TOKENS = """
    tx_hash, 1, arrayJoin([0, 1]) AS bi, block_number, block_timestamp, d, '{ctf}', wallet,
    '{zero}', wallet, if(bi = 0, k.token0, k.token1), tokens, now64(3)
"""
# Redemptions: the market is one resolved 1..REDEEM_WINDOW days before; winner burned, paid out.
REDEEM_TOKEN = """
    tx_hash, 0, 0, block_number, block_timestamp, d, '{ctf}', wallet, wallet, '{zero}',
    if(k.winner = 0, k.token0, k.token1), tokens, now64(3)
"""
REDEEM_CASH = """
    tx_hash, 1, block_number, block_timestamp, d, '{usdc}', '{ctf}', wallet, tokens, now64(3)
"""

REGISTRATIONS = """
INSERT INTO {db}.token_registrations
SELECT
    concat('0x', lower(hex(MD5(toString(m + 7000000000000)))),
           lower(hex(MD5(toString(m + 7000000000001))))),
    0, 40000000 + d * 43200, toDateTime({day0} + d * 86400, 'UTC'), d, '{exchange}',
    token0, token1, condition_id, now64(3)
FROM (SELECT *, toUInt32(intDiv(m * {days}, {m})) AS d FROM {db}.bench_markets)
"""

RESOLUTIONS = """
INSERT INTO {db}.condition_resolutions
SELECT
    concat('0x', lower(hex(MD5(toString(m + 8000000000000)))),
           lower(hex(MD5(toString(m + 8000000000001))))),
    0, 40000000 + d * 43200, toDateTime({day0} + d * 86400, 'UTC'), d, '{ctf}',
    condition_id, '{oracle}', concat('0x', lower(hex(SHA256(toString(m))))), 2,
    if(winner = 0, [toUInt256(1), toUInt256(0)], [toUInt256(0), toUInt256(1)]), toUInt256(1),
    toInt32(winner), now64(3)
FROM (SELECT *, toUInt32(intDiv(m * {days}, {m}) + {life}) AS d FROM {db}.bench_markets)
WHERE d < {days}
"""

CHECKPOINTS = """
INSERT INTO {db}.backfill_checkpoint
SELECT
    d.day_idx, 'COMPLETE', toUInt16(d.day_idx % 8), 40000000 + d.day_idx * 43200,
    40000000 + d.day_idx * 43200 + 43199, a.n, b.n, c.n, g.n, 137, toDate('{start}'), '', now64(3)
FROM (SELECT toUInt32(number) AS day_idx FROM numbers({first_day}, {n_days})) AS d
LEFT JOIN (SELECT day_idx, count() AS n FROM {db}.erc20_transfers_staging GROUP BY day_idx) AS a
    ON a.day_idx = d.day_idx
LEFT JOIN (SELECT day_idx, count() AS n FROM {db}.erc1155_transfers_staging GROUP BY day_idx) AS b
    ON b.day_idx = d.day_idx
LEFT JOIN (SELECT day_idx, count() AS n FROM {db}.condition_resolutions GROUP BY day_idx) AS c
    ON c.day_idx = d.day_idx
LEFT JOIN (SELECT day_idx, count() AS n FROM {db}.token_registrations GROUP BY day_idx) AS g
    ON g.day_idx = d.day_idx
"""


def n_markets(trades: int) -> int:
    return max(1700, min(8000, trades // 1250))


def fill(store: object, trades: int) -> dict[str, int]:
    """Stage the synthetic history of `trades` trades; returns the staged row counts."""
    from engine.analytics.positions import outcome_token_ids

    db = store.database  # type: ignore[attr-defined]
    m = n_markets(trades)
    wallets = max(1000, trades // 50)
    store.command(MARKETS_DDL.format(db=db))  # type: ignore[attr-defined]
    rows = []
    for i in range(m):
        cond = "0x" + f"{0xC0DE0000 + i:064x}"
        t0, t1 = outcome_token_ids(USDC, cond, 2)
        rows.append([i, cond, str(t0), str(t1), (i * 2654435761 >> 7) % 2])
    store.insert_json_rows(  # type: ignore[attr-defined]
        f"{db}.bench_markets", ["m", "condition_id", "token0", "token1", "winner"], rows
    )
    consts = {"usdc": USDC, "ctf": CTF, "exchange": EXCHANGE, "zero": ZERO}
    kinds = (
        # (events, salt, day shift of the market window, [(table, columns)])
        (trades, 0, 0, [("erc20", TRADE_CASH), ("erc1155", TRADE_TOKEN)]),
        (trades // 10, 10**12, 0, [("erc20", SPLIT_CASH), ("erc1155", SPLIT_TOKENS)]),
        (trades // 10, 2 * 10**12, LIFETIME, [("erc1155", REDEEM_TOKEN), ("erc20", REDEEM_CASH)]),
    )
    for n, salt, shift, parts in kinds:
        # A redemption on day d picks a market resolved 1..REDEEM_WINDOW days before: the open-
        # market window formula on the day shifted back by LIFETIME + 1 (window day wd).
        life = LIFETIME if not shift else REDEEM_WINDOW
        for first in range(0, n, CHUNK):
            count = min(CHUNK, n - first)
            for table, cols in parts:
                target = (
                    "erc20_transfers_staging" if table == "erc20" else "erc1155_transfers_staging"
                )
                sql = TRADES.format(
                    db=db,
                    table=target,
                    columns=cols.format(**consts),
                    day=_DAY.format(days=DAYS, n=n),
                    shift=shift + 1 if shift else 0,
                    sec=_SEC.format(days=DAYS, n=n),
                    salt=salt,
                    life=life,
                    m=m,
                    days=DAYS,
                    day0=DAY0,
                    w=wallets,
                    first=first,
                    count=count,
                )
                store.command(sql)  # type: ignore[attr-defined]
    fmt = {"db": db, "days": DAYS, "m": m, "day0": DAY0, "life": LIFETIME, **consts}
    store.command(REGISTRATIONS.format(**fmt))  # type: ignore[attr-defined]
    store.command(RESOLUTIONS.format(**fmt, oracle=ORACLE))  # type: ignore[attr-defined]
    mark_complete(store, 0, DAYS - 1)
    return staged_counts(store)


def mark_complete(store: object, first_day: int, n_days: int) -> None:
    db = store.database  # type: ignore[attr-defined]
    store.command(  # type: ignore[attr-defined]
        CHECKPOINTS.format(db=db, start=START_DATE, first_day=first_day, n_days=n_days)
    )


def staged_counts(store: object) -> dict[str, int]:
    db = store.database  # type: ignore[attr-defined]
    out = {}
    for t in (
        "erc20_transfers_staging",
        "erc1155_transfers_staging",
        "condition_resolutions",
        "token_registrations",
    ):
        out[t] = int(store.query(f"SELECT count() FROM {db}.{t}")[0][0])  # type: ignore[attr-defined]
    return out


# --------------------------------------------------------------------------------------------
# Steps, each in its own process


CONFIG = """
[clickhouse]
path = "clickhouse"
database = "{db}"

[backfill]
start_date = "{start}"
days = {days}
shards = 8
data_dir = "backfill"

[gates]
high_conf_share_strict = 0.0
high_conf_share_relaxed = 0.0
conservation_share_strict = 0.0
conservation_share_relaxed = 0.0
conservation_worst_strict = 1.0
cash_neutrality_strict = 1.0
win_rate_min = 0.0
win_rate_max = 1.0
{store_extra}
"""


def write_config(folder: Path, days: int, max_memory_gib: float | None) -> Path:
    """The bench config over the first `days` days (the incremental step configures one more)."""
    extra = f"max_memory_gib = {max_memory_gib}" if max_memory_gib else ""
    path = folder / f"config-{days}.toml"
    path.write_text(CONFIG.format(db=DB, start=START_DATE, days=days, store_extra=extra))
    return path


def step_main(step: str, config: Path) -> int:
    """Run one step in this process (called through --step by run_step)."""
    from engine.analytics.gates import cli_hard_gate
    from engine.analytics.rebuild import cli_rebuild
    from engine.config import load_config
    from engine.store.client import open_store

    cfg = load_config(config)
    if step == "rebuild":
        return cli_rebuild(cfg)
    if step == "hard-gate":
        return cli_hard_gate(cfg)
    if step == "complete-last-day":
        store = open_store(cfg)
        try:
            mark_complete(store, DAYS - 1, 1)
        finally:
            store.close()
        return 0
    raise SystemExit(f"unknown step {step!r}")


def _split_tree(pid: int) -> dict[str, tuple[int, float]]:
    """{"console": (rss, cpu s), "server": (rss, cpu s)} over a process tree: the store server
    (engine.store.server_process, started by the step) apart from the rest."""
    import psutil

    out = {"console": (0, 0.0), "server": (0, 0.0)}
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return out
    for q in procs:
        try:
            side = "server" if "server_process" in " ".join(q.cmdline()) else "console"
            t = q.cpu_times()
            rss, cpu = q.memory_info().rss, t.user + t.system
        except psutil.Error:
            continue
        out[side] = (out[side][0] + rss, out[side][1] + cpu)
    return out


def run_step(step: str, config: Path, timeout_s: float) -> dict:
    """exit, wall s, output, and per side (console = the step's processes, server = the store
    server it starts): peak RSS bytes and CPU seconds (last sample, every 0.1 s)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--step", step, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=config.parent,
    )
    peak = {"console": 0, "server": 0}
    cpu = {"console": 0.0, "server": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for side, (rss, c) in _split_tree(proc.pid).items():
                peak[side] = max(peak[side], rss)
                cpu[side] = max(cpu[side], c)
            done.wait(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        out += f"\n(step {step} killed after {timeout_s:.0f} s)"
    done.set()
    th.join()
    return {
        "exit": proc.returncode,
        "wall_s": round(time.perf_counter() - t0, 1),
        "out": out,
        "peak_rss": peak["console"],
        "cpu_s": round(cpu["console"], 1),
        "server_peak_rss": peak["server"],
        "server_cpu_s": round(cpu["server"], 1),
    }


_TIMING = re.compile(r"step (?P<name>.+?) took (?P<s>[0-9.]+) s")


def slowest(out: str, n: int = 3) -> list[tuple[str, float]]:
    """The n slowest statements a step logged as `step NAME took S s` (on-complete.log lines)."""
    found = [(m["name"], float(m["s"])) for m in _TIMING.finditer(out)]
    return sorted(found, key=lambda x: -x[1])[:n]


def gib(b: int) -> str:
    return f"{b / 2**30:.2f} GiB"


def bench_one(trades: int, base: Path, args: argparse.Namespace) -> dict:
    from engine.store.client import Store
    from engine.store.server import ensure_server

    folder = base / f"n{trades}"
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder, DAYS - 1, args.max_memory_gib)
    config_more = write_config(folder, DAYS, args.max_memory_gib)
    print(f"\n=== {trades:,} trades ({folder}) ===", flush=True)
    server = ensure_server(folder / "clickhouse")
    store = Store(server.url, DB, server.user, server.password, server)
    try:
        store.ensure_schema()
        have = staged_counts(store)
        if have["erc20_transfers_staging"] == 0:
            t0 = time.perf_counter()
            have = fill(store, trades)
            print(f"filled in {time.perf_counter() - t0:.1f} s: {have}", flush=True)
        else:
            print(f"reusing {have}", flush=True)
    finally:
        store.close()
    staged = sum(have.values())
    result: dict = {"trades": trades, "staged_rows": staged}
    # (label, step, config): the first rebuild and the hard gate over the days checkpointed by
    # the fill, then the last day marked COMPLETE and a rebuild over one configured day more.
    steps = [("rebuild", "rebuild", config)]
    if not args.skip_hard_gate:
        steps.append(("hard-gate", "hard-gate", config))
    if not args.skip_incremental:
        steps.append(("", "complete-last-day", config_more))
        steps.append(("rebuild +1 day", "rebuild", config_more))
    for label, step, cfg_path in steps:
        r = run_step(step, cfg_path, args.timeout)
        if not label:
            continue
        out = r.pop("out")
        tail = [ln for ln in out.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
        print(
            f"{label:<16} exit {r['exit']}  wall {r['wall_s']:7.1f} s | console: peak RSS "
            f"{gib(r['peak_rss'])}, CPU {r['cpu_s']:.1f} s | store server: peak RSS "
            f"{gib(r['server_peak_rss'])}, CPU {r['server_cpu_s']:.1f} s | {tail[0]}",
            flush=True,
        )
        if r["exit"] != 0 and args.verbose:
            print(out)
        for name, s in slowest(out, args.top):
            print(f"    {s:8.1f} s  {name}")
        result[label] = r
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trades", type=int, nargs="+", default=[2_000_000, 10_000_000])
    ap.add_argument("--path", help="folder for the bench stores (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the stores (reuse with --path)")
    ap.add_argument("--skip-hard-gate", action="store_true")
    ap.add_argument("--skip-incremental", action="store_true")
    ap.add_argument("--max-memory-gib", type=float, help="[store] max_memory_gib of the runs")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per step")
    ap.add_argument("--top", type=int, default=3, help="slowest statements printed per step")
    ap.add_argument("--verbose", action="store_true", help="print a failed step's output")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:
        return step_main(args.step, Path(args.config))

    base = Path(args.path) if args.path else Path(tempfile.mkdtemp(prefix="bench-analytics-"))
    results = []
    try:
        for n in args.trades:
            results.append(bench_one(n, base, args))
            if not args.keep:
                shutil.rmtree(base / f"n{n}", ignore_errors=True)
    finally:
        if not args.keep and not args.path:
            shutil.rmtree(base, ignore_errors=True)
    print("\n" + json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
