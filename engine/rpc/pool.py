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
  most 4x per request; a filter fetching blocks another filter has fetched follows that filter's
  per-block counts (``engine.rpc.follow_profile``). Otherwise a soft block limit grows slowly after
  successes (+10% after 10 in a row, bisecting towards a span that failed; doubling when requests
  come back far emptier than before), never above a limit the provider named (or suggested twice) or
  ``max_block_range``. A sub-range that times out twice is halved; one that keeps failing for other
  reasons is bisected down to a single block (the search goes on from one sub-range to the next, and
  its failures do not count against the URL), so ``RangeFailed`` names the smallest range that could
  not be fetched. Never an empty success. ``iter_logs`` yields each sub-range as it arrives (no
  fixed chunks needed by the caller).
- **Where the rules live**: URL policy (backoff, cooldown, Retry-After, choice) in
  ``engine.rpc.endpoint``, request bodies and answer classification in ``engine.rpc.jsonrpc``,
  range sizing and failing-block bisection in ``engine.rpc.range_control``: all pure, table-tested.
  This module does the I/O, the retry loop (tenacity) and the locking.
- **Health**: per URL calls, calls/s, errors by kind, 429s, p50/p95 latency, current range and
  cooling-until, with URLs masked (``engine.masking``). Every message passed to ``on_event`` is
  masked too.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from engine.masking import mask_secrets
from engine.rpc import errors as rpc_errors
from engine.rpc import jsonrpc
from engine.rpc.endpoint import Endpoint, choose, parse_retry_after, retry_after_of
from engine.rpc.errors import Classified
from engine.rpc.http_transport import HttpConnection, TransportError, TransportTimeout
from engine.rpc.range_control import TIMEOUTS_BEFORE_SPLIT, BlockSearch, RangeController

__all__ = ["RangeFailed", "RpcError", "RpcPool", "parse_retry_after"]

EventCallback = Callable[[str, str], None]

#: A sleep longer than this is cut into slices, with a "retry_wait" event per slice (heartbeats).
SLEEP_SLICE_S = 2.0


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

    def __init__(self, ep: Endpoint, classified: Classified, message: str) -> None:
        super().__init__(message)
        self.ep = ep
        self.classified = classified
        self.message = message


