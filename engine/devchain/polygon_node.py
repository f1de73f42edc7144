"""A procedural Polygon-shaped JSON-RPC node on loopback (tests and benchmarks).

``PolygonNode(chain, Personality(...))`` serves ``engine.devchain.polygon.PolygonChain`` over
HTTP/1.1 (keep-alive, a thread per connection; ``processes`` > 1 forks more server processes on
the same listening socket to use more cores): ``eth_chainId`` (137), ``eth_blockNumber``,
``eth_getBlockByNumber``, ``eth_getLogs`` (``address`` one or a list, ``topics`` by position with
``null`` and OR lists, ``fromBlock``/``toBlock`` as hex, ``latest`` or ``earliest``) and JSON-RPC
batches. Logs are generated per request (nothing stored) and only the ones a filter matches are
serialised.

A ``Personality`` makes it behave like one provider: ``block_timestamp`` (logs carry
``blockTimestamp`` or not), ``max_block_range`` / ``max_results`` (eth_getLogs caps, answered in
the wording ``cap_style`` of ``engine.devchain.provider_errors``, with a suggested range when the
style gives one), ``rate_limit_rps`` (every call of a batch counts; HTTP 429 with Retry-After, or a
JSON-RPC -32005 with ``rate_limit_style = "rpc"``).

``stats()`` (also the JSON-RPC method ``polygon_stats``) counts HTTP requests, calls by method,
logs served, rejections by reason, and for eth_getBlockByNumber the distinct blocks asked and how
many were asked again: shared memory, so every server process counts into the same numbers.

Run alone: ``python -m engine.devchain.polygon_node --days 30 --port 8645 [--no-block-timestamp]
[--max-results 10000] [--processes 2]`` (prints its URL, serves until SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import datetime as dt
import mmap
import multiprocessing
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import orjson

from engine.devchain import polygon as pg
from engine.devchain.provider_errors import CAP_STYLES, cap_message

#: Counters kept in shared memory, in this order.
COUNTERS = (
    "http_requests",
    "calls",
    "eth_chainId",
    "eth_blockNumber",
    "eth_getBlockByNumber",
    "eth_getLogs",
    "other",
    "batches",
    "logs_served",
    "rejected_range",
    "rejected_results",
    "rejected_rate",
    "blocks_distinct",
    "blocks_repeated",
)
_IDX = {name: i for i, name in enumerate(COUNTERS)}


@dataclass(frozen=True)
class Personality:
    """How the node behaves as a provider (see the module docstring)."""

    block_timestamp: bool = True
    max_block_range: int | None = None
    max_results: int | None = None
    cap_style: str = "infura"
    cap_suggest: bool = True
    rate_limit_rps: float | None = None
    rate_limit_style: str = "http"  # "http": 429 + Retry-After; "rpc": -32005 limit exceeded

    def __post_init__(self) -> None:
        if self.cap_style not in CAP_STYLES:
            raise ValueError(f"cap_style = {self.cap_style!r}: expected one of {CAP_STYLES}")
        if self.rate_limit_style not in ("http", "rpc"):
            raise ValueError(f"rate_limit_style = {self.rate_limit_style!r}: expected http|rpc")


class SharedStats:
    """Counters and per-block ask counts in anonymous shared memory (inherited by forks)."""

    def __init__(self, n_blocks: int) -> None:
        self.n_blocks = n_blocks
        self._counters = mmap.mmap(-1, 8 * len(COUNTERS))
        self._blocks = mmap.mmap(-1, max(1, n_blocks))  # zero-filled, pages touched lazily
        self._lock = multiprocessing.Lock()

    def add(self, name: str, n: int = 1) -> None:
        off = 8 * _IDX[name]
        with self._lock:
            (v,) = struct.unpack_from("<q", self._counters, off)
            struct.pack_into("<q", self._counters, off, v + n)

    def block_asked(self, block: int) -> None:
        if not 0 <= block < self.n_blocks:
            return
        with self._lock:
            seen = self._blocks[block]
            self._blocks[block] = min(255, seen + 1)
            name = "blocks_repeated" if seen else "blocks_distinct"
            off = 8 * _IDX[name]
            (v,) = struct.unpack_from("<q", self._counters, off)
            struct.pack_into("<q", self._counters, off, v + 1)

    def block_asks(self, block: int) -> int:
        return self._blocks[block] if 0 <= block < self.n_blocks else 0

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            values = struct.unpack_from(f"<{len(COUNTERS)}q", self._counters, 0)
        return dict(zip(COUNTERS, values, strict=True))

    def reset(self) -> None:
        with self._lock:
            self._counters[:] = bytes(len(self._counters))
            self._blocks[:] = bytes(len(self._blocks))


class _Bucket:
    """Non-blocking token bucket shared by the node's threads (a provider's rate limit)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens < n:
                return False
            self.tokens -= n
            return True


