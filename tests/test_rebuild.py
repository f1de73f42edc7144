"""The on-complete rebuild on a real devchain: exact analytics, and five faults that never swap.

One small devchain (real anvil) is staged once into a database of the session's store server, used
as a remote server (clickhouse.url, user, password); its staging tables are copied aside, and every
test starts from that pristine copy. The analytics are compared, integer for integer, with
`tests/support/expected_analytics.py` (plain Python over the ground truth's market events) and
with the generator's own positions; each planted fault must fail the hard gate and leave the live
tables exactly as they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.analytics.build import ANALYTICS_TABLES, NEW_SUFFIX
from engine.analytics.rebuild import RebuildOutcome, rebuild
from engine.config import Config, load_config
from engine.decode import TABLES, DecodeFilter, decode_logs
from engine.devchain import DevchainSpec, start_devchain
from engine.devchain.anvil import Rpc
from engine.store.client import Store, open_store
from engine.store.loader import CHECKPOINT_COLUMNS
from tests.conftest import server_section
from tests.support.config import write_config
from tests.support.expected_analytics import Expected, expected_analytics

pytestmark = pytest.mark.slow  # end to end: real anvil and store

DAYS = 6
# Resolves a one-hot, a [1, 1] and a 3-outcome market, has every kind of market event and every
# shape of transaction that touches several markets or wallets; win rate lands in the band.
SEED = 9
INPUT_TABLES = (
    "erc20_transfers_staging",
    "erc1155_transfers_staging",
    "condition_resolutions",
    "token_registrations",
    "backfill_checkpoint",
)


def write_test_config(
    folder: Path,
    devchain_state: Path,
    days: int = DAYS,
    seed: int = SEED,
    clickhouse: dict | None = None,
) -> Path:
    """A small devchain's config; `clickhouse` is its [clickhouse] section (default: local)."""
    return write_config(
        folder,
        days=days,
        seed=seed,
        devchain_state=devchain_state,
        data_dir="data/backfill",
        devchain={"markets_per_day": 1.0},
        clickhouse=clickhouse,
    )


def stage_devchain(store: Store, cfg: Config, url: str, truth: dict[str, Any]) -> None:
    """Fill staging and checkpoints from the node: plain eth_getLogs per day + engine.decode.

    Stands in for the worker/loader pipeline so these tests need nothing but the store and the node.
    """
    c = cfg.contracts
    filt = DecodeFilter(
        frozenset(c.erc20_tokens),
        frozenset(c.erc20_counterparties),
        frozenset(c.erc1155),
        frozenset(c.exchanges),
    )
    addresses = sorted(set(c.erc20_tokens) | set(c.erc1155) | set(c.exchanges))
    rpc = Rpc(url)
    checkpoints = []
    for d in range(cfg.backfill.days):
        pd = truth["per_day"][str(d)]
        lo, hi = int(pd["from_block"]), int(pd["to_block"])
        counts = dict.fromkeys(TABLES, 0)
        if hi >= lo:
            logs = rpc.call(
                "eth_getLogs", [{"fromBlock": hex(lo), "toBlock": hex(hi), "address": addresses}]
            )
            stamps = None
            if logs and "blockTimestamp" not in logs[0]:
                blocks = {int(lg["blockNumber"], 16) for lg in logs}
                stamps = {
                    b: int(rpc.call("eth_getBlockByNumber", [hex(b), False])["timestamp"], 16)
                    for b in blocks
                }
            decoded = decode_logs(logs, d, filt, stamps)
            for kind, rows in decoded.by_table().items():
                table, columns = TABLES[kind]
                store.insert_json_rows(f"{store.database}.{table}", columns, rows)
                counts[kind] = len(rows)
        checkpoints.append(
            [
                d,
                "COMPLETE",
                d % 2,
                lo,
                hi,
                counts["erc20"],
                counts["erc1155"],
                counts["resolutions"],
                counts["registrations"],
                31337,
                cfg.backfill.start_date.isoformat(),
                "",
                "2024-01-01 00:00:00.000",
            ]
        )
    store.insert_json_rows(f"{store.database}.backfill_checkpoint", CHECKPOINT_COLUMNS, checkpoints)


