"""Benchmark: end-to-end backfill rows/s vs raw eth_getLogs rows/s on the same devchain.

    .venv/bin/python bench/throughput.py [--days 1048] [--shards 8] [--keep DIR]

1. Builds (or loads from cache) the devchain for the given days (default config: >= 100k rows).
2. End to end: the real Engine (worker processes -> loader -> embedded chdb) backfills every day
   into a fresh store; timed from start() until every day is COMPLETE (rebuild not included).
3. Raw: the same eth_getLogs queries over the same day ranges, with the same number of processes,
   the lean HTTP client the workers use (engine.rpc.http_transport) + orjson.loads, no decoding,
   no store: the node's deliverable rate with the least client work. The target is judged
   against this one.
4. For context, the same raw fetch with `requests` + json.loads (what a plain script does).
Each is repeated (--repeat, fresh store each time) and the medians are compared (this machine's
timings vary by +-15% from run to run). Prints the rates and the ratio (target >= 0.7).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import load_config  # noqa: E402
from engine.constants import (  # noqa: E402
    CONDITION_RESOLUTION_TOPIC,
    TOKEN_REGISTERED_TOPIC,
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
)
from engine.devchain import DevchainSpec, start_devchain  # noqa: E402
from engine.rpc.http_transport import HttpConnection  # noqa: E402
from engine.runtime import Engine  # noqa: E402
from engine.worker import topic_for_address  # noqa: E402


def write_config(folder: Path, days: int, shards: int, url: str, state_dir: Path) -> Path:
    path = folder / "config.toml"
    path.write_text(
        f"""
[rpc]
urls = ["{url}"]
requests_per_second = 100000.0
max_block_range = 2000
[clickhouse]
path = "clickhouse"
[backfill]
days = {days}
shards = {shards}
confirmations = 2
data_dir = "backfill"
[devchain]
state_dir = "{state_dir}"
"""
    )
    return path


def end_to_end(config: Path) -> tuple[int, float, dict[int, tuple[int, int]]]:
    cfg = load_config(config)
    engine = Engine(cfg, control=False, run_on_complete=False, say=lambda m: None)
    t0 = time.perf_counter()
    engine.start()
    try:
        while engine.state not in ("complete", "stopped"):
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        st = engine.status()
        rows = sum(st.rows_staged.values())
        ranges = dict(engine.progress.ranges)
    finally:
        engine.stop()
    return rows, elapsed, ranges


def _raw_worker(args: tuple) -> int:
    url, chunks, tokens, cps, others, client = args
    if client == "requests":
        session = requests.Session()

        def post(body: dict) -> list:
            return json.loads(session.post(url, json=body, timeout=60).content)["result"]
    else:
        conn = HttpConnection(url, 10.0, 60.0)

        def post(body: dict) -> list:
            return orjson.loads(conn.post(orjson.dumps(body)).body)["result"]

    events = [TRANSFER_SINGLE_TOPIC, TRANSFER_BATCH_TOPIC, CONDITION_RESOLUTION_TOPIC]
    events.append(TOKEN_REGISTERED_TOPIC)
    queries = [
        (tokens, [TRANSFER_TOPIC, cps]),
        (tokens, [TRANSFER_TOPIC, None, cps]),
        (others, [events]),
    ]
    n = 0
    for lo, hi in chunks:
        for address, topics in queries:
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_getLogs",
                "params": [
                    {"fromBlock": hex(lo), "toBlock": hex(hi), "address": address, "topics": topics}
                ],
            }
            n += len(post(body))
    return n


def raw(
    url: str, cfg, ranges: dict[int, tuple[int, int]], shards: int, chunk: int, client: str
) -> tuple[int, float]:
    c = cfg.contracts
    tokens = sorted(c.erc20_tokens)
    cps = [topic_for_address(a) for a in sorted(c.erc20_counterparties)]
    others = sorted(set(c.erc1155) | set(c.exchanges))
    jobs = []
    for k in range(shards):
        chunks = []
        for d in sorted(ranges):
            if d % shards != k:
                continue
            lo, hi = ranges[d]
            for a in range(lo, hi + 1, chunk):
                chunks.append((a, min(hi, a + chunk - 1)))
        jobs.append((url, chunks, tokens, cps, others, client))
    t0 = time.perf_counter()
    with mp.Pool(shards) as pool:
        logs = sum(pool.map(_raw_worker, jobs))
    return logs, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=1048)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--state-dir", default=str(ROOT / "data" / "devchain"))
    p.add_argument("--repeat", type=int, default=3, help="runs of each measurement (median)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    state_dir = Path(args.state_dir)
    try:
        base = write_config(work, args.days, args.shards, "http://127.0.0.1:1", state_dir)
        spec = DevchainSpec.from_config(load_config(base))
        t = time.perf_counter()
        with start_devchain(spec, state_dir, log=print) as chain:
            print(f"devchain ready in {time.perf_counter() - t:.1f}s at {chain.url}")
            gt = chain.ground_truth
            want = sum(
                v["erc20_count"]
                + v["erc1155_count"]
                + v.get("resolutions", 0)
                + v.get("registrations", 0)
                for v in gt["per_day"].values()
            )
            e2e_runs: list[float] = []
            lean_runs: list[float] = []
            req_runs: list[float] = []
            ranges: dict[int, tuple[int, int]] | None = None
            for k in range(args.repeat):
                run_dir = work / f"run{k}"  # a fresh store every time
                run_dir.mkdir()
                config = write_config(run_dir, args.days, args.shards, chain.url, state_dir)
                cfg = load_config(config)
                chunk = cfg.rpc.max_block_range
                if ranges is not None:  # raw first: nothing of an earlier run is still busy
                    logs, lean_s = raw(chain.url, cfg, ranges, args.shards, chunk, "lean")
                    _, req_s = raw(chain.url, cfg, ranges, args.shards, chunk, "requests")
                time.sleep(1.0)
                rows, e2e_s, ranges = end_to_end(config)
                if rows != want:
                    raise SystemExit(f"run {k}: {rows:,} rows staged, ground truth {want:,}")
                if k == 0:  # the day ranges come from the first end-to-end run
                    time.sleep(1.0)
                    logs, lean_s = raw(chain.url, cfg, ranges, args.shards, chunk, "lean")
                    _, req_s = raw(chain.url, cfg, ranges, args.shards, chunk, "requests")
                e2e_runs.append(e2e_s)
                lean_runs.append(lean_s)
                req_runs.append(req_s)
                print(
                    f"run {k + 1}: end-to-end {e2e_s:.2f}s, raw lean {lean_s:.2f}s, "
                    f"raw requests {req_s:.2f}s"
                )
        e2e_s = statistics.median(e2e_runs)
        lean_s = statistics.median(lean_runs)
        req_s = statistics.median(req_runs)
        # Same unit on both sides: logs delivered per second (a TransferBatch log is several rows).
        print(f"days {args.days}, shards {args.shards}, rows staged {rows:,} (truth {want:,})")
        print(f"medians of {args.repeat} run(s):")
        for label, n, unit, secs in (
            ("end-to-end", rows, "rows", e2e_s),
            ("end-to-end", logs, "logs", e2e_s),
            ("raw, lean client", logs, "logs", lean_s),
            ("raw, requests", logs, "logs", req_s),
        ):
            print(f"{label:<16}: {n:>10,} {unit} in {secs:6.2f}s = {n / secs:>9,.0f} {unit}/s")
        print(f"ratio end-to-end / raw lean client: {lean_s / e2e_s:.2f} (target >= 0.7)")
        print(f"ratio end-to-end / raw requests   : {req_s / e2e_s:.2f} (context only)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
