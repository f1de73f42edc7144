"""RPC health per URL: the workers' latest reports merged into one row per URL, run totals kept.

Each worker reports its RpcPool.health() every few seconds (cumulative for that process). The
book keeps each shard's latest report, folds a gone process's last report into run totals
(restarts, scale-downs) and merges everything into the RpcHealth rows the console shows.
"""

from __future__ import annotations

import threading
from typing import Any

from engine.status import RpcHealth

#: Key of the gone worker processes' RPC counts among the shards' reports (never a live shard).
RETIRED_REPORTS = -1

#: Separates a masked URL from its position in rpc.urls when two URLs mask alike ("... #2").
RPC_LABEL_TAG = " #"


def merge_rpc_health(
    by_shard: dict[int, list[dict]], live: set[int] | None = None
) -> list[RpcHealth]:
    """One row per RPC URL from the workers' RpcPool.health() reports, in rpc.urls order.

    Rows are keyed by the URL's position in the URL list ("index", the same in every worker of a
    console), not by the masked URL: two keys at one provider mask to the same text but are
    separate budgets, backoffs and cooldowns. A report without an index (an older worker) is
    keyed by its masked URL. Labels that still collide get RPC_LABEL_TAG + the 1-based position.

    Counts (calls, 429s, errors by kind) add up over every report kept, finished shards included:
    they are the run's history. What describes the URL now comes from the shards in ``live``
    (None: all): calls/s (a stopped worker makes no calls; its last report's rate is stale),
    cooling-until, and latency and range (those two fall back to every report when no live worker
    reported the URL, so the last known values stay visible after the workers are done).

    p95 is the worst worker's p95 (a tail: the slowest worker is the one to look at). p50 is the
    mean of the workers' p50s weighted by their calls: workers hit the same URL with the same kind
    of requests, so this approximates the median of all their calls, and a just-restarted worker
    with a handful of calls cannot swing it the way a max or a plain mean would.
    """
    # Key: (0, index) for a report with its position in the URL list, else (1, masked url).
    rows: dict[tuple[int, int | str], RpcHealth] = {}
    # Per row: (live, p50, p95, calls, current_range) of each report, for the "now" values.
    samples: dict[tuple[int, int | str], list[tuple[bool, Any, Any, int, Any]]] = {}
    # Per row: failing_since of each live report that made calls (None: that worker got answers).
    failing: dict[tuple[int, int | str], list[float | None]] = {}
    for shard, healths in by_shard.items():
        is_live = live is None or shard in live
        for h in healths:
            url = str(h.get("url", "?"))
            idx = h.get("index")
            key: tuple[int, int | str] = (0, int(idx)) if idx is not None else (1, url)
            agg = rows.get(key)
            if agg is None:
                agg = rows[key] = RpcHealth(url=url)
            calls = int(h.get("calls", 0))
            agg.calls += calls
            agg.http_429 += int(h.get("http_429", 0))
            agg.provider_calls += int(h.get("provider_calls", calls))
            agg.block_calls += int(h.get("block_calls", 0))
            for k, v in (h.get("errors") or {}).items():
                agg.errors[k] = agg.errors.get(k, 0) + int(v)
            samples.setdefault(key, []).append(
                (is_live, h.get("p50_ms"), h.get("p95_ms"), calls, h.get("current_range"))
            )
            if is_live and calls > 0:
                since = h.get("failing_since")
                failing.setdefault(key, []).append(None if since is None else float(since))
            if is_live:
                agg.calls_per_s += float(h.get("calls_per_s", 0.0) or 0.0)
                cu = h.get("cooling_until")
                if cu:
                    agg.cooling_until = max(agg.cooling_until or 0.0, float(cu))
    for key, agg in rows.items():
        reports = samples[key]
        now = [r for r in reports if r[0]]
        lat = [r for r in now if r[1] is not None or r[2] is not None] or [
            r for r in reports if r[1] is not None or r[2] is not None
        ]
        p95s = [float(r[2]) for r in lat if r[2] is not None]
        agg.p95_ms = max(p95s) if p95s else None
        p50s = [(float(r[1]), r[3]) for r in lat if r[1] is not None]
        weight = sum(n for _, n in p50s)
        if weight > 0:
            agg.p50_ms = sum(p50 * n for p50, n in p50s) / weight
        elif p50s:
            agg.p50_ms = sum(p50 for p50, _ in p50s) / len(p50s)
        spans = [int(r[4]) for r in now if r[4] is not None] or [
            int(r[4]) for r in reports if r[4] is not None
        ]
        agg.current_range = min(spans) if spans else None  # the narrowest any worker uses
        # Failing only when every live worker that calls it fails; since the latest of them.
        fs = failing.get(key, [])
        if fs and all(f is not None for f in fs):
            agg.failing_since = max(f for f in fs if f is not None)
    order = sorted(rows, key=lambda k: (k[0], k[1] if k[0] == 0 else 0))
    label_count: dict[str, int] = {}
    for key in order:
        label_count[rows[key].url] = label_count.get(rows[key].url, 0) + 1
    nth: dict[str, int] = {}
    out = []
    for key in order:
        agg = rows[key]
        if label_count[agg.url] > 1:
            nth[agg.url] = nth.get(agg.url, 0) + 1
            tag = int(key[1]) + 1 if key[0] == 0 else nth[agg.url]
            agg.url = f"{agg.url}{RPC_LABEL_TAG}{tag}"
        out.append(agg)
    return out


