"""End to end on the local store server: live SQL while a console runs, a store server SIGKILLed
mid-run, and two consoles (--shard-ids) on one server with exactly one on-complete rebuild.

Real CLI, real anvil devchain, real local ClickHouse server (engine/store/server.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ground_truth_for
from tests.support.cli import ConsoleRun, cli, store_query
from tests.support.config import set_rps, write_config
from tests.test_backfill_e2e import assert_store_matches_truth

DAYS = 4


def _server_pid(clickhouse: Path) -> int:
    return int(json.loads((clickhouse / "server.json").read_text())["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"


@pytest.mark.slow
def test_live_sql_and_a_sigkilled_store_server_mid_run(tmp_path: Path, devchain_cache: Path):
    config = write_config(tmp_path, days=DAYS, devchain_state=devchain_cache, shards=2, rps=3.0)
    run = ConsoleRun(config)
    try:
        run.wait_for(lambda: run.days_complete() >= 1, 180, "a COMPLETE day")
        # Operators' SQL while the console runs: the sql command and plain curl.
        out = cli(
            "sql",
            "--config",
            str(config),
            "SELECT count() AS days FROM backfill_checkpoint FINAL WHERE status = 'COMPLETE'",
        )
        assert out.returncode == 0, out.stdout + out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].strip() == "days" and int(lines[2]) >= 1 and lines[3] == "(1 row)"
        ch = tmp_path / "clickhouse"
        info = json.loads((ch / "server.json").read_text())
        password = (ch / "server-password").read_text().strip()
        curl = subprocess.run(
            [
                "curl",
                "-sS",
                "-u",
                f"backfill:{password}",
                f"http://127.0.0.1:{info['port']}/",
                "--data-binary",
                "SELECT count() FROM polymarket.worker_heartbeats FINAL",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert curl.returncode == 0 and int(curl.stdout) >= 1, curl.stdout + curl.stderr
        # Kill the store server under the running console: it starts a new one and goes on.
        old = _server_pid(ch)
        os.kill(old, signal.SIGKILL)
        run.wait_for(lambda: not _alive(old), 30, "the server to die")
        run.wait_for(lambda: _server_pid(ch) != old, 120, "a new store server")
        code = run.finish(300)
    finally:
        run.kill()
    assert code == 0, run.output[-3000:]
    assert password not in run.output
    for log in (tmp_path / "backfill").glob("*.log"):
        assert password not in log.read_text(errors="replace"), log
    assert_store_matches_truth(config, ground_truth_for(config))


def _console_config(folder: Path, clickhouse: Path, devchain_cache: Path, rps: float) -> Path:
    return write_config(
        folder,
        days=DAYS * 2,
        devchain_state=devchain_cache,
        shards=4,
        rps=rps,
        clickhouse={"path": str(clickhouse)},
    )


@pytest.mark.slow
def test_two_consoles_on_one_server_exact_and_one_rebuild(tmp_path: Path, devchain_cache: Path):
    """SHARDS=4: console A runs shards 0-1 (slowly), B runs 2-3. A shows B's days from the
    store; A is SIGKILLed mid-run and started again; exactly one on-complete rebuild runs."""
    ch = tmp_path / "clickhouse"
    conf_a = _console_config(tmp_path / "a", ch, devchain_cache, 1.0)
    conf_b = _console_config(tmp_path / "b", ch, devchain_cache, 1000.0)
    a = ConsoleRun(conf_a, "--shard-ids", "0-1")
    try:
        a.wait_for(lambda: a.days_complete() >= 1, 240, "A's first COMPLETE day")
        b = ConsoleRun(conf_b, "--shard-ids", "2-3")
        try:
            assert b.finish(300) == 0, b.output[-3000:]
        finally:
            b.kill()
        assert "rebuild: left to the console that completes the last day" in b.output
        # A shows the whole backfill: B's 4 days (done after A started) plus its own.
        a.wait_for(lambda: a.status()["days_complete"] >= DAYS + 1, 60, "A counting B's days")
        status = a.status()
        assert status["days_total"] == 2 * DAYS and {w["shard"] for w in status["workers"]} == {
            0,
            1,
        }
        assert a.proc.poll() is None and a.days_complete() < 2 * DAYS, "A finished too soon"
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
    finally:
        a.kill()
    set_rps(conf_a, 1000.0)
    again = cli("--no-ui", "--shard-ids", "0-1", "--config", str(conf_a))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "rebuild:" in again.stdout and "already done" not in again.stdout
    # B started again on the finished backfill: no second rebuild.
    late = cli("--no-ui", "--shard-ids", "2-3", "--config", str(conf_b))
    assert late.returncode == 0, late.stdout + late.stderr
    assert "rebuild: already done for this backfill by console on-complete rebuild" in late.stdout
    runs = store_query(conf_a, "SELECT count(), any(holder) FROM {db}.on_complete_runs")
    assert runs[0][0] == 1, runs
    assert_store_matches_truth(conf_a, ground_truth_for(conf_a))


@pytest.mark.slow
def test_backfill_into_a_remote_server_is_exact(tmp_path: Path, devchain_cache: Path, store_server):
    """clickhouse.url at a separately started server, with user and password: the same exact
    result, and the password in no output or log."""
    from tests.conftest import server_section

    config = write_config(
        tmp_path,
        days=DAYS,
        devchain_state=devchain_cache,
        shards=2,
        clickhouse=server_section(store_server, "t_remote_backfill"),
    )
    out = cli("--no-ui", "--config", str(config))
    assert out.returncode == 0, out.stdout + out.stderr
    plan = cli("--dry-run", "--config", str(config)).stdout
    assert f"server http://127.0.0.1:{store_server.port}" in plan, plan
    assert not (tmp_path / "clickhouse").exists()  # no local server was started
    assert store_server.password not in out.stdout + out.stderr
    for log in (tmp_path / "backfill").glob("*.log"):
        assert store_server.password not in log.read_text(errors="replace"), log
    assert_store_matches_truth(config, ground_truth_for(config))
