"""The request budget each worker gets in its plan, and the RPC health rows of the console.

No store, no processes: an Engine is built on a stand-in config and only plan_for, the message
handler, scale and the RPC merge are exercised.
"""

from __future__ import annotations

import datetime as dt
import time
from types import SimpleNamespace

import pytest

from engine.protocol import RpcReport
from engine.rpc_health import merge_rpc_health
from engine.runtime import Engine, worker_budget
from engine.supervisor import Shard

RPS = 24.0


def make_engine(days: int, shards: int, shard_ids: list[int] | None = None) -> Engine:
    cfg = SimpleNamespace(
        backfill=SimpleNamespace(
            shards=shards,
            days=days,
            start_date=dt.date(2022, 12, 18),
            confirmations=64,
            failed_day_retry_s=30.0,
        ),
        rpc=SimpleNamespace(
            urls=("http://a.example/k1",),
            requests_per_second=RPS,
            timeout_s=5.0,
            max_block_range=2000,
        ),
        contracts=SimpleNamespace(
            erc20_tokens=(), erc20_counterparties=(), erc1155=(), exchanges=()
        ),
    )
    return Engine(cfg, shard_ids=shard_ids, control=False)  # type: ignore[arg-type]


def budget(engine: Engine, shard: int) -> float:
    return engine.plan_for(shard, engine.shards).rpc.requests_per_second


# ---- worker_budget ------------------------------------------------------------------------------
def test_worker_budget_whole_console_splits_among_shards_with_work():
    assert worker_budget(RPS, 8, 8, explicit=False) == 3.0
    assert worker_budget(RPS, 8, 3, explicit=False) == 8.0
    assert worker_budget(RPS, 8, 0, explicit=False) == RPS  # at least one share


def test_worker_budget_explicit_shard_ids_take_one_shards_share():
    # Whatever this host runs, every worker of every host takes rps / SHARDS.
    assert worker_budget(RPS, 8, 2, explicit=True) == 3.0
    assert worker_budget(RPS, 8, 0, explicit=True) == 3.0
    assert worker_budget(RPS, 0, 0, explicit=True) == RPS


# ---- plan_for -----------------------------------------------------------------------------------
def test_plan_divides_by_shards_with_days_left_not_by_all_shards():
    eng = make_engine(days=8, shards=4)
    assert budget(eng, 0) == RPS / 4
    eng.progress.complete |= {3, 7}  # shard 3 has nothing left: it starts no worker
    assert budget(eng, 0) == RPS / 3
    eng.progress.pending_checkpoint |= {2}
    eng.progress.complete |= {6}  # shard 2: one day COMPLETE, the other waiting for its checkpoint
    assert budget(eng, 0) == RPS / 2
    plan = eng.plan_for(1, 4)
    assert plan.days == [1, 5]


def test_plan_with_explicit_shard_ids_divides_by_total_shards():
    # Two hosts run shards {0, 1} and {2, 3} of SHARDS=4 against the same URLs.
    host_a = make_engine(days=8, shards=4, shard_ids=[0, 1])
    host_b = make_engine(days=8, shards=4, shard_ids=[2, 3])
    host_a.progress.complete |= {1, 5}  # host A's shard 1 is done: host B still runs two workers
    shares = [budget(host_a, 0), budget(host_b, 2), budget(host_b, 3)]
    assert shares == [RPS / 4] * 3
    assert sum(shares) <= RPS


def test_plan_uses_the_supervisors_shards_after_a_scale():
    eng = make_engine(days=12, shards=4)
    eng.shards = 6
    eng.shard_ids = list(range(6))
    eng.supervisor = SimpleNamespace(shard_ids=list(range(6)))  # type: ignore[assignment]
    eng.progress.complete |= {5, 11}  # shard 5 of 6 is done
    assert budget(eng, 0) == RPS / 5


def test_restarted_workers_never_push_the_sum_over_the_budget():
    """Shards finish one by one; each time one restarts with the share of that moment."""
    eng = make_engine(days=16, shards=4)
    running = {k: budget(eng, k) for k in range(4)}
    assert sum(running.values()) == pytest.approx(RPS)
    for finished in (3, 2, 1):
        eng.progress.complete |= set(range(finished, 16, 4))
        running.pop(finished)  # its worker exits DONE
        restarted = min(running)  # e.g. after a stall
        running[restarted] = budget(eng, restarted)
        assert running[restarted] == RPS / len(running)
        assert sum(running.values()) <= RPS + 1e-9
    assert running == {0: RPS}


# ---- RPC health rows ----------------------------------------------------------------------------
def report(index: int | None, url: str, **kw) -> dict:
    h = {
        "url": url,
        "calls": 0,
        "calls_per_s": 0.0,
        "errors": {},
        "http_429": 0,
        "p50_ms": None,
        "p95_ms": None,
        "current_range": None,
        "cooling_until": None,
    }
    if index is not None:
        h["index"] = index
    h.update(kw)
    return h


MASKED = "https://eth-mainnet.example/v2/***"  # two keys at one provider mask to this


def test_two_keys_at_one_provider_stay_two_rows():
    by_shard = {
        0: [
            report(0, MASKED, calls=100, http_429=3, calls_per_s=2.0),
            report(1, MASKED, calls=50, calls_per_s=1.0, cooling_until=2e9),
            report(2, "https://other.example/***", calls=10),
        ],
        1: [
            report(0, MASKED, calls=300, http_429=1, calls_per_s=4.0),
            report(1, MASKED, calls=70, calls_per_s=0.5),
            report(2, "https://other.example/***", calls=20),
        ],
    }
    rows = merge_rpc_health(by_shard)
    assert [r.url for r in rows] == [f"{MASKED} #1", f"{MASKED} #2", "https://other.example/***"]
    assert [r.calls for r in rows] == [400, 120, 30]
    assert [r.http_429 for r in rows] == [4, 0, 0]
    assert [r.calls_per_s for r in rows] == [6.0, 1.5, 0.0]
    assert [r.cooling_until for r in rows] == [None, 2e9, None]