class _RpcError(Exception):
    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


class _Filter:
    """A parsed eth_getLogs filter as sets of string-table ids (engine.devchain.polygon)."""

    def __init__(self, chain: pg.PolygonChain, flt: dict[str, Any]) -> None:
        addr = flt.get("address")
        self.addresses: np.ndarray | None = None
        if addr is not None:
            items = [addr] if isinstance(addr, str) else list(addr)
            ids = [n for a in items for n in chain.address_ids.get(str(a).lower(), [])]
            self.addresses = np.array(ids, dtype=np.int64)
        self.topics: list[np.ndarray | None] = []
        for t in flt.get("topics") or []:
            if t is None or (isinstance(t, list) and not t):
                self.topics.append(None)
                continue
            items = [t] if isinstance(t, str) else list(t)
            ids = [n for x in items for n in chain.topic_ids.get(str(x).lower(), [])]
            self.topics.append(np.array(ids, dtype=np.int64))
        while self.topics and self.topics[-1] is None:
            self.topics.pop()

    def mask(self, t: pg.LogTable) -> np.ndarray:
        m = t.nt >= len(self.topics)
        if self.addresses is not None:
            m &= np.isin(t.addr, self.addresses)
        for col, want in zip((t.t0, t.t1, t.t2, t.t3), self.topics, strict=False):
            if want is not None:
                m &= np.isin(col, want)
        return m


