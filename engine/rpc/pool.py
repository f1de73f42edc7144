"""RPC pool: JSON-RPC over plain HTTP with rotation, backoff, Retry-After, budgets and health.

One ``RpcPool`` per worker process. It owns every retry (web3 is not used on this path, so no
second retry layer exists):

- **Transport**: one persistent HTTP connection per URL (per thread, ``engine.rpc.http_transport``),
  JSON-RPC POST, the raw JSON parsed with ``orjson``; ``eth_getLogs`` results are returned as the
  node sent them (hex strings).
- **Rotation and backoff**: round-robin over URLs. A failed attempt (429, timeout, 5xx, connection
  error, truncated JSON, HTTP 401/403/404, retryable JSON-RPC error) penalises *that URL* with an
  exponential backoff with jitter (tenacity ``wait_exponential_jitter``) or its Retry-After
  (seconds or HTTP date), whichever is longer, and the retry goes to the next URL that is free; the
  pool only sleeps when every URL is backing off. Attempts per request are bounded by
  ``max_attempts`` (tenacity ``Retrying``). A URL failing ``cooldown_after`` times in a row cools
  down for ``cooldown_s`` (it is skipped while another URL is usable) and then comes back.
- **Budget**: a token bucket per URL at ``requests_per_second`` (this process's share); each call
  of a JSON-RPC batch takes a token, as providers count them.
- **Adaptive eth_getLogs ranges**, per URL (providers differ) and per filter (densities differ):
  start at ``max_block_range``; when a provider says the range or result set is too big, use its
  suggested range (always a sub-range starting at the requested ``fromBlock``; the rest follows in
  the next request), else the block limit it names, else fall back to the last span that worked,
  else halve; an "invalid params" answer (-32600/-32602) to a multi-block request, in words no
  pattern knows, counts as such a limit. When the provider named a result cap (or one can be
  inferred: a span that worked before fails now), ranges follow a forecast of the log density from
  the blocks just fetched (``engine.rpc.log_density``: the rate of the latest homogeneous stretch,
  bursts cut out, with its trend) to about 90% of a named cap (all of an inferred one), growing at
  most 4x per request. Otherwise a soft block limit grows slowly after successes (+10% after 10 in
  a row, bisecting towards a span that failed; doubling when requests come back far emptier than
  before), never above a limit the provider named (or suggested twice) or ``max_block_range``. A
  sub-range that times out twice is halved; one that keeps failing for other reasons is bisected
  down to a single block (the search goes on from one sub-range to the next, and its failures do
  not count against the URL), so ``RangeFailed`` names the smallest range that could not be
  fetched. Never an empty success. ``iter_logs`` yields each sub-range as it arrives (no fixed
  chunks needed by the caller).
- **Health**: per URL calls, calls/s, errors by kind, 429s, p50/p95 latency, current range and
  cooling-until, with URLs masked (``engine.masking``). Every message passed to ``on_event`` is
  masked too.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from engine.masking import mask_secrets, mask_url
from engine.rpc import errors as rpc_errors
from engine.rpc import log_density
from engine.rpc.errors import Classified, classify
from engine.rpc.http_transport import HttpConnection, TransportError, TransportTimeout
from engine.rpc.rate_limit import TokenBucket

EventCallback = Callable[[str, str], None]

#: Longest Retry-After we obey (seconds); longer values are capped (the URL is skipped meanwhile).
MAX_RETRY_AFTER_S = 600.0
#: A sleep longer than this is cut into slices, with a "retry_wait" event per slice (heartbeats).
SLEEP_SLICE_S = 2.0
#: Growth of the eth_getLogs range: +GROW_FACTOR after GROW_AFTER successes in a row.
GROW_AFTER = 10
GROW_FACTOR = 1.10
#: Share of a known result cap aimed at per request when sizing ranges by log density.
RESULT_CAP_TARGET = 0.9
#: Largest growth factor of a density-sized range from one request to the next.
DENSITY_GROWTH_MAX = 4.0
#: Timeouts of one eth_getLogs sub-range (on any URL) after which its range is halved.
TIMEOUTS_BEFORE_SPLIT = 2
#: Attempts per bisection level once a sub-range has exhausted its attempts and gets split.
SPLIT_ATTEMPTS = 2


class RpcError(Exception):
    """A JSON-RPC request that could not be answered after all retries (or cannot succeed)."""

    def __init__(self, kind: str, message: str, url: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.url = url  # masked
        self.code = code
        self.message = message
        self.exhausted = False  # True when every attempt failed with a retryable error


class RangeFailed(RpcError):
    """A block range whose logs could not be fetched after all retries (never an empty success)."""

    def __init__(
        self, from_block: int, to_block: int, kind: str, message: str, url: str = ""
    ) -> None:
        super().__init__(kind, message, url)
        self.from_block = from_block
        self.to_block = to_block


class _AttemptFailed(Exception):
    """One failed attempt on one URL; retried by tenacity."""

    def __init__(self, ep: _Endpoint, classified: Classified, message: str) -> None:
        super().__init__(message)
        self.ep = ep
        self.classified = classified
        self.message = message


class _RangeTooBig(Exception):
    def __init__(self, classified: Classified) -> None:
        super().__init__(classified.message)
        self.classified = classified


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


class _RangeState:
    """Adaptive eth_getLogs range of one URL for one filter (densities differ per filter)."""

    def __init__(self, max_block_range: int) -> None:
        self.range = max_block_range  # span of the next request
        self.block_limit = float(max_block_range)  # soft block limit: halved, grows slowly
        self.density: float | None = None  # logs per block, EWMA over successful calls
        self.streak = 0
        self.pending_suggestion: int | None = None  # span the provider suggested, not yet used
        self.ceiling = float("inf")  # spans above this failed (without a number) ...
        self.ceiling_density = 0.0  # ... at this density; lifted when the density drops 4x
        self.last_ok_span: int | None = None
        self.max_ok_span = 0
        self.max_ok_logs = 0
        self.results_est: int | None = None  # result cap inferred when the provider names none


class _Endpoint:
    """One URL: its session(s), budget, backoff/cooldown state, range state and stats."""

    def __init__(self, index: int, url: str, rps: float, max_block_range: int) -> None:
        self.index = index
        self.url = url
        self.masked = mask_url(url)
        self.secrets = [url]
        self.bucket = TokenBucket(rps)
        # backoff / cooldown (monotonic clock); cooling_wall is for health (unix time)
        self.not_before = 0.0
        self.consecutive_failures = 0
        self.cooling_until = 0.0
        self.cooling_wall: float | None = None
        # adaptive eth_getLogs ranges: provider limits per URL, the rest per URL and filter
        self.max_block_range = max_block_range
        self.range_cap = max_block_range  # hard block limit (named by the provider, or confirmed)
        self.results_cap: int | None = None  # result-count limit named by the provider
        self.suggested_limit: int | None = None  # block limit learned from a suggestion
        self.last_suggested_span: int | None = None
        self.states: dict[str, _RangeState] = {}
        # stats
        self.calls = 0
        self.errors: Counter[str] = Counter()
        self.http_429 = 0
        self.latencies: deque[float] = deque(maxlen=512)
        self.call_times: deque[float] = deque(maxlen=4096)

    def cooling(self, now: float) -> bool:
        return self.cooling_until > now

    def state(self, key: str) -> _RangeState:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = _RangeState(self.range_cap)
        return st

    @property
    def current_range(self) -> int:
        """The widest range any filter uses here (a sparse filter's; denser ones split)."""
        if not self.states:
            return self.range_cap
        return min(self.range_cap, max(st.range for st in self.states.values()))


class RpcPool:
    """Round-robin JSON-RPC client over several URLs; see the module docstring."""

    def __init__(
        self,
        urls: Sequence[str],
        requests_per_second: float = 25.0,
        timeout_s: float = 30.0,
        max_block_range: int = 2000,
        on_event: EventCallback | None = None,
        max_attempts: int = 8,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        cooldown_s: float = 30.0,
        cooldown_after: int = 5,
    ) -> None:
        urls = [u.strip() for u in urls if u and u.strip()]
        if not urls:
            raise ValueError("RpcPool needs at least one URL")
        if max_block_range < 1:
            raise ValueError("max_block_range must be >= 1")
        self.max_block_range = int(max_block_range)
        self.timeout_s = float(timeout_s)
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.cooldown_s = float(cooldown_s)
        self.cooldown_after = max(1, int(cooldown_after))
        self.on_event = on_event
        self._endpoints = [
            _Endpoint(i, u, requests_per_second, self.max_block_range) for i, u in enumerate(urls)
        ]
        self._all_secrets = sorted(
            {s for ep in self._endpoints for s in ep.secrets}, key=len, reverse=True
        )
        self._lock = threading.Lock()
        self._rr = 0
        self._last_range_ep = self._endpoints[0]
        self._local = threading.local()
        self._ids = itertools.count(1)
        self._backoff = wait_exponential_jitter(
            multiplier=self.backoff_initial_s, max=self.backoff_max_s, jitter=self.backoff_initial_s
        )
        self.total_requests = 0
        self.total_by_method: Counter[str] = Counter()
        # Per filter: (next block, logs per block of the contiguous stretch fetched before it),
        # kept while a result cap sizes the ranges (log density is the filter's, not the URL's).
        self._history: dict[str, tuple[int, list[int]]] = {}

    # ------------------------------------------------------------------ public API

    @property
    def urls_masked(self) -> list[str]:
        return [ep.masked for ep in self._endpoints]

    @property
    def current_range(self) -> int:
        """The eth_getLogs range (blocks) of the URL used last: the widest any filter uses there.

        Per URL values are in health(). Chunks of this size need one request for the sparsest
        filter; get_logs splits them further for denser filters."""
        with self._lock:
            return self._last_range_ep.current_range

    @current_range.setter
    def current_range(self, value: int) -> None:
        value = max(1, min(int(value), self.max_block_range))
        with self._lock:
            for ep in self._endpoints:
                for st in ep.states.values():
                    st.range = min(value, ep.range_cap)
                    st.block_limit = float(st.range)

    def call(self, method: str, params: list) -> Any:
        """One JSON-RPC call with retries and rotation; its ``result``, or RpcError."""
        return self._with_retries(
            lambda ep: self._attempt(ep, method, params), method, self.max_attempts
        )

    def block_number(self) -> int:
        """Chain head number (eth_blockNumber) from whichever URL answers."""
        return int(self.call("eth_blockNumber", []), 16)

    def lowest_head(self) -> int:
        """The lowest chain head among the URLs that answer eth_blockNumber (one try each).

        Logs are fetched from any URL, and a node asked past its own head may answer [] rather
        than an error: only blocks every answering URL has are safe to call final. URLs cooling
        down, backing off or failing this one try are left out; when none answers, this is
        block_number() with its retries (RpcError when every attempt fails).
        """
        now = time.monotonic()
        heads: list[int] = []
        for ep in self._endpoints:
            if ep.cooling(now) or ep.not_before > now:
                continue  # backing off (maybe a Retry-After): not asked again now
            try:
                heads.append(int(self._attempt(ep, "eth_blockNumber", []), 16))
            except (_AttemptFailed, RpcError, ValueError, TypeError):
                continue
        return min(heads) if heads else self.block_number()

    def block_timestamps(self, numbers: Sequence[int]) -> list[int]:
        """Timestamps of several blocks in one JSON-RPC batch request (with retries)."""
        if not numbers:
            return []

        def check(results: Any) -> str | None:
            if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
                return "a block in the batch was not found"
            return None

        def attempt(ep: _Endpoint) -> Any:
            params = [[hex(n), False] for n in numbers]
            return self._attempt(ep, "eth_getBlockByNumber", params, validate=check, batch=True)

        blocks = self._with_retries(attempt, "eth_getBlockByNumber batch", self.max_attempts)
        return [int(b["timestamp"], 16) for b in blocks]

    def block_timestamp(self, number: int) -> int:
        """Timestamp of block ``number`` (eth_getBlockByNumber, no transactions)."""

        def attempt(ep: _Endpoint) -> Any:
            return self._attempt(
                ep,
                "eth_getBlockByNumber",
                [hex(number), False],
                validate=lambda r: None if isinstance(r, dict) else f"block {number} not found",
            )

        block = self._with_retries(attempt, "eth_getBlockByNumber", self.max_attempts)
        return int(block["timestamp"], 16)

    def get_logs(
        self, from_block: int, to_block: int, address: list[str] | str | None, topics: list
    ) -> list[dict]:
        """Every log of [from_block, to_block] (inclusive) as raw JSON dicts, in block order.

        Fetched in adaptive sub-ranges; raises RangeFailed naming the sub-range that could not be
        fetched after all retries.
        """
        out: list[dict] = []
        for _lo, _hi, logs in self.iter_logs(from_block, to_block, address, topics):
            out.extend(logs)
        return out

    def iter_logs(
        self, from_block: int, to_block: int, address: list[str] | str | None, topics: list
    ) -> Iterator[tuple[int, int, list[dict]]]:
        """Like get_logs, but yields ``(lo, hi, logs)`` after each successful request, in order.

        The sub-ranges are contiguous and cover [from_block, to_block] exactly. Iterating a whole
        day this way (rather than in fixed chunks) lets the adaptive range use every request
        fully while the caller still sees progress per request.
        """
        cur = int(from_block)
        to_block = int(to_block)
        narrow: int | None = None  # while isolating failing blocks: the span that worked last
        while cur <= to_block:
            end, logs, narrow = self._fetch_chunk(cur, to_block, address, topics, narrow)
            yield cur, end, logs
            cur = end + 1

    def health(self) -> list[dict]:
        """Per URL: calls, calls/s (last 10 s), errors by kind, 429s, latency, range, cooldown."""
        now = time.monotonic()
        out = []
        with self._lock:
            for ep in self._endpoints:
                recent = [t for t in ep.call_times if now - t <= 10.0]
                window = 10.0
                if recent and ep.call_times and now - ep.call_times[0] < 10.0:
                    window = max(1.0, now - ep.call_times[0])
                lat = sorted(ep.latencies)
                out.append(
                    {
                        "index": ep.index,  # position in the URL list (two keys may mask alike)
                        "url": ep.masked,
                        "calls": ep.calls,
                        "calls_per_s": round(len(recent) / window, 2),
                        "errors": dict(ep.errors),
                        "http_429": ep.http_429,
                        "p50_ms": _percentile(lat, 0.50),
                        "p95_ms": _percentile(lat, 0.95),
                        "current_range": ep.current_range,
                        "cooling_until": ep.cooling_wall if ep.cooling(now) else None,
                    }
                )
        return out

    def close(self) -> None:
        """Close this thread's HTTP connections."""
        conns = getattr(self._local, "conns", None) or {}
        for c in conns.values():
            c.close()
        self._local.conns = {}

    # ------------------------------------------------------------------ events / masking

    def _mask(self, text: str) -> str:
        return mask_secrets(text, self._all_secrets)

    def _emit(self, kind: str, message: str) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, self._mask(message))
        except Exception:  # noqa: BLE001 - a broken callback must not break fetching
            pass

    # ------------------------------------------------------------------ selection / waiting

    def _choose(self, advance: bool) -> tuple[_Endpoint, float]:
        """Next URL in round-robin order that is usable now, else the one free soonest."""
        now = time.monotonic()
        n = len(self._endpoints)
        with self._lock:
            order = [self._endpoints[(self._rr + i) % n] for i in range(n)]
            live = [ep for ep in order if not ep.cooling(now)] or order
            ready = [ep for ep in live if ep.not_before <= now]
            ep = ready[0] if ready else min(live, key=lambda e: e.not_before)
            if advance:
                self._rr = (ep.index + 1) % n
            return ep, max(0.0, ep.not_before - now)

    def _tenacity_wait(self, retry_state: RetryCallState) -> float:
        return self._choose(advance=False)[1]

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        last = ""
        if isinstance(exc, _AttemptFailed):
            last = f" after {exc.classified.kind} from {exc.ep.masked}"
        if wait > 0:
            self._emit(
                "retry_wait",
                f"waiting {wait:.1f}s before attempt {retry_state.attempt_number + 1}{last}",
            )

    def _sleep(self, seconds: float) -> None:
        """Sleep in slices, announcing each further slice as retry_wait (worker heartbeats)."""
        end = time.monotonic() + seconds
        first = True
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            if not first:
                self._emit("retry_wait", f"still waiting {left:.1f}s for a free RPC URL")
            first = False
            time.sleep(min(left, SLEEP_SLICE_S))

    def _endpoint_backoff(self, failures: int) -> float:
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = max(1, failures)
        return float(self._backoff(state))

    # ------------------------------------------------------------------ retry loop

    def _with_retries(self, fn: Callable[[_Endpoint], Any], what: str, attempts: int) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=self._tenacity_wait,
            retry=retry_if_exception_type(_AttemptFailed),
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    ep, wait = self._choose(advance=True)
                    if wait > 0:
                        self._sleep(wait)
                    return fn(ep)
        except _AttemptFailed as exc:
            c = exc.classified
            err = RpcError(
                c.kind,
                self._mask(f"{what} failed after {attempts} attempts; last: {exc.message}"),
                url=exc.ep.masked,
                code=c.code,
            )
            err.exhausted = True
            raise err from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ one attempt

    def _connection(self, ep: _Endpoint) -> HttpConnection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        c = conns.get(ep.index)
        if c is None:
            c = conns[ep.index] = HttpConnection(ep.url, min(self.timeout_s, 10.0), self.timeout_s)
        return c

    def _attempt(
        self,
        ep: _Endpoint,
        method: str,
        params: list,
        validate: Callable[[Any], str | None] | None = None,
        range_errors: bool = False,
        batch: bool = False,
        blame_range: bool = False,
    ) -> Any:
        """POST one request to one URL. Returns the result or raises _AttemptFailed /
        _RangeTooBig (only when ``range_errors``) / RpcError (not retryable).

        With ``blame_range`` (isolating failing blocks) a failure other than a rate limit does
        not count against the URL: a short backoff, no growing one, no cooldown.

        With ``batch``, ``params`` is a list of params lists sent as one JSON-RPC batch; the
        result is the list of results in the same order (any failed element fails the attempt).
        """
        ep.bucket.acquire(len(params) if batch else 1)  # providers count every call of a batch
        req_id = next(self._ids)
        if batch:
            ids = [next(self._ids) for _ in params]
            body = orjson.dumps(
                [
                    {"jsonrpc": "2.0", "id": i, "method": method, "params": p}
                    for i, p in zip(ids, params, strict=True)
                ]
            )
        else:
            body = orjson.dumps(
                {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}
            )
        conn = self._connection(ep)
        status: int | None = None
        headers: Any = {}
        t0 = time.monotonic()
        parsed: Any = None
        try:
            resp = conn.post(body)
            status = resp.status
            headers = resp.headers
            content = resp.body
        except TransportTimeout as exc:
            c = Classified(rpc_errors.TIMEOUT, message=f"timed out after {self.timeout_s:g}s")
            detail = str(exc)
        except TransportError as exc:
            c = Classified(rpc_errors.CONN, message=str(exc).split(":")[0])
            detail = str(exc)
        else:
            detail = ""
            try:
                parsed = orjson.loads(content)
            except ValueError:
                parsed = None
            if batch and isinstance(parsed, list):
                by_id = {x.get("id"): x for x in parsed if isinstance(x, dict)}
                bad = next((x for x in parsed if isinstance(x, dict) and "error" in x), None)
                if bad is not None:
                    c = classify(status, bad)
                elif set(by_id) != set(ids):
                    c = Classified(rpc_errors.BAD_JSON, message="batch response ids mismatch")
                else:
                    parsed = {"result": [by_id[i].get("result") for i in ids]}
                    c = classify(status, parsed)
            elif isinstance(parsed, dict):
                c = classify(status, parsed)
                if (
                    c.kind == rpc_errors.OK
                    and not batch
                    and parsed.get("id") not in (req_id, str(req_id))
                ):
                    c = Classified(rpc_errors.BAD_JSON, message="response id mismatch")
            else:
                # Masked before it is cut: a key cut in half would no longer be recognised.
                text = self._mask(content[:2000].decode("utf-8", "replace"))[:300]
                c = classify(status, text)
                if c.kind == rpc_errors.OK:  # JSON but not an object
                    c = Classified(rpc_errors.BAD_JSON, message=text[:200])
        elapsed = time.monotonic() - t0
        self._record_call(ep, method, t0, elapsed)

        if c.kind == rpc_errors.OK:
            result = parsed.get("result")
            problem = validate(result) if validate else None
            if problem is None:
                self._on_success(ep)
                return result
            c = Classified(rpc_errors.RPC_ERROR, message=problem)
        if c.kind == rpc_errors.RANGE_TOO_BIG:
            if range_errors:
                raise _RangeTooBig(c)
            c = Classified(rpc_errors.RPC_ERROR, code=c.code, message=c.message)

        msg = f"{method} {c.kind} from {ep.masked}"
        if status is not None:
            msg += f" (HTTP {status})"
        if c.message:
            msg += f": {self._mask(c.message)[:300]}"
        elif detail:
            msg += f": {self._mask(detail)[:300]}"
        if not c.retryable:
            with self._lock:
                ep.errors[c.kind] += 1
            self._emit(c.kind, msg)
            raise RpcError(c.kind, self._mask(msg), url=ep.masked, code=c.code)
        retry_after = None
        if c.kind in (rpc_errors.RATE_LIMIT, rpc_errors.HTTP_5XX):
            retry_after = parse_retry_after(headers.get("Retry-After") if headers else None)
            if retry_after is None:
                retry_after = c.retry_after_s
        if retry_after is not None:
            msg += f" [Retry-After {retry_after:g}s]"
        self._on_failure(ep, c, retry_after, blame_range and c.kind != rpc_errors.RATE_LIMIT)
        self._emit(c.kind, msg)
        raise _AttemptFailed(ep, c, self._mask(msg))

    def _record_call(self, ep: _Endpoint, method: str, t0: float, elapsed: float) -> None:
        with self._lock:
            ep.calls += 1
            ep.call_times.append(t0)
            ep.latencies.append(elapsed * 1000.0)
            self.total_requests += 1
            self.total_by_method[method] += 1

    def _on_success(self, ep: _Endpoint) -> None:
        with self._lock:
            ep.consecutive_failures = 0
            ep.cooling_until = 0.0
            ep.cooling_wall = None

    def _on_failure(
        self, ep: _Endpoint, c: Classified, retry_after: float | None, blame_range: bool = False
    ) -> None:
        cooled = False
        with self._lock:
            ep.errors[c.kind] += 1
            if c.kind == rpc_errors.RATE_LIMIT:
                ep.http_429 += 1
            if not blame_range:
                ep.consecutive_failures += 1
            wait = self._endpoint_backoff(1 if blame_range else ep.consecutive_failures)
            if retry_after is not None:
                wait = max(wait, retry_after)
            now = time.monotonic()
            ep.not_before = max(ep.not_before, now + wait)
            tired = ep.consecutive_failures >= self.cooldown_after and not blame_range
            if tired and not ep.cooling(now):
                ep.cooling_until = now + max(self.cooldown_s, wait)
                ep.cooling_wall = time.time() + max(self.cooldown_s, wait)
                cooled = True
        if cooled:
            self._emit(
                "cooldown",
                f"{ep.masked} failed {ep.consecutive_failures} times in a row; "
                f"cooling down for {max(self.cooldown_s, wait):.1f}s",
            )

    # ------------------------------------------------------------------ eth_getLogs ranges

    def _fetch_chunk(
        self,
        start: int,
        stop: int,
        address: list[str] | str | None,
        topics: list,
        narrow: int | None = None,
    ) -> tuple[int, list[dict], int | None]:
        """Fetch the logs of one sub-range starting at ``start``; return (end, logs, narrow).

        A sub-range that keeps failing for a non-range reason is bisected (SPLIT_ATTEMPTS per
        level) until a part works or one block is left (RangeFailed). ``narrow`` carries the
        search on from the previous sub-range: the next one starts at twice the span that worked
        rather than at full width, so isolating a bad block costs about two requests per halving
        instead of a fresh search after every success. While bisecting, failures are blamed on
        the range, not the URL (no growing backoff, no cooldown): every URL may fail the same
        blocks.
        """
        searching = narrow is not None  # isolating failing blocks (bisecting)
        cap = narrow or stop - start + 1  # local limit, lowered by bisection after failures
        split_attempts = min(self.max_attempts, SPLIT_ATTEMPTS)
        attempts = split_attempts if searching else self.max_attempts
        key = json.dumps([address, topics], sort_keys=True)
        timeouts = [0]
        failures: Counter[str] = Counter()  # kinds of the failed attempts of this sub-range
        while True:
            last: list[tuple[int, int]] = []

            def attempt(
                ep: _Endpoint, cap: int = cap, last: list = last, searching: bool = searching
            ) -> tuple[int, list]:
                with self._lock:
                    st = ep.state(key)
                while True:
                    span = max(1, min(st.range, ep.range_cap, cap))
                    end = min(stop, start + span - 1)
                    last[:] = [(start, end)]
                    flt: dict[str, Any] = {"fromBlock": hex(start), "toBlock": hex(end)}
                    if address:
                        flt["address"] = address
                    if topics:
                        flt["topics"] = topics
                    try:
                        logs = self._attempt(
                            ep,
                            "eth_getLogs",
                            [flt],
                            validate=_logs_problem,
                            range_errors=True,
                            blame_range=searching,
                        )
                    except _RangeTooBig as exc:
                        self._shrink(ep, st, start, end, exc.classified)
                        continue
                    except RpcError as exc:
                        if end == start or exc.code not in rpc_errors.MAYBE_RANGE_CODES:
                            raise
                        # "Invalid params" over several blocks, in words we do not know: may be
                        # a range limit. A smaller range tells; one block that still fails
                        # raises RangeFailed with the provider's own message.
                        unknown = Classified(
                            rpc_errors.RANGE_TOO_BIG, code=exc.code, message=exc.message
                        )
                        self._shrink(ep, st, start, end, unknown)
                        continue
                    except _AttemptFailed as exc:
                        failures[exc.classified.kind] += 1
                        if exc.classified.kind == rpc_errors.TIMEOUT and end > start:
                            timeouts[0] += 1
                            if timeouts[0] % TIMEOUTS_BEFORE_SPLIT == 0:
                                # A range that keeps timing out may simply be too heavy.
                                with self._lock:
                                    st.range = max(1, (end - start + 1) // 2)
                                    st.block_limit = min(st.block_limit, float(st.range))
                                    st.ceiling = min(st.ceiling, float(end - start))
                                    st.ceiling_density = 0.0
                                self._emit(
                                    "range_split",
                                    f"eth_getLogs [{start}, {end}] timed out "
                                    f"{timeouts[0]} times; now {st.range} blocks",
                                )
                        raise
                    self._on_logs_success(ep, st, key, start, end, logs, cut=end == stop)
                    return end, logs

            try:
                end, logs = self._with_retries(attempt, f"eth_getLogs [{start}, ...]", attempts)
            except RangeFailed:
                raise
            except RpcError as exc:
                a, b = last[0] if last else (start, start)
                # Rate limits alone say nothing about the blocks; any other failure of this
                # sub-range, at any level of the search, does (and so does a search carried on
                # from the sub-range before): a level whose few attempts all met a throttled
                # URL does not end the search.
                blocks_fault = searching or any(k != rpc_errors.RATE_LIMIT for k in failures)
                if b > a and exc.exhausted and blocks_fault:
                    # Keeps failing for a non-range reason: bisect to isolate the bad block(s).
                    cap = max(1, (b - a + 1) // 2)
                    attempts = split_attempts
                    searching = True
                    self._emit(
                        "range_split",
                        f"[{a}, {b}] still failing ({exc.kind}); retrying in {cap}-block parts",
                    )
                    continue
                raise RangeFailed(
                    a, b, exc.kind, self._mask(f"blocks [{a}, {b}]: {exc.message}"), url=exc.url
                ) from None
            if not searching:
                return end, logs, None
            # The search goes on from here at twice the span that worked, back to full width
            # once that reaches max_block_range (the bad blocks are behind us, or next).
            span = end - start + 1
            return end, logs, (span * 2 if span * 2 < self.max_block_range else None)

    def _shrink(self, ep: _Endpoint, st: _RangeState, start: int, end: int, c: Classified) -> None:
        """React to a range-too-big answer for [start, end]; raise RangeFailed at one block.

        The next request uses the provider's suggested range when it gave one (a sub-range from
        ``start``), else the block limit it named, else (for a block-range complaint) the last
        span that worked, else half. A result-count limit (named in the message, or inferred) is
        remembered and later ranges follow the log density; otherwise the soft block limit is
        lowered (and grows back slowly after successes).
        """
        span = end - start + 1
        if span <= 1:
            with self._lock:
                ep.errors["range_split"] += 1
            raise RangeFailed(
                start,
                end,
                rpc_errors.RANGE_TOO_BIG,
                self._mask(f"block {start} alone is too big for {ep.masked}: {c.message[:200]}"),
                url=ep.masked,
            )
        new = span // 2
        how = "halved"
        sug = c.suggested_range
        suggested = False
        if sug is not None and sug[0] == start and start <= sug[1] < end:
            new = sug[1] - start + 1
            how = f"provider suggested [{sug[0]}, {sug[1]}]"
            suggested = True
        elif sug is not None and sug[0] <= sug[1] and sug[1] - sug[0] + 1 < span:
            new = sug[1] - sug[0] + 1
            how = f"provider suggested a {new}-block range"
        elif c.max_range is not None and c.max_range < span:
            new = c.max_range
            how = f"provider limit {c.max_range} blocks"
        elif st.last_ok_span is not None and st.last_ok_span < span and c.cause != "results":
            new = st.last_ok_span
            how = "back to the last range that worked"
        new = max(1, min(new, span - 1))
        with self._lock:
            ep.errors["range_split"] += 1
            st.streak = 0
            if c.max_results is not None:
                ep.results_cap = c.max_results
            elif c.max_range is not None:
                # A named block limit (Alchemy names one beside its result cap: not binding).
                ep.range_cap = max(1, min(ep.range_cap, c.max_range))
            unexplained = not suggested and c.max_range is None and c.max_results is None
            if unexplained and ep.results_cap is None and 0 < span <= st.max_ok_span:
                # A span that worked before fails now: the result set, not the span, is too big.
                # The most logs one request has returned is a safe estimate of the cap.
                if st.max_ok_logs > 0:
                    st.results_est = st.max_ok_logs
            by_results = (c.cause == "results" and ep.results_cap is not None) or (
                unexplained and st.results_est is not None and ep.results_cap is None
            )
            if not by_results:
                st.block_limit = min(st.block_limit, float(new))
                if not suggested and c.max_range is None:
                    st.ceiling = min(st.ceiling, float(span - 1))
                    st.ceiling_density = 0.0
            if suggested:
                if ep.last_suggested_span == new:
                    # The same span suggested twice in a row: likely a block limit (soft).
                    st.block_limit = min(st.block_limit, float(new))
                ep.last_suggested_span = new
            st.block_limit = min(st.block_limit, float(ep.range_cap))
            st.pending_suggestion = new if suggested else None
            st.range = new
        self._emit(
            "range_split",
            f"eth_getLogs [{start}, {end}] too big at {ep.masked} ({c.message[:160]}); "
            f"{how}: now {new} blocks",
        )

    @staticmethod
    def _learn_suggested_limit(ep: _Endpoint, st: _RangeState, span: int) -> None:
        """A suggested range that is a block limit: soft at first, hard when seen twice."""
        if ep.suggested_limit == span:
            ep.range_cap = min(ep.range_cap, span)
        ep.suggested_limit = span
        st.block_limit = min(st.block_limit, float(span))

    def _remember_counts(self, key: str, start: int, end: int, logs: list[dict]) -> list[int]:
        """Append the logs per block of [start, end] to the filter's history; return it."""
        span = end - start + 1
        counts = [0] * span
        try:
            for lg in logs:
                i = int(lg["blockNumber"], 16) - start
                if 0 <= i < span:
                    counts[i] += 1
        except (KeyError, TypeError, ValueError):
            counts = [len(logs) // span] * span  # no usable block numbers: spread evenly
        nxt, history = self._history.get(key, (None, []))
        if nxt != start:
            history = []  # not contiguous (another day): start over
        history.extend(counts)
        del history[: -log_density.WINDOW_BLOCKS]
        self._history[key] = (end + 1, history)
        return history

    def _on_logs_success(
        self,
        ep: _Endpoint,
        st: _RangeState,
        key: str,
        start: int,
        end: int,
        logs: list[dict],
        cut: bool,
    ) -> None:
        """Learn from a successful eth_getLogs; ``cut`` when the asked range ended the request.

        Growth: with a known result cap the range follows the log density forecast from the
        blocks just fetched (engine.rpc.log_density), aiming at RESULT_CAP_TARGET of the cap.
        Otherwise the soft block limit grows by GROW_FACTOR after GROW_AFTER successes in a row
        (bisecting towards a span that failed before, if any), or doubles at once when a request
        returned under a quarter of the most logs a request has returned so far (the dense
        stretch that forced the split is over).
        """
        span = end - start + 1
        n_logs = len(logs)
        with self._lock:
            self._last_range_ep = ep
            st.streak += 1
            cap = ep.results_cap
            if cap is None and st.results_est is not None:
                cap = max(st.results_est, st.max_ok_logs, n_logs)
            history = None
            if cap is not None:
                history = self._remember_counts(key, start, end, logs)
            else:
                self._history.pop(key, None)
            d = n_logs / span
            st.density = d if st.density is None else 0.5 * st.density + 0.5 * d
            if st.pending_suggestion == span and ep.results_cap is not None:
                # The provider's suggestion worked. Far below its result cap, it was a block
                # limit in disguise: a soft one first, a hard one when suggested again.
                if n_logs < RESULT_CAP_TARGET * ep.results_cap:
                    self._learn_suggested_limit(ep, st, span)
            st.pending_suggestion = None
            if cut and span < st.range:
                st.max_ok_logs = max(st.max_ok_logs, n_logs)
                return  # a short request at the end of the asked range says little about size
            st.last_ok_span = span
            st.max_ok_span = max(st.max_ok_span, span)
            if st.ceiling != float("inf"):
                st.ceiling_density = max(st.ceiling_density, d)
                if st.density * 4 < st.ceiling_density:
                    st.ceiling = float("inf")  # the dense stretch that set it is over
            upper = min(float(ep.range_cap), st.ceiling)
            if st.block_limit < upper:
                if n_logs * 4 < st.max_ok_logs and span >= int(st.block_limit):
                    st.block_limit = min(upper, st.block_limit * 2)
                elif st.streak >= GROW_AFTER:
                    if st.ceiling != float("inf"):
                        grown = float((int(st.block_limit) + int(upper) + 1) // 2)
                    else:
                        grown = max(st.block_limit + 1, st.block_limit * GROW_FACTOR)
                    st.block_limit = min(upper, grown)
                    st.streak = 0
            st.max_ok_logs = max(st.max_ok_logs, n_logs)
            limit = int(min(st.block_limit, ep.range_cap, st.ceiling))
            if st.results_est is not None and ep.results_cap is None:
                st.results_est = cap
            target = None
            if cap is not None and history is not None:
                # An inferred cap is the most logs a request returned: safe as it is, while a
                # named cap is aimed at with a margin (RESULT_CAP_TARGET) for the forecast.
                aim = RESULT_CAP_TARGET * cap if ep.results_cap is not None else float(cap)
                target = log_density.blocks_for(history, aim, limit)
            if target is not None:
                st.range = max(1, min(target, int(max(span, st.range) * DENSITY_GROWTH_MAX)))
            else:
                st.range = max(1, limit)


def _logs_problem(result: Any) -> str | None:
    if isinstance(result, list):
        return None
    return f"eth_getLogs returned {type(result).__name__}, not a list"


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return round(sorted_values[idx], 1)


__all__ = ["RpcPool", "RpcError", "RangeFailed", "parse_retry_after"]