class Env:
    """The staged store, its config and the expected analytics, shared by the module."""

    def __init__(self, store: Store, cfg: Config, truth: dict[str, Any], expected: Expected):
        self.store = store
        self.cfg = cfg
        self.truth = truth
        self.expected = expected
        self.db = store.database

    def q(self, sql: str) -> list[tuple]:
        return self.store.query(sql.replace("{db}", self.db))

    def run(self, sql: str) -> None:
        self.store.command(sql.replace("{db}", self.db))

    def restore_inputs(self) -> None:
        """Put the pristine staged data back (TRUNCATE + INSERT from the copies)."""
        for t in INPUT_TABLES:
            self.run(f"TRUNCATE TABLE {{db}}.{t}")
            self.run(f"INSERT INTO {{db}}.{t} SELECT * FROM {{db}}.pristine_{t}")

    def fingerprint(self) -> dict[str, tuple[int, int]]:
        """(rows, order-independent content hash) of every live analytics table."""
        out = {}
        for t in ANALYTICS_TABLES:
            n, h = self.q(f"SELECT count(), sum(cityHash64(*)) FROM {{db}}.{t}")[0]
            out[t] = (int(n), int(h))
        return out

    def fingerprint_of(self, table: str) -> tuple[int, int]:
        n, h = self.q(f"SELECT count(), sum(cityHash64(*)) FROM {{db}}.{table}")[0]
        return (int(n), int(h))

    def ensure_good_live(self) -> None:
        """Live tables built from the pristine data (one clean rebuild if there are none yet)."""
        exists = self.q(
            "SELECT count() FROM system.tables WHERE database = '{db}' AND name = 'net_flows'"
        )
        if not exists[0][0] or not self.q("SELECT count() FROM {db}.net_flows")[0][0]:
            self.restore_inputs()
            assert rebuild(self.store, self.cfg).swapped


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, devchain_cache: Path, store_server
) -> Iterator[Env]:
    # The session's store server, used as a remote one (url, user, password): the remote path.
    folder = tmp_path_factory.mktemp("rebuild")
    section = server_section(store_server, "t_rebuild")
    cfg = load_config(write_test_config(folder, devchain_cache, clickhouse=section), env={})
    chain = start_devchain(
        DevchainSpec.from_config(cfg), cfg.devchain.state_dir, log=lambda _m: None
    )
    try:
        truth = chain.ground_truth
        store = open_store(cfg)
        store.command(f"DROP DATABASE IF EXISTS {store.database} SYNC")
        store.ensure_schema()
        try:
            stage_devchain(store, cfg, chain.url, truth)
        except BaseException:
            store.close()
            raise
    finally:
        chain.stop()
    e = Env(store, cfg, truth, expected_analytics(truth, set(cfg.contracts.exchanges)))
    for t in INPUT_TABLES:
        e.run(f"CREATE TABLE {{db}}.pristine_{t} AS {{db}}.{t}")
        e.run(f"INSERT INTO {{db}}.pristine_{t} SELECT * FROM {{db}}.{t}")
    yield e
    store.close()


# ------------------------------------------------------------------------------------------------
# Reading the rebuilt tables in the shape of expected_analytics


def got_net_flows(e: Env, sfx: str = "") -> dict[tuple, tuple]:
    """Market rows of net_flows (condition_id != ''; the rest is cash with no token leg)."""
    rows = e.q(
        "SELECT tx_hash, wallet, condition_id, outcome_index, token_delta, usdc_delta, kind, "
        f"is_system FROM {{db}}.net_flows{sfx} WHERE condition_id != ''"
    )
    return {(r[0], r[1], r[2], int(r[3])): (int(r[4]), int(r[5]), r[6], int(r[7])) for r in rows}


def got_trades(e: Env, sfx: str = "") -> dict[tuple, tuple]:
    """Trades of mapped tokens (an open unregistered multi-outcome market's have condition '')."""
    rows = e.q(
        "SELECT tx_hash, wallet, condition_id, outcome_index, direction, confidence, "
        f"token_amount, usdc_amount FROM {{db}}.trades_with_direction{sfx} "
        "WHERE condition_id != ''"
    )
    return {(r[0], r[1], r[2], int(r[3])): (r[4], r[5], int(r[6]), int(r[7])) for r in rows}


