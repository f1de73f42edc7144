"""Replay node: answer each distinct JSON-RPC request once from upstream, then from memory.

    .venv/bin/python bench/replay_node.py --upstream http://127.0.0.1:8545 [--port 0]
    .venv/bin/python bench/replay_node.py --synthetic [--days 8 --dense-days 1,4 ...]

A throughput race against a real node measures the node: on 2 cores anvil burns as much CPU
serving logs as the client spends taking them. The replay node records each distinct request
(method + params; the id does not count) on its first sight, forwarding it to the upstream node
(an http URL, or with --synthetic the procedural chain of bench/synth_chain.py, computed in this
process), and serves the recorded answer from memory ever after, with the caller's id echoed.
A second pass of any client then costs the node almost nothing but sending bytes.

JSON-RPC batches are answered element by element (each element recorded on its own). The HTTP
server is a `ThreadingHTTPServer` with HTTP/1.1 keep-alive and a raised `request_queue_size`
(the default 5 resets cryo's many parallel connections, FIELD-NOTES). On start it prints one JSON
line on stdout: {"url": ..., "pid": ...} (with --synthetic also "head", "expected", "ranges").
`GET /stats` answers {"hits": n, "misses": n, "entries": n, "bytes": n}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import sys
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Upstream = Callable[[dict[str, Any]], dict[str, Any]]


class HttpUpstream:
    """Forward one JSON-RPC request object to an http node; one connection per thread."""

    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.path = u.path or "/"
        self.timeout_s = timeout_s
        self._local = threading.local()

    def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(
                self.host, self.port, timeout=self.timeout_s
            )
        try:
            conn.request("POST", self.path, orjson.dumps(req), {"Content-Type": "application/json"})
            return orjson.loads(conn.getresponse().read())
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise


class ReplayCache:
    """Request key -> the answer's bytes after the id (`"result":...}` or `"error":...}`)."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._answers: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[bytes, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(req: dict[str, Any]) -> bytes:
        return orjson.dumps([req.get("method"), req.get("params")], option=orjson.OPT_SORT_KEYS)

    def answer(self, req: dict[str, Any]) -> bytes:
        """The full response object for `req` (its own id), as bytes."""
        k = self.key(req)
        tail = self._answers.get(k)
        if tail is None:
            with self._lock:
                lock = self._key_locks.setdefault(k, threading.Lock())
            with lock:  # one upstream call per distinct request, even when asked in parallel
                tail = self._answers.get(k)
                if tail is None:
                    tail = self._record(k, req)
                    self.misses += 1
                else:
                    self.hits += 1
        else:
            self.hits += 1
        return b'{"jsonrpc":"2.0","id":' + orjson.dumps(req.get("id")) + b"," + tail

    def _record(self, k: bytes, req: dict[str, Any]) -> bytes:
        resp = self.upstream(req)
        if "error" in resp:
            # Errors are not kept: a transient upstream failure should not be replayed forever.
            return b'"error":' + orjson.dumps(resp["error"]) + b"}"
        tail = b'"result":' + orjson.dumps(resp.get("result")) + b"}"
        self._answers[k] = tail
        return tail

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "entries": len(self._answers),
            "bytes": sum(map(len, self._answers.values())),
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, no delayed-ACK stalls
    cache: ReplayCache

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if self.path == "/stats":
            self._send(200, orjson.dumps(self.cache.stats()))
        else:
            self._send(404, b'{"error":"not found"}')

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        size = int(self.headers.get("Content-Length") or 0)
        try:
            req = orjson.loads(self.rfile.read(size))
        except orjson.JSONDecodeError:
            err = {"code": -32700, "message": "parse error"}
            self._send(400, orjson.dumps({"jsonrpc": "2.0", "id": None, "error": err}))
            return
        try:
            if isinstance(req, list):
                body = b"[" + b",".join(self.cache.answer(r) for r in req) + b"]"
            else:
                body = self.cache.answer(req)
        except Exception as exc:  # upstream down: say so, as a node would
            msg = {"code": -32603, "message": f"replay upstream failed: {exc}"}
            body = orjson.dumps({"jsonrpc": "2.0", "id": None, "error": msg})
            self._send(502, body)
            return
        self._send(200, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # cryo opens many connections at once
    allow_reuse_address = True


def serve(upstream: Upstream, host: str = "127.0.0.1", port: int = 0) -> _Server:
    """Start a replay node in a thread of this process; `server.server_address` has the port."""
    handler = type("Handler", (_Handler,), {"cache": ReplayCache(upstream)})
    server = _Server((host, port), handler)
    threading.Thread(target=server.serve_forever, name="replay-node", daemon=True).start()
    return server


def _synthetic(args: argparse.Namespace) -> tuple[Upstream, dict[str, Any]]:
    from bench.synth_chain import SynthChain
    from engine.config import load_config

    contracts = load_config(args.config or ROOT / "config.toml").contracts
    chain = SynthChain(
        contracts,
        start_date=dt.date.fromisoformat(args.start_date),
        days=args.days,
        dense_days=tuple(int(x) for x in args.dense_days.split(",") if x),
        interval_s=args.interval,
        dense_per_block=args.dense_per_block,
        sparse_per_block=args.sparse_per_block,
        seed=args.seed,
    )
    info: dict[str, Any] = {"head": chain.head}
    if not args.no_expected:
        info["expected"] = chain.expected()  # also generates (and keeps) every block's logs
    start_ts = int(dt.datetime.combine(chain.start_date, dt.time(), dt.UTC).timestamp())
    info["ranges"] = {
        d: [chain.block_at(start_ts + 86_400 * d), chain.block_at(start_ts + 86_400 * (d + 1)) - 1]
        for d in range(chain.days)
    }
    return chain.handle, info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--upstream", help="http URL of the node to record from")
    src.add_argument("--synthetic", action="store_true", help="bench/synth_chain.py, in process")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port")
    g = p.add_argument_group("synthetic chain")
    g.add_argument("--config", help="config.toml whose [contracts] the logs use")
    g.add_argument("--start-date", default="2022-12-18")
    g.add_argument("--days", type=int, default=8)
    g.add_argument("--dense-days", default="1,4", help="comma-separated day indexes")
    g.add_argument("--interval", type=int, default=72, help="seconds between blocks")
    g.add_argument("--dense-per-block", type=float, default=170.0)
    g.add_argument("--sparse-per-block", type=float, default=2.0)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--no-expected", action="store_true", help="skip counting the expected rows")
    args = p.parse_args(argv)
    info: dict[str, Any] = {}
    if args.upstream:
        upstream: Upstream = HttpUpstream(args.upstream)
    else:
        upstream, info = _synthetic(args)
    server = serve(upstream, args.host, args.port)
    host, port = server.server_address[:2]
    print(json.dumps({"url": f"http://{host}:{port}", "pid": os.getpid(), **info}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
