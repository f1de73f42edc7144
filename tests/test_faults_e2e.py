"""Sustained faults end to end: nothing is lost, a crash loop alone is FATAL, a stuck run exits.

Real anvil devchain, real store, real worker processes; faults are real (SIGKILL, connections
dropped by tests/support/fault_proxy.py, a staging table gone from the store, the store server's
disk full (a small tmpfs), the console or a rebuild killed in the middle of the analytics swap).
Every run that completes is exact against the devchain's ground truth (per-day counts and sums,
keys, 0 duplicates after FINAL), and every COMPLETE day has the ground truth's block range.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import E2E_DAYS, ground_truth_for
from tests.support.cli import ROOT, ConsoleRun, cli, store_query, worker_processes
from tests.support.config import write_config
from tests.support.fault_proxy import FaultConfig, FaultProxy
from tests.test_backfill_e2e import assert_store_matches_truth
from tests.test_rpc_faults_e2e import config_for, devchain
from tests.test_supervisor_e2e import monitor_log, slow_config

pytestmark = pytest.mark.slow

#: A key in the providers' URL path: it must never be printed.
KEY = "f00dfeedcafe1234beef5678"


def assert_complete_days_have_their_blocks(config: Path, gt: dict) -> None:
    rows = store_query(
        config,
        "SELECT day_idx, from_block, to_block FROM {db}.backfill_checkpoint FINAL "
        "WHERE status = 'COMPLETE' ORDER BY day_idx",
    )
    assert [int(r[0]) for r in rows] == list(range(gt["days"]))
    for d, lo, hi in rows:
        want = gt["per_day"][str(d)]
        if want["blocks"]:
            assert (int(lo), int(hi)) == (want["from_block"], want["to_block"]), (d, lo, hi)


def assert_exact(config: Path) -> None:
    gt = ground_truth_for(config)
    assert_store_matches_truth(config, gt)
    assert_complete_days_have_their_blocks(config, gt)


# ---- workers killed all the time --------------------------------------------------------------
def test_random_worker_sigkill_every_2_to_4s_through_the_whole_run(tmp_path, devchain_cache):
    """The issue's case: near the end every kill hits the last shard, which used to go FATAL.

    On a loaded machine a restarted worker often needs longer than the next kill to fetch its
    first chunk: those kills (from outside, before progress) do not count toward FATAL.
    """
    config = slow_config(tmp_path, devchain_cache, rps=6.0, shards=3)
    run = ConsoleRun(config)
    rng = random.Random(18)
    kills = 0
    try:
        run.wait_for(lambda: worker_processes(run.proc.pid), 60, "workers")
        while run.proc.poll() is None:
            time.sleep(rng.uniform(2.0, 4.0))
            procs = worker_processes(run.proc.pid)
            if procs:
                os.kill(procs[rng.choice(sorted(procs))][0], signal.SIGKILL)
                kills += 1
        code = run.finish(300)
    finally:
        run.kill()
    log = monitor_log(config)
    assert code == 0, run.output[-3000:]
    assert kills >= 8, kills
    assert "-> FATAL" not in log
    # Restarts after progress start the count again, and monitor.log says so.
    assert log.count("killed by signal 9") >= kills - 2
    assert "(after progress)" in log
    assert_exact(config)


# ---- every RPC URL down -----------------------------------------------------------------------
def _outage_config(
    tmp_path: Path, cache: Path, urls: list[str], give_up_s: float, rps: float
) -> Path:
    config = config_for(tmp_path, cache, urls, rps=rps)
    text = config.read_text()
    assert "max_block_range = 2000\n" in text
    config.write_text(
        text.replace(
            "max_block_range = 2000\n", f"max_block_range = 2000\ngive_up_after_s = {give_up_s}\n"
        )
    )
    return config


def test_every_rpc_url_down_for_60s_then_back_resumes_exact(tmp_path, devchain_cache):
    with contextlib.ExitStack() as stack:
        chain = stack.enter_context(devchain(tmp_path, devchain_cache))
        proxies = [stack.enter_context(FaultProxy(chain.url)) for _ in range(2)]
        urls = [f"{p.url}/v3/{KEY}" for p in proxies]
        # A slow run (1 request/s per URL): the outage lands with days still to do.
        config = _outage_config(tmp_path, devchain_cache, urls, give_up_s=600, rps=1.0)
        run = ConsoleRun(config)
        try:
            run.wait_for(lambda: run.days_complete() >= 2, 120, "two days COMPLETE")
            for p in proxies:
                p.set_config(FaultConfig(p_drop=1.0))
            down_at = time.monotonic()
            before = run.days_complete()
            time.sleep(60)
            during = run.days_complete()
            for p in proxies:
                p.set_config(FaultConfig())
            code = run.finish(300)
        finally:
            run.kill()
    out = run.output
    assert code == 0, out[-3000:]
    assert before < E2E_DAYS and during < E2E_DAYS  # the outage hit the middle of the run
    assert "STALLED" not in out  # 60 s is under rpc.give_up_after_s
    assert time.monotonic() - down_at > 60
    assert KEY not in out
    assert_exact(config)


def test_every_rpc_url_down_for_good_is_stalled_and_headless_exits_1(tmp_path, devchain_cache):
    give_up_s = 8.0
    with contextlib.ExitStack() as stack:
        chain = stack.enter_context(devchain(tmp_path, devchain_cache))
        proxies = [stack.enter_context(FaultProxy(chain.url)) for _ in range(2)]
        urls = [f"{p.url}/v3/{KEY}" for p in proxies]
        hosts = [p.url.split("//", 1)[1] for p in proxies]
        config = _outage_config(tmp_path, devchain_cache, urls, give_up_s=give_up_s, rps=1.0)
        run = ConsoleRun(config)
        try:
            run.wait_for(lambda: run.days_complete() >= 1, 120, "a day COMPLETE")
            for p in proxies:
                p.set_config(FaultConfig(p_drop=1.0))
            down_at = time.monotonic()
            code = run.finish(give_up_s + 60)
            took = time.monotonic() - down_at
        finally:
            run.kill()
    out = run.output
    assert code == 1, out[-3000:]
    assert give_up_s <= took <= give_up_s + 45, took
    stalled = [line for line in out.splitlines() if "STALLED: every RPC URL failing" in line]
    assert stalled, out[-3000:]
    for host in hosts:
        assert host in stalled[-1], stalled  # each URL named, masked
    assert KEY not in out
    assert "ETA" not in [ln for ln in out.splitlines() if "STALLED" in ln and " | " in ln][-1]
    # Nothing COMPLETE is lost: the rerun (providers back) finishes the rest exactly.
    with contextlib.ExitStack() as stack:
        chain = stack.enter_context(devchain(tmp_path, devchain_cache))
        proxy = stack.enter_context(FaultProxy(chain.url))
        text = config.read_text()
        for old in urls:
            text = text.replace(old, f"{proxy.url}/v3/{KEY}")
        config.write_text(text)
        again = cli("--no-ui", "--config", str(config), timeout=240)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert_exact(config)


# ---- the store failing inserts ----------------------------------------------------------------
def test_store_failing_inserts_for_30s_mid_run_waits_and_loses_nothing(tmp_path, devchain_cache):
    """Engine-level: the staging table is renamed away for 30 s (every erc20 insert fails)."""
    from engine.config import load_config
    from engine.runtime import Engine
    from engine.status import EngineState

    config = slow_config(tmp_path, devchain_cache, rps=8.0, shards=2)
    engine = Engine(load_config(config), control=False, run_on_complete=False)
    engine.start()
    try:
        store = engine.store
        assert store is not None
        db = store.database

        def complete() -> int:
            return int(
                store.query(
                    f"SELECT count() FROM {db}.backfill_checkpoint FINAL WHERE status='COMPLETE'"
                )[0][0]
            )

        deadline = time.monotonic() + 120
        while complete() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        store.command(f"RENAME TABLE {db}.erc20_transfers_staging TO {db}.erc20_hidden")
        at_outage = complete()
        seen = [at_outage]
        end = time.monotonic() + 30
        while time.monotonic() < end:
            seen.append(complete())  # checkpoints wait for their rows
            time.sleep(1.0)
        errors = [e for e in engine.status().errors if e.kind == "store"]
        store.command(f"RENAME TABLE {db}.erc20_hidden TO {db}.erc20_transfers_staging")
        deadline = time.monotonic() + 300
        while engine.state != EngineState.COMPLETE and time.monotonic() < deadline:
            time.sleep(0.2)
        assert engine.state == EngineState.COMPLETE
    finally:
        engine.stop()
    assert at_outage < 12 and set(seen) == {at_outage}, seen
    assert errors and errors[0].count >= 2  # the loader retried, and said so
    assert_exact(config)


# ---- the store's disk full --------------------------------------------------------------------
def test_store_disk_full_pauses_fetching_loses_nothing_and_resumes(tmp_path, devchain_cache):
    """The local store server's data dir on a small tmpfs, filled up mid-run, then freed."""
    from engine.config import load_config
    from engine.runtime import Engine
    from engine.status import EngineState, Phase
    from tests.test_store_server import _fill, small_tmpfs

    config = slow_config(tmp_path, devchain_cache, rps=8.0, shards=2)
    data = tmp_path / "clickhouse"  # the config's clickhouse.path
    with small_tmpfs(data, "128m"):
        engine = Engine(load_config(config), control=False, run_on_complete=False)
        engine.start()
        try:
            store = engine.store
            assert store is not None
            db = store.database

            def complete() -> int:
                sql = f"SELECT count() FROM {db}.backfill_checkpoint FINAL WHERE status='COMPLETE'"
                return int(store.query(sql)[0][0])

            deadline = time.monotonic() + 120
            while complete() < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            _fill(data / "filler")
            deadline = time.monotonic() + 90
            while not engine.status().disk_full and time.monotonic() < deadline:
                time.sleep(0.2)
            st = engine.status()
            assert st.disk_full, [e.last_message for e in st.errors]
            assert st.state == EngineState.PAUSED
            assert any("DISK FULL" in m for m in st.messages)
            report = engine.disk()
            assert report.free_bytes is not None and report.free_bytes < 1 << 20
            # Fetching stops: the workers idle, no checkpoint is written without its rows.
            deadline = time.monotonic() + 30
            live = [w for w in engine.status().workers if w.pid is not None]
            while time.monotonic() < deadline:
                live = [w for w in engine.status().workers if w.pid is not None]
                if all(w.phase == Phase.PAUSED for w in live):
                    break
                time.sleep(0.5)
            assert all(w.phase == Phase.PAUSED for w in live), [(w.shard, w.phase) for w in live]
            at = complete()  # a count on the full disk answers (never an empty result)
            seen = {at}
            for _ in range(5):
                time.sleep(1.0)
                seen.add(complete())
            assert seen == {at} and at < 12, seen
            (data / "filler").unlink()
            deadline = time.monotonic() + 300
            while engine.state != EngineState.COMPLETE and time.monotonic() < deadline:
                time.sleep(0.2)
            st = engine.status()
            assert engine.state == EngineState.COMPLETE, st.messages
            assert not st.disk_full and any("disk space is back" in m for m in st.messages)
        finally:
            engine.stop()
        assert_exact(config)