def got_positions(e: Env, sfx: str = "") -> dict[tuple, dict]:
    rows = e.q(
        "SELECT wallet, condition_id, positions, cash_units, pnl_units, resolved, flows "
        f"FROM {{db}}.wallet_market_pnl{sfx}"
    )
    return {
        (r[0], r[1]): {
            "positions": [int(x) for x in r[2]],
            "cash_units": int(r[3]),
            "pnl_units": int(r[4]) if r[5] else None,
            "resolved": bool(r[5]),
            "flows": int(r[6]),
        }
        for r in rows
    }


def mapped_conditions(e: Env) -> set[str]:
    return {r[0] for r in e.q("SELECT DISTINCT condition_id FROM {db}.token_outcomes")}


# ------------------------------------------------------------------------------------------------
# Clean data: exact, swapped, snapshot


def test_devchain_covers_the_interesting_markets(env: Env) -> None:
    conds = env.expected.conditions.values()
    resolved = [c for c in conds if c["payout_numerators"] is not None]
    assert any(c["payout_numerators"] == [1, 1] for c in resolved)
    assert any(c["outcome_count"] > 2 for c in resolved)
    assert any(sum(c["payout_numerators"]) == 1 for c in resolved)
    kinds = {ev["kind"] for ev in env.truth["markets"]["events"]}
    assert kinds == {"trade", "split", "merge", "redeem", "gift"}
    shapes = {ev["batch"] for ev in env.truth["markets"]["events"]}
    assert shapes == {None, "two_markets", "batched_redeem", "split_sell_other", "multi_fill"}
    # ... and they are what the per-(tx, holder) net rule got wrong: a wallet's tx spanning markets.
    by_tx_wallet: dict[tuple[str, str], set[str]] = {}
    for ev in env.truth["markets"]["events"]:
        by_tx_wallet.setdefault((ev["tx_hash"], ev["wallet"]), set()).add(ev["condition_id"])
    assert sum(len(c) > 1 for c in by_tx_wallet.values()) >= 5


