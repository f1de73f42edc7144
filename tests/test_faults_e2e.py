"""Sustained faults end to end: nothing is lost, a crash loop alone is FATAL, a stuck run exits.

Real anvil devchain, real store, real worker processes; faults are real (SIGKILL, connections
dropped by tests/support/fault_proxy.py, a staging table gone from the store, a process killed
in the middle of the analytics swap). Every run that completes is exact against the devchain's
ground truth (per-day counts and sums, keys, 0 duplicates after FINAL), and every COMPLETE day
has the ground truth's block range.
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


# ---- killed in the middle of the analytics swap -----------------------------------------------
BACKFILL_ONLY = """
import sys
from engine.config import load_config
from engine.runtime import Engine

engine = Engine(load_config(sys.argv[1]), control=False, run_on_complete=False)
engine.start()
try:
    print(engine.wait(), flush=True)
finally:
    engine.stop()
"""

#: The console's on-complete step (engine.on_complete.rebuild_once), in a process the test kills
#: once the first analytics table is swapped: the others are not yet.
SWAP_VICTIM = """
import sys, threading, time
from engine.config import load_config
from engine.on_complete import rebuild_once
from engine.store.client import open_store

cfg = load_config(sys.argv[1])
store = open_store(cfg)
chain_id = int(sys.argv[2])

def log(msg):
    print(msg, flush=True)
    if msg.startswith("rebuild: swapped ") and "<->" in msg:
        time.sleep(600)  # SIGKILLed here

rebuild_once(store, cfg, chain_id, log, threading.Event())
"""

LIVE = ("token_outcomes", "net_flows", "trades_with_direction", "wallet_market_pnl")


def _counts(config: Path) -> dict[str, int]:
    sql = (
        "SELECT name, total_rows FROM system.tables WHERE database = '{db}' AND name IN ("
        + ", ".join(f"'{t}'" for t in LIVE)
        + ")"
    )
    return {str(n): int(r or 0) for n, r in store_query(config, sql)}


def test_killed_during_the_exchange_step_then_rerun_swaps_every_table(tmp_path, devchain_cache):
    config = write_config(tmp_path, days=E2E_DAYS, devchain_state=devchain_cache, shards=2)
    first = subprocess.run(
        [sys.executable, "-c", BACKFILL_ONLY, str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.stdout.strip().endswith("complete"), first.stdout[-2000:] + first.stderr[-2000:]
    chain_id = int(store_query(config, "SELECT any(chain_id) FROM {db}.backfill_checkpoint")[0][0])
    victim = subprocess.Popen(
        [sys.executable, "-c", SWAP_VICTIM, str(config), str(chain_id)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    swapped = threading.Event()

    def read() -> None:
        assert victim.stdout is not None
        for line in victim.stdout:
            lines.append(line)
            if line.startswith("rebuild: swapped ") and "<->" in line:
                swapped.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert swapped.wait(240), "".join(lines)[-3000:]
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
    finally:
        if victim.poll() is None:
            victim.kill()
    # Killed with one table swapped in and the others still the empty first versions.
    mid = _counts(config)
    assert sorted(mid) == sorted(LIVE), mid
    assert mid["token_outcomes"] > 0 and mid["net_flows"] == 0, mid

    again = cli("--no-ui", "--config", str(config), timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    # The rerun rebuilt and swapped every table (swap_in checks each live count against its
    # build): none is missing, none is left from the half swap.
    assert "rebuild: swapped in with" in again.stdout, again.stdout[-3000:]
    after = _counts(config)
    assert sorted(after) == sorted(LIVE), after
    assert all(n > 0 for n in after.values()), after
    assert after["token_outcomes"] == mid["token_outcomes"]  # the same data, the same build
