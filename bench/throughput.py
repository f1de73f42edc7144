"""Benchmark: our end-to-end backfill vs raw eth_getLogs vs cryo, all on one replay node.

    .venv/bin/pip install -e '.[test,bench]'     # cryo, polars, py-spy (-e: this checkout stays)
    .venv/bin/python bench/throughput.py [--request-blocks 25] [--shards 2] [--rounds 2]

The node is bench/replay_node.py over the procedural chain of bench/synth_chain.py (default 8 days
of 1,200 blocks, two dense days of ~170 logs per block, six sparse ones of ~2; ~424k logs), run in
its own process. Every client runs once to record its requests (first pass, not compared), then
`--rounds` timed passes, interleaved (raw, cryo, ours, raw, cryo, ours, ...) so a busy machine
hurts all of them alike. All use the same block span per eth_getLogs call (`--request-blocks`):

- ours: the real Engine headless (console in this process, worker processes, the store), a fresh
  store every pass, `rpc.max_block_range` = the request size; timed from `Engine.start()` to the
  last day COMPLETE (start-up included, no on-complete rebuild); rows checked against the chain.
- raw: the same eth_getLogs calls over the same day ranges (3 filters, request-size chunks) from
  as many processes as shards: http.client + orjson.loads, no decoding, no store.
- cryo (PyPI cryo 0.3.2): `cryo.collect("logs")` of the contracts into a polars DataFrame,
  `inner_request_size` = the request size (no decoding, no counterparty filter, no store).

Printed: rows or logs per second (median of the rounds), our ratio to cryo and to raw, CPU
seconds and CPU per row (ours: console + workers + store server, the whole process tree), and,
with py-spy installed, a separate profiled pass of ours giving where the CPU goes by stage (fetch,
JSON parse, decode, encode, pipe, insert, checkpoint, ...) per process kind. CPU-seconds depend
less on other load than wall rates: on a shared machine read those first.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import Config, load_config  # noqa: E402
from engine.constants import (  # noqa: E402
    CONDITION_RESOLUTION_TOPIC,
    TOKEN_REGISTERED_TOPIC,
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
)
from engine.rpc.http_transport import HttpConnection  # noqa: E402
from engine.runtime import Engine  # noqa: E402
from engine.status import EngineState  # noqa: E402
from engine.worker import topic_for_address  # noqa: E402


# ---- the node ---------------------------------------------------------------------------------
@dataclass
class Node:
    proc: subprocess.Popen
    url: str
    head: int
    expected: dict[str, int]
    ranges: dict[int, tuple[int, int]]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_node(args: argparse.Namespace) -> Node:
    cmd = [sys.executable, str(ROOT / "bench" / "replay_node.py"), "--synthetic"]
    cmd += ["--days", str(args.days), "--dense-days", args.dense_days, "--seed", str(args.seed)]
    cmd += ["--dense-per-block", str(args.dense_per_block)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    ranges = {int(d): (int(a), int(b)) for d, (a, b) in info["ranges"].items()}
    return Node(proc, info["url"], int(info["head"]), info["expected"], ranges)


# ---- CPU accounting ---------------------------------------------------------------------------
def _role(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    if "engine.worker" in text:
        return "workers"
    if "replay_node" in text:
        return "node"
    if "clickhouse" in text or "chdb" in text or "store" in text:
        return "store server"
    return "other children"


class CpuMeter:
    """CPU seconds of this process and of its children over a measured stretch.

    Totals come from getrusage (children count once reaped; every run stops its processes
    before the stretch ends); a sampler thread splits the children's share by kind (psutil).
    """

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self._stop = threading.Event()
        self.per_pid: dict[int, tuple[str, float]] = {}
        self.max_rss: dict[str, int] = {}  # role -> largest RSS of one of its processes

    def __enter__(self) -> CpuMeter:
        self.r_self = resource.getrusage(resource.RUSAGE_SELF)
        self.r_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(0.1):
            try:
                kids = me.children(recursive=True)
            except psutil.Error:
                continue
            for k in kids:
                if k.pid in self.exclude:
                    continue
                try:
                    t = k.cpu_times()
                    role = self.per_pid.get(k.pid, (None, 0.0))[0] or _role(k.cmdline())
                    rss = k.memory_info().rss
                except psutil.Error:
                    continue
                self.per_pid[k.pid] = (role, t.user + t.system)
                self.max_rss[role] = max(self.max_rss.get(role, 0), rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        a, b = self.r_self, resource.getrusage(resource.RUSAGE_SELF)
        self.self_s = (b.ru_utime - a.ru_utime) + (b.ru_stime - a.ru_stime)
        a, b = self.r_children, resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children_s = (b.ru_utime - a.ru_utime) + (b.ru_stime - a.ru_stime)

    def total(self) -> float:
        return self.self_s + self.children_s

    def by_role(self, self_role: str) -> dict[str, float]:
        roles: dict[str, float] = defaultdict(float)
        for role, secs in self.per_pid.values():
            roles[role] += secs
        sampled = sum(roles.values())
        if sampled > 0:  # scale the sampled split to the exact total of reaped children
            for r in roles:
                roles[r] *= self.children_s / sampled
        roles[self_role] = self.self_s
        return dict(roles)


# ---- ours -------------------------------------------------------------------------------------
def write_config(folder: Path, args: argparse.Namespace, url: str, database: str = "") -> Path:
    path = folder / "config.toml"
    store = 'path = "clickhouse"'
    if args.clickhouse_url:  # a fresh database on that server (password: CLICKHOUSE_PASSWORD)
        store = f'url = "{args.clickhouse_url}"\nuser = "{args.clickhouse_user}"\n'
        store += f'database = "{database or "bench_throughput"}"'
    path.write_text(
        f"""