class RpcHealthBook:
    """The workers' latest RPC reports by shard, and the counts of processes that are gone."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_shard: dict[int, list[dict]] = {}
        self.pid: dict[int, int | None] = {}  # the process each shard's report came from
        # Counts of worker processes that are gone (restarted, scaled away), per URL: the panel's
        # calls, 429s and errors stay totals of the run rather than of the current processes.
        self.retired: dict[object, dict] = {}

    def report(self, shard: int, pid: int | None, health: list[dict]) -> None:
        """A worker's latest report (cumulative for its process) replaces its last one."""
        with self.lock:
            if self.pid.get(shard, pid) != pid:
                # A new process of this shard: the old one's last report is final.
                self._retire(self.by_shard.get(shard, []))
            self.pid[shard] = pid
            self.by_shard[shard] = list(health)

    def drop_shards_from(self, first: int) -> None:
        """Shards ``first`` and above (scaled away) will not report again: their counts move to
        the retired totals (their stale rates and latencies go). A DONE shard's report is kept as
        it is (merge_rpc_health counts it as history and takes no rate from it)."""
        with self.lock:
            for k in [k for k in self.by_shard if k >= first]:
                self._retire(self.by_shard.pop(k))
                self.pid.pop(k, None)

    def rows(self, live: set[int] | None = None) -> list[RpcHealth]:
        """Per URL health over the workers' latest reports and the gone processes' counts."""
        with self.lock:
            reports = dict(self.by_shard)
            if self.retired:
                # Counts only (no rate, latency, range or cooldown), under a key no shard has.
                reports[RETIRED_REPORTS] = [dict(t) for t in self.retired.values()]
                live = set(self.by_shard) if live is None else live
        return merge_rpc_health(reports, live)

    def _retire(self, report: list[dict]) -> None:
        """Fold the counts of a gone process's last report into retired (lock held)."""
        for h in report:
            key = h.get("index", h.get("url"))
            tot = self.retired.get(key)
            if tot is None:
                tot = {
                    "url": h.get("url"),
                    "calls": 0,
                    "provider_calls": 0,
                    "block_calls": 0,
                    "http_429": 0,
                    "errors": {},
                }
                if h.get("index") is not None:
                    tot["index"] = h["index"]
                self.retired[key] = tot
            tot["calls"] += int(h.get("calls", 0))
            tot["http_429"] += int(h.get("http_429", 0))
            tot["provider_calls"] += int(h.get("provider_calls", h.get("calls", 0)))
            tot["block_calls"] += int(h.get("block_calls", 0))
            errors = tot["errors"]
            for kind, n in (h.get("errors") or {}).items():
                errors[kind] = errors.get(kind, 0) + int(n)
