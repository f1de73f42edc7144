"""Unit tests of how a shard's last error is kept: a failed day stays visible until COMPLETE."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import MonitorConfig
from engine.protocol import DayDone, Error
from engine.supervisor import Shard, Supervisor, killed_from_outside


def supervisor(tmp_path: Path) -> Supervisor:
    settings = MonitorConfig(
        stall_after_s=60,
        check_interval_s=1,
        grace_s=3,
        max_restarts=5,
        restart_window_s=600,
        backoff_initial_s=1,
        backoff_max_s=2,
    )
    return Supervisor(settings, tmp_path, lambda k, n: {}, lambda sh, msg: None, shards=2)


def error(kind: str, msg: str, day: int | None = 4) -> Error:
    return Error(kind=kind, day=day, msg=msg)


def test_failed_day_stays_the_last_error_until_it_completes(tmp_path: Path) -> None:
    sup, sh = supervisor(tmp_path), Shard(0)
    sup._note(sh, error("rpc_429", "eth_getLogs rpc_429 from http://127.0.0.1:1"))
    assert sh.last_error.startswith("rpc_429: ")
    sup._note(sh, error("range_failed", "blocks [200, 200] could not be fetched (http_5xx)"))
    sup._note(sh, error("day_failed", "day 4 not complete: blocks [200, 200] failed"))
    # The range that failed is the detail to keep; routine events later do not hide it.
    for kind in ("rpc_429", "range_split", "timeout"):
        sup._note(sh, error(kind, "routine", day=6))
    assert sh.last_error == "range_failed: blocks [200, 200] could not be fetched (http_5xx)"
    sup._note(sh, DayDone(day=6, first=0, last=0))
    assert sh.last_error.startswith("range_failed: blocks [200, 200]")  # another day done
    sup._note(sh, DayDone(day=4, first=0, last=0))
    assert sh.failed_days == {}
    sup._note(sh, error("rpc_429", "later", day=8))
    assert sh.last_error == "rpc_429: later"


def test_the_latest_failed_day_is_shown_while_several_are_pending(tmp_path: Path) -> None:
    sup, sh = supervisor(tmp_path), Shard(1)
    sup._note(sh, error("day_failed", "day 3 not complete: timeout failed", day=3))
    sup._note(sh, error("day_failed", "day 5 not complete: conn failed", day=5))
    assert sh.last_error == "day_failed: day 5 not complete: conn failed"
    sup._note(sh, DayDone(day=5, first=0, last=0))
    assert sh.last_error == "day_failed: day 3 not complete: timeout failed"


@pytest.mark.parametrize(
    "returncode, outside",
    [
        (-signal.SIGKILL, True),  # kill -9, the OOM killer
        (-signal.SIGTERM, True),
        (-signal.SIGINT, True),
        (-signal.SIGHUP, True),
        (-signal.SIGQUIT, True),
        (-signal.SIGSEGV, False),  # the worker's own crash
        (-signal.SIGABRT, False),
        (-signal.SIGBUS, False),
        (-signal.SIGFPE, False),
        (-signal.SIGILL, False),
        (1, False),
        (0, False),
        (None, False),
    ],
)
def test_killed_from_outside_only_for_stop_and_kill_signals(returncode, outside) -> None:
    assert killed_from_outside(returncode) is outside


def _died_of(sig: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", f"import os; os.kill(os.getpid(), {int(sig)})"])
    proc.wait(30)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("sig, fatal", [(signal.SIGSEGV, True), (signal.SIGKILL, False)])
def test_a_crash_signal_loop_goes_fatal_a_kill_loop_does_not(tmp_path: Path, sig, fatal) -> None:
    """Processes really dying of the signal, before any progress, max_restarts + 1 times."""
    sup, sh = supervisor(tmp_path), Shard(0)
    sup.shards[0] = sh
    for i in range(sup.settings.max_restarts + 1):
        sh.proc, sh.exit_handled = _died_of(sig), False
        sup._tick_shard(sh, 1000.0 + i, check_stalls=False)
    assert (sh.state == "FATAL") is fatal, (sh.state, sh.last_restart_reason)
    assert sh.last_restart_reason == f"killed by signal {int(sig)}"
    if not fatal:  # restarted with the growing backoff, capped at backoff_max_s
        assert sh.state == "BACKOFF" and sh.backoff_s == sup.settings.backoff_max_s