def test_clean_rebuild_is_exact_and_swapped(env: Env) -> None:
    env.restore_inputs()
    lines: list[str] = []
    out = rebuild(env.store, env.cfg, log=lines.append)
    assert out.swapped, out.reason
    assert all(g.passed and g.mode == "strict" for g in out.gates)
    assert {g.name for g in out.gates} >= {
        "completeness",
        "duplicates",
        "high_confidence_share",
        "conservation",
        "cash_neutrality",
        "resolution_sanity",
        "unattributed_cash",
        "win_rate",
    }
    # Every unit of the wallets' market cash is attributed to a market, leg by leg.
    assert next(g for g in out.gates if g.name == "unattributed_cash").value == 0.0
    # Every condition of the chain is resolved or registered, hence mapped; otherwise compare the
    # mapped ones (an open, unregistered multi-outcome market cannot be mapped from its events).
    mapped = mapped_conditions(env)
    assert mapped == env.expected.mapped
    exp = env.expected.restricted_to(mapped)

    assert got_net_flows(env) == exp.net_flows
    # What has no condition is plain cash (ERC20 to/from counterparties outside any market tx).
    market_txs = {ev["tx_hash"] for ev in env.truth["markets"]["events"]}
    for tx, token_id, token_delta, kind in env.q(
        "SELECT tx_hash, token_id, token_delta, kind FROM {db}.net_flows WHERE condition_id = ''"
    ):
        assert (tx not in market_txs, int(token_id), int(token_delta), kind) == (
            True,
            0,
            0,
            "transfer",
        )
    assert got_trades(env) == exp.trades
    got = got_positions(env)
    assert {
        k: {kk: v[kk] for kk in ("positions", "cash_units", "pnl_units", "resolved")}
        for k, v in got.items()
    } == {
        k: {kk: v[kk] for kk in ("positions", "cash_units", "pnl_units", "resolved")}
        for k, v in exp.positions.items()
    }
    # ... and the generator's own bookkeeping agrees (token balances, cash, PnL per position).
    for p in env.truth["markets"]["positions"]:
        if p["is_exchange"] or p["condition_id"] not in mapped:
            continue
        g = got[(p["wallet"], p["condition_id"])]
        assert g["positions"] == p["token_balances"]
        assert g["cash_units"] == p["usdc_net"]
        assert g["pnl_units"] == p["pnl_units"]
    summary = env.truth["markets"]["summary"]
    assert exp.total_pnl_units == summary["total_pnl_units"]

    snap = json.loads(out.snapshot_path.read_text())
    assert out.snapshot_path.parent == env.cfg.backfill.data_dir.parent
    assert out.snapshot_path.name.startswith("post_rebuild_snapshot_")
    assert snap["days_complete"] == DAYS
    assert snap["erc20_transfers"] == env.truth["totals"]["erc20_rows"]
    assert snap["erc1155_transfers"] == env.truth["totals"]["erc1155_rows"]
    assert snap["markets_resolved"] == summary["markets_resolved"]
    assert snap["trades"] == {"HIGH": len(exp.trades), "MEDIUM": 0, "LOW": 0}
    assert snap["high_confidence_volume_share"] == 1.0
    assert snap["total_pnl_units"] == summary["total_pnl_units"]
    assert isinstance(snap["total_pnl_units"], int)
    assert snap["win_rate"] == pytest.approx(summary["win_rate"])
    assert 0.40 <= snap["win_rate"] <= 0.50
    assert snap["wallets"] > 0 and 0 < snap["binary_share"] < 1
    assert set(snap["gates"]) == {g.name for g in out.gates}
    assert snap["gates"]["unattributed_cash"]["value"] == 0.0
    assert all(set(v) == {"value", "threshold", "passed"} for v in snap["gates"].values())
    log = (env.cfg.backfill.data_dir / "on-complete.log").read_text()
    assert f"run={out.run_id}: swapped in with EXCHANGE TABLES" in log
    assert "snapshot " in log and any("snapshot" in line for line in lines)
    # The replaced version is kept as *_prev; no *_new is left behind.
    names = {r[0] for r in env.q("SELECT name FROM system.tables WHERE database = '{db}'")}
    assert {f"{t}_prev" for t in ANALYTICS_TABLES} <= names
    assert not {f"{t}{NEW_SUFFIX}" for t in ANALYTICS_TABLES} & names


