"""A fault-injecting JSON-RPC proxy for tests, on loopback, in front of one real (anvil) node.

``FaultProxy(upstream, FaultConfig(...))`` is a context manager that serves on a free loopback
port; ``proxy.url`` (any path works, e.g. ``proxy.url + "/v3/SECRET"``) forwards JSON-RPC POSTs to
the upstream node only (it refuses any non-loopback upstream). Per request, with a seeded RNG, it
injects one of:

- HTTP 429 (``p_429``), with a ``Retry-After`` header when ``retry_after`` is set (seconds or an
  HTTP date string, sent verbatim); or a JSON-RPC -32005 rate-limit error (``p_rpc_rate``);
- a slow response (``p_slow``, sleeps ``slow_s`` before answering: past a client timeout);
- HTTP 5xx (``p_5xx``);
- a dropped connection (``p_drop``: closed without any response);
- truncated JSON (``p_truncate``: a 200 whose body is cut in the middle);
- a provider cap on eth_getLogs: ``cap_max_range`` blocks and/or ``cap_max_results`` logs,
  answered with the message style ``cap_style`` (see ``CAP_STYLES``), with or without a suggested
  range (``cap_suggest``; styles that always or never suggest ignore it);
- ``fail_blocks``: any eth_getLogs range containing one of these blocks always gets an HTTP 500;
- ``slow_above_span``: eth_getLogs over more blocks than this always answers after ``slow_s``.
- ``auth_error``: every request gets HTTP 401 with a JSON-RPC -32600 "invalid api key" body.
- ``echo_path``: error answers quote the request path and query (a key in the URL comes back in
  the error text, as some gateways do).

``faulty_methods`` limits the random faults to some methods (None: all) and ``max_faults`` their
number (None: unlimited). It counts requests per
method (``counts``), and records every request (``records``: monotonic time, method, status sent,
params, and ``ok`` for a single request answered in time with a JSON-RPC result) so tests can
check Retry-After gaps and which ranges were really served.

It needs only the standard library (``HttpPoster`` is its keep-alive HTTP client).
"""

from __future__ import annotations

import http.client
import json
import random
import select
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from engine.devchain.provider_errors import CAP_STYLES, cap_message  # noqa: F401 (re-exported)


@dataclass
class FaultConfig:
    """What the proxy injects; shares are probabilities per request (checked in this order)."""

    p_429: float = 0.0
    retry_after: str | None = None
    p_rpc_rate: float = 0.0
    p_slow: float = 0.0
    slow_s: float = 1.0
    p_5xx: float = 0.0
    p_drop: float = 0.0
    p_truncate: float = 0.0
    cap_max_range: int | None = None
    cap_max_results: int | None = None
    cap_style: str = "infura"
    cap_suggest: bool = True
    fail_blocks: frozenset[int] = frozenset()
    slow_above_span: int | None = None
    faulty_methods: frozenset[str] | None = None
    max_faults: int | None = None
    seed: int = 0
    #: Every request is refused with HTTP 401 and JSON-RPC -32600 "invalid api key" (a bad key).
    auth_error: bool = False
    #: Error answers (429, 5xx, fail_blocks' 500) quote the request path, query included, as
    #: some gateways do: a provider key in the URL comes back inside the error text.
    echo_path: bool = False


@dataclass
class Record:
    t: float  # time.monotonic() when the request arrived
    method: str
    status: int | str  # HTTP status sent, or the fault: "drop", "slow", "truncate", "cap", ...
    params: Any = None
    wall: float = 0.0  # time.time() when the request arrived
    #: True when the client was sent an HTTP 200 JSON-RPC answer holding a ``result`` (forwarded
    #: in time, no fault, no cap, no JSON-RPC error); False for every fault and error, and for
    #: batches (forwarded untouched, recorded as "batch" with status 200).
    ok: bool = False


@dataclass
class _State:
    cfg: FaultConfig
    upstream: str
    rng: random.Random
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter = field(default_factory=Counter)
    faults: int = 0
    records: list[Record] = field(default_factory=list)
    local: threading.local = field(default_factory=threading.local)


def _hex_or_int(v: Any) -> int:
    return int(v, 16) if isinstance(v, str) else int(v)


