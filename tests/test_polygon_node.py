"""The procedural Polygon node: chain shape, JSON-RPC answers, provider personalities, truth.

The node runs in a thread on loopback; a real RpcPool and the product's decoder read it, and the
decoded rows are compared with the chain's ground truth (computed from the events' meaning).
"""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest

from engine.decode import DecodeFilter, decode_logs
from engine.devchain.polygon import M64, PolygonChain, PolygonSpec, key_hash
from engine.devchain.polygon_node import Personality, PolygonNode
from engine.rpc import errors as rpc_errors
from engine.rpc.pool import RpcPool
from engine.worker import queries_for

SMALL = PolygonSpec(days=2, block_time_s=20.0, events_per_block=3.0)


def post(url: str, body: object) -> tuple[int, dict, object]:
    host = url.split("//")[1]
    conn = http.client.HTTPConnection(host, timeout=30)
    conn.request("POST", "/", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), json.loads(data)


def queries(chain: PolygonChain) -> list[tuple[list[str], list]]:
    """The worker's three filters for the chain's contracts."""
    return queries_for(chain_filter(chain))


def chain_filter(chain: PolygonChain) -> DecodeFilter:
    return DecodeFilter(
        frozenset(chain.tokens),
        frozenset(chain.cps),
        frozenset([chain.ctf]),
        frozenset(chain.exchanges),
    )


def test_block_times_are_polygon_like() -> None:
    chain = PolygonChain(PolygonSpec(days=6))
    per_day = [chain.day_range(d) for d in range(6)]
    counts = [b - a + 1 for a, b in per_day]
    assert all(39_000 <= n <= 43_500 for n in counts), counts
    ts = chain.ts_many(np.arange(0, 200_000))
    gaps = np.diff(ts)
    assert gaps.min() >= 1 and 2.0 <= gaps.mean() <= 2.2 and gaps.max() <= 4
    assert chain.ts(0) == chain.genesis_ts == chain.start_ts - 86_400
    for d, (a, b) in enumerate(per_day):  # day ranges tile the calendar exactly
        assert chain.day_of(chain.ts(a)) == d == chain.day_of(chain.ts(b))
        assert chain.day_of(chain.ts(a - 1)) == d - 1 and chain.day_of(chain.ts(b + 1)) == d + 1
    assert chain.head > per_day[-1][1] + 40_000  # a final day and a tail after the last day


def test_densities_vary_quiet_busy_and_growth() -> None:
    chain = PolygonChain(PolygonSpec(days=400, growth_per_year=1.0))
    factors = [chain.day_factor(d) for d in range(1, 60)]
    assert min(factors) < 0.3 and max(factors) > 1.9  # a quiet and a busy day
    year = [chain.day_factor(d) for d in range(365, 395)]
    assert np.median(year) > 1.6 * np.median(factors)  # growth over the year


def test_logs_through_the_pool_decode_exactly_to_the_ground_truth() -> None:
    chain = PolygonChain(SMALL)
    filt = chain_filter(chain)
    with PolygonNode(chain, Personality(max_results=500, max_block_range=1000)) as node:
        pool = RpcPool([node.url], requests_per_second=0, max_block_range=1000)
        assert pool.call("eth_chainId", []) == "0x89"
        assert pool.block_number() == chain.head
        for day in range(SMALL.days):
            truth = chain.day_truth(day)
            first, last = chain.day_range(day)
            assert (truth.from_block, truth.to_block) == (first, last)
            e20: dict[tuple, list] = {}
            e1155: list[list] = []
            skipped: dict[str, int] = {}
            res = reg = 0
            blocks: set[int] = set()
            for address, topics in queries(chain):
                logs = pool.get_logs(first, last, address, topics)
                blocks.update(int(x["blockNumber"], 16) for x in logs)
                d = decode_logs(logs, day, filt)
                e20.update({(r[0], r[1]): r for r in d.erc20})
                e1155 += d.erc1155
                res += len(d.resolutions)
                reg += len(d.registrations)
                for k, v in d.skipped.items():
                    skipped[k] = skipped.get(k, 0) + v
            rows20 = list(e20.values())
            assert len(rows20) == truth.erc20_count > 1000
            assert sum(int(r[-1]) for r in rows20) == truth.erc20_value_sum
            assert sum(r[3] for r in rows20) == truth.erc20_ts_sum
            assert sum(key_hash(r[0], r[1]) for r in rows20) & M64 == truth.erc20_key_hash
            assert len(e1155) == truth.erc1155_count
            assert sum(int(r[-1]) for r in e1155) == truth.erc1155_value_sum
            assert sum(key_hash(r[0], r[1], r[2]) for r in e1155) & M64 == truth.erc1155_key_hash
            assert (res, reg) == (truth.resolutions, truth.registrations)
            assert skipped == truth.skipped and set(skipped) == {"erc721_shaped", "malformed"}
            assert len(blocks) == truth.blocks_with_logs
        stats = node.stats()
        assert stats["rejected_results"] > 0 and stats["rejected_range"] == 0


