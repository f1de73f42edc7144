"""`backfill-console plan`: what the configured backfill will cost, from a bounded sample.

Before a long run, ``estimate(cfg)`` spends at most ``max_requests`` JSON-RPC calls (every call
of a batch counted, at most ``rpc.requests_per_second``) on the first URL:

1. Traits: two ``eth_getLogs`` over ``rpc.max_block_range`` blocks of the first sampled day, with
   the workers' last and first filters: a block-range cap answers with an error that
   ``engine.rpc.errors`` reads, and so does a result cap when the span holds more logs than the
   cap ("none seen" otherwise: then it does not bind at that density); whether logs carry
   ``blockTimestamp``.
2. Sample days spread over the window (at most ``SAMPLE_DAYS``, first and last included): each
   day's exact block range (the day search the workers use, one block per call), then
   ``SAMPLE_WINDOWS`` windows of ``SAMPLE_BLOCKS`` blocks at 1/8, 3/8, 5/8 and 7/8 of the day (an
   intraday cycle averages out), fetched with the workers' filters and decoded as they decode.

Per sampled day it derives rows, ``eth_getLogs`` calls (per filter: the day's blocks over the
block span the caps allow; when a result cap binds instead, ``CAP_OVERHEAD`` times the day's logs
over the cap (the measured ratio of the pool's calls to the offline minimum, bench/rpc_calls.py)
plus the day's first request, often refused), day-search calls (a shard's first day about
twice), block calls (without ``blockTimestamp``: one per block with logs), then interpolates
between sampled days for the window's totals: rows,
calls, hours at ``rpc.requests_per_second`` per URL, store size. It warns when block calls
dominate.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

from engine.config import Config
from engine.days import BlockClock, day_start_ts
from engine.decode import DecodeFilter, decode_logs
from engine.masking import mask_secrets, mask_url
from engine.rpc import errors as rpc_errors
from engine.rpc import jsonrpc
from engine.rpc.http_transport import HttpConnection, TransportError
from engine.rpc.rate_limit import TokenBucket
from engine.worker import BATCH_SEARCH_MIN_RPS, queries_for

#: Default most requests the plan spends.
MAX_REQUESTS = 200
SAMPLE_DAYS = 4
SAMPLE_WINDOWS = 4
SAMPLE_BLOCKS = 200
#: Share of a result cap the pool aims each request at (engine.rpc.range_control).
CAP_TARGET = 0.9
#: eth_getLogs calls over the greedy minimum when a result cap sets the span (bench/rpc_calls:
#: 1.20-1.23 under a 10,000-result cap with bursts); plus one refused first request a day.
CAP_OVERHEAD = 1.2
#: Day-search calls per day (docs/INTERNALS.md): one block per call, or batched probes.
SEARCH_CALLS = 7
SEARCH_CALLS_BATCHED = 35
#: Bytes on disk per stored row (compressed), by table. ERC20: the field figure of the team this
#: is built for (387M rows in 18 GiB); the others scaled by their columns.
BYTES_PER_ROW = {"erc20": 50, "erc1155": 75, "resolutions": 200, "registrations": 150}
#: Block calls above this share of all calls draw a warning.
BLOCK_CALLS_WARN = 0.5


class PlanError(Exception):
    """The plan could not sample the chain (message names what failed; secrets masked)."""


@dataclass
class Traits:
    block_timestamp: bool | None = None  # None: no log seen
    max_block_range: int | None = None  # a block-range cap the provider named or showed
    max_results: int | None = None  # a result cap the provider named
    notes: list[str] = field(default_factory=list)


@dataclass
class DayEstimate:
    day: int
    blocks: int
    rows: dict[str, float]
    getlogs_calls: float
    search_calls: float
    block_calls: float

    @property
    def total_calls(self) -> float:
        return self.getlogs_calls + self.search_calls + self.block_calls

    @property
    def total_rows(self) -> float:
        return sum(self.rows.values())


@dataclass
class Sampled:
    """What one sampled day showed: blocks, and per sampled block the rows and logs."""

    day: int
    blocks: int
    sample_blocks: int
    rows: dict[str, int]
    logs: list[int]  # logs returned per filter
    blocks_with_logs: int


@dataclass
class Plan:
    traits: Traits
    samples: list[Sampled]
    sampled: list[DayEstimate]
    days: list[DayEstimate]  # every day of the window (interpolated between samples)
    requests: int
    max_requests: int
    rps: float
    urls: int
    warnings: list[str] = field(default_factory=list)

    def total(self, attr: str) -> float:
        return sum(getattr(d, attr) for d in self.days)

    @property
    def rows(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for d in self.days:
            for k, v in d.rows.items():
                out[k] = out.get(k, 0.0) + v
        return out

    @property
    def hours(self) -> float:
        return self.total("total_calls") / (self.rps * self.urls) / 3600.0

    @property
    def store_bytes(self) -> float:
        return sum(BYTES_PER_ROW[k] * v for k, v in self.rows.items())


class _Prober:
    """Single JSON-RPC calls to one URL within a budget of calls and a rate (counted, masked)."""

    def __init__(self, url: str, rps: float, timeout_s: float, max_requests: int) -> None:
        self.url = url
        self.masked = mask_url(url)
        self.conn = HttpConnection(url, min(timeout_s, 10.0), timeout_s)
        self.bucket = TokenBucket(rps)
        self.max_requests = max_requests
        self.requests = 0
        self._ids = itertools.count(1)

    def left(self) -> int:
        return self.max_requests - self.requests

    def call(self, method: str, params: list, attempts: int = 3) -> tuple[Any, Any]:
        """(result, None) or (None, Classified range_too_big); PlanError otherwise."""
        last = ""
        for attempt in range(attempts):
            if self.requests >= self.max_requests:
                raise PlanError(f"request budget of {self.max_requests} spent")
            self.bucket.acquire(1)
            self.requests += 1
            rid = next(self._ids)
            try:
                resp = self.conn.post(jsonrpc.encode(method, params, rid))
                c, result = jsonrpc.interpret(resp.status, resp.body, rid, None, self._mask)
            except TransportError as exc:
                c = rpc_errors.Classified(rpc_errors.CONN, message=str(exc))
                result = None
            if c.kind == rpc_errors.OK:
                return result, None
            if c.kind == rpc_errors.RANGE_TOO_BIG:
                return None, c
            last = f"{c.kind}: {c.message[:200]}"
            if not c.retryable:
                break
            time.sleep(min(5.0, c.retry_after_s or 0.5 * 2**attempt))
        raise PlanError(self._mask(f"{method} at {self.masked} failed: {last}"))

    def _mask(self, text: str) -> str:
        return mask_secrets(text, [self.url])

    def block_ts(self, number: int) -> int:
        block, _ = self.call("eth_getBlockByNumber", [hex(number), False])
        if not isinstance(block, dict):
            raise PlanError(f"block {number} not found at {self.masked}")
        return int(block["timestamp"], 16)

    def logs(self, lo: int, hi: int, address: list[str], topics: list) -> tuple[Any, Any]:
        flt = {"fromBlock": hex(lo), "toBlock": hex(hi), "address": address, "topics": topics}
        return self.call("eth_getLogs", [flt])


def sample_days(days: int, n: int = SAMPLE_DAYS) -> list[int]:
    """Up to n days spread evenly over [0, days), first and last included."""
    if days <= n:
        return list(range(days))
    return sorted({round(i * (days - 1) / (n - 1)) for i in range(n)})


def _filter(cfg: Config) -> DecodeFilter:
    c = cfg.contracts
    return DecodeFilter(
        erc20_tokens=frozenset(c.erc20_tokens),
        erc20_counterparties=frozenset(c.erc20_counterparties),
        erc1155=frozenset(c.erc1155),
        exchanges=frozenset(c.exchanges),
    )


def _learn(traits: Traits, c: rpc_errors.Classified, span: int) -> None:
    if c.max_results is not None:
        traits.max_results = c.max_results
    elif c.max_range is not None and c.cause != "results":
        traits.max_block_range = c.max_range
    elif c.suggested_range is not None:
        a, b = c.suggested_range
        traits.notes.append(f"a {span}-block request was refused; {b - a + 1} blocks suggested")
        if c.cause == "blocks":
            traits.max_block_range = b - a + 1
    else:
        traits.notes.append(f"a {span}-block request was refused: {c.message[:120]}")
        if c.cause == "blocks":
            traits.max_block_range = span // 2


def estimate(cfg: Config, max_requests: int = MAX_REQUESTS) -> Plan:
    """Sample the configured window and estimate the run (see the module docstring)."""
    if not cfg.rpc.urls:
        raise PlanError("no rpc.urls configured: the devchain needs no estimate")
    r = cfg.rpc
    probe = _Prober(r.urls[0], r.requests_per_second, r.timeout_s, max_requests)
    traits = Traits()
    filt = _filter(cfg)
    queries = queries_for(filt)
    head_hex, _ = probe.call("eth_blockNumber", [])
    safe = int(head_hex, 16) - cfg.backfill.confirmations
    clock = BlockClock(probe.block_ts)
    start = cfg.backfill.start_date
    days = cfg.backfill.days
    samples: list[Sampled] = []
    lo = 0
    ranges: dict[int, tuple[int, int]] = {}
    for day in sample_days(days):
        t0 = day_start_ts(start, day)
        if clock.ts(safe) < t0 + 86_400:
            traits.notes.append(f"day {day} is not final yet: not sampled")
            continue
        first, last = clock.day_range(t0, t0 + 86_400, lo, safe)
        ranges[day] = (first, last)
        lo = last + 1
    if not ranges:
        raise PlanError("no day of the window is final yet: nothing to sample")
    # Traits: the configured span with two filters (a block cap; a result cap if it binds).
    day0 = min(ranges)
    first, last = ranges[day0]
    span = max(1, min(r.max_block_range, last - first + 1))
    for address, topics in (queries[-1], queries[0]):
        got, c = probe.logs(first, first + span - 1, address, topics)
        if c is not None:
            _learn(traits, c, span)
            if traits.max_block_range is not None and traits.max_block_range < span:
                span = traits.max_block_range
        elif got:
            traits.block_timestamp = "blockTimestamp" in got[0]
    width = max(1, min(SAMPLE_BLOCKS, span))
    for day, (first, last) in sorted(ranges.items()):
        n_blocks = last - first + 1
        rows = {"erc20": 0, "erc1155": 0, "resolutions": 0, "registrations": 0}
        logs_per_filter = [0] * len(queries)
        with_logs: set[int] = set()
        sampled = 0
        for k in range(SAMPLE_WINDOWS):
            if n_blocks <= 0 or probe.left() < len(queries):
                break
            w = min(width, n_blocks)
            a = first + int((2 * k + 1) * n_blocks / (2 * SAMPLE_WINDOWS)) - w // 2
            a = max(first, min(a, last - w + 1))
            b = a + w - 1
            found = _window(probe, traits, filt, queries, day, a, b)
            if found is None:
                break
            b, window_rows, window_logs, blocks = found
            for table, n in window_rows.items():
                rows[table] += n
            for q, n in enumerate(window_logs):
                logs_per_filter[q] += n
            with_logs |= blocks
            sampled += b - a + 1
        if sampled:
            samples.append(Sampled(day, n_blocks, sampled, rows, logs_per_filter, len(with_logs)))
    if not samples:
        raise PlanError(f"request budget of {max_requests} spent before any sample")
    sampled_est = [_day_estimate(cfg, traits, s) for s in samples]
    plan = Plan(
        traits,
        samples,
        sampled_est,
        _interpolate(sampled_est, days),
        probe.requests,
        max_requests,
        r.requests_per_second,
        len(r.urls),
    )
    total = plan.total("total_calls")
    block_calls = plan.total("block_calls")
    if total and block_calls / total > BLOCK_CALLS_WARN:
        hours_with = (total - block_calls) / (plan.rps * plan.urls) / 3600.0
        plan.warnings.append(
            f"block calls dominate: {block_calls:,.0f} of {total:,.0f} calls "
            f"({block_calls / total:.0%}) "
            f"go to eth_getBlockByNumber because this provider's logs lack blockTimestamp; "
            f"a provider whose logs carry it would take {_hours(hours_with)} instead of "
            f"{_hours(plan.hours)}"
        )
    return plan


def _window(
    probe: _Prober,
    traits: Traits,
    filt: DecodeFilter,
    queries: list[tuple[list[str], list]],
    day: int,
    a: int,
    b: int,
) -> tuple[int, dict[str, int], list[int], set[int]] | None:
    """Fetch blocks [a, b] with every filter and decode them: (b, rows, logs per filter, blocks
    with logs). A refused request halves the window and starts it over (every filter sees the
    same blocks); None when the budget cannot cover it."""
    while True:
        if probe.left() < len(queries):
            return None
        rows = {"erc20": 0, "erc1155": 0, "resolutions": 0, "registrations": 0}
        logs: list[int] = []
        blocks: set[int] = set()
        seen: set[tuple[str, int]] = set()
        refused = None
        for address, topics in queries:
            got, refused = probe.logs(a, b, address, topics)
            if refused is not None:
                break
            logs.append(len(got))
            if got and traits.block_timestamp is None:
                traits.block_timestamp = "blockTimestamp" in got[0]
            have = {int(x["blockNumber"], 16) for x in got}
            blocks |= have
            d = decode_logs(got, day, filt, dict.fromkeys(have, 0))
            for table, found in d.by_table().items():
                if table == "erc20":
                    found = [x for x in found if (x[0], x[1]) not in seen]
                    seen.update((x[0], x[1]) for x in found)
                rows[table] += len(found)
        if refused is None:
            return b, rows, logs, blocks
        _learn(traits, refused, b - a + 1)
        if b == a:
            raise PlanError(f"block {a} alone is refused: {refused.message[:160]}")
        b = a + (b - a) // 2


def _day_estimate(cfg: Config, traits: Traits, s: Sampled) -> DayEstimate:
    scale = s.blocks / s.sample_blocks
    span_cap = min(cfg.rpc.max_block_range, traits.max_block_range or cfg.rpc.max_block_range)
    calls = 0.0
    for n_logs in s.logs:
        logs = n_logs * scale
        per_span = logs * span_cap / max(1, s.blocks)
        if traits.max_results is not None and per_span > CAP_TARGET * traits.max_results:
            # The result cap sets the spans: the pool's calls over the greedy minimum, and the
            # day's first request (its forecast starts afresh each day), often refused.
            calls += CAP_OVERHEAD * math.ceil(logs / traits.max_results) + 1
        else:
            calls += math.ceil(s.blocks / span_cap)
    shards = max(1, min(cfg.backfill.shards, cfg.backfill.days))
    worker_rps = cfg.rpc.requests_per_second / shards
    search: float = SEARCH_CALLS_BATCHED if worker_rps >= BATCH_SEARCH_MIN_RPS else SEARCH_CALLS
    # A shard's first day costs about twice (no block rate known yet): spread over the days.
    search *= 1 + shards / cfg.backfill.days
    block_calls = 0.0 if traits.block_timestamp else s.blocks_with_logs * scale
    return DayEstimate(
        s.day,
        s.blocks,
        {k: v * scale for k, v in s.rows.items()},
        calls,
        float(search),
        block_calls,
    )


def _interpolate(sampled: list[DayEstimate], days: int) -> list[DayEstimate]:
    """One estimate per day: sampled days as measured, others linear between the nearest."""
    by_day = {d.day: d for d in sampled}
    keys = sorted(by_day)
    out = []
    for day in range(days):
        if day in by_day:
            out.append(by_day[day])
            continue
        after = next((k for k in keys if k > day), keys[-1])
        before = next((k for k in reversed(keys) if k < day), keys[0])
        a, b = by_day[before], by_day[after]
        w = 0.0 if after == before else (day - before) / (after - before)

        def mix(x: float, y: float, w: float = w) -> float:
            return x + (y - x) * w

        out.append(
            DayEstimate(
                day,
                round(mix(a.blocks, b.blocks)),
                {k: mix(a.rows[k], b.rows[k]) for k in a.rows},
                mix(a.getlogs_calls, b.getlogs_calls),
                mix(a.search_calls, b.search_calls),
                mix(a.block_calls, b.block_calls),
            )
        )
    return out


def _hours(h: float) -> str:
    return f"{h:,.1f} h" if h >= 1 else f"{h * 60:,.1f} min"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"  # pragma: no cover


def render(plan: Plan, start_date: dt.date) -> str:
    """The plan as the operator reads it."""
    t = plan.traits
    ts = {True: "yes", False: "NO (one eth_getBlockByNumber per block with logs)", None: "?"}
    lines = [
        f"sampled with {plan.requests} of at most {plan.max_requests} requests "
        f"(days {', '.join(str(s.day) for s in plan.samples)}; "
        f"{SAMPLE_WINDOWS} windows of <= {SAMPLE_BLOCKS} blocks each)",
        f"provider: blockTimestamp in logs: {ts[t.block_timestamp]}; "
        f"block-range cap: {t.max_block_range or 'none seen'}; "
        f"result cap: {t.max_results or 'none seen'}",
        *[f"  note: {n}" for n in t.notes],
        "",
        f"{'day':>5} {'date':10} {'blocks':>8} {'rows':>10} {'getLogs':>8} {'search':>7} "
        f"{'blocks?':>8} {'calls':>8}",
    ]
    for d in plan.sampled:
        date = start_date + dt.timedelta(days=d.day)
        lines.append(
            f"{d.day:>5} {date.isoformat():10} {d.blocks:>8,} {d.total_rows:>10,.0f} "
            f"{d.getlogs_calls:>8,.0f} {d.search_calls:>7,.0f} {d.block_calls:>8,.0f} "
            f"{d.total_calls:>8,.0f}"
        )
    n = len(plan.days)
    rows = plan.rows
    lines += [
        "",
        f"window: {n} day(s), {plan.total('blocks'):,.0f} blocks (days between samples "
        "interpolated)",
        "  rows:        "
        + ", ".join(f"{k} {v:,.0f}" for k, v in rows.items() if v)
        + f" (total {sum(rows.values()):,.0f}, {sum(rows.values()) / n:,.0f}/day)",
        f"  getLogs:     {plan.total('getlogs_calls'):,.0f} calls "
        f"({plan.total('getlogs_calls') / n:,.0f}/day)",
        f"  day search:  {plan.total('search_calls'):,.0f} calls",
        f"  block calls: {plan.total('block_calls'):,.0f} "
        f"({plan.total('block_calls') / n:,.0f}/day)",
        f"  requests:    {plan.total('total_calls'):,.0f} in all "
        f"({plan.total('total_calls') / n:,.0f}/day)",
        f"  time:        {_hours(plan.hours)} at {plan.rps:g} requests/s per URL x "
        f"{plan.urls} URL(s) (the budget, not the provider's speed)",
        f"  store:       ~{_bytes(plan.store_bytes)} on disk",
    ]
    lines += [f"WARNING: {w}" for w in plan.warnings]
    return "\n".join(lines)
