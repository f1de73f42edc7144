"""Bench: the real job rehearsed on a Polygon-shaped chain, through the whole pipeline.

A procedural Polygon node (engine/devchain/polygon_node.py, its own process(es), ~41,000 blocks a
day, a 10,000-result cap in Infura's words) is backfilled by the real CLI (`--no-ui`: console,
workers, loader, store; the on-complete rebuild and gates included), once with blockTimestamp in
logs and once without. Printed per mode:

- rows/s to the last COMPLETE day, and the rebuild + gates time after it
- eth_getLogs calls per day against the offline minimum (the greedy cover of each day's blocks,
  per filter, under the same block span and result cap, knowing every block's log count)
- block calls (eth_getBlockByNumber, each call of a batch), blocks asked twice
- peak RSS of the console and of its workers (sampled every 0.5 s)
- exactness against the chain's ground truth per day (counts, value and timestamp sums, key-set
  hashes), the duplicate check, every panel query's time at the final size, bytes on disk per row

    .venv/bin/python bench/rehearsal.py [--days 30] [--events-per-block 1.6] [--modes on,off]
        [--shards 4] [--node-processes 1] [--dir DIR]

Targets: calls/day <= 1.2x the offline minimum; console RSS < 2 GiB; panel queries < 100 ms.
``--calls-only`` measures just the eth_getLogs calls of one pool over every day (no store).

2026-12-03, shared 2-core machine (load average 12-21 from other sessions), events/block 2.8:
- ON, 30 days, 5,278,739 rows, 4 shards, max_block_range 5000: 6,118 rows/s (863 s), exact,
  0 FINAL duplicates; getLogs 32.0/day vs minimum 28.5 (1.12x; the 5,000-block span binds on
  most days); console RSS 0.76 GiB backfilling, 5.63 GiB in the rebuild; workers 0.60 GiB; panel
  queries 40 / 65 / 288 ms (disk); plan (90 requests): rows +33%, getLogs +2%, requests -25%.
- OFF, 5 days, 1,330,929 rows (run beside the ON run's rebuild): 1,558 rows/s, exact; block
  calls 37,817/day in batches of 100, 165 asked twice (day boundaries of adjacent shards);
  getLogs 1.29x the minimum; plan: rows +8%, getLogs -10%, requests +3%.
- --calls-only, 5 days, max_block_range 20000 (the 10,000-result cap binds): 41.2 calls/day vs
  26.4 (1.56x, 49 refused): successes alone 1.19x; each refusal is a forecast miss.
- --calls-only as above after a filter follows the per-block counts of the filter fetched before
  it over the same blocks (engine.rpc.follow_profile): 33.6 calls/day vs 26.4 (1.27x, 16
  refused; back to back with 41.2/day before on the same machine). Target 1.2 still missed: the
  day's first filter has nothing to follow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import load_config  # noqa: E402
from engine.decode import DecodeFilter  # noqa: E402
from engine.devchain.polygon import KEY_HASH_SQL, PolygonChain, PolygonSpec  # noqa: E402
from engine.devchain.polygon_node import _Filter, free_port  # noqa: E402
from engine.store import panels  # noqa: E402
from engine.store.client import open_store  # noqa: E402
from engine.worker import queries_for  # noqa: E402
from tests.support.config import write_config  # noqa: E402

CAP = 10_000
TARGET_RATIO = 1.2


def greedy_calls(counts: np.ndarray, max_range: int, cap: int) -> int:
    """Fewest eth_getLogs calls covering the blocks (each call <= max_range blocks, <= cap logs)."""
    cum = np.concatenate([[0], np.cumsum(counts)])
    n, pos, calls = counts.size, 0, 0
    while pos < n:
        e = int(np.searchsorted(cum, cum[pos] + cap, side="right")) - 1
        e = min(max(e, pos + 1), pos + max_range, n)
        calls += 1
        pos = e
    return calls


def offline_minimum(chain: PolygonChain, days: int, max_range: int) -> list[int]:
    filt = DecodeFilter(
        frozenset(chain.tokens),
        frozenset(chain.cps),
        frozenset([chain.ctf]),
        frozenset(chain.exchanges),
    )
    out = []
    for day in range(days):
        first, last = chain.day_range(day)
        table = chain.logs(first, last)
        calls = 0
        for address, topics in queries_for(filt):
            m = _Filter(chain, {"address": address, "topics": topics}).mask(table)
            blocks = table.events.block[table.ev[m]] - first
            calls += greedy_calls(np.bincount(blocks, minlength=last - first + 1), max_range, CAP)
        out.append(calls)
    return out


class RssSampler(threading.Thread):
    """Peak RSS of a process and (summed) of its children, every 0.5 s; the console's peak kept
    apart for the backfill and for what follows it (rebuild + gates)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.console = 0
        self.console_after = 0
        self.workers = 0
        self.after = False  # set once every day is COMPLETE
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                rss = self.proc.memory_info().rss
                if self.after:
                    self.console_after = max(self.console_after, rss)
                else:
                    self.console = max(self.console, rss)
                kids = 0
                for c in self.proc.children(recursive=True):
                    try:
                        kids += c.memory_info().rss
                    except psutil.Error:
                        pass
                self.workers = max(self.workers, kids)
            except psutil.Error:
                return


