"""End to end against the procedural Polygon node: the real CLI backfills it into real chdb.

A few days of a few thousand blocks each (30 s blocks, ~3 events a block), behind a provider with
a 1,500-block range cap and a 500-result cap in Infura's words. With blockTimestamp in logs and
without it, the store must equal the chain's ground truth per day (counts, value sums, timestamp
sums, key-set hashes); without it, every block is asked at most once and the timestamp calls stay
within the distinct blocks with logs. `plan` on the same window must be within 25% of the run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.devchain.polygon import KEY_HASH_SQL, PolygonChain, PolygonSpec
from engine.devchain.polygon_node import Personality, PolygonNode
from tests.support.cli import cli, store_query
from tests.support.config import write_config

DAYS = 3
#: Blocks the day search may read (a shard's first day, with no block rate known yet, costs most).
SEARCH_MAX = 100 * DAYS
SPEC = PolygonSpec(seed=11, days=DAYS, block_time_s=30.0, events_per_block=3.0)


def assert_store_matches_truth(config: Path, chain: PolygonChain) -> int:
    """Compare the store with the truth day by day; return the rows stored."""
    got: dict[str, dict[int, tuple]] = {}
    for table, bi in (("erc20", "0"), ("erc1155", "batch_index")):
        rows = store_query(
            config,
            f"SELECT day_idx, count(), toString(sum(value)), toString(sum(toUInt64("
            f"block_timestamp))), toString(sum({KEY_HASH_SQL.format(bi=bi)})) "
            f"FROM {{db}}.{table}_transfers_staging FINAL GROUP BY day_idx",
        )
        got[table] = {int(d): (int(n), int(v), int(t), int(k)) for d, n, v, t, k in rows}
    other = {
        table: dict(
            (int(d), int(n))
            for d, n in store_query(
                config, f"SELECT day_idx, count() FROM {{db}}.{table} FINAL GROUP BY day_idx"
            )
        )
        for table in ("condition_resolutions", "token_registrations")
    }
    stored = 0
    for day in range(DAYS):
        t = chain.day_truth(day)
        want20 = (t.erc20_count, t.erc20_value_sum, t.erc20_ts_sum, t.erc20_key_hash)
        want1155 = (t.erc1155_count, t.erc1155_value_sum, t.erc1155_ts_sum, t.erc1155_key_hash)
        assert got["erc20"].get(day) == want20, f"erc20 day {day}"
        assert got["erc1155"].get(day) == want1155, f"erc1155 day {day}"
        assert other["condition_resolutions"].get(day, 0) == t.resolutions
        assert other["token_registrations"].get(day, 0) == t.registrations
        stored += t.rows
    dups = store_query(
        config,
        "SELECT (SELECT count() FROM {db}.erc20_transfers_staging FINAL) - "
        "(SELECT uniqExact(tx_hash, log_index) FROM {db}.erc20_transfers_staging), "
        "(SELECT count() FROM {db}.erc1155_transfers_staging FINAL) - "
        "(SELECT uniqExact(tx_hash, log_index, batch_index) FROM {db}.erc1155_transfers_staging)",
    )
    assert dups == [[0, 0]]
    return stored


def plan_figures(text: str) -> dict[str, float]:
    def num(pattern: str) -> float:
        m = re.search(pattern, text)
        assert m, f"{pattern!r} not in plan output:\n{text}"
        return float(m.group(1).replace(",", ""))

    return {
        "spent": num(r"sampled with ([\d,]+) of at most"),
        "rows": num(r"rows: .*\(total ([\d,]+),"),
        "getlogs": num(r"getLogs: +([\d,]+) calls"),
        "requests": num(r"requests: +([\d,]+) in all"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("stamp", [True, False], ids=["blockTimestamp", "no-blockTimestamp"])
def test_polygon_node_backfill_is_exact_and_plan_is_close(tmp_path: Path, stamp: bool) -> None:
    chain = PolygonChain(SPEC)
    pers = Personality(block_timestamp=stamp, max_block_range=1500, max_results=500)
    with PolygonNode(chain, pers) as node:
        # One shard without blockTimestamp: every block it asks, it asks once (two shards
        # would both read the blocks around their common day boundaries).
        config = write_config(tmp_path, days=DAYS, shards=2 if stamp else 1, rpc_urls=[node.url])
        plan = cli("plan", "--config", str(config), timeout=300)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        est = plan_figures(plan.stdout)
        spent = node.stats()
        assert est["spent"] == spent["calls"] <= 200  # bounded, and what it says it spent
        assert "result cap: 500" in plan.stdout and "block-range cap: 1500" in plan.stdout
        assert ("blockTimestamp in logs: yes" in plan.stdout) == stamp
        assert ("WARNING: block calls dominate" in plan.stdout) == (not stamp)
        if stamp:  # --dry-run shows the shards' plan, then the same estimate
            dry = cli("--dry-run", "--config", str(config), timeout=300)
            assert dry.returncode == 0 and "shard 1:" in dry.stdout, dry.stdout + dry.stderr
            assert plan_figures(dry.stdout)["requests"] == est["requests"]
        node.reset_stats()
        out = cli("--no-ui", "--config", str(config), timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        run = node.stats()
        stored = assert_store_matches_truth(config, chain)
        truths = [chain.day_truth(d) for d in range(DAYS)]
        with_logs = sum(t.blocks_with_logs for t in truths)
        log = (tmp_path / "backfill" / "worker-0.log").read_text()
        ts_calls = sum(int(n) for n in re.findall(r"COMPLETE .* timestamp_calls (\d+)", log))
        if stamp:
            assert ts_calls == 0 and run["eth_getBlockByNumber"] < SEARCH_MAX  # the day search only
        else:
            assert run["blocks_repeated"] == 0  # no block asked twice
            # Batched (one request for up to 100 blocks), and never more than the blocks with
            # logs; the day search's blocks that have logs are reused, not asked again.
            assert 0.9 * with_logs <= ts_calls <= with_logs
            assert run["batches"] >= ts_calls / 100
            assert run["eth_getBlockByNumber"] <= with_logs + SEARCH_MAX
    for key, measured in (
        ("rows", stored),
        ("getlogs", run["eth_getLogs"]),
        ("requests", run["calls"]),
    ):
        assert abs(est[key] - measured) <= 0.25 * measured, (key, est[key], measured, plan.stdout)
