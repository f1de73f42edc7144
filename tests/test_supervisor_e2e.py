"""Supervisor and monitor with real worker processes, real anvil and real chdb.

Chaos (random SIGKILLs), a SIGSTOPped worker, a flapping worker, scaling mid-run, abort + rerun,
and the control socket. Every run ends exact against the devchain's ground truth.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.control import socket_path_for
from tests.conftest import ground_truth_for
from tests.support.cli import ConsoleRun, cli, store_query, worker_processes
from tests.support.config import set_rps, write_config
from tests.test_backfill_e2e import assert_store_matches_truth

pytestmark = pytest.mark.slow  # end to end: real CLI and workers, anvil devchain, store

DAYS = 12


def slow_config(tmp_path: Path, cache: Path, rps: float, **kw) -> Path:
    """A config whose request budget makes the run last long enough to act on it."""
    return write_config(tmp_path, days=DAYS, devchain_state=cache, rps=rps, **kw)


def monitor_log(config: Path) -> str:
    path = config.parent / "backfill" / "monitor.log"
    return path.read_text() if path.exists() else ""


class NeverTwo:
    """Samples the process table; records any moment a shard has two live workers."""

    def __init__(self, console_pid: int) -> None:
        self.pid = console_pid
        self.violations: list[dict] = []
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            procs = worker_processes(self.pid)
            self.samples += 1
            bad = {k: v for k, v in procs.items() if len(v) > 1}
            if bad:
                self.violations.append(bad)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(2)


def test_chaos_random_sigkills_end_exact(tmp_path: Path, devchain_cache: Path) -> None:
    config = slow_config(tmp_path, devchain_cache, rps=6.0, shards=3)
    run = ConsoleRun(config)
    guard = NeverTwo(run.proc.pid)
    rng = random.Random(42)
    kills = 0
    try:
        run.wait_for(lambda: worker_processes(run.proc.pid), 60, "workers")
        while run.proc.poll() is None and kills < 6:
            time.sleep(1.5)
            procs = worker_processes(run.proc.pid)
            if not procs:
                continue
            shard = rng.choice(sorted(procs))
            os.kill(procs[shard][0], signal.SIGKILL)
            kills += 1
        code = run.finish(300)
    finally:
        guard.stop()
        run.kill()
    assert code == 0, run.output[-3000:]
    assert kills >= 3
    assert guard.violations == [] and guard.samples > 20
    log = monitor_log(config)
    assert log.count("killed by signal 9") >= kills - 1  # the last may land as a worker finishes
    assert_store_matches_truth(config, ground_truth_for(config))


def test_sigstopped_worker_is_detected_killed_and_replaced(tmp_path: Path, devchain_cache: Path):
    config = slow_config(
        tmp_path,
        devchain_cache,
        rps=4.0,
        shards=2,
        monitor={"stall_after_s": 3, "check_interval_s": 0.5, "grace_s": 1},
    )
    run = ConsoleRun(config)
    try:
        run.wait_for(lambda: run.worker_states() == ["RUNNING"] * 2, 60, "both workers RUNNING")
        victim = worker_processes(run.proc.pid)[1][0]
        os.kill(victim, signal.SIGSTOP)
        run.wait_for(lambda: "-> STALLED" in monitor_log(config), 30, "stall detection")
        run.wait_for(
            lambda: worker_processes(run.proc.pid).get(1, [victim]) != [victim], 30, "replacement"
        )
        code = run.finish(300)
    finally:
        run.kill()
    assert code == 0, run.output[-3000:]
    log = monitor_log(config)
    assert f"shard=1 pid={victim} RUNNING -> STALLED (no heartbeat for" in log
    assert "shard=1" in log.split("-> STALLED")[1]  # then BACKOFF/STARTING for the same shard
    assert_store_matches_truth(config, ground_truth_for(config))


def test_flapping_worker_goes_backoff_then_fatal_others_finish(tmp_path: Path, devchain_cache):
    """Engine-level: shard 1's command dies at once; shards 0 and 2 are real workers."""
    from engine.config import load_config
    from engine.runtime import Engine

    config = write_config(
        tmp_path,
        days=DAYS,
        devchain_state=devchain_cache,
        shards=3,
        monitor={"max_restarts": 2, "restart_window_s": 60, "backoff_initial_s": 0.2},
    )
    cfg = load_config(config)
    engine = Engine(cfg, control=False, run_on_complete=False)
    engine.start()
    try:
        sup = engine.supervisor
        assert sup is not None
        real = sup.command_for

        def command_for(shard: int, shards: int) -> list[str]:
            if shard == 1:
                return [sys.executable, "-c", "import sys; sys.exit('RPC refused')"]
            return real(shard, shards)

        # Restart shard 1 through the injected command (first launch was a real worker).
        sup.command_for = command_for
        sup.restart(1, "test: make shard 1 flap")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            st = {w.shard: w.state for w in engine.status().workers}
            if st.get(1) == "FATAL" and st.get(0) == "DONE" and st.get(2) == "DONE":
                break
            time.sleep(0.2)
        st = {w.shard: w for w in engine.status().workers}
        assert st[1].state == "FATAL", st
        assert st[0].state == "DONE" and st[2].state == "DONE", st
        assert st[1].restarts >= 2
    finally:
        engine.stop()
    log = monitor_log(config)
    assert "shard=1" in log and "-> BACKOFF" in log and "-> FATAL" in log
    assert log.index("-> BACKOFF") < log.index("-> FATAL")
    days_done = {d for d in range(DAYS) if d % 3 != 1}
    rows = store_query(
        config, "SELECT day_idx FROM {db}.backfill_checkpoint FINAL WHERE status='COMPLETE'"
    )
    got = {int(r[0]) for r in rows}
    assert got == days_done