# ---- killed in the middle of the analytics swap -----------------------------------------------
#: `backfill-console ARGS` as the real process, with one change: after its first EXCHANGE TABLES it
#: says so and blocks there, for the test to SIGKILL it with one table swapped and three not.
KILLED_AFTER_FIRST_EXCHANGE = """
import sys, threading
import engine.analytics.swap as swap
from engine.cli import main

real = swap._exchange

def exchange(store, a, b, use_rename):
    real(store, a, b, use_rename)
    print(f"EXCHANGED {a} AND {b}", flush=True)
    threading.Event().wait()

swap._exchange = exchange
sys.exit(main(sys.argv[1:]))
"""

LIVE = ("token_outcomes", "net_flows", "trades_with_direction", "wallet_market_pnl")


def _kill_after_first_exchange(*args: str) -> str:
    """Run `backfill-console ARGS` until its first EXCHANGE, SIGKILL it; returns its output."""
    victim = subprocess.Popen(
        [sys.executable, "-c", KILLED_AFTER_FIRST_EXCHANGE, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    exchanged = threading.Event()

    def read() -> None:
        assert victim.stdout is not None
        for line in victim.stdout:
            lines.append(line)
            if line.startswith("EXCHANGED token_outcomes AND token_outcomes_new"):
                exchanged.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert exchanged.wait(300), "".join(lines)[-3000:]
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
    finally:
        if victim.poll() is None:
            victim.kill()
    return "".join(lines)


def _comments(config: Path) -> dict[str, str]:
    """Every analytics table (live, _new, _swap, _prev) -> its comment (the run that built it)."""
    rows = store_query(
        config,
        "SELECT name, comment FROM system.tables WHERE database = '{db}' AND ("
        + " OR ".join(f"startsWith(name, '{t}')" for t in LIVE)
        + ")",
    )
    return {str(n): str(c) for n, c in rows}


def _marker(config: Path) -> list[str]:
    return [str(r[0]) for r in store_query(config, "SELECT run_id FROM {db}.swap_in_progress")]


class _Rows:
    """tests/test_rebuild's readers of the analytics tables, on a console's store."""

    def __init__(self, config: Path) -> None:
        self.config = config

    def q(self, sql: str) -> list:
        return store_query(self.config, sql)


def assert_analytics_exact(config: Path) -> None:
    """Every live analytics table equals the expected analytics of the devchain's ground truth."""
    from engine.config import load_config
    from tests.support.expected_analytics import expected_analytics
    from tests.test_rebuild import got_net_flows, got_positions, got_trades

    gt = ground_truth_for(config)
    exp = expected_analytics(gt, set(load_config(config).contracts.exchanges))
    rows = _Rows(config)
    mapped = {r[0] for r in rows.q("SELECT DISTINCT condition_id FROM {db}.token_outcomes")}
    assert mapped == exp.mapped
    exp = exp.restricted_to(mapped)
    assert got_net_flows(rows) == exp.net_flows  # type: ignore[arg-type]
    assert got_trades(rows) == exp.trades  # type: ignore[arg-type]
    keep = ("positions", "cash_units", "pnl_units", "resolved")
    got = got_positions(rows)  # type: ignore[arg-type]
    assert {k: {f: v[f] for f in keep} for k, v in got.items()} == {
        k: {f: v[f] for f in keep} for k, v in exp.positions.items()
    }


def _assert_one_whole_build(config: Path, run_id: str) -> None:
    """Every live table is the build of `run_id`; nothing left in *_new or *_swap; no marker."""
    comments = _comments(config)
    assert {t: comments.get(t) for t in LIVE} == dict.fromkeys(LIVE, f"rebuild run={run_id}")
    assert not [n for n in comments if n.endswith(("_new", "_swap"))], comments
    assert _marker(config) == []


def test_killed_during_the_exchange_step_then_rerun_every_table_whole(tmp_path, devchain_cache):
    """The console SIGKILLed in its on-complete rebuild's EXCHANGE step (its store server dies
    with it), started again: the half swap is repaired first, the rebuild runs and swaps, exact.
    Then a manual `backfill-console rebuild` SIGKILLed the same way (the on-complete rebuild is
    recorded as done): the next console start completes that swap, exact."""
    config = write_config(tmp_path, days=E2E_DAYS, devchain_state=devchain_cache, shards=2)
    out = _kill_after_first_exchange("--no-ui", "--config", str(config))
    assert "all gates passed" not in out  # killed in the swap, before its end
    (run1,) = _marker(config)
    mid = _comments(config)
    assert mid["token_outcomes"] == f"rebuild run={run1}"  # swapped in
    assert mid["net_flows_new"] == f"rebuild run={run1}" and mid["net_flows"] == ""  # not yet

    again = cli("--no-ui", "--config", str(config), timeout=300)
    text = again.stdout + again.stderr
    assert again.returncode == 0, text[-3000:]
    assert f"rebuild: repaired a swap cut short (rebuild run={run1} " in text, text[-3000:]
    assert "1 of 4 tables were swapped): completed it" in text
    assert "rebuild: swapped in with EXCHANGE TABLES" in text  # then the on-complete rebuild
    (reason,) = [r for (r,) in store_query(config, "SELECT reason FROM {db}.on_complete_runs")]
    assert reason.startswith("all gates passed")
    last = _comments(config)["net_flows"].removeprefix("rebuild run=")
    assert last != run1
    _assert_one_whole_build(config, last)
    assert_exact(config)
    assert_analytics_exact(config)

    out = _kill_after_first_exchange("rebuild", "--config", str(config))
    (run3,) = _marker(config)
    assert _comments(config)["token_outcomes"] == f"rebuild run={run3}" != f"rebuild run={last}"
    again = cli("--no-ui", "--config", str(config), timeout=300)
    text = again.stdout + again.stderr
    assert again.returncode == 0, text[-3000:]
    assert f"rebuild: repaired a swap cut short (rebuild run={run3} " in text, text[-3000:]
    assert "rebuild: already done for this backfill" in text  # trusted only after the repair
    _assert_one_whole_build(config, run3)
    assert_analytics_exact(config)
