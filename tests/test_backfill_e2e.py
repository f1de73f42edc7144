"""End to end: the real CLI backfills a real anvil devchain into real chdb, exact to truth."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import E2E_DAYS, ground_truth_for
from tests.support.cli import cli, start_cli, store_query
from tests.support.config import set_rps, write_config

pytestmark = pytest.mark.slow  # end to end: real CLI, anvil devchain, store


def assert_store_matches_truth(config: Path, gt: dict) -> None:
    days = gt["days"]
    per_day20 = {
        int(d): (int(n), int(s))
        for d, n, s in store_query(
            config,
            "SELECT day_idx, count(), toString(sum(value)) FROM {db}.erc20_transfers_staging FINAL "
            "GROUP BY day_idx",
        )
    }
    per_day1155 = {
        int(d): (int(n), int(s))
        for d, n, s in store_query(
            config,
            "SELECT day_idx, count(), toString(sum(value)) FROM {db}.erc1155_transfers_staging "
            "FINAL GROUP BY day_idx",
        )
    }
    for d in range(days):
        want = gt["per_day"][str(d)]
        got20 = per_day20.get(d, (0, 0))
        got1155 = per_day1155.get(d, (0, 0))
        assert got20 == (want["erc20_count"], int(want["erc20_value_sum"])), f"erc20 day {d}"
        assert got1155 == (want["erc1155_count"], int(want["erc1155_value_sum"])), f"1155 day {d}"
    keys20 = store_query(
        config, "SELECT tx_hash, log_index FROM {db}.erc20_transfers_staging FINAL"
    )
    assert sorted(map(tuple, keys20)) == sorted(map(tuple, gt["erc20_keys"]))
    keys1155 = store_query(
        config, "SELECT tx_hash, log_index, batch_index FROM {db}.erc1155_transfers_staging FINAL"
    )
    assert sorted(map(tuple, keys1155)) == sorted(map(tuple, gt["erc1155_keys"]))
    # No duplicate survives FINAL, and checkpoint counts equal staged rows per day.
    dups = store_query(
        config,
        "SELECT (SELECT count() FROM {db}.erc20_transfers_staging FINAL) - "
        "(SELECT uniqExact(tx_hash, log_index) FROM {db}.erc20_transfers_staging), "
        "(SELECT count() FROM {db}.erc1155_transfers_staging FINAL) - "
        "(SELECT uniqExact(tx_hash, log_index, batch_index) FROM {db}.erc1155_transfers_staging)",
    )
    assert dups == [[0, 0]]
    cps = store_query(
        config,
        "SELECT day_idx, erc20_count, erc1155_count FROM {db}.backfill_checkpoint FINAL "
        "WHERE status = 'COMPLETE' ORDER BY day_idx",
    )
    assert [c[0] for c in cps] == list(range(days))
    for d, n20, n1155 in cps:
        assert (n20, n1155) == (per_day20.get(d, (0, 0))[0], per_day1155.get(d, (0, 0))[0])


def test_headless_backfill_is_exact(tmp_path: Path, devchain_cache: Path) -> None:
    config = write_config(tmp_path, days=E2E_DAYS, devchain_state=devchain_cache, shards=3)
    out = cli("--no-ui", "--config", str(config))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"days {E2E_DAYS}/{E2E_DAYS} (100.0%)" in out.stdout
    assert "rows/s" in out.stdout and "ETA" in out.stdout
    gt = ground_truth_for(config)
    assert gt["erc721_shaped"] >= 1 and gt["non_counterparty_erc20"] >= 1 and gt["empty_days"]
    assert_store_matches_truth(config, gt)
    # Boundary blocks (00:00:00 and 23:59:59 UTC) land on the right day.
    for kind in ("midnight", "last_second"):
        for block, day in gt["boundary_blocks"][kind]:
            got = store_query(
                config,
                f"SELECT DISTINCT day_idx FROM {{db}}.erc20_transfers_staging "
                f"WHERE block_number = {block} UNION DISTINCT SELECT DISTINCT day_idx "
                f"FROM {{db}}.erc1155_transfers_staging WHERE block_number = {block}",
            )
            assert got == [[day]], (kind, block, got)
    # A rerun finds everything COMPLETE and fetches nothing.
    again = cli("--no-ui", "--config", str(config))
    assert again.returncode == 0
    assert f"{E2E_DAYS}/{E2E_DAYS} days already COMPLETE" in again.stdout


def test_sigkill_console_mid_run_then_resume_is_exact(tmp_path: Path, devchain_cache: Path):
    """SIGKILL the whole console mid-run; the rerun is exact and never re-fetches a COMPLETE day."""
    from engine.config import load_config
    from engine.devchain import DevchainSpec, start_devchain
    from tests.support.fault_proxy import FaultProxy

    base = write_config(tmp_path / "spec", days=E2E_DAYS, devchain_state=devchain_cache)
    spec = DevchainSpec.from_config(load_config(base))
    with (
        start_devchain(spec, devchain_cache, log=lambda m: None) as chain,
        FaultProxy(chain.url) as proxy,
    ):
        config = write_config(
            tmp_path,
            days=E2E_DAYS,
            devchain_state=devchain_cache,
            shards=2,
            rpc_urls=[proxy.url],
            rps=3.0,  # slow the first run down (a low request budget) so the kill lands mid-run
        )
        proc = start_cli("--no-ui", "--config", str(config))
        assert proc.stdout is not None
        seen = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen += line
            m = re.search(r" days (\d+)/\d+ ", line)
            if m and int(m.group(1)) > 0:
                break
        else:
            proc.kill()
            raise AssertionError(f"no progress: {seen}")
        assert proc.poll() is None, "the console finished before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        done = store_query(
            config,
            "SELECT day_idx, from_block, to_block FROM {db}.backfill_checkpoint FINAL "
            "WHERE status = 'COMPLETE'",
        )
        assert 0 < len(done) < E2E_DAYS
        set_rps(config, 1000.0)
        proxy.reset_stats()
        out = cli("--no-ui", "--config", str(config))
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{len(done)}/{E2E_DAYS} days already COMPLETE" in out.stdout
        fetched = [
            (int(r.params[0]["fromBlock"], 16), int(r.params[0]["toBlock"], 16))
            for r in proxy.records
            if r.method == "eth_getLogs"
        ]
    assert fetched, "the rerun fetched nothing at all"
    for day, lo, hi in done:
        for a, b in fetched:
            assert b < lo or a > hi, f"COMPLETE day {day} ({lo}-{hi}) fetched again: {a}-{b}"
    assert_store_matches_truth(config, ground_truth_for(config))


def test_sigterm_stops_cleanly_and_rerun_resumes(tmp_path: Path, devchain_cache: Path) -> None:
    from tests.support.cli import ConsoleRun

    config = write_config(tmp_path, days=E2E_DAYS, devchain_state=devchain_cache, shards=2, rps=3.0)
    run = ConsoleRun(config)
    try:
        run.wait_for(lambda: run.days_complete() >= 1, 120, "a COMPLETE day")
        run.proc.send_signal(signal.SIGTERM)
        code = run.finish(60)
    finally:
        run.kill()
    assert code == 143, run.output[-2000:]
    assert "SIGTERM: stopping workers cleanly; a rerun resumes" in run.output
    assert "(stopped by SIGTERM)" in (tmp_path / "backfill" / "monitor.log").read_text()
    set_rps(config, 1000.0)
    out = cli("--no-ui", "--config", str(config))
    assert out.returncode == 0, out.stdout + out.stderr
    assert_store_matches_truth(config, ground_truth_for(config))


def test_bad_config_exits_2_before_anything_starts(tmp_path: Path) -> None:
    config = write_config(tmp_path, days=0)
    out = cli("--no-ui", "--config", str(config), timeout=60)
    assert out.returncode == 2
    assert "backfill.days = 0: expected an integer >= 1" in out.stderr
    assert not (tmp_path / "backfill").exists() and not (tmp_path / "clickhouse").exists()
    missing = cli("--config", str(tmp_path / "nope.toml"), timeout=60)
    assert missing.returncode == 2 and "nope.toml" in missing.stderr
    bad_env = cli(
        "--no-ui",
        "--config",
        str(write_config(tmp_path / "b", days=2)),
        env={"SHARDS": "zero"},
        timeout=60,
    )
    assert bad_env.returncode == 2 and "env SHARDS = 'zero'" in bad_env.stderr
    helptext = cli("--help", timeout=60)
    assert helptext.returncode == 0 and "--no-ui" in helptext.stdout and "ctl" in helptext.stdout
