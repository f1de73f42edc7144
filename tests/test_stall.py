"""When a run is STALLED, the crash-loop rule of the supervisor, and failing URLs (no processes).

Table-driven: engine.stall (every shard with days left FATAL; every URL failing for
rpc.give_up_after_s), Supervisor._schedule_restart (only exits without progress count toward
FATAL, progress resets the count and the backoff), Endpoint.failing_since (429s and range blame
aside) and its merge over workers (failing only when every live caller fails).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import MonitorConfig
from engine.protocol import DayDone, Heartbeat, Range, Rows
from engine.rpc import errors as rpc_errors
from engine.rpc.endpoint import Endpoint
from engine.rpc_health import merge_rpc_health
from engine.stall import stall_reason
from engine.status import BACKOFF, DONE, FATAL, RUNNING, RpcHealth
from engine.store.loader import disk_full
from engine.supervisor import Shard, Supervisor

NOW = 10_000.0


def url(name: str, failing_since: float | None, **errors: int) -> RpcHealth:
    return RpcHealth(url=f"https://{name}/***", failing_since=failing_since, errors=dict(errors))


@pytest.mark.parametrize(
    "left, rows, want",
    [
        # Every shard with days left FATAL: stalled, naming them and the last one's error.
        (
            {1: (FATAL, "crash: boom"), 3: (FATAL, "")},
            [],
            "every shard with days left is FATAL (shard 1, 3); restart it after reading its log",
        ),
        (
            {2: (FATAL, "crash: boom")},
            [url("a", None)],
            "the only shard with days left is FATAL (shard 2); restart it after reading its log: "
            "crash: boom",
        ),
        # One shard with days left still works: not stalled.
        ({1: (FATAL, "x"), 2: (BACKOFF, "")}, [], ""),
        ({1: (RUNNING, "")}, [url("a", None)], ""),
        ({}, [], ""),
        # Every URL failing for give_up_after_s (60): stalled, URLs named with their top error.
        (
            {0: (RUNNING, "")},
            [url("a", NOW - 90, conn=9, timeout=2), url("b", NOW - 61, http_5xx=3)],
            "every RPC URL failing for 61s (rpc.give_up_after_s 60): "
            "https://a/*** (conn), https://b/*** (http_5xx)",
        ),
        # One URL failing for less than give_up_after_s, or one answering: not stalled.
        ({0: (RUNNING, "")}, [url("a", NOW - 90), url("b", NOW - 30)], ""),
        ({0: (RUNNING, "")}, [url("a", NOW - 90), url("b", None)], ""),
        ({0: (RUNNING, "")}, [], ""),
    ],
)
def test_stall_reason(left: dict, rows: list[RpcHealth], want: str) -> None:
    assert stall_reason(left, rows, NOW, 60.0) == want
    # the shard ids are not ordered in the input
    assert stall_reason(dict(reversed(list(left.items()))), rows, NOW, 60.0) == want


def supervisor(tmp_path: Path, max_restarts: int = 3) -> Supervisor:
    settings = MonitorConfig(
        stall_after_s=60,
        check_interval_s=1,
        grace_s=3,
        max_restarts=max_restarts,
        restart_window_s=600,
        backoff_initial_s=1,
        backoff_max_s=8,
    )
    return Supervisor(settings, tmp_path, lambda k, n: None, lambda sh, m: None, shards=2)


PROGRESS = {
    "rows": Rows(day=0, table="erc20", n=3),
    "range": Range(day=0, first=10, last=20),
    "day_done": DayDone(day=0, first=10, last=20),
}


def run_exits(tmp_path: Path, script: str) -> tuple[Shard, list[tuple[str, float]]]:
    """'x' = the process exits without progress, 'p' = it made progress and then exited,
    'k' = it was killed by a signal from outside before making progress."""
    sup, sh = supervisor(tmp_path), Shard(0, state=RUNNING)
    seen = []
    for i, step in enumerate(script):
        if sh.state == FATAL:
            break
        sh.progressed = False  # what _spawn does for each new process
        if step == "p":
            sup._note(sh, PROGRESS["rows"])
        why = "killed by signal 9" if step == "k" else "exited with code 1"
        sup._schedule_restart(sh, why, now=float(i), killed=step == "k")
        seen.append((str(sh.state), sh.backoff_s))
        if sh.state == BACKOFF:
            sh.state = RUNNING  # restarted
    return sh, seen


@pytest.mark.parametrize(
    "script, fatal, restarts, backoffs",
    [
        # A worker that keeps dying while working is restarted every time, at the first backoff.
        ("pppppppppp", False, 10, [1.0] * 10),
        # Exits without progress in a row: backoff doubles, the 4th (> max_restarts 3) is FATAL.
        ("xxxx", True, 3, [1.0, 2.0, 4.0, 4.0]),
        # Progress in between resets both the count and the backoff.
        ("xxxpxxxp", False, 8, [1.0, 2.0, 4.0, 1.0, 1.0, 2.0, 4.0, 1.0]),
        ("pxxxx", True, 4, [1.0, 1.0, 2.0, 4.0, 4.0]),
        # Killed from outside before any progress: no crash loop (never FATAL), backoff grows.
        ("kkkkkkkkkk", False, 10, [1.0, 2.0, 4.0] + [8.0] * 7),
        # ... but it does not hide a crash loop: the exits of its own still count.
        ("xkxkxkx", True, 6, [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]),
        ("kkpkx", False, 5, [1.0, 2.0, 1.0, 1.0, 2.0]),
    ],
)
def test_only_exits_without_progress_count_toward_fatal(
    tmp_path: Path, script: str, fatal: bool, restarts: int, backoffs: list[float]
) -> None:
    sh, seen = run_exits(tmp_path, script)
    assert (sh.state == FATAL) == fatal
    assert sh.restarts == restarts
    assert [b for _, b in seen] == backoffs
    last = "killed by signal 9" if script[len(seen) - 1] == "k" else "exited with code 1"
    assert sh.last_restart_reason == last


@pytest.mark.parametrize("kind", sorted(PROGRESS))
def test_what_counts_as_progress(tmp_path: Path, kind: str) -> None:
    sup, sh = supervisor(tmp_path), Shard(0)
    sup._note(sh, Heartbeat(day=0, first=1, last=2))
    assert not sh.progressed  # a heartbeat alone is being alive, not progress
    sup._note(sh, PROGRESS[kind])
    assert sh.progressed


def test_monitor_log_names_the_restart_count_and_whether_it_followed_progress(tmp_path: Path):
    sup, sh = supervisor(tmp_path), Shard(0, state=RUNNING)
    sup._schedule_restart(sh, "killed by signal 9", now=0.0, killed=True)
    sh.state = RUNNING
    sup._note(sh, PROGRESS["day_done"])
    sup._schedule_restart(sh, "exited with code 1", now=1.0)
    log = (tmp_path / "monitor.log").read_text().splitlines()
    assert log[0].endswith(
        "RUNNING -> BACKOFF (killed by signal 9; restart 1 in 1.0s (1 in a row without progress))"
    )
    assert log[1].endswith(
        "RUNNING -> BACKOFF (exited with code 1; restart 2 in 1.0s (after progress))"
    )
    assert sh.state != DONE


@pytest.mark.parametrize(
    "failures, want",
    [
        ([], None),
        ([(rpc_errors.CONN, False)], 5.0),
        ([(rpc_errors.HTTP_5XX, False), (rpc_errors.TIMEOUT, False)], 5.0),
        ([(rpc_errors.RATE_LIMIT, False)], None),  # a throttled URL answers
        ([(rpc_errors.HTTP_5XX, True)], None),  # blamed on the range, not the URL
        ([(rpc_errors.CONN, False), ("ok", False)], None),  # answered since
        ([(rpc_errors.CONN, False), ("ok", False), (rpc_errors.CONN, False)], 7.0),
    ],
)
def test_endpoint_failing_since(failures: list[tuple[str, bool]], want: float | None) -> None:
    ep = Endpoint(0, "https://a.example/key", 10.0)
    for i, (kind, blame) in enumerate(failures):
        if kind == "ok":
            ep.on_success()
        else:
            ep.on_failure(kind, None, blame, lambda n: 0.1, 5, 30.0, 0.0, wall=5.0 + i)
    assert ep.failing_since == want
    assert ep.health(0.0, 100)["failing_since"] == want


def rep(failing_since: float | None, calls: int = 5) -> dict:
    return {"index": 0, "url": "https://a/***", "calls": calls, "failing_since": failing_since}


@pytest.mark.parametrize(
    "by_shard, live, want",
    [
        ({0: [rep(100.0)], 1: [rep(130.0)]}, None, 130.0),  # since the latest of them
        ({0: [rep(100.0)], 1: [rep(None)]}, None, None),  # one worker gets answers
        ({0: [rep(100.0)], 1: [rep(None, calls=0)]}, None, 100.0),  # one made no call yet
        ({0: [rep(100.0)], 1: [rep(None)]}, {0}, 100.0),  # the answering one is gone
        ({0: [rep(100.0)]}, set(), None),  # no live worker: nothing known now
    ],
)
def test_merged_url_fails_only_when_every_live_caller_fails(
    by_shard: dict, live: set[int] | None, want: float | None
) -> None:
    (row,) = merge_rpc_health(by_shard, live)
    assert row.failing_since == want


@pytest.mark.parametrize(
    "message, full",
    [
        (
            "insert failed: Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. "
            "(NOT_ENOUGH_SPACE)",
            True,
        ),
        (
            "insert failed: Code: 75. DB::ErrnoException: Cannot write to file "
            "/data/store/tmp_insert_all_1_1_0/data.bin, errno: 28, strerror: No space left on "
            "device. (CANNOT_WRITE_TO_FILE_DESCRIPTOR)",
            True,
        ),
        ("heartbeat insert failed: Code: 243. DB::Exception: ... (NOT_ENOUGH_SPACE)", True),
        (
            "insert failed: Code: 60. DB::Exception: Table polymarket.erc20_transfers_staging "
            "does not exist. (UNKNOWN_TABLE)",
            False,
        ),
        ("insert failed: Connection refused", False),
    ],
)
def test_disk_full_is_told_apart_from_other_store_errors(message: str, full: bool) -> None:
    assert disk_full(message) is full