def test_reports_without_index_merge_by_url():
    rows = merge_rpc_health(
        {0: [report(None, "https://a/***", calls=1)], 1: [report(None, "https://a/***", calls=2)]}
    )
    assert [(r.url, r.calls) for r in rows] == [("https://a/***", 3)]


def test_latency_p95_is_the_worst_worker_p50_is_call_weighted():
    rows = merge_rpc_health(
        {
            0: [report(0, "https://a/***", calls=900, p50_ms=100.0, p95_ms=300.0)],
            1: [report(0, "https://a/***", calls=100, p50_ms=200.0, p95_ms=900.0)],
            2: [report(0, "https://a/***", calls=0)],  # no latency yet
        }
    )
    (row,) = rows
    assert row.p95_ms == 900.0
    assert row.p50_ms == pytest.approx(110.0)


def test_finished_shards_keep_their_counts_but_not_their_rate():
    by_shard = {
        0: [
            report(
                0,
                "https://a/***",
                calls=500,
                http_429=7,
                errors={"timeout": 2},
                calls_per_s=5.0,
                p50_ms=50.0,
                p95_ms=800.0,
                current_range=100,
                cooling_until=2e9,
            )
        ],
        1: [
            report(
                0,
                "https://a/***",
                calls=40,
                errors={"timeout": 1},
                calls_per_s=2.0,
                p50_ms=80.0,
                p95_ms=120.0,
                current_range=1500,
            )
        ],
    }
    (row,) = merge_rpc_health(by_shard, live={1})  # shard 0 is DONE
    assert (row.calls, row.http_429, row.errors) == (540, 7, {"timeout": 3})
    assert row.calls_per_s == 2.0
    assert row.cooling_until is None
    assert (row.p50_ms, row.p95_ms, row.current_range) == (80.0, 120.0, 1500)
    # Once every worker is done, the last known latency and range stay visible.
    (row,) = merge_rpc_health(by_shard, live=set())
    assert row.calls_per_s == 0.0
    assert (row.p95_ms, row.current_range) == (800.0, 100)


def test_scale_down_drops_the_reports_of_shards_scaled_away():
    eng = make_engine(days=8, shards=4)
    old = {k: Shard(k) for k in range(4)}
    new: dict[int, Shard] = {}

    def scale(shards: int) -> None:
        new.update({k: Shard(k) for k in range(shards)})
        sup.shards = new

    sup = SimpleNamespace(shards=old, shard_ids=list(range(4)), scale=scale)
    eng.supervisor = sup  # type: ignore[assignment]
    eng.loader = SimpleNamespace()  # type: ignore[assignment]
    eng.state = "running"
    for k in range(4):
        eng._on_message(old[k], RpcReport(health=[report(0, "https://a/***", calls=10)]))
    assert eng.scale(2).message.startswith("scaling")
    deadline = time.monotonic() + 5
    while eng.busy() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(eng.rpc.by_shard) == [0, 1]  # 0 and 1 are replaced by their new workers' reports
    # A report from a worker scaled away that arrives late is ignored.
    eng._on_message(old[3], RpcReport(health=[report(0, "https://a/***", calls=10)]))
    assert sorted(eng.rpc.by_shard) == [0, 1]
    eng._on_message(new[1], RpcReport(health=[report(0, "https://a/***", calls=1)]))
    assert eng.rpc.by_shard[1][0]["calls"] == 1


def test_a_restarted_workers_counts_add_to_those_of_the_process_before_it():
    eng = make_engine(days=8, shards=2)
    eng.loader = SimpleNamespace()  # type: ignore[assignment]
    before, after = Shard(0, pid=100), Shard(0, pid=200)
    first = report(0, "https://a/***", calls=50, http_429=3, errors={"rpc_429": 3})
    eng._on_message(before, RpcReport(health=[first]))
    eng._on_message(before, RpcReport(health=[{**first, "calls": 60}]))  # cumulative
    eng._on_message(
        after,
        RpcReport(health=[report(0, "https://a/***", calls=5, errors={"timeout": 1})]),
    )
    (row,) = eng._rpc_health()
    assert (row.calls, row.http_429, row.errors) == (65, 3, {"rpc_429": 3, "timeout": 1})
    eng._on_message(after, RpcReport(health=[report(0, "https://a/***", calls=9)]))
    (row,) = eng._rpc_health()
    assert row.calls == 69  # the same process again: its report replaces its last one


def test_scaled_away_shards_keep_their_counts_in_the_totals():
    eng = make_engine(days=8, shards=4)
    sup = SimpleNamespace(shards={}, shard_ids=list(range(4)), scale=lambda n: None)
    eng.supervisor = sup  # type: ignore[assignment]
    eng.loader = SimpleNamespace()  # type: ignore[assignment]
    eng.state = "running"
    for k in range(4):
        sup.shards[k] = Shard(k, pid=10 + k)
        health = [report(0, "https://a/***", calls=10, http_429=1, calls_per_s=2.0)]
        eng._on_message(sup.shards[k], RpcReport(health=health))
    assert eng.scale(2).message.startswith("scaling")
    deadline = time.monotonic() + 5
    while eng.busy() and time.monotonic() < deadline:
        time.sleep(0.01)
    (row,) = eng._rpc_health()
    assert (row.calls, row.http_429) == (40, 4)
    assert row.calls_per_s == 4.0  # only the two shards still reporting