class NodeCore:
    """JSON-RPC semantics of the node, independent of HTTP (one instance per process)."""

    def __init__(
        self, chain: pg.PolygonChain, personality: Personality, stats: SharedStats
    ) -> None:
        self.chain = chain
        self.p = personality
        self.stats = stats
        self.bucket = _Bucket(personality.rate_limit_rps) if personality.rate_limit_rps else None
        self.head = chain.head

    # ---- dispatch ------------------------------------------------------------------------------
    def handle(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """(HTTP status, extra headers, response body) for one HTTP request body."""
        self.stats.add("http_requests")
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 200, {}, _error_body(None, -32700, "parse error")
        batch = isinstance(req, list)
        calls = req if batch else [req]
        if batch:
            self.stats.add("batches")
        self.stats.add("calls", len(calls))
        if self.bucket is not None and not self.bucket.take(max(1, len(calls))):
            self.stats.add("rejected_rate", len(calls))
            if self.p.rate_limit_style == "http":
                return 429, {"Retry-After": "1"}, b'{"error":"too many requests"}'
            parts = [_error_body(_id(c), -32005, "limit exceeded") for c in calls]
            return 200, {}, (b"[" + b",".join(parts) + b"]") if batch else parts[0]
        parts = [self._one(c) for c in calls]
        return 200, {}, (b"[" + b",".join(parts) + b"]") if batch else parts[0]

    def _one(self, call: Any) -> bytes:
        if not isinstance(call, dict):
            return _error_body(None, -32600, "invalid request")
        rid = call.get("id")
        method = call.get("method")
        params = call.get("params") or []
        name = method if method in _IDX else "other"
        self.stats.add(name)
        try:
            if method == "eth_chainId":
                result = f'"{hex(pg.CHAIN_ID)}"'
            elif method == "eth_blockNumber":
                result = f'"{hex(self.head)}"'
            elif method == "eth_getBlockByNumber":
                result = self._block(params)
            elif method == "eth_getLogs":
                result = self._logs(params)
            elif method == "polygon_stats":
                result = orjson.dumps(self.stats.snapshot()).decode()
            else:
                raise _RpcError(-32601, f"the method {method} does not exist/is not available")
        except _RpcError as exc:
            return _error_body(rid, exc.code, exc.message)
        return b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (orjson.dumps(rid), result.encode())

    # ---- methods -------------------------------------------------------------------------------
    def _number(self, tag: Any) -> int:
        if tag in (None, "latest", "safe", "finalized", "pending"):
            return self.head
        if tag == "earliest":
            return 0
        try:
            return int(str(tag), 16)
        except ValueError:
            raise _RpcError(-32602, f"invalid block number {tag!r}") from None

    def _block(self, params: list) -> str:
        if not params:
            raise _RpcError(-32602, "missing block number")
        b = self._number(params[0])
        if b > self.head or b < 0:
            return "null"
        self.stats.block_asked(b)
        c = self.chain
        parent = c.block_hash(b - 1) if b else "0x" + "0" * 64
        return (
            f'{{"number":"{hex(b)}","hash":"{c.block_hash(b)}","parentHash":"{parent}",'
            f'"timestamp":"{hex(c.ts(b))}","transactions":[],"gasLimit":"0x1c9c380",'
            f'"gasUsed":"0x0","miner":"0x{"0" * 40}","extraData":"0x","baseFeePerGas":"0x1e"}}'
        )

    def _logs(self, params: list) -> str:
        if not params or not isinstance(params[0], dict):
            raise _RpcError(-32602, "missing filter object")
        flt = params[0]
        lo = self._number(flt.get("fromBlock", "latest"))
        hi = min(self._number(flt.get("toBlock", "latest")), self.head)
        if lo > hi:
            return "[]"
        span = hi - lo + 1
        p = self.p
        if p.max_block_range is not None and span > p.max_block_range:
            self.stats.add("rejected_range")
            sug = lo + p.max_block_range - 1
            raise self._cap_error("blocks", span, lo, sug)
        c = self.chain
        t = c.logs(lo, hi)
        sel = np.flatnonzero(_Filter(c, flt).mask(t))
        ev = t.events
        blocks = ev.block[t.ev[sel]]
        cap = p.max_results
        if cap is not None and sel.size > cap:
            # The first block whose logs take the count past the cap; the blocks before fit.
            over = int(blocks[cap])
            self.stats.add("rejected_results")
            raise self._cap_error("results", span, lo, max(lo, over - 1))
        evs = t.ev[sel]
        tx_idx = ev.tx[evs]
        li = (ev.li[evs] + t.j[sel]).tolist()
        seeds = _tx_seeds(c, blocks, tx_idx)
        ts = ev.ts[evs].tolist()
        topics = c.topic_strings
        addrs = c.addr_strings
        data = c.data_string
        stamp = p.block_timestamp
        out: list[str] = []
        block = -1
        head = ""
        mid = ""
        cols = (
            blocks.tolist(),
            tx_idx.tolist(),
            li,
            ts,
            seeds.tolist(),
            t.addr[sel].tolist(),
            t.t0[sel].tolist(),
            t.t1[sel].tolist(),
            t.t2[sel].tolist(),
            t.t3[sel].tolist(),
            t.dk[sel].tolist(),
            t.v[sel].tolist(),
            t.d1[sel].tolist(),
            t.d2[sel].tolist(),
        )
        for b, i, idx, bts, (s0, s1, s2, s3), a, t0, t1, t2, t3, dk, v, d1, d2 in zip(
            *cols, strict=True
        ):
            if b != block:
                block = b
                tail = f',"blockTimestamp":"{hex(bts)}"' if stamp else ""
                head = f'"blockNumber":"{hex(b)}","blockHash":"{c.block_hash(b)}"{tail}'
            if t3 >= 0:
                mid = f'"{topics[t0]}","{topics[t1]}","{topics[t2]}","{topics[t3]}"'
            else:
                mid = f'"{topics[t0]}","{topics[t1]}","{topics[t2]}"'
            out.append(
                f'{{"address":"{addrs[a]}","topics":[{mid}],"data":"{data(dk, v, d1, d2)}",'
                f'{head},"transactionHash":"0x{s0:016x}{s1:016x}{s2:016x}{s3:016x}",'
                f'"transactionIndex":"{hex(i)}","logIndex":"{hex(idx)}","removed":false}}'
            )
        self.stats.add("logs_served", len(out))
        return "[" + ",".join(out) + "]"

    def _cap_error(self, violation: str, span: int, lo: int, sug_to: int) -> _RpcError:
        p = self.p
        ctx = {
            "max_range": p.max_block_range,
            "max_results": p.max_results,
            "span": span,
            "sug_from": lo if sug_to >= lo else None,
            "sug_to": sug_to,
            "suggest": p.cap_suggest,
            "violation": violation,
        }
        code, msg = cap_message(p.cap_style, ctx)
        return _RpcError(code, msg, violation)


def _tx_seeds(chain: pg.PolygonChain, blocks: np.ndarray, tx: np.ndarray) -> np.ndarray:
    """The four 64-bit words of each transaction hash (PolygonChain.tx_hash), as an (n, 4) array."""
    u = np.uint64
    hb = pg.mix_np(blocks.astype(u) * u(pg.K_BLOCK) ^ u(chain.key))
    a = pg.mix_np(hb ^ (tx + 1).astype(u) * u(pg.K_TX))
    b = pg.mix_np(a)
    c = pg.mix_np(b)
    return np.stack([a, b, c, pg.mix_np(c)], axis=1)


def _id(call: Any) -> Any:
    return call.get("id") if isinstance(call, dict) else None


def _error_body(rid: Any, code: int, message: str) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}})


