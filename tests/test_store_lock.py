"""The store-resident analytics lock and the exactly-once on-complete rebuild, on a real server."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.config import load_config
from engine.on_complete import ANALYTICS_LOCK, previous_run, rebuild_once
from engine.store.lock import LockHeld, StoreLock, holder_gone, process_identity
from tests.conftest import server_store, server_toml
from tests.support.cli import ROOT, cli


@pytest.fixture
def store(store_server, request):
    st = server_store(store_server, "t_lock_" + request.node.name.split("[")[0][-20:])
    yield st
    st.close()


def test_second_holder_is_refused_with_who_holds_it(store) -> None:
    first = StoreLock(store, "x", "rebuild on host-a pid 1")
    second = StoreLock(store, "x", "rebuild on host-b pid 2")
    with first:
        with pytest.raises(LockHeld) as err:
            second.acquire()
        msg = str(err.value)
        assert "rebuild on host-a pid 1" in msg and f"{store.database}.lock_x" in msg
        assert "last heartbeat" in msg
    second.acquire()  # free again once released
    second.release()
    assert first.current() is None


def test_exactly_one_of_many_contenders_gets_it(store) -> None:
    got: list[int] = []
    held: list[int] = []
    start = threading.Barrier(6)

    def contend(i: int) -> None:
        lock = StoreLock(store, "race", f"contender {i}")
        start.wait()
        try:
            lock.acquire()
        except LockHeld:
            held.append(i)
            return
        got.append(i)
        time.sleep(1.0)  # hold it while the others try
        lock.release()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 1 and len(held) == 5, (got, held)


def test_a_dead_holder_is_broken_and_cannot_release_the_new_lock(store) -> None:
    dead = StoreLock(store, "stale", "a holder that died", stale_after_s=1.0, heartbeat_s=60)
    dead.acquire()
    dead._stop.set()  # its heartbeats stop, as when the process is killed
    alive = StoreLock(store, "stale", "the next one", stale_after_s=1.0)
    with pytest.raises(LockHeld):
        alive.acquire()  # fresh: not broken yet
    time.sleep(1.5)
    alive.acquire()
    assert alive.current()[0] == "the next one"
    dead.release()  # a late release of the dead holder leaves the new lock alone
    assert alive.current()[0] == "the next one"
    alive.release()
    # A lock table whose creator died before writing its row is broken too.
    store.command(
        f"CREATE TABLE {store.database}.lock_empty (token String, holder String, "
        "at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY at"
    )
    time.sleep(1.1)
    late = StoreLock(store, "empty", "after a crash", stale_after_s=0.5)
    late.acquire()
    late.release()


HOLD_AND_WAIT = """
import sys
from engine.store.client import Store
from engine.store.lock import StoreLock
url, db, user, password = sys.argv[1:5]
lock = StoreLock(Store(url, db, user, password), "gone", "a holder SIGKILLed")
lock.acquire()
print("held", flush=True)
sys.stdin.read()  # until killed
"""


@pytest.mark.slow
def test_a_holder_killed_on_this_machine_is_broken_at_once(store, store_server) -> None:
    """Its heartbeat is fresh, but its process is gone: no minute of waiting."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_WAIT, store_server.url, store.database]
        + [store_server.user, store_server.password],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(LockHeld, match="a holder SIGKILLed"):
            StoreLock(store, "gone", "while it lives").acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    finally:
        if holder.poll() is None:
            holder.kill()
    t0 = time.monotonic()
    lock = StoreLock(store, "gone", "right after")  # stale_after_s is the default 60 s
    lock.acquire()
    assert time.monotonic() - t0 < 10
    assert lock.current()[0] == "right after"
    lock.release()


@pytest.mark.parametrize(
    "token, gone",
    [
        ("", False),
        ("0123abcd", False),  # a token of an older version: no identity, heartbeat rule only
        ("x@" + process_identity(), False),  # this very process
        ("x@other-host|b|ns|1|2", False),  # another machine: its pids mean nothing here
        ("x@" + "|".join(process_identity().split("|")[:3] + ["999999999", "5"]), True),
        # This process's pid with another start time: the pid was reused, the holder is gone.
        ("x@" + "|".join(process_identity().split("|")[:4] + ["1"]), True),
        ("x@" + "|".join(process_identity().split("|")[:3] + ["abc", "5"]), False),
    ],
    # Ids without the pid: pytest-xdist requires every worker to collect the same names.
    ids=[
        "empty",
        "older-version",
        "this-process",
        "other-host",
        "pid-gone",
        "pid-reused",
        "pid-not-a-number",
    ],
)
def test_holder_gone_only_when_sure(token: str, gone: bool) -> None:
    assert holder_gone(token) is gone


def test_rebuild_once_runs_once_across_concurrent_consoles(store_server, tmp_path: Path):
    """Two consoles see every day COMPLETE at the same moment: one rebuild, the other skips."""
    path = tmp_path / "config.toml"
    path.write_text(server_toml(store_server, "t_once") + '[backfill]\ndata_dir = "bf"\ndays = 2\n')
    cfg = load_config(path, env={})
    st = server_store(store_server, "t_once")
    outcomes: list[object] = []
    logs: list[str] = []
    stop = threading.Event()

    def console() -> None:
        outcomes.append(rebuild_once(st, cfg, 137, logs.append, stop))

    threads = [threading.Thread(target=console) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(o is None for o in outcomes) == [False, True], logs
    assert any("already done for this backfill" in m for m in logs), logs
    assert st.scalar("SELECT count() FROM t_once.on_complete_runs") == 1
    assert previous_run(st, 137, dt.date(2022, 12, 18), 2) is not None
    assert previous_run(st, 137, dt.date(2022, 12, 18), 3) is None  # another backfill
    st.close()


def test_cli_rebuild_and_hard_gate_refuse_while_the_lock_is_held(store_server, tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_text(server_toml(store_server, "t_cli_lock") + '[backfill]\ndata_dir = "bf"\n')
    st = server_store(store_server, "t_cli_lock")
    try:
        with StoreLock(st, ANALYTICS_LOCK, "console on-complete rebuild on host-a pid 7"):
            for cmd in ("rebuild", "hard-gate"):
                out = cli(cmd, "--config", str(path), timeout=120)
                assert out.returncode == 1, out.stdout + out.stderr
                assert f"{cmd}: not started: another analytics run holds the store's lock" in (
                    out.stdout
                ), out.stdout
                assert "console on-complete rebuild on host-a pid 7" in out.stdout
                assert store_server.password not in out.stdout + out.stderr
    finally:
        st.close()
