"""eth_getLogs range control, as pure code: the span of the next request from what came back.

No I/O and no clocks: the pool feeds a ``RangeController`` the answers of each URL (successes
with their logs, range-too-big answers, timeouts) and asks it for the next span. ``BlockSearch``
is the bisection that isolates failing blocks within one sub-range. Both are table-tested
(tests/test_range_control.py) on the cases the end-to-end tests found.

Rules (the pool's module docstring tells them from the operator's side):
- Start at ``max_block_range``. A range-too-big answer moves to the provider's suggested range
  (a sub-range from ``fromBlock``), else the block limit it names, else back to the last span
  that worked (block-range complaints), else half. A named block limit is a hard cap per URL; a
  suggested span seen twice becomes one.
- A result cap (named, or inferred: a span that worked before fails now) makes later ranges
  follow the log density forecast (``engine.rpc.log_density``) to RESULT_CAP_TARGET of a named
  cap (all of an inferred one), growing at most DENSITY_GROWTH_MAX per request. When another
  filter has already fetched the blocks ahead (the worker fetches a day's filters one after the
  other), its per-block counts, scaled by the ratio of the two filters' logs, size the span
  instead (``engine.rpc.follow_profile``), bursts included; never again a span refused from the
  same start.
- Otherwise a soft block limit grows by GROW_FACTOR after GROW_AFTER successes in a row,
  bisecting towards a span that failed, or doubles when a request comes back far emptier than
  the fullest one so far. A sub-range that times out TIMEOUTS_BEFORE_SPLIT times is halved.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from engine.rpc import errors as rpc_errors
from engine.rpc import follow_profile, log_density
from engine.rpc.errors import Classified

#: Growth of the eth_getLogs range: +GROW_FACTOR after GROW_AFTER successes in a row.
GROW_AFTER = 10
GROW_FACTOR = 1.10
#: Share of a known result cap aimed at per request when sizing ranges by log density.
RESULT_CAP_TARGET = 0.9
#: Largest growth factor of a density-sized range from one request to the next.
DENSITY_GROWTH_MAX = 4.0
#: Timeouts of one eth_getLogs sub-range (on any URL) after which its range is halved.
TIMEOUTS_BEFORE_SPLIT = 2
#: Per-block log counts kept per filter: the forecast window, and a day for other filters to follow.
PROFILE_BLOCKS = 60_000
#: Attempts per bisection level once a sub-range has exhausted its attempts and gets split.
SPLIT_ATTEMPTS = 2


class FilterRange:
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
        self.refused_at: int | None = None  # start of the last request refused as too big


class UrlRanges:
    """One URL's provider limits (shared by its filters) and its per-filter ranges."""

    def __init__(self, max_block_range: int) -> None:
        self.max_block_range = max_block_range
        self.range_cap = max_block_range  # hard block limit (named by the provider, or confirmed)
        self.results_cap: int | None = None  # result-count limit named by the provider
        self.suggested_limit: int | None = None  # block limit learned from a suggestion
        self.last_suggested_span: int | None = None
        self.states: dict[str, FilterRange] = {}

    def state(self, key: str) -> FilterRange:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = FilterRange(self.range_cap)
        return st

    @property
    def current_range(self) -> int:
        """The widest range any filter uses here (a sparse filter's; denser ones split)."""
        if not self.states:
            return self.range_cap
        return min(self.range_cap, max(st.range for st in self.states.values()))


@dataclass(frozen=True)
class Shrink:
    """What a range-too-big answer changed: the next span and how it was chosen."""

    span: int
    how: str