class HttpPoster:
    """POST bytes over one persistent HTTP/1.1 connection (stdlib only; not thread-safe).

    Like a ``requests.Session`` for this use: the connection is kept alive between requests, a
    connection the server closed while idle is noticed before reuse and reopened, and any error
    closes it (the next request opens a new one). No timeout unless one is given.
    """

    def __init__(self, url: str, timeout: float | None = None) -> None:
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"HttpPoster needs an http:// URL, got {url!r}")
        self.url = url
        self.host, self.port = u.hostname, u.port or 80
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _stale(self) -> bool:
        """True when the idle connection was closed by the server (readable = EOF or junk)."""
        sock = self._conn.sock if self._conn is not None else None
        if sock is None:
            return True
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def post(self, body: bytes, timeout: float | None = None) -> tuple[int, bytes]:
        """(HTTP status, response body) of a JSON POST; OSError/HTTPException on failure."""
        if self._conn is not None and self._stale():
            self.close()
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        t = self.timeout if timeout is None else timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(t)
        else:
            self._conn.timeout = t
        try:
            self._conn.request("POST", self.path, body, {"Content-Type": "application/json"})
            r = self._conn.getresponse()
            data = r.read()
        except BaseException:
            self.close()
            raise
        if r.will_close:
            self.close()
        return r.status, data

    def post_json(self, payload: Any, timeout: float | None = None) -> Any:
        """POST ``payload`` as JSON; the decoded JSON answer."""
        _status, data = self.post(json.dumps(payload).encode(), timeout)
        return json.loads(data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # headers and body leave in one write (flushed after each request) ...
    disable_nagle_algorithm = True  # ... and at once: no 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # -- helpers
    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _rpc_error(self, req_id: Any, code: int, message: str, status: int = 200) -> None:
        body = {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}}
        self._send(status, json.dumps(body).encode())

    def _forward(self, raw: bytes) -> tuple[int, bytes]:
        st = self.server.state
        conn = getattr(st.local, "upstream", None)
        if conn is None or conn.url != st.upstream:
            conn = st.local.upstream = HttpPoster(st.upstream)
        return conn.post(raw)

    def _record(self, method: str, status: int | str, params: Any, ok: bool = False) -> None:
        st = self.server.state
        with st.lock:
            st.counts[method] += 1
            st.records.append(Record(self._t0, method, status, params, self._w0, ok))

    # -- main
    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._t0, self._w0 = time.monotonic(), time.time()
        st = self.server.state
        cfg = st.cfg
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            req = json.loads(raw)
        except ValueError:
            self._record("?", 400, None)
            self._rpc_error(None, -32700, "parse error", 400)
            return
        if isinstance(req, list):  # batches: forwarded untouched
            self._record("batch", 200, None)
            status, body = self._forward(raw)
            self._send(status, body)
            return
        method = str(req.get("method"))
        req_id = req.get("id")
        params = req.get("params")

        if cfg.auth_error:
            self._record(method, 401, params)
            self._rpc_error(req_id, -32600, "invalid api key", 401)
            return
        fault = None
        if (cfg.faulty_methods is None or method in cfg.faulty_methods) and (
            cfg.max_faults is None or st.faults < cfg.max_faults
        ):
            with st.lock:
                r = st.rng.random()
            edges = [
                ("429", cfg.p_429),
                ("rpc_rate", cfg.p_rpc_rate),
                ("slow", cfg.p_slow),
                ("5xx", cfg.p_5xx),
                ("drop", cfg.p_drop),
                ("truncate", cfg.p_truncate),
            ]
            acc = 0.0
            for name, p in edges:
                acc += p
                if r < acc:
                    fault = name
                    with st.lock:
                        st.faults += 1
                    break

        echo = f" for {self.path}" if cfg.echo_path else ""
        if fault == "429":
            self._record(method, 429, params)
            headers = {"Retry-After": cfg.retry_after} if cfg.retry_after is not None else {}
            body429 = json.dumps({"error": f"Too Many Requests{echo}"}, separators=(",", ":"))
            self._send(429, body429.encode(), headers)
            return
        if fault == "rpc_rate":
            self._record(method, "rpc_rate", params)
            self._rpc_error(req_id, -32005, "limit exceeded")
            return
        if fault == "5xx":
            self._record(method, 503, params)
            self._send(503, f"<html><body>503 Service Unavailable{echo}</body></html>".encode())
            return
        if fault == "drop":
            self._record(method, "drop", params)
            self.close_connection = True
            return
        if fault == "slow":
            self._record(method, "slow", params)
            time.sleep(cfg.slow_s)
            status, body = self._forward(raw)  # the answer, too late for the client
            self._send(status, body)
            return

        if method == "eth_getLogs" and params:
            flt = params[0]
            frm, to = _hex_or_int(flt.get("fromBlock", 0)), _hex_or_int(flt.get("toBlock", 0))
            if cfg.slow_above_span is not None and to - frm + 1 > cfg.slow_above_span:
                self._record(method, "slow", params)
                time.sleep(cfg.slow_s)  # a heavy query: the answer comes after the client left
                self._send(*self._forward(raw))
                return
            if any(frm <= b <= to for b in cfg.fail_blocks):
                self._record(method, 500, params)
                err = {"code": -32603, "message": f"x{echo}"}
                body = {"jsonrpc": "2.0", "id": req_id, "error": err}
                self._send(500, json.dumps(body).encode())
                return
            span = to - frm + 1
            if cfg.cap_max_range is not None and span > cfg.cap_max_range:
                sug_to = frm + cfg.cap_max_range - 1
                if cfg.cap_max_results is not None:
                    status, body = self._forward(raw)
                    logs = json.loads(body).get("result") or []
                    sug_to = min(sug_to, _suggest_end(logs, frm, sug_to, cfg.cap_max_results))
                self._cap(req_id, method, params, frm, to, span, frm, sug_to, "blocks")
                return
            status, body = self._forward(raw)
            if cfg.cap_max_results is not None:
                logs = json.loads(body).get("result") or []
                if len(logs) > cfg.cap_max_results:
                    sug_to = _suggest_end(logs, frm, to, cfg.cap_max_results)
                    self._cap(req_id, method, params, frm, to, span, frm, sug_to, "results")
                    return
        else:
            status, body = self._forward(raw)

        if fault == "truncate":
            self._record(method, "truncate", params)
            self._send(200, body[: max(1, len(body) // 2)])
            return
        self._record(method, status, params, ok=status == 200 and _has_result(body))
        self._send(status, body)

    def _cap(
        self,
        req_id: Any,
        method: str,
        params: Any,
        frm: int,
        to: int,
        span: int,
        sf: int,
        st: int,
        violation: str,
    ) -> None:
        cfg = self.server.state.cfg
        ctx = {
            "frm": frm,
            "to": to,
            "span": span,
            "max_range": cfg.cap_max_range,
            "max_results": cfg.cap_max_results,
            "sug_from": sf if st >= sf else None,
            "sug_to": st,
            "suggest": cfg.cap_suggest,
            "violation": violation,
        }
        code, msg = cap_message(cfg.cap_style, ctx)
        self._record(method, "cap", params)
        self._rpc_error(req_id, code, msg)


def _has_result(body: bytes) -> bool:
    """True when a single JSON-RPC response body holds a ``result`` (not an ``error``)."""
    if len(body) > 65536:
        return True  # error answers are short; only results get this big
    try:
        msg = json.loads(body)
    except ValueError:
        return False
    return isinstance(msg, dict) and "result" in msg and "error" not in msg


def _suggest_end(logs: list[dict], frm: int, to: int, max_results: int) -> int:
    """Largest end <= to such that [frm, end] holds at most max_results of ``logs``."""
    per_block = Counter(int(lg["blockNumber"], 16) for lg in logs)
    total = 0
    end = frm - 1
    for b in sorted(per_block):
        if b > to:
            break
        if total + per_block[b] > max_results:
            return max(frm - 1, b - 1)
        total += per_block[b]
        end = b
    return to if total <= max_results else end


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that timed out and went away are expected here


class FaultProxy:
    """Loopback fault-injecting proxy; use as a context manager."""

    def __init__(self, upstream: str, config: FaultConfig | None = None) -> None:
        host = urlsplit(upstream).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("FaultProxy only forwards to a loopback upstream")
        self.config = config or FaultConfig()
        self._state = _State(self.config, upstream, random.Random(self.config.seed))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "proxy not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def counts(self) -> Counter:
        with self._state.lock:
            return Counter(self._state.counts)

    @property
    def records(self) -> list[Record]:
        with self._state.lock:
            return list(self._state.records)

    def set_config(self, config: FaultConfig) -> None:
        """Swap the fault config (the RNG is re-seeded)."""
        with self._state.lock:
            self.config = config
            self._state.cfg = config
            self._state.rng = random.Random(config.seed)

    def reset_stats(self) -> None:
        with self._state.lock:
            self._state.counts.clear()
            self._state.records.clear()

    def start(self) -> FaultProxy:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self._state
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
