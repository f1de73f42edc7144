"""engine.rpc.range_control, endpoint and jsonrpc as pure code: spans, bisection, URL policy.

The cases are the ones the end-to-end RPC tests found (tests/test_rpc_pool.py,
tests/test_rpc_faults_e2e.py), replayed here without a node: provider hints, named and opaque
limits, result caps followed by the density forecast through a burst, failing blocks isolated
while another URL rate-limits, backoff and cooldown of a URL.
"""

from __future__ import annotations

import pytest

from engine.rpc import errors as rpc_errors
from engine.rpc import jsonrpc
from engine.rpc.endpoint import Endpoint, choose, retry_after_of
from engine.rpc.errors import Classified
from engine.rpc.range_control import (
    GROW_AFTER,
    RESULT_CAP_TARGET,
    BlockSearch,
    RangeController,
)

KEY = '[["0xabc"], []]'


def logs_at(blocks: list[int]) -> list[dict]:
    return [{"blockNumber": hex(b)} for b in blocks]


def too_big(**kw) -> Classified:
    return Classified(rpc_errors.RANGE_TOO_BIG, **kw)


# ---------------------------------------------------------------- a range-too-big answer


@pytest.mark.parametrize(
    "classified, start, end, last_ok, want_span, want_how",
    [
        # the provider's suggested sub-range from fromBlock
        (too_big(suggested_range=(100, 149)), 100, 1099, None, 50, "provider suggested [100, 149]"),
        # a suggestion that is not a sub-range from fromBlock: its width
        (too_big(suggested_range=(0, 299)), 100, 1099, None, 300, "a 300-block range"),
        # a named block limit
        (too_big(max_range=500), 100, 1099, None, 500, "provider limit 500 blocks"),
        # no number: back to the last span that worked
        (too_big(), 100, 1099, 400, 400, "back to the last range that worked"),
        # no number, nothing worked yet: half
        (too_big(), 100, 1099, None, 500, "halved"),
        # a result-count complaint never goes back to the last span (the density decides)
        (too_big(cause="results", max_results=10_000), 100, 1099, 400, 500, "halved"),
    ],
)
def test_range_too_big_picks_the_next_span(classified, start, end, last_ok, want_span, want_how):
    rc = RangeController(1, 2000)
    if last_ok is not None:
        rc.on_success(0, KEY, 0, last_ok - 1, [], cut=False)
    shrink = rc.on_too_big(0, KEY, start, end, classified)
    assert shrink is not None
    assert shrink.span == want_span
    assert want_how in shrink.how
    assert rc.end_for(0, KEY, start, 10**9, 10**9) == start + want_span - 1


def test_one_block_too_big_has_no_smaller_span():
    rc = RangeController(1, 2000)
    assert rc.on_too_big(0, KEY, 7, 7, too_big()) is None


def test_a_named_block_limit_is_a_hard_cap_for_every_filter_of_that_url_only():
    rc = RangeController(2, 2000)
    rc.on_too_big(0, KEY, 0, 1999, too_big(max_range=500))
    assert rc.end_for(0, "other filter", 0, 10**9, 10**9) == 499
    assert rc.end_for(1, KEY, 0, 10**9, 10**9) == 1999  # providers differ per URL
    for _ in range(5 * GROW_AFTER):  # successes never grow past a named limit
        rc.on_success(0, KEY, 0, 499, [], cut=False)
    assert rc.current_range(0) == 500


def test_a_suggestion_far_below_the_result_cap_is_a_block_limit_hard_when_seen_twice():
    """Alchemy-style: a result cap plus a suggested range that is really a block limit."""
    rc = RangeController(1, 2000)
    hint = dict(cause="results", max_results=10_000)
    rc.on_too_big(0, KEY, 0, 1999, too_big(suggested_range=(0, 299), **hint))
    st = rc.urls[0].state(KEY)
    assert st.block_limit == 2000  # a result cap: the block limit is not lowered
    rc.on_success(0, KEY, 0, 299, logs_at([5]), cut=False)  # far below the cap
    assert st.block_limit == 300 and rc.urls[0].range_cap == 2000  # soft at first
    rc.on_too_big(0, KEY, 300, 2299, too_big(suggested_range=(300, 599), **hint))
    rc.on_success(0, KEY, 300, 599, logs_at([305]), cut=False)
    assert rc.urls[0].range_cap == 300  # the same span again: hard