[rpc]
urls = ["{url}"]
requests_per_second = 1000000.0
max_block_range = {args.request_blocks}
[clickhouse]
{store}
[backfill]
days = {args.days}
shards = {args.shards}
confirmations = 2
data_dir = "backfill"
"""
    )
    return path


def run_ours(config: Path) -> tuple[int, float, dict[int, tuple[int, int]], dict[str, int]]:
    cfg = load_config(config)
    engine = Engine(cfg, control=False, run_on_complete=False, say=lambda m: None)
    t0 = time.perf_counter()
    engine.start()
    try:
        while engine.state not in (EngineState.COMPLETE, EngineState.STOPPED):
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        st = engine.status()
        ranges = dict(engine.progress.ranges)
        staged = dict(st.rows_staged)
    finally:
        engine.stop()
    return sum(staged.values()), elapsed, ranges, staged


def server_cpu(args: argparse.Namespace) -> float:
    """CPU seconds so far of the --clickhouse-pid process (0 without one)."""
    if not args.clickhouse_pid:
        return 0.0
    import psutil

    t = psutil.Process(args.clickhouse_pid).cpu_times()
    return t.user + t.system


# ---- raw --------------------------------------------------------------------------------------
def queries(cfg: Config) -> list[tuple[list[str], list]]:
    c = cfg.contracts
    tokens = sorted(c.erc20_tokens)
    cps = [topic_for_address(a) for a in sorted(c.erc20_counterparties)]
    others = sorted(set(c.erc1155) | set(c.exchanges))
    events = [
        TRANSFER_SINGLE_TOPIC,
        TRANSFER_BATCH_TOPIC,
        CONDITION_RESOLUTION_TOPIC,
        TOKEN_REGISTERED_TOPIC,
    ]
    return [
        (tokens, [TRANSFER_TOPIC, cps]),
        (tokens, [TRANSFER_TOPIC, None, cps]),
        (others, [events]),
    ]


def _raw_worker(job: tuple[str, list[tuple[int, int]], list]) -> int:
    url, chunks, qs = job
    conn = HttpConnection(url, 10.0, 120.0)
    n = 0
    for lo, hi in chunks:
        for address, topics in qs:
            flt = {"fromBlock": hex(lo), "toBlock": hex(hi), "address": address, "topics": topics}
            body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [flt]}
            n += len(orjson.loads(conn.post(orjson.dumps(body)).body)["result"])
    return n


def run_raw(
    url: str, cfg: Config, ranges: dict[int, tuple[int, int]], shards: int, chunk: int
) -> tuple[int, float]:
    qs = queries(cfg)
    jobs = []
    for k in range(shards):
        chunks = []
        for d in sorted(ranges):
            if d % shards == k:
                lo, hi = ranges[d]
                chunks += [(a, min(hi, a + chunk - 1)) for a in range(lo, hi + 1, chunk)]
        jobs.append((url, chunks, qs))
    ctx = mp.get_context("fork")
    with ctx.Pool(shards) as pool:
        t0 = time.perf_counter()
        logs = sum(pool.map(_raw_worker, jobs))
        elapsed = time.perf_counter() - t0
    return logs, elapsed


# ---- cryo -------------------------------------------------------------------------------------
def run_cryo(url: str, cfg: Config, head: int, chunk: int) -> tuple[int, float]:
    import cryo

    c = cfg.contracts
    addresses = sorted(set(c.erc20_tokens) | set(c.erc1155) | set(c.exchanges))
    t0 = time.perf_counter()
    rows = 0
    for address in addresses:
        df = cryo.collect(
            "logs",
            blocks=[f"0:{head + 1}"],
            rpc=url,
            contract=[address],
            inner_request_size=chunk,
            output_format="polars",
            no_verbose=True,
        )
        rows += len(df)
    return rows, time.perf_counter() - t0


# ---- profile ----------------------------------------------------------------------------------
#: (substring of a frame, stage), tried from the innermost frame outwards; first match wins.
STAGE_RULES: list[tuple[str, str]] = [
    ("(orjson", "json"),  # native orjson frames: parse or encode, told apart by the caller below
    ("encode_rows", "encode"),
    ("protocol.py", "encode"),
    ("decode.py", "decode"),
    ("read_message", "pipe"),
    ("_write (engine/worker.py", "pipe"),
    ("insert_json_rows", "checkpoint"),
    ("_flush_heartbeats", "heartbeat"),
    ("insert_jsonl", "insert"),
    ("insert_raw", "insert"),
    ("chdb", "insert"),
    ("clickhouse_connect", "insert"),
    ("http_transport.py", "fetch"),
    ("http/client.py", "fetch"),
    ("socket.py", "fetch"),
    ("_remember_counts", "range control"),
    ("_on_logs_success", "range control"),
    ("pool.py", "fetch"),
    ("days.py", "day search"),
    ("loader.py", "loader other"),
    ("supervisor.py", "supervisor"),
    ("runtime.py", "engine other"),
    ("worker.py", "worker other"),
]


def classify(stack: str) -> str:
    frames = stack.split(";")
    for i in range(len(frames) - 1, -1, -1):
        f = frames[i]
        for pat, stage in STAGE_RULES:
            if pat in f:
                if stage == "json":
                    caller = frames[i - 1] if i else ""
                    encoding = "protocol.py" in caller or "encode" in caller
                    return "encode" if encoding else "JSON parse"
                return stage
    return "other (start-up, imports, idle)"


def profile_ours(config: Path, py_spy: str) -> dict[str, Counter]:
    """Run ours once under py-spy (this process and its workers); samples per kind and stage."""
    out = config.parent / "profile.txt"
    spy = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(os.getpid()),
            "--subprocesses",
            "--native",
            "--rate",
            "100",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    try:
        run_ours(config)
    finally:
        time.sleep(0.3)
        spy.send_signal(2)
        spy.wait(60)
    result: dict[str, Counter] = defaultdict(Counter)
    if not out.exists():
        return result
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        head = stack.split(";", 1)[0]
        if "replay_node" in head or "replay_node.py" in stack:
            continue
        if "engine.worker" in head or "(engine/worker.py" in stack:
            kind = "workers"
        elif "server_process" in head or "server_process.py" in stack:
            kind = "store server"
        else:
            kind = "console"
        result[kind][classify(stack)] += int(n)
    return result


# ---- main -------------------------------------------------------------------------------------
@dataclass
class Runs:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    roles: list[dict[str, float]] = field(default_factory=list)
    n: int = 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--request-blocks", type=int, default=25, help="blocks per eth_getLogs call")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="timed passes of each client")
    p.add_argument("--days", type=int, default=8)
    p.add_argument("--dense-days", default="1,4")
    p.add_argument("--dense-per-block", type=float, default=170.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--clickhouse-url", default="", help="ours into this server (fresh database)")
    p.add_argument("--clickhouse-user", default="default")
    p.add_argument("--clickhouse-pid", type=int, default=0, help="its pid: its CPU is counted")
    p.add_argument("--no-cryo", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args()
    try:
        import cryo  # noqa: F401
    except ImportError:
        print("cryo missing (.venv/bin/pip install -e '.[test,bench]'): skipping cryo")
        args.no_cryo = True
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy missing (.venv/bin/pip install -e '.[test,bench]'): no stage profile")
        args.no_profile = True
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    t = time.perf_counter()
    node = start_node(args)
    print(f"replay node {node.url} up in {time.perf_counter() - t:.1f}s (chain generated)")
    exp = node.expected
    want = exp["erc20"] + exp["erc1155"] + exp["resolutions"] + exp["registrations"]
    print(
        f"chain: {args.days} days, head {node.head}, {exp['logs_all']:,} logs, rows to stage "
        f"{want:,} ({exp})"
    )
    try:
        cfg = load_config(write_config(work, args, node.url))
        runs: dict[str, Runs] = defaultdict(Runs)
        k = 0

        def ours_pass(timed: bool) -> None:
            nonlocal k
            k += 1
            d = work / f"ours{k}"
            d.mkdir()
            config = write_config(d, args, node.url, f"bench_throughput_{os.getpid()}_{k}")
            server = server_cpu(args)
            with CpuMeter({node.proc.pid}) as m:
                rows, secs, ranges, staged = run_ours(config)
            store_s = server_cpu(args) - server
            if args.clickhouse_url:
                from engine.store.client import open_store

                st = open_store(load_config(config), create_schema=False)
                st.command(f"DROP DATABASE IF EXISTS {st.database}")
                st.close()
            shutil.rmtree(d, ignore_errors=True)
            if rows != want:
                raise SystemExit(f"ours staged {rows:,} rows {staged}, the chain has {want:,}")
            if ranges != node.ranges:
                raise SystemExit(f"ours found other day ranges: {ranges} vs {node.ranges}")
            if timed:
                r = runs["ours"]
                r.wall.append(secs)
                r.cpu.append(m.total() + store_s)
                roles = m.by_role("console")
                if args.clickhouse_pid:
                    roles["store server"] = store_s
                r.roles.append(roles)
                r.n = rows
            rss = ", ".join(f"{r} {b / 2**20:.0f} MiB" for r, b in sorted(m.max_rss.items()))
            print(
                f"  ours  {'timed' if timed else 'first'}: {secs:6.2f}s  "
                f"cpu {m.total() + store_s:6.2f}s  (peak RSS per process: {rss})"
            )

        def raw_pass(timed: bool) -> None:
            with CpuMeter({node.proc.pid}) as m:
                logs, secs = run_raw(node.url, cfg, node.ranges, args.shards, args.request_blocks)
            if timed:
                r = runs["raw"]
                r.wall.append(secs)
                r.cpu.append(m.total())
                r.n = logs
            print(f"  raw   {'timed' if timed else 'first'}: {secs:6.2f}s  cpu {m.total():6.2f}s")

        def cryo_pass(timed: bool) -> None:
            with CpuMeter({node.proc.pid}) as m:
                logs, secs = run_cryo(node.url, cfg, node.head, args.request_blocks)
            if timed:
                r = runs["cryo"]
                r.wall.append(secs)
                r.cpu.append(m.total())
                r.n = logs
            print(f"  cryo  {'timed' if timed else 'first'}: {secs:6.2f}s  cpu {m.total():6.2f}s")

        passes = [ours_pass, raw_pass] + ([] if args.no_cryo else [cryo_pass])
        print("first passes (the node records):")
        for fn in passes:
            fn(False)
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}:")
            order = [raw_pass] + ([] if args.no_cryo else [cryo_pass]) + [ours_pass]
            for fn in order:
                fn(True)
                time.sleep(0.5)
        print()
        print(
            f"request size {args.request_blocks} blocks, {args.shards} shards / raw processes, "
            f"medians of {args.rounds} timed pass(es), the node's CPU not counted"
        )
        rate: dict[str, float] = {}
        for name, unit in (("ours", "rows"), ("raw", "logs"), ("cryo", "logs")):
            if name not in runs:
                continue
            r = runs[name]
            wall, cpu = statistics.median(r.wall), statistics.median(r.cpu)
            rate[name] = r.n / wall
            print(
                f"{name:<5}: {r.n:>9,} {unit} in {wall:6.2f}s = {rate[name]:>9,.0f} {unit}/s; "
                f"cpu {cpu:6.2f}s = {cpu / r.n * 1e6:5.2f} us per {unit[:-1]}"
            )
        ours = runs["ours"]
        roles: dict[str, list[float]] = defaultdict(list)
        for rr in ours.roles:
            for role, secs in rr.items():
                roles[role].append(secs)
        split = ", ".join(
            f"{role} {statistics.median(v):.2f}s" for role, v in sorted(roles.items())
        )
        print(f"ours cpu by process: {split}")
        for ref in ("cryo", "raw"):
            if ref in rate:
                target = 1.0 if ref == "cryo" else 0.7
                per_round = [
                    (ours.n / ow) / (runs[ref].n / rw)
                    for ow, rw in zip(ours.wall, runs[ref].wall, strict=True)
                ]
                rounds = ", ".join(f"{x:.2f}" for x in per_round)
                print(
                    f"ours / {ref}: {rate['ours'] / rate[ref]:.2f} (rounds {rounds}; "
                    f"target >= {target})"
                )
        if not args.no_profile:
            d = work / "profiled"
            d.mkdir()
            prof = profile_ours(write_config(d, args, node.url), py_spy)
            print()
            print(
                "where ours spends CPU (py-spy samples of a separate profiled pass, share of "
                "each process kind's samples):"
            )
            for kind, stages in sorted(prof.items()):
                total = sum(stages.values())
                parts = ", ".join(
                    f"{s} {100 * n / total:.0f}%"
                    for s, n in stages.most_common()
                    if n / total >= 0.01
                )
                print(f"  {kind} ({total} samples): {parts}")
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
