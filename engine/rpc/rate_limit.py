"""A thread-safe token bucket: the per-URL request budget of one process.

``TokenBucket(rate, burst)`` refills ``rate`` tokens per second up to ``burst``; ``acquire(n)``
takes ``n`` tokens (one per call of a JSON-RPC batch: providers count each), sleeping until they
are available, and returns the seconds it waited. A rate <= 0 means
unlimited. The clock and sleep are injectable for tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """Token bucket limiting calls to ``rate`` per second with bursts of up to ``burst``."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def _reserve(self, n: float = 1.0) -> float:
        """Take n tokens (possibly going negative) and return how long to wait for them."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self.rate

    def acquire(self, n: int = 1) -> float:
        """Block until n tokens are available; return the seconds spent waiting."""
        if self.rate <= 0:
            return 0.0
        wait = self._reserve(float(max(1, n)))
        if wait > 0:
            self._sleep(wait)
        return wait