def test_an_opaque_limit_lowers_the_soft_limit_which_grows_back_towards_the_failed_span():
    """'invalid params' over many blocks, no number: halve, then grow back, never past it."""
    rc = RangeController(1, 2000)
    shrink = rc.on_too_big(0, KEY, 0, 1999, too_big(code=-32602, message="invalid params"))
    assert shrink is not None and shrink.span == 1000
    cur, spans = 1000, []
    for _ in range(20 * GROW_AFTER):
        end = rc.end_for(0, KEY, cur, 10**9, 10**9)
        rc.on_success(0, KEY, cur, end, logs_at([cur]), cut=False)
        spans.append(end - cur + 1)
        cur = end + 1
    assert max(spans) < 2000  # bisects towards the span that failed, stays below it
    assert spans[-1] > 1500


def test_a_sparse_answer_after_a_split_doubles_the_range():
    rc = RangeController(1, 2000)
    rc.on_success(0, KEY, 0, 999, logs_at(list(range(1000))), cut=False)  # dense
    rc.on_too_big(0, KEY, 1000, 2999, too_big())
    st = rc.urls[0].state(KEY)
    assert st.block_limit == 1000
    rc.on_success(0, KEY, 1000, 1999, logs_at([1000]), cut=False)  # far emptier
    assert st.block_limit == 1999  # doubled, up to just below the span that failed


def test_a_result_cap_sizes_ranges_by_density_and_follows_a_burst():
    """Named 10,000-result cap; 5 logs per block, then a burst of 50 per block."""
    cap = 10_000
    rc = RangeController(1, 2000)
    rc.on_too_big(0, KEY, 0, 1999, too_big(cause="results", max_results=cap))
    cur = 0
    spans = []
    for block_rate in [5] * 8 + [50] * 8:
        end = rc.end_for(0, KEY, cur, 10**9, 10**9)
        blocks = [b for b in range(cur, end + 1) for _ in range(block_rate)]
        if len(blocks) > cap:  # the provider refuses; the controller shrinks
            rc.on_too_big(0, KEY, cur, end, too_big(cause="results", max_results=cap))
            continue
        rc.on_success(0, KEY, cur, end, logs_at(blocks), cut=False)
        spans.append((block_rate, end - cur + 1, len(blocks)))
        cur = end + 1
    quiet = [s for r, s, _ in spans if r == 5][-1]
    dense = [s for r, s, _ in spans if r == 50][-1]
    # about RESULT_CAP_TARGET * cap / rate blocks, less a margin for few events
    assert 0.9 * RESULT_CAP_TARGET * cap / 5 <= quiet <= RESULT_CAP_TARGET * cap / 5
    assert 0.5 * RESULT_CAP_TARGET * cap / 50 <= dense <= RESULT_CAP_TARGET * cap / 50
    assert all(n <= cap for _, _, n in spans)
    last_fill = spans[-1][2] / cap
    assert 0.6 < last_fill <= RESULT_CAP_TARGET + 0.05


def test_a_span_that_worked_failing_later_infers_a_result_cap():
    rc = RangeController(1, 2000)
    rc.on_success(0, KEY, 0, 999, logs_at([0] * 300), cut=False)
    rc.on_too_big(0, KEY, 1000, 1999, too_big())  # same span fails, no number: results
    st = rc.urls[0].state(KEY)
    assert st.results_est == 300


def test_timeouts_halve_the_range():
    rc = RangeController(1, 2000)
    assert rc.on_timeout(0, KEY, 0, 1999) == 1000
    assert rc.end_for(0, KEY, 0, 10**9, 10**9) == 999


def test_set_range_applies_within_each_urls_cap():
    rc = RangeController(2, 2000)
    rc.on_too_big(0, KEY, 0, 1999, too_big(max_range=100))
    rc.on_success(1, KEY, 0, 1999, [], cut=False)
    rc.set_range(5000)
    assert rc.end_for(0, KEY, 0, 10**9, 10**9) == 99
    assert rc.end_for(1, KEY, 0, 10**9, 10**9) == 1999


# ---------------------------------------------------------------- isolating failing blocks