def _handler_for(core: NodeCore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            status, headers, out = core.handle(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True


class PolygonNode:
    """The node on 127.0.0.1 (context manager); ``url``, ``stats()``, ``chain``."""

    def __init__(
        self,
        chain: pg.PolygonChain,
        personality: Personality | None = None,
        port: int = 0,
        processes: int = 1,
    ) -> None:
        self.chain = chain
        self.personality = personality or Personality()
        self.shared = SharedStats(chain.head + 1)
        self.core = NodeCore(chain, self.personality, self.shared)
        self.server = _Server(("127.0.0.1", port), _handler_for(self.core))
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes = max(1, processes)
        self._children: list[int] = []
        self._thread: threading.Thread | None = None

    def start(self) -> PolygonNode:
        for _ in range(self.processes - 1):
            pid = os.fork()
            if pid == 0:  # a child: serve on the inherited listening socket until killed
                signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
                try:
                    self.server.serve_forever(poll_interval=0.2)
                finally:
                    os._exit(0)
            self._children.append(pid)
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        return self

    def stats(self) -> dict[str, int]:
        return self.shared.snapshot()

    def block_asks(self, block: int) -> int:
        """How many times eth_getBlockByNumber asked for this block."""
        return self.shared.block_asks(block)

    def reset_stats(self) -> None:
        self.shared.reset()

    def stop(self) -> None:
        for pid in self._children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self._children = []
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> PolygonNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spec_from_args(args: argparse.Namespace) -> pg.PolygonSpec:
    return pg.PolygonSpec(
        seed=args.seed,
        start_date=dt.date.fromisoformat(args.start_date),
        days=args.days,
        block_time_s=args.block_time,
        events_per_block=args.events_per_block,
    )


def add_spec_args(p: argparse.ArgumentParser) -> None:
    """Options that define the chain (shared with benchmarks)."""
    p.add_argument("--seed", type=int, default=137)
    p.add_argument("--start-date", default="2022-12-18")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--block-time", type=float, default=2.1, help="mean seconds per block (>= 2)")
    p.add_argument("--events-per-block", type=float, default=2.0)


def main(argv: list[str] | None = None, ready: Callable[[str], None] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m engine.devchain.polygon_node",
        description="Serve a procedural Polygon-shaped chain over JSON-RPC on 127.0.0.1.",
    )
    add_spec_args(p)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--no-block-timestamp", action="store_true")
    p.add_argument("--max-block-range", type=int)
    p.add_argument("--max-results", type=int)
    p.add_argument("--cap-style", default="infura", choices=CAP_STYLES)
    p.add_argument("--rate-limit", type=float, help="calls per second before 429s")
    args = p.parse_args(argv)
    chain = pg.PolygonChain(spec_from_args(args))
    pers = Personality(
        block_timestamp=not args.no_block_timestamp,
        max_block_range=args.max_block_range,
        max_results=args.max_results,
        cap_style=args.cap_style,
        rate_limit_rps=args.rate_limit,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with PolygonNode(chain, pers, port=args.port, processes=args.processes) as node:
        print(f"polygon node: {node.url} head {chain.head} ({args.days} days)", flush=True)
        if ready:
            ready(node.url)
        while not stop.wait(0.5):
            pass
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