def rpc(url: str, method: str) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["result"]


def start_node(args: argparse.Namespace, stamp: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "engine.devchain.polygon_node",
        "--port",
        str(port),
        "--days",
        str(args.days),
        "--seed",
        str(args.seed),
        "--events-per-block",
        str(args.events_per_block),
        "--processes",
        str(args.node_processes),
        "--max-results",
        str(CAP),
    ]
    if not stamp:
        cmd.append("--no-block-timestamp")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "polygon node:" not in line:
        raise RuntimeError(f"node did not start: {line!r}")
    return proc, f"http://127.0.0.1:{port}"


def plan_figures(text: str) -> dict[str, object]:
    """The numbers of `backfill-console plan`'s output the run is compared with."""
    pats = {
        "spent": r"sampled with ([\d,]+) of at most",
        "rows": r"rows: .*\(total ([\d,]+),",
        "getlogs": r"getLogs: +([\d,]+) calls",
        "requests": r"requests: +([\d,]+) in all",
    }
    out: dict[str, object] = {}
    for k, p in pats.items():
        m = re.search(p, text)
        out[k] = float(m.group(1).replace(",", "")) if m else float("nan")
    m = re.search(r"store: +~([^\n]+) on disk", text)
    out["store"] = m.group(1) if m else "?"
    return out


def timed_ms(fn, runs: int = 3) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def check_store(config: Path, chain: PolygonChain, truths: list, days: int) -> dict:
    cfg = load_config(config)
    store = open_store(cfg, create_schema=False)
    db = store.database
    try:
        bad = []
        for table, bi in (("erc20", "0"), ("erc1155", "batch_index")):
            rows = store.query(
                f"SELECT day_idx, count(), toString(sum(value)), toString(sum(toUInt64("
                f"block_timestamp))), toString(sum({KEY_HASH_SQL.format(bi=bi)})) "
                f"FROM {db}.{table}_transfers_staging FINAL GROUP BY day_idx"
            )
            got = {int(d): (int(n), int(v), int(t), int(k)) for d, n, v, t, k in rows}
            for t in truths:
                want = tuple(
                    getattr(t, f"{table}_{x}") for x in ("count", "value_sum", "ts_sum", "key_hash")
                )
                if got.get(t.day) != want:
                    bad.append(f"{table} day {t.day}: store {got.get(t.day)} truth {want}")
        dups = panels.duplicates(store)
        times = {
            "staged_rows": timed_ms(lambda: panels.staged_rows(store)),
            "day_grid": timed_ms(
                lambda: panels.day_grid(store, days, cfg.backfill.start_date, 137, set(), set())
            ),
            "disk": timed_ms(lambda: panels.disk(store)),
            "duplicates (every 15 s, off the UI thread)": timed_ms(
                lambda: panels.duplicates(store), 1
            ),
        }
        parts = store.query(
            f"SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts "
            f"WHERE database = '{db}' AND active GROUP BY table"
        )
        return {
            "bad": bad,
            "dups": [(c.table, c.final_duplicates) for c in dups],
            "times": times,
            "parts": {t: (int(r), int(b)) for t, r, b in parts},
        }
    finally:
        store.close()