@pytest.mark.parametrize(
    "narrow, failures, exhausted, span, want_bisect",
    [
        (
            [None, [rpc_errors.RATE_LIMIT, rpc_errors.RATE_LIMIT], True, 100, False]
        ),  # 429s say nothing of blocks
        (
            [None, [rpc_errors.RATE_LIMIT, rpc_errors.HTTP_5XX], True, 100, True]
        ),  # one other failure does
        ([None, [rpc_errors.HTTP_5XX], False, 100, False]),  # not exhausted: a permanent error
        ([None, [rpc_errors.HTTP_5XX], True, 1, False]),  # one block left: RangeFailed
        # a search carried on from the sub-range before goes on through a throttled level
        ([50, [rpc_errors.RATE_LIMIT, rpc_errors.RATE_LIMIT], True, 50, True]),
    ],
)
def test_bisection_goes_on_only_when_the_blocks_are_at_fault(
    narrow, failures, exhausted, span, want_bisect
):
    search = BlockSearch.begin(1000, 2999, narrow, max_attempts=8)
    for kind in failures:
        search.failed(kind)
    assert search.bisect(1000, 1000 + span - 1, exhausted) is want_bisect
    if want_bisect:
        assert search.cap == max(1, span // 2)
        assert search.attempts == 2 and search.searching


def isolate(bad: int, stop: int, carry: bool) -> tuple[tuple[int, int] | None, int]:
    """Drive BlockSearch over [0, stop] where block ``bad`` always fails; (range, requests)."""
    requests, narrow, cur = 0, None, 0
    while cur <= stop:
        search = BlockSearch.begin(cur, stop, narrow, max_attempts=8)
        while True:
            end = min(stop, cur + search.cap - 1)
            if cur <= bad <= end:
                requests += search.attempts
                for _ in range(search.attempts):
                    search.failed(rpc_errors.HTTP_5XX)
                if search.bisect(cur, end, exhausted=True):
                    continue
                return (cur, end), requests
            requests += 1
            narrow = search.carry(end - cur + 1, 2000) if carry else None
            cur = end + 1
            break
    return None, requests


@pytest.mark.parametrize("bad", [0, 153, 1153, 1999])
def test_a_failing_block_is_isolated_and_the_carried_search_costs_fewer_requests(bad):
    found, requests = isolate(bad, 1999, carry=True)
    assert found == (bad, bad)
    fresh_found, fresh_requests = isolate(bad, 1999, carry=False)
    assert fresh_found == (bad, bad)
    # the first level's 8 attempts, then a few requests per halving (11 halvings of 2,000)
    assert requests <= 8 + 4 * 11
    if bad > 0:  # a search started afresh after every success costs about twice as much
        assert requests < 0.6 * fresh_requests


def test_after_the_search_the_span_doubles_back_to_full_width():
    search = BlockSearch.begin(0, 9999, narrow=None, max_attempts=8)
    assert search.carry(2000, 2000) is None  # not searching
    search.failed(rpc_errors.HTTP_5XX)
    search.bisect(0, 1999, exhausted=True)
    assert search.carry(250, 2000) == 500
    assert search.carry(1000, 2000) is None  # reached max_block_range


# ---------------------------------------------------------------- one URL's policy


def test_backoff_then_cooldown_after_failures_in_a_row_and_reset_on_success():
    ep = Endpoint(0, "http://127.0.0.1:1/KEYKEYKEYKEYKEYKEYKEYKEY", rps=100)
    backoff = [0.5 * 2**i for i in range(10)].__getitem__
    cooled = [
        ep.on_failure(rpc_errors.HTTP_5XX, None, False, lambda n: backoff(n - 1), 5, 30.0, 100.0, 0)
        for _ in range(5)
    ]
    assert cooled[:4] == [None] * 4 and cooled[4] == 30.0
    assert ep.cooling(120.0) and not ep.cooling(131.0)
    ep.on_success()
    assert ep.consecutive_failures == 0 and not ep.cooling(100.0)


def test_failures_while_bisecting_blame_the_range_but_429s_blame_the_url():
    ep = Endpoint(0, "http://127.0.0.1:1", rps=100)
    for _ in range(10):
        ep.on_failure(rpc_errors.HTTP_5XX, None, True, lambda n: 0.5 * n, 5, 30.0, 0.0, 0.0)
    assert ep.consecutive_failures == 0 and not ep.cooling(0.0)
    assert ep.not_before == pytest.approx(0.5)  # a short backoff only


@pytest.mark.parametrize(
    "kind, header, body_after, want",
    [
        (rpc_errors.RATE_LIMIT, "7", None, 7.0),
        (rpc_errors.RATE_LIMIT, None, 3.0, 3.0),
        (rpc_errors.HTTP_5XX, "99999", None, 600.0),  # capped
        (rpc_errors.TIMEOUT, "7", None, None),  # only 429/5xx carry one
    ],
)
def test_retry_after_from_header_or_body(kind, header, body_after, want):
    headers = {"Retry-After": header} if header else {}
    assert retry_after_of(Classified(kind, retry_after_s=body_after), headers) == want


def test_retry_after_is_obeyed_when_longer_than_the_backoff():
    ep = Endpoint(0, "http://127.0.0.1:1", rps=100)
    ep.on_failure(rpc_errors.RATE_LIMIT, 12.0, False, lambda n: 0.5, 5, 30.0, 100.0, 0.0)
    assert ep.not_before == 112.0 and ep.http_429 == 1


def test_choose_round_robin_skips_backing_off_and_cooling_urls():
    eps = [Endpoint(i, f"http://127.0.0.1:{i + 1}", rps=100) for i in range(3)]
    assert choose(eps, 1, now=10.0) == (eps[1], 0.0)
    eps[1].not_before = 15.0
    assert choose(eps, 1, now=10.0) == (eps[2], 0.0)
    eps[2].cooling_until = 50.0
    eps[0].not_before = 12.0
    assert choose(eps, 1, now=10.0) == (eps[0], 2.0)  # none ready: the one free soonest


# ---------------------------------------------------------------- one JSON-RPC exchange


@pytest.mark.parametrize(
    "status, body, ids, want_kind, want_result",
    [
        (200, b'{"jsonrpc":"2.0","id":1,"result":"0x10"}', None, rpc_errors.OK, "0x10"),
        (200, b'{"jsonrpc":"2.0","id":2,"result":"0x10"}', None, rpc_errors.BAD_JSON, None),
        (200, b'{"jsonrpc":"2.0","id":"1","result":[]}', None, rpc_errors.OK, []),
        (200, b'[{"id":3,"result":"a"},{"id":2,"result":"b"}]', [2, 3], rpc_errors.OK, ["b", "a"]),
        (200, b'[{"id":2,"result":"b"}]', [2, 3], rpc_errors.BAD_JSON, None),
        (200, b'{"id":1,"res', None, rpc_errors.BAD_JSON, None),
        (200, b"[1, 2]", None, rpc_errors.BAD_JSON, None),
        (429, b"Too Many Requests", None, rpc_errors.RATE_LIMIT, None),
    ],
)
def test_interpret(status, body, ids, want_kind, want_result):
    c, result = jsonrpc.interpret(status, body, 1, ids, mask=lambda t: t)
    assert c.kind == want_kind
    assert result == want_result


def test_a_batch_error_element_fails_the_batch():
    body = b'[{"id":2,"result":"b"},{"id":3,"error":{"code":-32000,"message":"header not found"}}]'
    c, result = jsonrpc.interpret(200, body, 1, [2, 3], mask=lambda t: t)
    assert c.kind != rpc_errors.OK and result is None


def test_text_answers_are_masked_before_they_are_cut():
    secret = "K" * 40
    body = ("x" * 290 + secret).encode()
    c, _ = jsonrpc.interpret(503, body, 1, None, mask=lambda t: t.replace(secret, "***"))
    assert secret[:5] not in c.message


def test_encode_single_and_batch():
    assert jsonrpc.encode("eth_blockNumber", [], 7) == (
        b'{"jsonrpc":"2.0","id":7,"method":"eth_blockNumber","params":[]}'
    )
    body = jsonrpc.encode("eth_getBlockByNumber", [["0x1", False], ["0x2", False]], 7, [8, 9])
    assert body.startswith(b'[{"jsonrpc":"2.0","id":8,') and b'"id":9' in body