def test_scale_4_7_2_mid_run_is_exact_and_done_workers_stay_done(tmp_path, devchain_cache):
    config = slow_config(tmp_path, devchain_cache, rps=6.0, shards=4)
    run = ConsoleRun(config)
    guard = NeverTwo(run.proc.pid)
    try:
        run.wait_for(lambda: run.days_complete() >= 1, 90, "first day")
        out = run.ctl("scale", "7")
        assert out.returncode == 0 and "scaling 4 -> 7" in out.stdout, out.stdout + out.stderr
        run.wait_for(lambda: "scale" not in run.status()["busy"], 60, "scaling to 7 done")
        assert run.status()["shards"] == 7
        out = run.ctl("scale", "2")
        assert out.returncode == 0, out.stderr
        run.wait_for(lambda: "scale" not in run.status()["busy"], 60, "scaling to 2 done")
        assert run.status()["shards"] == 2
        code = run.finish(300)
    finally:
        guard.stop()
        run.kill()
    assert code == 0, run.output[-3000:]
    assert guard.violations == []
    log = monitor_log(config)
    assert "scale 4 -> 7 shards" in log and "scale 7 -> 2 shards" in log
    assert "DONE -> STARTING" not in log and "DONE -> BACKOFF" not in log
    assert_store_matches_truth(config, ground_truth_for(config))


def test_ctl_against_headless_run_then_abort_and_resume(tmp_path: Path, devchain_cache: Path):
    config = slow_config(tmp_path, devchain_cache, rps=1.5, shards=2)
    run = ConsoleRun(config)
    try:
        run.wait_for(lambda: socket_path_for(config.parent / "backfill").exists(), 60, "socket")
        sock = socket_path_for(config.parent / "backfill")
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        # A second console on the same data dir is refused, naming the pid.
        second = cli("--no-ui", "--config", str(config), timeout=60)
        assert second.returncode == 2 and f"pid {run.proc.pid}" in second.stderr
        run.wait_for(lambda: len(run.worker_states()) == 2, 60, "workers in status")
        st = run.status()
        for key in ("shards", "state", "days_complete", "days_total", "workers"):
            assert key in st
        assert st["days_total"] == DAYS and st["shards"] == 2
        w = st["workers"][0]
        for key in ("shard", "pid", "state", "day", "heartbeat_age_s", "rows", "restarts"):
            assert key in w
        text = run.ctl("status")
        assert text.returncode == 0 and "shard" in text.stdout
        assert "paused" in run.ctl("pause").stdout
        run.wait_for(lambda: run.status()["state"] == "paused", 10, "paused state")
        assert run.ctl("resume").returncode == 0
        assert "restarting shard 0" in run.ctl("restart", "0").stdout
        assert run.ctl("restart", "9").returncode == 1
        assert "OPTIMIZE" in run.ctl("optimize").stdout
        run.wait_for(lambda: "OPTIMIZE done" in run.output, 60, "optimize report")
        run.wait_for(lambda: run.days_complete() >= 1, 90, "a day")
        assert "aborting" in run.ctl("abort").stdout
        code = run.finish(120)
    finally:
        run.kill()
    assert code == 3, run.output[-3000:]
    assert not sock.exists()
    gone = cli("ctl", "--config", str(config), "status")
    assert gone.returncode == 1 and "no console is running" in gone.stderr
    # Rerun: resumes, finishes exact.
    set_rps(config, 1000.0)
    out = cli("--no-ui", "--config", str(config))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "days already COMPLETE" in out.stdout
    assert_store_matches_truth(config, ground_truth_for(config))


def test_two_hosts_dry_run_render_disjoint_plans(tmp_path: Path) -> None:
    config = write_config(tmp_path, days=20, shards=4, clickhouse={"url": "http://127.0.0.1:1"})
    a = cli("--config", str(config), "--shard-ids", "0-1", "--dry-run")
    b = cli("--config", str(config), "--shard-ids", "2,3", "--dry-run")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert "shard(s) 0-1" in a.stdout and "shard 2" not in a.stdout
    assert "shard(s) 2-3" in b.stdout and "shard 0:" not in b.stdout
    assert "server http://127.0.0.1:1" in a.stdout
    assert "shard 0: 5 day(s): 0, 4, 8, 12, ..." in a.stdout
    bad = cli("--config", str(config), "--shard-ids", "3-5", "--dry-run")
    assert bad.returncode == 2 and "--shard-ids" in bad.stderr


def test_worker_exits_when_console_dies(tmp_path: Path, devchain_cache: Path) -> None:
    config = slow_config(tmp_path, devchain_cache, rps=2.0, shards=2)
    run = ConsoleRun(config)
    try:
        run.wait_for(lambda: len(worker_processes(run.proc.pid)) == 2, 60, "workers")
        pids = [p for ps in worker_processes(run.proc.pid).values() for p in ps]
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(10)
    finally:
        run.kill()
    import psutil

    end = time.monotonic() + 15
    while time.monotonic() < end and any(psutil.pid_exists(p) and _alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(psutil.pid_exists(p) and _alive(p) for p in pids)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