def run_mode(args: argparse.Namespace, stamp: bool, chain, truths, minimum, base: Path) -> None:
    mode = "blockTimestamp ON" if stamp else "blockTimestamp OFF"
    folder = base / ("on" if stamp else "off")
    shutil.rmtree(folder, ignore_errors=True)
    node, url = start_node(args, stamp)
    try:
        config = write_config(
            folder,
            days=args.days,
            shards=args.shards,
            rpc_urls=[url],
            rps=args.rps,
            timeout_s=60.0,
            max_block_range=args.max_block_range,
            start_date=chain.spec.start_date.isoformat(),
        )
        plan = subprocess.run(
            [sys.executable, "-m", "engine.cli", "plan", "--config", str(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        est = plan_figures(plan.stdout) if plan.returncode == 0 else {}
        before = rpc(url, "polygon_stats")
        assert isinstance(before, dict)
        cmd = [sys.executable, "-m", "engine.cli", "--no-ui", "--config", str(config)]
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        rss = RssSampler(proc.pid)
        rss.start()
        t_done = None
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if t_done is None and re.search(rf" days {args.days}/{args.days} ", line):
                t_done = time.monotonic() - t0
                rss.after = True
        code = proc.wait()
        t_end = time.monotonic() - t0
        rss.stop.set()
        after = rpc(url, "polygon_stats")
        assert isinstance(after, dict)
        stats = {k: after[k] - before[k] for k in after}  # the run's calls, not the plan's
    finally:
        node.terminate()
        node.wait(30)
    assert isinstance(stats, dict)
    rows = sum(t.rows for t in truths)
    check = check_store(config, chain, truths, args.days)
    per_day = stats["eth_getLogs"] / args.days
    min_day = sum(minimum) / args.days
    ratio = per_day / min_day
    print(f"\n== {mode}: exit {code}, {args.days} days, {rows:,} captured rows (truth)")
    if t_done is None:
        print("   never reached every day COMPLETE; last lines:\n   " + "\n   ".join(lines[-8:]))
        return
    print(
        f"   rows/s to the last COMPLETE day: {rows / t_done:,.0f} ({t_done:,.1f} s); "
        f"rebuild + gates after it: {t_end - t_done:,.1f} s"
    )
    verdict = "ok" if ratio <= TARGET_RATIO else f"MISSED (> {TARGET_RATIO})"
    print(
        f"   eth_getLogs calls/day {per_day:,.1f} vs offline minimum {min_day:,.1f}: "
        f"{ratio:.3f}x {verdict} (refused: {stats['rejected_results']} result-cap, "
        f"{stats['rejected_range']} range)"
    )
    print(
        f"   eth_getBlockByNumber calls {stats['eth_getBlockByNumber']:,} "
        f"({stats['eth_getBlockByNumber'] / args.days:,.0f}/day) in {stats['batches']:,} batches; "
        f"distinct blocks {stats['blocks_distinct']:,}, asked again {stats['blocks_repeated']:,}; "
        f"blocks with logs (truth) {sum(t.blocks_with_logs for t in truths):,}"
    )
    print(
        f"   all calls {stats['calls']:,} ({stats['calls'] / args.days:,.0f}/day), HTTP requests "
        f"{stats['http_requests']:,}, logs served {stats['logs_served']:,}"
    )
    gib = 1024**3
    print(
        f"   peak RSS: console {rss.console / gib:.2f} GiB while backfilling "
        f"({'ok' if rss.console < 2 * gib else 'OVER 2 GiB'}), "
        f"{rss.console_after / gib:.2f} GiB in the rebuild + gates after it; "
        f"workers together {rss.workers / gib:.2f} GiB ({args.shards} workers)"
    )
    exact = "EXACT" if not check["bad"] else "MISMATCH: " + "; ".join(check["bad"][:5])
    print(f"   store vs ground truth per day: {exact}; FINAL duplicates {check['dups']}")
    worst = max(v for k, v in check["times"].items() if "duplicates" not in k)
    print(
        "   panel queries (median ms): "
        + ", ".join(f"{k} {v:.1f}" for k, v in check["times"].items())
        + f" -> worst panel {worst:.1f} ms {'ok' if worst < 100 else 'SLOW'}"
    )
    if est:
        measured = {"rows": rows, "getlogs": stats["eth_getLogs"], "requests": stats["calls"]}
        print(
            f"   plan (spent {est['spent']:.0f} requests) vs run: "
            + ", ".join(
                f"{k} {est[k]:,.0f} vs {v:,} ({(est[k] - v) / v:+.0%})" for k, v in measured.items()
            )
            + f", store ~{est['store']} estimated"
        )
    else:
        print(f"   plan failed: {plan.stderr[-300:]}")
    for t, (r, b) in sorted(check["parts"].items()):
        if r:
            print(f"   disk {t}: {r:,} rows, {b / 1024**2:,.1f} MiB, {b / r:.1f} B/row")


def calls_only(args: argparse.Namespace, chain: PolygonChain, minimum: list[int]) -> None:
    """eth_getLogs calls of one RpcPool fetching every day as a worker does (no store)."""
    from engine.rpc.pool import RpcPool

    node, url = start_node(args, True)
    try:
        pool = RpcPool([url], requests_per_second=0, max_block_range=args.max_block_range)
        filt = DecodeFilter(
            frozenset(chain.tokens),
            frozenset(chain.cps),
            frozenset([chain.ctf]),
            frozenset(chain.exchanges),
        )
        logs = 0
        t0 = time.perf_counter()
        for day in range(args.days):
            first, last = chain.day_range(day)
            for address, topics in queries_for(filt):
                for _lo, _hi, got in pool.iter_logs(first, last, address, topics):
                    logs += len(got)
        took = time.perf_counter() - t0
        stats = rpc(url, "polygon_stats")
    finally:
        node.terminate()
        node.wait(30)
    assert isinstance(stats, dict)
    per_day = stats["eth_getLogs"] / args.days
    min_day = sum(minimum) / args.days
    ratio = per_day / min_day
    verdict = "ok" if ratio <= TARGET_RATIO else f"MISSED (> {TARGET_RATIO})"
    print(
        f"\n== calls only (one RpcPool, the workers' filters, no store): {logs:,} logs in "
        f"{took:,.1f} s; eth_getLogs calls/day {per_day:,.1f} vs offline minimum {min_day:,.1f}: "
        f"{ratio:.3f}x {verdict} (refused: {stats['rejected_results']} result-cap)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--events-per-block", type=float, default=1.6)
    ap.add_argument("--seed", type=int, default=137)
    ap.add_argument("--modes", default="on,off", help="blockTimestamp on, off or both")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rps", type=float, default=4000.0, help="rpc.requests_per_second")
    ap.add_argument("--max-block-range", type=int, default=5000)
    ap.add_argument("--node-processes", type=int, default=1)
    ap.add_argument("--dir", help="work folder (default: a temporary one, removed after)")
    ap.add_argument(
        "--calls-only",
        action="store_true",
        help="only the eth_getLogs calls of one pool over every day vs the minimum (no store)",
    )
    args = ap.parse_args(argv)
    spec = PolygonSpec(
        seed=args.seed,
        days=args.days,
        events_per_block=args.events_per_block,
        start_date=dt.date(2022, 12, 18),
    )
    chain = PolygonChain(spec)
    t0 = time.perf_counter()
    truths = [chain.day_truth(d) for d in range(args.days)]
    minimum = offline_minimum(chain, args.days, args.max_block_range)
    blocks = sum(t.n_blocks for t in truths)
    print(
        f"chain: {args.days} days, {blocks:,} blocks ({blocks / args.days:,.0f}/day), "
        f"{sum(t.rows for t in truths):,} captured rows; truth and minimum computed in "
        f"{time.perf_counter() - t0:.1f} s; config max_block_range {args.max_block_range}, "
        f"provider result cap {CAP:,}"
    )
    if args.calls_only:
        calls_only(args, chain, minimum)
        return 0
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="rehearsal-"))
    try:
        for mode in args.modes.split(","):
            run_mode(args, mode.strip() == "on", chain, truths, minimum, base)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
