"""End-to-end tests of engine.rpc.RpcPool against a real anvil node behind the fault proxy.

No RPC mocks: anvil is populated with ~32k logs (one contract emitting 50 logs per call, another
one log per call, over ~7,000 blocks with one dense 60-block stretch of 12,000 logs), and the
pool's answers through faulty, capped proxies are compared with a direct eth_getLogs call.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections import Counter

import pytest

from engine.rpc.pool import RangeFailed, RpcError, RpcPool
from tests.support.anvil import ANVIL_BIN, EMITTER_A, EMITTER_B, AnvilNode, free_port
from tests.support.fault_proxy import CAP_STYLES, FaultConfig, FaultProxy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ANVIL_BIN.exists(), reason=f"anvil binary not installed ({ANVIL_BIN})"),
]

GENESIS_TS = 1_700_000_000
# (empty blocks before, txs to A (50 logs each), txs to B (1 log each)) per active block
PLAN = [(19, 1, 1)] * 300 + [(0, 4, 0)] * 60 + [(10, 1, 1)] * 100
FAST = dict(backoff_initial_s=0.01, backoff_max_s=0.05, cooldown_s=0.3, requests_per_second=0)
COOL_1S = dict(cooldown_s=1.0)


class Chain:
    def __init__(self, node: AnvilNode, head: int) -> None:
        self.node = node
        self.url = node.url
        self.head = head
        self._direct: dict[tuple, list] = {}

    def direct(self, frm: int, to: int, address: list[str]) -> list[dict]:
        key = (frm, to, tuple(address))
        if key not in self._direct:
            flt = {"fromBlock": hex(frm), "toBlock": hex(to), "address": address}
            self._direct[key] = self.node.rpc("eth_getLogs", [flt])
        return self._direct[key]


@pytest.fixture(scope="module")
def chain():
    with AnvilNode(timestamp=GENESIS_TS) as node:
        head = node.populate(PLAN, seed=7)
        yield Chain(node, head)


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def __call__(self, kind: str, message: str) -> None:
        self.items.append((kind, message))

    @property
    def kinds(self) -> Counter:
        return Counter(k for k, _ in self.items)


def test_direct_basics(chain):
    pool = RpcPool([chain.url], requests_per_second=0)
    assert pool.block_number() == chain.head
    assert pool.block_timestamp(0) == GENESIS_TS
    assert pool.block_timestamp(chain.head) > GENESIS_TS
    assert int(pool.call("eth_chainId", []), 16) == 31337
    logs = pool.get_logs(0, chain.head, [EMITTER_A, EMITTER_B], [])
    assert len(logs) == 32_400
    assert logs == chain.direct(0, chain.head, [EMITTER_A, EMITTER_B])
    assert logs[0]["blockNumber"].startswith("0x")  # raw JSON, not web3-formatted
    assert pool.get_logs(10, 9, [EMITTER_A], []) == []
    only_b = pool.get_logs(0, chain.head, [EMITTER_B], [])
    assert only_b == chain.direct(0, chain.head, [EMITTER_B]) and len(only_b) == 400
    (h,) = pool.health()
    assert h["calls"] > 0 and h["errors"] == {} and h["p50_ms"] is not None
    assert h["current_range"] == 2000 and h["cooling_until"] is None


def _faulty(seed: int, retry_after: str | None) -> FaultConfig:
    return FaultConfig(
        p_429=0.30,
        retry_after=retry_after,
        p_slow=0.05,
        slow_s=0.5,
        p_5xx=0.10,
        p_drop=0.03,
        p_truncate=0.03,
        cap_max_range=2000,
        cap_max_results=10_000,
        seed=seed,
    )


def test_faults_on_two_of_three_urls_and_cap_exact(chain):
    """30% 429s + timeouts + 5xx (+ drops, truncated JSON) on two of three URLs, a
    2,000-block / 10,000-result cap everywhere: day-sized get_logs calls are exact."""
    clean = FaultConfig(cap_max_range=2000, cap_max_results=10_000)
    ev = Events()
    with (
        FaultProxy(chain.url, _faulty(1, None)) as p1,
        FaultProxy(chain.url, _faulty(2, "0")) as p2,
        FaultProxy(chain.url, clean) as p3,
    ):
        pool = RpcPool(
            [p1.url, p2.url, p3.url], timeout_s=0.25, max_block_range=5000, on_event=ev, **FAST
        )
        got: list[dict] = []
        day = 500  # "days" of 500 blocks, like the worker's calls
        for start in range(0, chain.head + 1, day):
            got.extend(pool.get_logs(start, min(chain.head, start + day - 1), [EMITTER_A], []))
        assert got == chain.direct(0, chain.head, [EMITTER_A])
        # One big call too (the 10,000-result cap bites around the dense stretch).
        assert pool.get_logs(0, chain.head, [EMITTER_A], []) == got
        # Timestamps (the day -> block binary search) through the same faults.
        for n in range(0, chain.head, 97):
            block = chain.node.rpc("eth_getBlockByNumber", [hex(n), False])
            assert pool.block_timestamp(n) == int(block["timestamp"], 16)
        # Faults really happened, on the faulty URLs only.
        statuses = Counter(r.status for p in (p1, p2) for r in p.records)
        assert statuses[429] > 0 and statuses[503] > 0 and statuses["slow"] > 0
        assert {r.status for r in p3.records} <= {200, "cap"}
        kinds = ev.kinds
        assert kinds["rpc_429"] > 0 and kinds["http_5xx"] > 0 and kinds["timeout"] > 0
        health = pool.health()
        assert sum(h["http_429"] for h in health[:2]) > 0
        assert health[2]["http_429"] == 0
        # The clean URL has learned the 2,000-block limit; the faulty ones may still be learning.
        assert health[2]["current_range"] <= 2000, health
        assert all(h["current_range"] <= 5000 for h in health), health


STYLE_CASES = [(s, True) for s in CAP_STYLES] + [
    (s, False) for s in ("infura", "alchemy", "max_results_retry")
]


@pytest.mark.parametrize(("style", "suggest"), STYLE_CASES)
def test_each_cap_style_end_to_end(chain, style, suggest):
    ev = Events()
    cfg = FaultConfig(
        cap_max_range=1000, cap_max_results=3000, cap_style=style, cap_suggest=suggest
    )
    with FaultProxy(chain.url, cfg) as proxy:
        pool = RpcPool([proxy.url], max_block_range=4000, on_event=ev, **FAST)
        logs = pool.get_logs(0, chain.head, [EMITTER_A], [])
        assert logs == chain.direct(0, chain.head, [EMITTER_A])
        assert ev.kinds["range_split"] > 0
        # An opaque limit ("invalid params") is also reported as the rpc_error it is.
        assert set(ev.kinds) <= {"range_split"} | ({"rpc_error"} if style == "opaque" else set())
        calls = proxy.counts["eth_getLogs"]
        # 32,000 logs over 7,160 blocks: at least 11 calls; adaptive ranges stay within ~3x.
        assert calls <= 40, (style, suggest, calls)


def test_retry_after_seconds_honoured_single_url(chain):
    ev = Events()
    cfg = FaultConfig(p_429=1.0, retry_after="1", max_faults=2)
    with FaultProxy(chain.url, cfg) as proxy:
        pool = RpcPool([proxy.url], on_event=ev, **FAST)
        assert pool.block_number() == chain.head
        recs = proxy.records
    assert [r.status for r in recs] == [429, 429, 200]
    for prev, nxt in zip(recs, recs[1:], strict=False):
        assert nxt.t - prev.t >= 1.0
    assert ev.kinds["retry_wait"] >= 2 and ev.kinds["rpc_429"] == 2


def test_retry_after_http_date_honoured(chain):
    target = int(time.time()) + 2
    cfg = FaultConfig(p_429=1.0, retry_after=email.utils.formatdate(target, usegmt=True))
    cfg.max_faults = 1
    with FaultProxy(chain.url, cfg) as proxy:
        pool = RpcPool([proxy.url], **FAST)
        pool.block_number()
        recs = proxy.records
    assert [r.status for r in recs] == [429, 200]
    assert recs[1].wall >= target - 0.01


def test_retry_after_moves_to_next_url(chain):
    """A 429 with Retry-After parks that URL; the other URL serves meanwhile, without waiting."""
    with (
        FaultProxy(chain.url, FaultConfig(p_429=1.0, retry_after="1", max_faults=2)) as bad,
        FaultProxy(chain.url, FaultConfig()) as good,
    ):
        pool = RpcPool([bad.url, good.url], **FAST)
        t0 = time.monotonic()
        for _ in range(20):
            pool.block_number()
        assert time.monotonic() - t0 < 0.9
        assert bad.counts["eth_blockNumber"] == 1
        time.sleep(1.05)
        for _ in range(4):
            pool.block_number()
        recs = bad.records
        assert len(recs) >= 2 and recs[1].t - recs[0].t >= 1.0


def test_secrets_never_in_events_errors_or_health(chain):
    key1, key2, key3, pw = "K" * 10 + "abcdef0123456789xyz", "Q1w2E3r4T5y6", "Z" * 32, "hunter2pw"
    ev = Events()
    noisy = FaultConfig(
        p_429=0.2, retry_after="0", p_slow=0.1, slow_s=0.5, p_5xx=0.1, p_drop=0.1, p_truncate=0.1
    )
    with FaultProxy(chain.url, noisy) as p1, FaultProxy(chain.url, noisy) as p2:
        urls = [
            f"{p1.url}/v3/{key1}",
            f"{p2.url}/rpc?apikey={key2}",
            f"http://user:{pw}@127.0.0.1:{free_port()}/v2/{key3}",  # nothing listens there
        ]
        pool = RpcPool(urls, timeout_s=0.25, max_attempts=40, on_event=ev, **FAST)
        texts: list[str] = []
        pool.get_logs(0, 3000, [EMITTER_A], [])
        for _ in range(10):
            pool.block_number()
        for method in ("eth_notAMethod", "eth_getBlockByNumber"):
            try:
                pool.call(method, ["0x1"])  # wrong method / wrong params: not retryable
            except RpcError as exc:
                texts += [str(exc), exc.url, repr(exc)]
        texts += [m for _, m in ev.items]
        texts.append(json.dumps(pool.health()))
    blob = "\n".join(texts)
    assert ev.kinds["conn"] > 0  # the dead URL was tried and reported
    for secret in (key1, key2, key3, pw):
        assert secret not in blob


def test_single_failing_block_raises_range_failed(chain):
    bad_block = 3001
    ev = Events()
    with (
        FaultProxy(chain.url, FaultConfig(fail_blocks=frozenset({bad_block}))) as p1,
        FaultProxy(chain.url, FaultConfig(fail_blocks=frozenset({bad_block}))) as p2,
    ):
        pool = RpcPool([p1.url, p2.url], max_attempts=3, on_event=ev, **FAST)
        with pytest.raises(RangeFailed) as info:
            pool.get_logs(0, chain.head, [EMITTER_A], [])
        assert (info.value.from_block, info.value.to_block) == (bad_block, bad_block)
        assert info.value.kind == "http_5xx"
        assert str(bad_block) in str(info.value)
        # Neighbours are fine.
        assert pool.get_logs(2000, bad_block - 1, [EMITTER_A], []) == chain.direct(
            2000, bad_block - 1, [EMITTER_A]
        )
        assert pool.get_logs(bad_block + 1, 5000, [EMITTER_A], []) == chain.direct(
            bad_block + 1, 5000, [EMITTER_A]
        )


def test_block_over_result_cap_raises_range_failed(chain):
    dense = PLAN[:300]
    first_dense = sum(g + 1 for g, _, _ in dense) + 1  # 200 logs in this block
    with FaultProxy(chain.url, FaultConfig(cap_max_results=150)) as proxy:
        pool = RpcPool([proxy.url], **FAST)
        with pytest.raises(RangeFailed) as info:
            pool.get_logs(first_dense - 500, first_dense + 10, [EMITTER_A], [])
        assert (info.value.from_block, info.value.to_block) == (first_dense, first_dense)
        assert info.value.kind == "range_too_big"


def test_permanent_rate_limit_raises_range_failed_for_the_chunk(chain):
    with FaultProxy(chain.url, FaultConfig(p_429=1.0)) as proxy:
        pool = RpcPool([proxy.url], max_attempts=3, **FAST)
        with pytest.raises(RangeFailed) as info:
            pool.get_logs(100, 900, [EMITTER_A], [])
        assert (info.value.from_block, info.value.to_block) == (100, 900)
        assert info.value.kind == "rpc_429"
        assert proxy.counts["eth_getLogs"] == 3


def test_cooldown_and_comeback(chain):
    ev = Events()
    dead = f"http://127.0.0.1:{free_port()}"
    with FaultProxy(chain.url, FaultConfig()) as good:
        pool = RpcPool([dead, good.url], cooldown_after=2, on_event=ev, **(FAST | COOL_1S))
        for _ in range(10):
            assert pool.block_number() == chain.head
            time.sleep(0.01)  # let the dead URL's short backoff pass: it gets tried again
        h_dead = pool.health()[0]
        assert ev.kinds["cooldown"] == 1
        assert h_dead["cooling_until"] is not None and h_dead["errors"]["conn"] == 2
        calls_while_cooling = h_dead["calls"]
        for _ in range(5):
            pool.block_number()
        assert pool.health()[0]["calls"] == calls_while_cooling  # skipped while cooling
        time.sleep(max(0.0, h_dead["cooling_until"] - time.time()) + 0.05)
        for _ in range(3):
            pool.block_number()
        assert pool.health()[0]["calls"] > calls_while_cooling  # came back (and failed again)


def test_request_budget_per_url(chain):
    pool = RpcPool([chain.url], requests_per_second=20)
    t0 = time.monotonic()
    for _ in range(30):
        pool.block_number()
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.45  # 20 burst + 10 at 20/s
    (h,) = pool.health()
    assert h["calls"] == 30


def test_non_retryable_error_is_not_retried(chain):
    with FaultProxy(chain.url, FaultConfig()) as proxy:
        pool = RpcPool([proxy.url], **FAST)
        with pytest.raises(RpcError) as info:
            pool.call("eth_notAMethod", [])
        assert info.value.kind == "rpc_error"
        assert proxy.counts["eth_notAMethod"] == 1


def test_iter_logs_yields_contiguous_subranges(chain):
    cfg = FaultConfig(cap_max_range=1000, cap_max_results=3000)
    with FaultProxy(chain.url, cfg) as proxy:
        pool = RpcPool([proxy.url], **FAST)
        parts = list(pool.iter_logs(100, chain.head, [EMITTER_A], []))
    assert parts[0][0] == 100 and parts[-1][1] == chain.head
    for (_, hi, _), (lo, _, _) in zip(parts, parts[1:], strict=False):
        assert lo == hi + 1
    for lo, hi, logs in parts:
        assert all(lo <= int(x["blockNumber"], 16) <= hi for x in logs)
    assert [x for _, _, logs in parts for x in logs] == chain.direct(100, chain.head, [EMITTER_A])


def test_ranges_that_keep_timing_out_are_split(chain):
    ev = Events()
    cfg = FaultConfig(slow_above_span=600, slow_s=0.4)
    with FaultProxy(chain.url, cfg) as proxy:
        pool = RpcPool([proxy.url], timeout_s=0.15, on_event=ev, **FAST)
        logs = pool.get_logs(0, 3000, [EMITTER_A], [])
        assert logs == chain.direct(0, 3000, [EMITTER_A])
    assert ev.kinds["timeout"] >= 2
    assert any("timed out" in m for k, m in ev.items if k == "range_split")
    assert pool.health()[0]["current_range"] <= 600


def test_filters_keep_their_own_ranges(chain):
    """A dense filter's small ranges do not shrink a sparse filter's requests."""
    cfg = FaultConfig(cap_max_results=1000)
    with FaultProxy(chain.url, cfg) as proxy:
        pool = RpcPool([proxy.url], max_block_range=2000, **FAST)
        assert pool.get_logs(5000, 6999, [EMITTER_A], []) == chain.direct(5000, 6999, [EMITTER_A])
        proxy.reset_stats()
        sparse = pool.get_logs(0, 3999, [EMITTER_B], [])
        assert sparse == chain.direct(0, 3999, [EMITTER_B])
        assert proxy.counts["eth_getLogs"] == 2
        assert pool.current_range == 2000


def test_lowest_head_is_the_lowest_among_answering_urls(chain):
    # A lagging node may answer [] for blocks past its head: only blocks every URL has are final.
    dead = f"http://127.0.0.1:{free_port()}"
    with AnvilNode(timestamp=GENESIS_TS) as lagging:
        lagging.rpc("anvil_mine", [hex(5)])
        lag_head = int(lagging.rpc("eth_blockNumber", []), 16)
        assert 0 < lag_head < chain.head
        pool = RpcPool([chain.url, dead, lagging.url], max_attempts=3, **FAST)
        assert pool.lowest_head() == lag_head
    # The lagging node is gone now: the heads of the URLs that answer decide.
    assert pool.lowest_head() == chain.head
    assert RpcPool([chain.url], **FAST).lowest_head() == chain.head


def test_bad_key_on_one_url_moves_on_to_the_next(chain):
    # 401 + JSON-RPC -32600 "invalid api key": that URL's problem, not the request's.
    ev = Events()
    with (
        FaultProxy(chain.url, FaultConfig(auth_error=True)) as bad,
        FaultProxy(chain.url, FaultConfig()) as good,
    ):
        pool = RpcPool([bad.url, good.url], on_event=ev, **FAST)
        assert pool.get_logs(0, 1999, [EMITTER_A], []) == chain.direct(0, 1999, [EMITTER_A])
        assert pool.block_number() == chain.head
        assert {r.status for r in bad.records} == {401} and len(bad.records) >= 1
    assert ev.kinds["rpc_error"] >= 1
    assert all("HTTP 401" in m and "invalid api key" in m for k, m in ev.items if k == "rpc_error")


def test_a_failing_block_is_isolated_in_few_requests(chain):
    """Every URL fails one block: about 2 requests per halving, then the neighbours are served."""
    bad_block = 3001
    failing = FaultConfig(fail_blocks=frozenset({bad_block}))
    with FaultProxy(chain.url, failing) as p1, FaultProxy(chain.url, failing) as p2:
        pool = RpcPool([p1.url, p2.url], max_block_range=2000, **FAST)
        with pytest.raises(RangeFailed) as info:
            pool.get_logs(2000, 3999, [EMITTER_A], [])
        assert (info.value.from_block, info.value.to_block) == (bad_block, bad_block)
        requests = p1.counts["eth_getLogs"] + p2.counts["eth_getLogs"]
        # 8 attempts at full width, then 2 per halving of 2,000 blocks (11) and the parts that
        # work on the way: a fresh search after every success took 44 requests for 49 blocks.
        assert requests <= 8 + 3 * 11, requests  # 60 before the search carried over
        assert pool.get_logs(2000, bad_block - 1, [EMITTER_A], []) == chain.direct(
            2000, bad_block - 1, [EMITTER_A]
        )


def test_a_failing_block_is_isolated_even_when_another_url_rate_limits(chain):
    # The 429s of one URL say nothing about the blocks; the 500s of the other one do.
    bad_block = 3001
    with (
        FaultProxy(chain.url, FaultConfig(fail_blocks=frozenset({bad_block}))) as p1,
        FaultProxy(chain.url, FaultConfig(p_429=1.0)) as p2,
    ):
        pool = RpcPool([p1.url, p2.url], max_block_range=2000, **FAST)
        with pytest.raises(RangeFailed) as info:
            pool.get_logs(2000, 3999, [EMITTER_A], [])
        assert (info.value.from_block, info.value.to_block) == (bad_block, bad_block)
        assert p2.counts["eth_getLogs"] > 0