class RangeController:
    """Ranges of every URL of a pool, and the per-filter log history that sizes capped ranges.

    Not thread-safe by itself: the pool calls it under its lock.
    """

    def __init__(self, n_urls: int, max_block_range: int) -> None:
        self.max_block_range = int(max_block_range)
        self.urls = [UrlRanges(self.max_block_range) for _ in range(n_urls)]
        self.last_url = 0  # the URL of the last successful eth_getLogs
        # Per filter: (next block, logs per block of the contiguous stretch fetched before it),
        # kept while a result cap sizes the ranges (log density is the filter's, not the URL's).
        self._history: dict[str, tuple[int, list[int]]] = {}
        # (follower, leader) -> follower logs per leader log, last measured (follow_profile)
        self._ratios: dict[tuple[str, str], float] = {}

    def current_range(self, url: int | None = None) -> int:
        """The widest range any filter uses at ``url`` (default: the URL used last)."""
        return self.urls[self.last_url if url is None else url].current_range

    def set_range(self, value: int) -> None:
        """Force every filter's next span to ``value`` (within each URL's cap)."""
        value = max(1, min(int(value), self.max_block_range))
        for u in self.urls:
            for st in u.states.values():
                st.range = min(value, u.range_cap)
                st.block_limit = float(st.range)

    def end_for(self, url: int, key: str, start: int, stop: int, cap: int) -> int:
        """Last block of the next request at ``url`` for filter ``key`` from ``start``."""
        u = self.urls[url]
        st = u.state(key)
        span = max(1, min(st.range, u.range_cap, cap))
        results = u.results_cap if u.results_cap is not None else st.results_est
        if results is not None and st.refused_at != start:
            limit = max(1, min(u.range_cap, cap, int(st.block_limit)))
            follow = self._follow_span(key, start, results, limit)
            if follow is not None:
                span = follow
        return min(stop, start + span - 1)

    def _follow_span(self, key: str, start: int, results: int, limit: int) -> int | None:
        """The span from another filter's counts over the blocks ahead (None: none has them)."""
        own_next, own = self._history.get(key, (None, []))
        own_first = start - len(own) if own_next == start else start
        best: tuple[int, str, list[int], int] | None = None
        for other, (nxt, counts) in self._history.items():
            first = nxt - len(counts)
            if other != key and first <= start < nxt and (best is None or nxt > best[0]):
                best = (nxt, other, counts, first)
        if best is None:
            return None
        _nxt, other, counts, first = best
        lo = max(first, own_first)
        r = follow_profile.ratio(
            own[lo - own_first :] if own_next == start else [], counts[lo - first : start - first]
        )
        if r is not None:
            self._ratios[(key, other)] = r
        else:
            r = self._ratios.get((key, other))
        if r is None:
            return None
        unit = follow_profile.event_size(own) if own_next == start else 1.0
        return follow_profile.span(counts[start - first :], r, results, unit, limit)

    def on_timeout(self, url: int, key: str, start: int, end: int) -> int:
        """A sub-range that keeps timing out may be too heavy: halve it. The new span."""
        st = self.urls[url].state(key)
        st.range = max(1, (end - start + 1) // 2)
        st.block_limit = min(st.block_limit, float(st.range))
        st.ceiling = min(st.ceiling, float(end - start))
        st.ceiling_density = 0.0
        return st.range

    def on_too_big(self, url: int, key: str, start: int, end: int, c: Classified) -> Shrink | None:
        """React to a range-too-big answer for [start, end]; None when it was one block.

        The next request uses the provider's suggested range when it gave one (a sub-range from
        ``start``), else the block limit it named, else (for a block-range complaint) the last
        span that worked, else half. A result-count limit (named in the message, or inferred) is
        remembered and later ranges follow the log density; otherwise the soft block limit is
        lowered (and grows back slowly after successes).
        """
        span = end - start + 1
        if span <= 1:
            return None
        u = self.urls[url]
        st = u.state(key)
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
        st.streak = 0
        st.refused_at = start
        if c.max_results is not None:
            u.results_cap = c.max_results
        elif c.max_range is not None:
            # A named block limit (Alchemy names one beside its result cap: not binding).
            u.range_cap = max(1, min(u.range_cap, c.max_range))
        unexplained = not suggested and c.max_range is None and c.max_results is None
        if unexplained and u.results_cap is None and 0 < span <= st.max_ok_span:
            # A span that worked before fails now: the result set, not the span, is too big.
            # The most logs one request has returned is a safe estimate of the cap.
            if st.max_ok_logs > 0:
                st.results_est = st.max_ok_logs
        by_results = (c.cause == "results" and u.results_cap is not None) or (
            unexplained and st.results_est is not None and u.results_cap is None
        )
        if not by_results:
            st.block_limit = min(st.block_limit, float(new))
            if not suggested and c.max_range is None:
                st.ceiling = min(st.ceiling, float(span - 1))
                st.ceiling_density = 0.0
        if suggested:
            if u.last_suggested_span == new:
                # The same span suggested twice in a row: likely a block limit (soft).
                st.block_limit = min(st.block_limit, float(new))
            u.last_suggested_span = new
        st.block_limit = min(st.block_limit, float(u.range_cap))
        st.pending_suggestion = new if suggested else None
        st.range = new
        return Shrink(new, how)

    def on_success(
        self, url: int, key: str, start: int, end: int, logs: list[dict[str, Any]], cut: bool
    ) -> None:
        """Learn from a successful eth_getLogs; ``cut`` when the asked range ended the request.

        Growth: with a known result cap the range follows the log density forecast from the
        blocks just fetched (engine.rpc.log_density), aiming at RESULT_CAP_TARGET of the cap.
        Otherwise the soft block limit grows by GROW_FACTOR after GROW_AFTER successes in a row
        (bisecting towards a span that failed before, if any), or doubles at once when a request
        returned under a quarter of the most logs a request has returned so far (the dense
        stretch that forced the split is over).
        """
        u = self.urls[url]
        st = u.state(key)
        span = end - start + 1
        n_logs = len(logs)
        self.last_url = url
        st.streak += 1
        cap = u.results_cap
        if cap is None and st.results_est is not None:
            cap = max(st.results_est, st.max_ok_logs, n_logs)
        history = None
        if cap is not None:
            history = self._remember_counts(key, start, end, logs)
        else:
            self._history.pop(key, None)
        d = n_logs / span
        st.density = d if st.density is None else 0.5 * st.density + 0.5 * d
        if st.pending_suggestion == span and u.results_cap is not None:
            # The provider's suggestion worked. Far below its result cap, it was a block
            # limit in disguise: a soft one first, a hard one when suggested again.
            if n_logs < RESULT_CAP_TARGET * u.results_cap:
                _learn_suggested_limit(u, st, span)
        st.pending_suggestion = None
        st.refused_at = None
        if cut and span < st.range:
            st.max_ok_logs = max(st.max_ok_logs, n_logs)
            return  # a short request at the end of the asked range says little about size
        st.last_ok_span = span
        st.max_ok_span = max(st.max_ok_span, span)
        if st.ceiling != float("inf"):
            st.ceiling_density = max(st.ceiling_density, d)
            if st.density * 4 < st.ceiling_density:
                st.ceiling = float("inf")  # the dense stretch that set it is over
        upper = min(float(u.range_cap), st.ceiling)
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
        limit = int(min(st.block_limit, u.range_cap, st.ceiling))
        if st.results_est is not None and u.results_cap is None:
            st.results_est = cap
        target = None
        if cap is not None and history is not None:
            # An inferred cap is the most logs a request returned: safe as it is, while a
            # named cap is aimed at with a margin (RESULT_CAP_TARGET) for the forecast.
            aim = RESULT_CAP_TARGET * cap if u.results_cap is not None else float(cap)
            target = log_density.blocks_for(history, aim, limit)
        if target is not None:
            st.range = max(1, min(target, int(max(span, st.range) * DENSITY_GROWTH_MAX)))
        else:
            st.range = max(1, limit)

    def _remember_counts(
        self, key: str, start: int, end: int, logs: list[dict[str, Any]]
    ) -> list[int]:
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
        del history[:-PROFILE_BLOCKS]
        self._history[key] = (end + 1, history)
        return history


def _learn_suggested_limit(u: UrlRanges, st: FilterRange, span: int) -> None:
    """A suggested range that is a block limit: soft at first, hard when seen twice."""
    if u.suggested_limit == span:
        u.range_cap = min(u.range_cap, span)
    u.suggested_limit = span
    st.block_limit = min(st.block_limit, float(span))


@dataclass
class BlockSearch:
    """Isolating failing blocks in one sub-range: bisect while attempts keep failing.

    A sub-range whose attempts are exhausted is halved (``split_attempts`` tries per level) until
    a part works or one block is left. Rate limits alone say nothing about the blocks; any other
    failure of this sub-range, at any level, does, and so does a search carried on from the
    sub-range before (``narrow``): a level whose few attempts all met a throttled URL does not end
    the search. After a success while searching, the search goes on from the next sub-range at
    twice the span that worked (back to full width once that reaches ``max_block_range``).
    """

    cap: int  # local span limit, lowered by bisection
    attempts: int  # attempts for the current level
    split_attempts: int
    searching: bool
    failures: Counter[str] = field(default_factory=Counter)

    @classmethod
    def begin(cls, start: int, stop: int, narrow: int | None, max_attempts: int) -> BlockSearch:
        split = min(max_attempts, SPLIT_ATTEMPTS)
        searching = narrow is not None
        return cls(
            cap=narrow or stop - start + 1,
            attempts=split if searching else max_attempts,
            split_attempts=split,
            searching=searching,
        )

    def failed(self, kind: str) -> None:
        """One attempt of this sub-range failed with ``kind``."""
        self.failures[kind] += 1

    def bisect(self, a: int, b: int, exhausted: bool) -> bool:
        """[a, b] failed after its attempts: True (and halve) when bisecting should go on."""
        blocks_fault = self.searching or any(k != rpc_errors.RATE_LIMIT for k in self.failures)
        if b > a and exhausted and blocks_fault:
            self.cap = max(1, (b - a + 1) // 2)
            self.attempts = self.split_attempts
            self.searching = True
            return True
        return False

    def carry(self, span: int, max_block_range: int) -> int | None:
        """The ``narrow`` for the next sub-range after [.., ..] of ``span`` blocks worked."""
        if not self.searching:
            return None
        return span * 2 if span * 2 < max_block_range else None