def test_caps_are_worded_like_providers_and_classified() -> None:
    chain = PolygonChain(SMALL)
    first, _ = chain.day_range(0)
    address, topics = queries(chain)[0]
    cases = [
        (Personality(max_results=50, cap_style="infura"), 2000, "results", True),
        (Personality(max_block_range=100, cap_style="too_wide"), 200, "blocks", False),
        (Personality(max_block_range=100, cap_style="range_too_large"), 200, "blocks", False),
        (Personality(max_results=50, cap_style="alchemy"), 2000, "results", True),
    ]
    for pers, span, cause, suggests in cases:
        with PolygonNode(chain, pers) as node:
            flt = {
                "fromBlock": hex(first),
                "toBlock": hex(first + span - 1),
                "address": address,
                "topics": topics,
            }
            req = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [flt]}
            status, _, body = post(node.url, req)
            assert status == 200 and "error" in body, body
            c = rpc_errors.classify(status, body)
            assert c.kind == rpc_errors.RANGE_TOO_BIG, (pers, body)
            if suggests:
                lo, hi = c.suggested_range
                assert lo == first and first <= hi < first + span - 1
                flt["toBlock"] = hex(hi)
                _, _, ok = post(node.url, req)
                assert 0 < len(ok["result"]) <= 50
            if cause == "blocks" and pers.cap_style == "range_too_large":
                assert c.max_range == 100


def test_batches_count_every_call_and_rate_limits_answer_429() -> None:
    chain = PolygonChain(SMALL)
    with PolygonNode(chain, Personality(block_timestamp=False, rate_limit_rps=40)) as node:
        batch = [
            {"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber", "params": [hex(b), False]}
            for i, b in enumerate([10, 11, 12, 10])
        ]
        status, _, body = post(node.url, batch)
        assert status == 200 and [int(x["result"]["timestamp"], 16) for x in body] == [
            chain.ts(b) for b in (10, 11, 12, 10)
        ]
        s = node.stats()
        assert (s["calls"], s["batches"], s["eth_getBlockByNumber"]) == (4, 1, 4)
        assert (s["blocks_distinct"], s["blocks_repeated"]) == (3, 1)
        assert node.block_asks(10) == 2 and node.block_asks(13) == 0
        status, headers, _ = post(node.url, batch * 20)  # 80 calls > the 40/s bucket
        assert status == 429 and headers.get("Retry-After") == "1"
        first, last = chain.day_range(0)
        _, _, logs = post(
            node.url,
            {
                "jsonrpc": "2.0",
                "id": 9,
                "method": "eth_getLogs",
                "params": [{"fromBlock": hex(first), "toBlock": hex(first + 50)}],
            },
        )
        assert logs["result"] and all("blockTimestamp" not in x for x in logs["result"])


@pytest.mark.parametrize("bad", [dict(block_time_s=1.0), dict(days=0)])
def test_bad_specs_are_refused_naming_the_key(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        PolygonSpec(**bad)


@pytest.mark.parametrize(
    "days, n, want",
    [
        (1, 4, [0]),
        (3, 4, [0, 1, 2]),
        (4, 4, [0, 1, 2, 3]),
        (10, 4, [0, 3, 6, 9]),
        (1048, 4, [0, 349, 698, 1047]),
    ],
)
def test_plan_samples_days_spread_over_the_window(days: int, n: int, want: list[int]) -> None:
    from engine.plan import sample_days

    assert sample_days(days, n) == want


def test_plan_interpolates_between_sampled_days() -> None:
    from engine.plan import DayEstimate, _interpolate

    a = DayEstimate(0, 1000, {"erc20": 100.0}, 10.0, 7.0, 0.0)
    b = DayEstimate(4, 2000, {"erc20": 500.0}, 30.0, 7.0, 800.0)
    days = _interpolate([a, b], 6)
    assert [d.blocks for d in days] == [1000, 1250, 1500, 1750, 2000, 2000]
    assert [d.rows["erc20"] for d in days] == [100, 200, 300, 400, 500, 500]
    assert days[2].block_calls == 400 and days[2].getlogs_calls == 20


def test_block_calls_note_only_when_they_are_a_large_share() -> None:
    from engine.status import block_calls_note

    assert block_calls_note(35, 1000) == ""
    assert block_calls_note(0, 0) == ""
    note = block_calls_note(900, 1000)
    assert "90%" in note and "blockTimestamp" in note


def test_pool_health_counts_each_call_of_a_batch_and_the_block_calls() -> None:
    chain = PolygonChain(SMALL)
    with PolygonNode(chain, Personality(block_timestamp=False)) as node:
        pool = RpcPool([node.url], requests_per_second=0)
        assert pool.block_timestamps(list(range(100, 150))) == [
            chain.ts(b) for b in range(100, 150)
        ]
        pool.block_number()
        (h,) = pool.health()
        assert (h["calls"], h["provider_calls"], h["block_calls"]) == (2, 51, 50)
        assert node.stats()["calls"] == 51