def test_one_chunk_per_day_gives_the_same_tables(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Day-range chunks are an implementation detail: a build in one-day chunks equals one chunk."""
    from engine.analytics import build as build_mod

    env.restore_inputs()
    whole = build_mod.build_analytics(env.store, env.cfg, "_whole")
    lines: list[str] = []
    seen: list[tuple[str, int, int]] = []
    monkeypatch.setattr(build_mod, "max_chunk_rows", lambda _cfg: 1)
    daily = build_mod.build_analytics(
        env.store,
        env.cfg,
        "_daily",
        log=lines.append,
        progress=lambda p: seen.append((p.phase, p.chunks_done, p.chunks_total)),
    )
    try:
        assert daily == whole and whole["net_flows"] > 0
        for t in ANALYTICS_TABLES:
            a, b = (
                env.q(f"SELECT count(), sum(cityHash64(*)) FROM {{db}}.{t}{sfx}")[0]
                for sfx in ("_whole", "_daily")
            )
            assert a == b, t
        assert (
            got_net_flows(env, "_daily")
            == env.expected.restricted_to(mapped_conditions_of(env, "_daily")).net_flows
        )
        assert any(f"chunk {DAYS}/{DAYS} " in line for line in lines)
        assert ("chunks", DAYS, DAYS) in seen and seen[-1] == ("done", DAYS, DAYS)
        assert [done for phase, done, _ in seen if phase == "chunks"] == list(range(DAYS + 1))
    finally:
        build_mod.drop_analytics(env.store, "_whole")
        build_mod.drop_analytics(env.store, "_daily")


def mapped_conditions_of(e: Env, sfx: str) -> set[str]:
    return {r[0] for r in e.q(f"SELECT DISTINCT condition_id FROM {{db}}.token_outcomes{sfx}")}


def test_strict_gates_standalone_pass_on_clean_data(env: Env) -> None:
    from engine.analytics.gates import hard_gate, run_gates

    env.restore_inputs()
    assert hard_gate(env.store, env.cfg)
    relaxed = run_gates(env.store, env.cfg, "relaxed")
    assert all(g.passed and g.mode == "relaxed" for g in relaxed)
    names = {r[0] for r in env.q("SELECT name FROM system.tables WHERE database = '{db}'")}
    assert not any(n.endswith("_check") for n in names)  # scratch tables are dropped


def test_scratch_tables_are_counted_by_the_disk_panel_and_leave_the_disk_at_once(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the hard gate builds its *_check tables (and the rebuild's scratch tables inside),
    every table holding parts is in the Disk panel; once dropped (SYNC) its folder is gone."""
    from engine.analytics.gates import hard_gate
    from engine.store import panels

    env.restore_inputs()
    live = {r[0] for r in env.q("SELECT name FROM system.tables WHERE database = '{db}'")}
    folders: dict[str, set[Path]] = {}
    shown: set[str] = set()
    command = env.store.command

    def watched(sql: str) -> None:
        command(sql)
        rows = env.q(
            "SELECT name, data_paths, total_rows FROM system.tables WHERE database = '{db}'"
        )
        on_disk = {u.table for u in panels.disk(env.store).tables if u.parts > 0}
        for name, paths, total in rows:
            if name in live:
                continue
            folders.setdefault(name, set()).update(Path(p) for p in paths)
            if total:
                assert name in on_disk, f"{name} holds rows but the Disk panel misses it"
                shown.add(name)

    monkeypatch.setattr(env.store, "command", watched)
    assert hard_gate(env.store, env.cfg)
    monkeypatch.undo()
    names = {r[0] for r in env.q("SELECT name FROM system.tables WHERE database = '{db}'")}
    scratch = set(folders) - names  # gate_results stays: it is the gates' record
    assert {"rebuild_legs_check", "net_flows_check"} <= shown & scratch
    assert not any(n.endswith("_check") or n.startswith("rebuild_") for n in names)
    assert [(n, f) for n in scratch for f in folders[n] if f.exists()] == []


# ------------------------------------------------------------------------------------------------
# Planted faults: each fails the hard gate and leaves the live tables untouched


def _busy_day(e: Env) -> int:
    return int(
        e.q(
            "SELECT day_idx FROM {db}.erc1155_transfers_staging GROUP BY day_idx "
            "ORDER BY count() DESC, day_idx LIMIT 1"
        )[0][0]
    )


def fault_missing_day(e: Env) -> None:
    d = _busy_day(e)  # the checkpoint says COMPLETE, the rows are gone
    for t in ("erc20_transfers_staging", "erc1155_transfers_staging"):
        e.run(f"ALTER TABLE {{db}}.{t} DELETE WHERE day_idx = {d} SETTINGS mutations_sync = 2")


def fault_flipped_usdc_sign(e: Env) -> None:
    e.run(
        "ALTER TABLE {db}.erc20_transfers_staging UPDATE from_address = to_address, "
        f"to_address = from_address WHERE token = '{e.cfg.contracts.collateral}' "
        "SETTINGS mutations_sync = 2"
    )


def _copy_rows(e: Env, table: str, where: str, changes: dict[str, str]) -> None:
    cols = [
        r[0]
        for r in e.q(
            f"SELECT name FROM system.columns WHERE database = '{{db}}' AND table = '{table}' "
            "ORDER BY position"
        )
    ]
    select = ", ".join(changes.get(c, c) for c in cols)
    e.run(f"INSERT INTO {{db}}.{table} SELECT {select} FROM {{db}}.{table} WHERE {where}")


def fault_duplicated_rows(e: Env) -> None:
    # A day's logs staged twice under new keys (one block later, log_index shifted), as a reorg
    # re-read or a log_index bug does; FINAL keeps both. The checkpoints count both, too.
    d = _busy_day(e)
    shift = {"block_number": "block_number + 1", "log_index": "log_index + 1000"}
    _copy_rows(e, "erc20_transfers_staging", f"day_idx = {d}", shift)
    _copy_rows(e, "erc1155_transfers_staging", f"day_idx = {d}", shift)
    recount_checkpoints(e, "erc20_count", "erc20_transfers_staging")
    recount_checkpoints(e, "erc1155_count", "erc1155_transfers_staging")


def fault_duplicated_rows_other_partition(e: Env) -> None:
    # The same keys staged again under a day of another partition: the analytics' FINAL merges
    # within a partition only, so both copies stay and the duplicates gate counts them.
    d = _busy_day(e)
    _copy_rows(e, "erc20_transfers_staging", f"day_idx = {d}", {"day_idx": "day_idx + 64"})
    _copy_rows(e, "erc1155_transfers_staging", f"day_idx = {d}", {"day_idx": "day_idx + 64"})


def fault_winning_index_slip(e: Env) -> None:
    # winning_index written 1-based (as if read straight off a 1-based ClickHouse array).
    e.run(
        "ALTER TABLE {db}.condition_resolutions UPDATE winning_index = winning_index + 1 "
        "WHERE winning_index >= 0 SETTINGS mutations_sync = 2"
    )


def fault_dropped_batch_items(e: Env) -> None:
    # A decoder keeping only the first item of each TransferBatch, with checkpoints that agree.
    e.run(
        "ALTER TABLE {db}.erc1155_transfers_staging DELETE WHERE batch_index > 0 "
        "SETTINGS mutations_sync = 2"
    )
    recount_checkpoints(e, "erc1155_count", "erc1155_transfers_staging")


def recount_checkpoints(e: Env, column: str, table: str) -> None:
    """Newer checkpoint rows whose `column` equals the rows now staged in `table` per day."""
    cols = [c for c in CHECKPOINT_COLUMNS if c != "updated_at"]
    select = ", ".join("ifNull(s.n, 0)" if c == column else f"c.{c}" for c in cols)
    e.run(
        f"INSERT INTO {{db}}.backfill_checkpoint ({', '.join(cols)}, updated_at) "
        f"SELECT {select}, c.updated_at + INTERVAL 1 SECOND "
        "FROM {db}.backfill_checkpoint AS c FINAL "
        f"LEFT JOIN (SELECT day_idx, count() AS n FROM {{db}}.{table} GROUP BY day_idx) AS s "
        "ON c.day_idx = s.day_idx"
    )


FAULTS = {
    "missing_day": (fault_missing_day, {"completeness"}),
    "flipped_usdc_sign": (
        fault_flipped_usdc_sign,
        {"high_confidence_share", "conservation", "cash_neutrality"},
    ),
    "duplicated_rows": (fault_duplicated_rows, {"duplicates"}),
    "duplicated_rows_other_partition": (fault_duplicated_rows_other_partition, {"duplicates"}),
    "winning_index_slip": (fault_winning_index_slip, {"resolution_sanity"}),
    "dropped_batch_items": (fault_dropped_batch_items, {"conservation"}),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_fails_hard_gate_and_keeps_live_tables(env: Env, fault: str) -> None:
    plant, must_fail = FAULTS[fault]
    env.ensure_good_live()
    before = env.fingerprint()
    env.restore_inputs()
    plant(env)
    try:
        out: RebuildOutcome = rebuild(env.store, env.cfg)
        assert not out.swapped
        assert out.snapshot_path is None
        failed = {g.name for g in out.gates if not g.passed}
        assert must_fail <= failed, (fault, failed, out.reason)
        assert "hard gate failed" in out.reason
        assert env.fingerprint() == before  # the live tables are exactly the previous ones
        # Recorded where operators look.
        rows = env.q(f"SELECT name, passed FROM {{db}}.gate_results WHERE run_id = '{out.run_id}'")
        assert {n for n, p in rows if not p} == failed
        gates_log = (env.cfg.backfill.data_dir / "gates.log").read_text()
        for name in must_fail:
            assert f"run={out.run_id} {name} FAIL" in gates_log
        log = (env.cfg.backfill.data_dir / "on-complete.log").read_text()
        assert f"run={out.run_id}: NOT swapped, live tables kept" in log
    finally:
        env.restore_inputs()


def test_clean_rebuild_after_faults_swaps_again(env: Env) -> None:
    env.restore_inputs()
    out = rebuild(env.store, env.cfg)
    assert out.swapped, out.reason
    assert got_net_flows(env) == env.expected.restricted_to(mapped_conditions(env)).net_flows


def test_failed_swap_part_way_is_undone(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.analytics.rebuild as rb
    import engine.analytics.swap as sw

    env.ensure_good_live()
    env.restore_inputs()
    # Make every live table differ from what the rebuild will produce, so a half swap would show.
    for t in ANALYTICS_TABLES:
        env.run(f"ALTER TABLE {{db}}.{t} DELETE WHERE rand() % 2 = 0 SETTINGS mutations_sync = 2")
    before = env.fingerprint()
    real = sw._exchange
    calls: list[str] = []

    def flaky(store: Store, a: str, b: str, use_rename: bool) -> None:
        calls.append(a)
        if a == "trades_with_direction" and calls.count(a) == 1:
            raise RuntimeError("planted: EXCHANGE failed")
        real(store, a, b, use_rename)

    monkeypatch.setattr(sw, "_exchange", flaky)
    try:
        out = rb.rebuild(env.store, env.cfg)
        assert not out.swapped and "swap failed and was undone" in out.reason, out.reason
        assert calls[:3] == ["token_outcomes", "net_flows", "trades_with_direction"]
        assert env.fingerprint() == before
        log = (env.cfg.backfill.data_dir / "on-complete.log").read_text()
        assert f"run={out.run_id}: swapped back net_flows <-> net_flows_new" in log
    finally:
        monkeypatch.undo()
        env.restore_inputs()
        assert rebuild(env.store, env.cfg).swapped  # leave good live tables behind


def test_a_swap_cut_short_is_completed_by_the_repair(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process gone after two of four EXCHANGEs (no undo ran): the marker stays, the repair
    completes the swap, every live table is the new build, exact."""
    import engine.analytics.swap as sw

    env.ensure_good_live()
    env.restore_inputs()
    for t in ANALYTICS_TABLES:  # the live tables differ from what the rebuild will produce
        env.run(f"ALTER TABLE {{db}}.{t} DELETE WHERE rand() % 2 = 0 SETTINGS mutations_sync = 2")
    before = env.fingerprint()
    real = sw._exchange
    calls: list[str] = []

    def killed(store: Store, a: str, b: str, use_rename: bool) -> None:
        calls.append(a)
        if len(calls) == 3:
            raise KeyboardInterrupt("planted: the process is gone")  # no `except Exception` runs
        real(store, a, b, use_rename)

    monkeypatch.setattr(sw, "_exchange", killed)
    with pytest.raises(KeyboardInterrupt):
        rebuild(env.store, env.cfg)
    monkeypatch.undo()
    marker = sw.read_marker(env.store)
    assert marker is not None and marker.counts["net_flows"] > 0
    half = env.fingerprint()
    assert half["net_flows"] != before["net_flows"]  # swapped
    assert half["trades_with_direction"] == before["trades_with_direction"]  # not swapped

    lines: list[str] = []
    text = sw.repair(env.store, lines.append)
    assert lines == [text] and "completed it" in text and "2 of 4 tables were swapped" in text
    assert f"rebuild run={marker.run_id}" in text
    assert sw.read_marker(env.store) is None
    comments = dict(env.q("SELECT name, comment FROM system.tables WHERE database = '{db}'"))
    assert {t: comments[t] for t in ANALYTICS_TABLES} == dict.fromkeys(
        ANALYTICS_TABLES, sw.run_tag(marker.run_id)
    )
    assert {t: env.fingerprint()[t][0] for t in ANALYTICS_TABLES} == marker.counts
    exp = env.expected.restricted_to(mapped_conditions(env))
    assert got_net_flows(env) == exp.net_flows
    assert got_trades(env) == exp.trades
    # The replaced versions are kept as *_prev, nothing is left in *_new or *_swap.
    names = set(comments)
    assert not {f"{t}{s}" for t in ANALYTICS_TABLES for s in ("_new", "_swap")} & names
    assert {t: env.fingerprint_of(f"{t}_prev") for t in ANALYTICS_TABLES} == before
    assert sw.repair(env.store, lines.append) == ""  # nothing left to repair