class _RangeTooBig(Exception):
    def __init__(self, classified: Classified) -> None:
        super().__init__(classified.message)
        self.classified = classified


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
        self._endpoints = [Endpoint(i, u, requests_per_second) for i, u in enumerate(urls)]
        self._ranges = RangeController(len(self._endpoints), self.max_block_range)
        self._all_secrets = sorted(
            {s for ep in self._endpoints for s in ep.secrets}, key=len, reverse=True
        )
        self._lock = threading.Lock()
        self._rr = 0
        self._local = threading.local()
        self._ids = itertools.count(1)
        self._backoff = wait_exponential_jitter(
            multiplier=self.backoff_initial_s, max=self.backoff_max_s, jitter=self.backoff_initial_s
        )
        self.total_requests = 0
        self.total_by_method: Counter[str] = Counter()

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
            return self._ranges.current_range()

    @current_range.setter
    def current_range(self, value: int) -> None:
        with self._lock:
            self._ranges.set_range(value)

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

        def attempt(ep: Endpoint) -> Any:
            params = [[hex(n), False] for n in numbers]
            return self._attempt(ep, "eth_getBlockByNumber", params, validate=check, batch=True)

        blocks = self._with_retries(attempt, "eth_getBlockByNumber batch", self.max_attempts)
        return [int(b["timestamp"], 16) for b in blocks]

    def block_timestamp(self, number: int) -> int:
        """Timestamp of block ``number`` (eth_getBlockByNumber, no transactions)."""

        def attempt(ep: Endpoint) -> Any:
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
        self,
        from_block: int,
        to_block: int,
        address: list[str] | str | None,
        topics: list,
        raw: bool = False,
    ) -> Iterator[tuple[int, int, Any]]:
        """Like get_logs, but yields ``(lo, hi, logs)`` after each successful request, in order.

        The sub-ranges are contiguous and cover [from_block, to_block] exactly. Iterating a whole
        day this way (rather than in fixed chunks) lets the adaptive range use every request
        fully while the caller still sees progress per request. With ``raw`` each yields a
        ``jsonrpc.RawLogs`` (the result array's bytes) instead of a list of dicts.
        """
        cur = int(from_block)
        to_block = int(to_block)
        narrow: int | None = None  # while isolating failing blocks: the span that worked last
        while cur <= to_block:
            end, logs, narrow = self._fetch_chunk(cur, to_block, address, topics, narrow, raw)
            yield cur, end, logs
            cur = end + 1

    def health(self) -> list[dict]:
        """Per URL: calls, calls/s (last 10 s), errors by kind, 429s, latency, range, cooldown."""
        now = time.monotonic()
        with self._lock:
            return [ep.health(now, self._ranges.current_range(ep.index)) for ep in self._endpoints]

    def budget_totals(self) -> tuple[int, float]:
        """Provider calls so far and seconds spent waiting for a budget token, over all URLs."""
        with self._lock:
            eps = list(self._endpoints)
        return sum(ep.provider_calls for ep in eps), sum(ep.budget_wait_s for ep in eps)

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

    def _choose(self, advance: bool) -> tuple[Endpoint, float]:
        """Next URL in round-robin order that is usable now, else the one free soonest."""
        with self._lock:
            ep, wait = choose(self._endpoints, self._rr, time.monotonic())
            if advance:
                self._rr = (ep.index + 1) % len(self._endpoints)
            return ep, wait

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

    def _with_retries(self, fn: Callable[[Endpoint], Any], what: str, attempts: int) -> Any:
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

    def _connection(self, ep: Endpoint) -> HttpConnection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        c = conns.get(ep.index)
        if c is None:
            c = conns[ep.index] = HttpConnection(ep.url, min(self.timeout_s, 10.0), self.timeout_s)
        return c

    def _attempt(
        self,
        ep: Endpoint,
        method: str,
        params: list,
        validate: Callable[[Any], str | None] | None = None,
        range_errors: bool = False,
        batch: bool = False,
        blame_range: bool = False,
        raw: bool = False,
    ) -> Any:
        """POST one request to one URL. Returns the result or raises _AttemptFailed /
        _RangeTooBig (only when ``range_errors``) / RpcError (not retryable).

        With ``blame_range`` (isolating failing blocks) a failure other than a rate limit does
        not count against the URL: a short backoff, no growing one, no cooldown.

        With ``batch``, ``params`` is a list of params lists sent as one JSON-RPC batch; the
        result is the list of results in the same order (any failed element fails the attempt).

        With ``raw`` (eth_getLogs) the result is a ``jsonrpc.RawLogs``: the answer's result array
        as bytes, its logs never parsed when the answer has the plain shape.
        """
        # Providers count every call of a batch; the wait tells the ETA how tight the budget is.
        ep.budget_wait_s += ep.bucket.acquire(len(params) if batch else 1)
        req_id = next(self._ids)
        ids = [next(self._ids) for _ in params] if batch else None
        body = jsonrpc.encode(method, params, req_id, ids)
        conn = self._connection(ep)
        status: int | None = None
        headers: Any = {}
        t0 = time.monotonic()
        result: Any = None
        try:
            resp = conn.post(body)
            status = resp.status
            headers = resp.headers
        except TransportTimeout as exc:
            c = Classified(rpc_errors.TIMEOUT, message=f"timed out after {self.timeout_s:g}s")
            detail = str(exc)
        except TransportError as exc:
            c = Classified(rpc_errors.CONN, message=str(exc).split(":")[0])
            detail = str(exc)
        else:
            detail = ""
            fast = jsonrpc.raw_logs_result(status, resp.body, req_id) if raw else None
            if fast is not None:
                c, result = Classified(rpc_errors.OK), fast
            else:
                c, result = jsonrpc.interpret(status, resp.body, req_id, ids, self._mask)
                if raw and c.kind == rpc_errors.OK and isinstance(result, list):
                    result = jsonrpc.RawLogs.of(result)
        elapsed = time.monotonic() - t0
        with self._lock:
            ep.record_call(t0, elapsed, method, len(params) if batch else 1)
            self.total_requests += 1
            self.total_by_method[method] += 1

        if c.kind == rpc_errors.OK:
            problem = validate(result) if validate else None
            if problem is None:
                with self._lock:
                    ep.on_success()
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
        retry_after = retry_after_of(c, headers)
        if retry_after is not None:
            msg += f" [Retry-After {retry_after:g}s]"
        self._on_failure(ep, c, retry_after, blame_range and c.kind != rpc_errors.RATE_LIMIT)
        self._emit(c.kind, msg)
        raise _AttemptFailed(ep, c, self._mask(msg))

    def _on_failure(
        self, ep: Endpoint, c: Classified, retry_after: float | None, blame_range: bool = False
    ) -> None:
        with self._lock:
            cooled = ep.on_failure(
                c.kind,
                retry_after,
                blame_range,
                self._endpoint_backoff,
                self.cooldown_after,
                self.cooldown_s,
                time.monotonic(),
                time.time(),
            )
        if cooled is not None:
            self._emit(
                "cooldown",
                f"{ep.masked} failed {ep.consecutive_failures} times in a row; "
                f"cooling down for {cooled:.1f}s",
            )

    # ------------------------------------------------------------------ eth_getLogs ranges

    def _fetch_chunk(
        self,
        start: int,
        stop: int,
        address: list[str] | str | None,
        topics: list,
        narrow: int | None = None,
        raw: bool = False,
    ) -> tuple[int, Any, int | None]:
        """Fetch the logs of one sub-range starting at ``start``; return (end, logs, narrow).

        A sub-range that keeps failing for a non-range reason is bisected (``BlockSearch``)
        until a part works or one block is left (RangeFailed). ``narrow`` carries the search on
        from the previous sub-range: the next one starts at twice the span that worked rather
        than at full width, so isolating a bad block costs about two requests per halving
        instead of a fresh search after every success. While bisecting, failures are blamed on
        the range, not the URL (no growing backoff, no cooldown): every URL may fail the same
        blocks.
        """
        search = BlockSearch.begin(start, stop, narrow, self.max_attempts)
        key = json.dumps([address, topics], sort_keys=True)
        timeouts = [0]
        while True:
            last: list[tuple[int, int]] = []

            def attempt(
                ep: Endpoint,
                cap: int = search.cap,
                last: list = last,
                searching: bool = search.searching,
            ) -> tuple[int, list]:
                while True:
                    with self._lock:
                        end = self._ranges.end_for(ep.index, key, start, stop, cap)
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
                            raw=raw,
                        )
                    except _RangeTooBig as exc:
                        self._shrink(ep, key, start, end, exc.classified)
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
                        self._shrink(ep, key, start, end, unknown)
                        continue
                    except _AttemptFailed as exc:
                        search.failed(exc.classified.kind)
                        if exc.classified.kind == rpc_errors.TIMEOUT and end > start:
                            timeouts[0] += 1
                            if timeouts[0] % TIMEOUTS_BEFORE_SPLIT == 0:
                                # A range that keeps timing out may simply be too heavy.
                                with self._lock:
                                    span = self._ranges.on_timeout(ep.index, key, start, end)
                                self._emit(
                                    "range_split",
                                    f"eth_getLogs [{start}, {end}] timed out "
                                    f"{timeouts[0]} times; now {span} blocks",
                                )
                        raise
                    with self._lock:
                        self._ranges.on_success(ep.index, key, start, end, logs, cut=end == stop)
                    return end, logs

            try:
                end, logs = self._with_retries(
                    attempt, f"eth_getLogs [{start}, ...]", search.attempts
                )
            except RangeFailed:
                raise
            except RpcError as exc:
                a, b = last[0] if last else (start, start)
                if search.bisect(a, b, exc.exhausted):
                    # Keeps failing for a non-range reason: bisect to isolate the bad block(s).
                    self._emit(
                        "range_split",
                        f"[{a}, {b}] still failing ({exc.kind}); "
                        f"retrying in {search.cap}-block parts",
                    )
                    continue
                raise RangeFailed(
                    a, b, exc.kind, self._mask(f"blocks [{a}, {b}]: {exc.message}"), url=exc.url
                ) from None
            return end, logs, search.carry(end - start + 1, self.max_block_range)

    def _shrink(self, ep: Endpoint, key: str, start: int, end: int, c: Classified) -> None:
        """React to a range-too-big answer for [start, end] (RangeController.on_too_big);
        raise RangeFailed when it was a single block."""
        with self._lock:
            ep.errors["range_split"] += 1
            shrink = self._ranges.on_too_big(ep.index, key, start, end, c)
        if shrink is None:
            raise RangeFailed(
                start,
                end,
                rpc_errors.RANGE_TOO_BIG,
                self._mask(f"block {start} alone is too big for {ep.masked}: {c.message[:200]}"),
                url=ep.masked,
            )
        self._emit(
            "range_split",
            f"eth_getLogs [{start}, {end}] too big at {ep.masked} ({c.message[:160]}); "
            f"{shrink.how}: now {shrink.span} blocks",
        )


def _logs_problem(result: Any) -> str | None:
    if isinstance(result, list | jsonrpc.RawLogs):
        return None
    return f"eth_getLogs returned {type(result).__name__}, not a list"
