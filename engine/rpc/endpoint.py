"""One RPC URL's policy and stats: backoff, cooldown, Retry-After, round-robin choice, health.

Pure state machines fed with the time (``now``) by the pool; no I/O. An attempt that failed
penalises its URL with an exponential backoff with jitter (``backoff(failures)``) or its
Retry-After, whichever is longer; ``cooldown_after`` failures in a row rest the URL for
``cooldown_s`` (skipped while another URL is usable). Failures while isolating failing blocks
(``blame_range``) are the range's fault: a short backoff, no growing one, no cooldown; rate limits
always count against the URL.
"""

from __future__ import annotations

import email.utils
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from engine.masking import mask_url
from engine.rpc import errors as rpc_errors
from engine.rpc.errors import Classified
from engine.rpc.rate_limit import TokenBucket

#: Longest Retry-After we obey (seconds); longer values are capped (the URL is skipped meanwhile).
MAX_RETRY_AFTER_S = 600.0


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


def retry_after_of(c: Classified, headers: Any) -> float | None:
    """The wait a 429/5xx answer asks for: its Retry-After header, else one named in its body."""
    if c.kind not in (rpc_errors.RATE_LIMIT, rpc_errors.HTTP_5XX):
        return None
    retry_after = parse_retry_after(headers.get("Retry-After") if headers else None)
    return c.retry_after_s if retry_after is None else retry_after


class Endpoint:
    """One URL: its budget, backoff/cooldown state and stats."""

    def __init__(self, index: int, url: str, rps: float) -> None:
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
        # Unix time of the first failure since the last success (429s aside): the URL is down.
        self.failing_since: float | None = None
        # stats
        self.calls = 0  # HTTP requests (a JSON-RPC batch is one)
        self.provider_calls = 0  # calls as providers bill them: each call of a batch counts
        self.block_calls = 0  # eth_getBlockByNumber calls (each of a batch)
        self.budget_wait_s = 0.0  # seconds spent waiting for a budget token (the ETA's input)
        self.errors: Counter[str] = Counter()
        self.http_429 = 0
        self.latencies: deque[float] = deque(maxlen=512)
        self.call_times: deque[float] = deque(maxlen=4096)

    def cooling(self, now: float) -> bool:
        return self.cooling_until > now

    def record_call(self, t0: float, elapsed: float, method: str = "", n: int = 1) -> None:
        """One HTTP request of ``n`` JSON-RPC calls (a batch) to ``method``."""
        self.calls += 1
        self.provider_calls += n
        if method == "eth_getBlockByNumber":
            self.block_calls += n
        self.call_times.append(t0)
        self.latencies.append(elapsed * 1000.0)

    def on_success(self) -> None:
        self.failing_since = None
        self.consecutive_failures = 0
        self.cooling_until = 0.0
        self.cooling_wall = None

    def on_failure(
        self,
        kind: str,
        retry_after: float | None,
        blame_range: bool,
        backoff: Callable[[int], float],
        cooldown_after: int,
        cooldown_s: float,
        now: float,
        wall: float,
    ) -> float | None:
        """Penalise this URL for a failed attempt; the cooldown started (seconds), if any."""
        self.errors[kind] += 1
        if kind == rpc_errors.RATE_LIMIT:
            self.http_429 += 1
        if not blame_range:
            self.consecutive_failures += 1
            if kind != rpc_errors.RATE_LIMIT and self.failing_since is None:
                self.failing_since = wall
        wait = backoff(1 if blame_range else self.consecutive_failures)
        if retry_after is not None:
            wait = max(wait, retry_after)
        self.not_before = max(self.not_before, now + wait)
        tired = self.consecutive_failures >= cooldown_after and not blame_range
        if tired and not self.cooling(now):
            rest = max(cooldown_s, wait)
            self.cooling_until = now + rest
            self.cooling_wall = wall + rest
            return rest
        return None

    def health(self, now: float, current_range: int) -> dict[str, Any]:
        """Calls, calls/s (last 10 s), errors by kind, 429s, latency, range, cooldown."""
        recent = [t for t in self.call_times if now - t <= 10.0]
        window = 10.0
        if recent and self.call_times and now - self.call_times[0] < 10.0:
            window = max(1.0, now - self.call_times[0])
        lat = sorted(self.latencies)
        return {
            "index": self.index,  # position in the URL list (two keys may mask alike)
            "url": self.masked,
            "calls": self.calls,
            "provider_calls": self.provider_calls,
            "block_calls": self.block_calls,
            "calls_per_s": round(len(recent) / window, 2),
            "errors": dict(self.errors),
            "http_429": self.http_429,
            "p50_ms": percentile(lat, 0.50),
            "p95_ms": percentile(lat, 0.95),
            "current_range": current_range,
            "cooling_until": self.cooling_wall if self.cooling(now) else None,
            "failing_since": self.failing_since,
        }


def choose(endpoints: Sequence[Endpoint], rr: int, now: float) -> tuple[Endpoint, float]:
    """Next URL from position ``rr`` that is usable now, else the one free soonest; its wait.

    URLs cooling down are skipped while another is usable."""
    n = len(endpoints)
    order = [endpoints[(rr + i) % n] for i in range(n)]
    live = [ep for ep in order if not ep.cooling(now)] or order
    ready = [ep for ep in live if ep.not_before <= now]
    ep = ready[0] if ready else min(live, key=lambda e: e.not_before)
    return ep, max(0.0, ep.not_before - now)


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return round(sorted_values[idx], 1)
