"""Tests for engine.control: real unix sockets in temp dirs, real helper processes, no mocks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.control import (
    ConsoleAlreadyRunning,
    ControlError,
    ControlServer,
    format_status_text,
    parse_shard_ids,
    send_command,
    socket_path_for,
)

REPO = Path(__file__).resolve().parent.parent

# A console stand-in in another process: holds the socket, prints "ready", then waits.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engine.control import ControlServer
    server = ControlServer(Path(sys.argv[1]), lambda req: {"pid_echo": True})
    server.start()
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temp dir: sun_path is limited to 108 bytes, pytest's tmp_path can be long."""
    d = Path(tempfile.mkdtemp(prefix="ctl-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def holder(short_dir: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(short_dir / "console.sock")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def echo_handler(request: dict) -> dict:
    if request["cmd"] == "boom":
        raise RuntimeError("engine exploded at https://rpc.example/v2/AbCdEf0123456789AbCdEf0123")
    if request["cmd"] == "fail":
        return {"ok": False, "error": "cannot scale while aborting"}
    return {"echo": request}


def test_socket_path_for(tmp_path: Path) -> None:
    assert socket_path_for(tmp_path) == tmp_path / "console.sock"


def test_round_trip(short_dir: Path) -> None:
    path = socket_path_for(short_dir)
    with ControlServer(path, echo_handler):
        assert send_command(path, {"cmd": "status"}) == {"ok": True, "echo": {"cmd": "status"}}
        reply = send_command(path, {"cmd": "restart", "target": "stalled"})
        assert reply["echo"] == {"cmd": "restart", "target": "stalled"}
        assert send_command(path, {"cmd": "fail"}) == {
            "ok": False,
            "error": "cannot scale while aborting",
        }
    assert not path.exists()
    # the lock file stays (empty) so later consoles lock the same inode
    assert (short_dir / "console.sock.lock").read_text() == ""


def test_concurrent_clients_are_served(short_dir: Path) -> None:
    path = socket_path_for(short_dir)
    release = threading.Event()

    def handler(request: dict) -> dict:
        if request["cmd"] == "slow":
            release.wait(5)
        return {"cmd": request["cmd"]}

    with ControlServer(path, handler):
        results: list[dict] = []
        t = threading.Thread(target=lambda: results.append(send_command(path, {"cmd": "slow"})))
        t.start()
        # a slow command (abort, optimize) does not block status
        assert send_command(path, {"cmd": "status"}, timeout_s=2)["cmd"] == "status"
        release.set()
        t.join(5)
        assert results == [{"ok": True, "cmd": "slow"}]


def test_socket_mode_is_0600(short_dir: Path) -> None:
    path = socket_path_for(short_dir)
    old = os.umask(0)  # even with a permissive umask the socket is private
    try:
        with ControlServer(path, echo_handler):
            mode = os.stat(path).st_mode
            assert stat.S_ISSOCK(mode)
            assert stat.S_IMODE(mode) == 0o600
            assert stat.S_IMODE(os.stat(str(path) + ".lock").st_mode) == 0o600
    finally:
        os.umask(old)


def test_second_server_raises_naming_the_pid(short_dir: Path, holder: subprocess.Popen) -> None:
    path = socket_path_for(short_dir)
    with pytest.raises(ConsoleAlreadyRunning) as info:
        ControlServer(path, echo_handler).start()
    assert info.value.pid == holder.pid
    assert f"pid {holder.pid}" in str(info.value)
    assert str(path) in str(info.value)
    # the running console is untouched and still answers
    assert send_command(path, {"cmd": "status"}) == {"ok": True, "pid_echo": True}


def test_second_server_in_the_same_process_is_refused(short_dir: Path) -> None:
    path = socket_path_for(short_dir)
    with ControlServer(path, echo_handler):
        with pytest.raises(ConsoleAlreadyRunning) as info:
            ControlServer(path, echo_handler).start()
        assert info.value.pid == os.getpid()
        assert send_command(path, {"cmd": "x"})["ok"] is True


def test_stale_socket_from_dead_console_is_taken_over(
    short_dir: Path, holder: subprocess.Popen
) -> None:
    path = socket_path_for(short_dir)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)  # left behind by the dead console
    with pytest.raises(ControlError, match="stale socket"):
        send_command(path, {"cmd": "status"})
    with ControlServer(path, echo_handler):
        assert send_command(path, {"cmd": "status"})["echo"] == {"cmd": "status"}
        assert (short_dir / "console.sock.lock").read_text().strip() == str(os.getpid())


def test_non_socket_file_is_not_deleted(short_dir: Path) -> None:
    path = socket_path_for(short_dir)
    path.write_text("important")
    with pytest.raises(ControlError, match="is not a socket"):
        ControlServer(path, echo_handler).start()
    assert path.read_text() == "important"
    # and the lock was released: fixing the problem lets a console start
    path.unlink()
    with ControlServer(path, echo_handler):
        pass


def test_restart_after_stop(short_dir: Path) -> None:
    path = socket_path_for(short_dir)
    server = ControlServer(path, echo_handler)
    server.start()
    server.stop()
    server.stop()  # idempotent
    server.start()
    try:
        assert send_command(path, {"cmd": "status"})["ok"] is True
    finally:
        server.stop()


def test_send_command_without_server(short_dir: Path) -> None:
    path = socket_path_for(short_dir)
    with pytest.raises(ControlError) as info:
        send_command(path, {"cmd": "status"})
    assert str(info.value) == f"no console is running (no socket at {path})"


def test_send_command_to_a_console_that_does_not_answer(short_dir: Path) -> None:
    path = socket_path_for(short_dir)
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(path))
    mute.listen(1)  # accepts connections (backlog), never replies
    try:
        started = time.monotonic()
        with pytest.raises(ControlError) as info:
            send_command(path, {"cmd": "status"}, timeout_s=0.3)
        assert time.monotonic() - started < 3
        assert str(info.value) == (f"console at {path} is not answering: no reply within 0.3 s")
    finally:
        mute.close()


def test_handler_exception_becomes_ok_false(short_dir: Path) -> None:
    path = socket_path_for(short_dir)
    with ControlServer(path, echo_handler):
        reply = send_command(path, {"cmd": "boom"})
        assert reply == {
            "ok": False,
            "error": "RuntimeError: engine exploded at https://rpc.example/v2/***",
        }
        # the server keeps serving after a handler failure
        assert send_command(path, {"cmd": "status"})["ok"] is True


def test_bad_requests_get_ok_false(short_dir: Path) -> None:
    path = socket_path_for(short_dir)
    with ControlServer(path, echo_handler):
        for raw, fragment in [
            (b"not json\n", "not JSON"),
            (b"[1, 2]\n", '"cmd"'),
            (b"\n", "empty request"),
        ]:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.settimeout(2)
                c.connect(str(path))
                c.sendall(raw)
                reply = c.makefile("rb").readline()
            decoded = json.loads(reply)
            assert decoded["ok"] is False and fragment in decoded["error"]


def test_long_socket_path(short_dir: Path) -> None:
    deep = short_dir / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = socket_path_for(deep)
    assert len(str(path)) > 108
    with ControlServer(path, echo_handler):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert send_command(path, {"cmd": "status"})["ok"] is True
    assert not path.exists()


# -- parse_shard_ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shards", "ids"),
    [
        ("0-3", 8, [0, 1, 2, 3]),
        ("0,2,5", 8, [0, 2, 5]),
        ("1-2,6", 8, [1, 2, 6]),
        (" 6 , 1 - 2 ", 8, [1, 2, 6]),
        ("3,3,2-3", 4, [2, 3]),
        ("0", 1, [0]),
        ("7", 8, [7]),
    ],
)
def test_parse_shard_ids(text: str, shards: int, ids: list[int]) -> None:
    assert parse_shard_ids(text, shards) == ids


@pytest.mark.parametrize(
    ("text", "shards", "message"),
    [
        ("0-8", 8, "shard ids '0-8': 8 is out of range; expected ids in 0-7 (SHARDS = 8)"),
        ("9", 8, "shard ids '9': 9 is out of range; expected ids in 0-7 (SHARDS = 8)"),
        ("3-1", 8, "shard ids '3-1': range '3-1' runs backwards; expected ids in 0-7"),
        ("", 8, "shard ids '': empty; expected ids in 0-7"),
        ("a-b", 8, "shard ids 'a-b': cannot read 'a-b'; expected ids in 0-7"),
        ("1,,2", 8, "shard ids '1,,2': cannot read ''; expected ids in 0-7"),
        ("-1", 4, "shard ids '-1': cannot read '-1'; expected ids in 0-3 (SHARDS = 4)"),
        ("0", 0, "shard ids '0': SHARDS must be >= 1, got 0"),
    ],
)
def test_parse_shard_ids_errors(text: str, shards: int, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_shard_ids(text, shards)
    assert str(info.value).startswith(message)


# -- format_status_text ------------------------------------------------------------------------


def test_format_status_text() -> None:
    status = {
        "ok": True,
        "shards": 3,
        "state": "RUNNING",
        "days_complete": 12,
        "days_total": 48,
        "config_shards": 2,
        "eta_s": None,
        "eta_note": "none: shard 1 stalled",
        "rows_staged": {"erc20_transfers_staging": 1234572, "condition_resolutions": 3},
        "rows_refetched": {"erc20_transfers_staging": 17},
        "workers": [
            {
                "shard": 0,
                "pid": 4242,
                "state": "RUNNING",
                "day": 12,
                "heartbeat_age_s": 3.4,
                "rows": 1234567,
                "days_done": 4,
                "days_planned": 16,
                "restarts": 0,
                "last_error": None,
            },
            {
                "shard": 1,
                "pid": None,
                "state": "BACKOFF",
                "day": None,
                "heartbeat_age_s": 125,
                "rows": 0,
                "restarts": 2,
                "last_error": "rpc_429: too many\nrequests",
            },
            {
                "shard": 10,
                "pid": 77,
                "state": "DONE",
                "day": 47,
                "heartbeat_age_s": 7322,
                "rows": 5,
                "restarts": 0,
                "last_error": "",
            },
        ],
    }
    text = format_status_text(status)
    assert text == (
        "state RUNNING   shards 3 (config 2: a rerun uses it)   days 12/48 COMPLETE (25.0%)"
        "   ETA none: shard 1 stalled\n"
        "rows staged erc20 1,234,572, resolutions 3; re-fetched 17 rows (kept once)\n"
        "\n"
        "SHARD   PID  STATE    DAY  HEARTBEAT       ROWS  DAYS  RESTARTS  LAST ERROR\n"
        "    0  4242  RUNNING   12         3s  1,234,567  4/16         0  -\n"
        "    1     -  BACKOFF    -      2m05s          0     -         2  "
        "rpc_429: too many requests\n"
        "   10    77  DONE      47      2h02m          5     -         0  -\n"
    )


def test_format_status_text_counts_raw_logs_as_logs() -> None:
    """Workers sending raw logs: the column and the re-fetched figure say logs, not rows."""
    status = {
        "state": "RUNNING",
        "shards": 1,
        "days_complete": 1,
        "days_total": 2,
        "rows_staged": {"erc1155_transfers_staging": 3225},
        "rows_refetched": {"logs": 1620},
        "fetched_unit": "logs",
        "workers": [{"shard": 0, "pid": 9, "state": "RUNNING", "day": 1, "rows": 1620}],
    }
    lines = format_status_text(status).splitlines()
    assert lines[1] == "rows staged erc1155 3,225; re-fetched 1,620 raw logs (kept once)"
    assert lines[3].split()[:7] == ["SHARD", "PID", "STATE", "DAY", "HEARTBEAT", "LOGS", "DAYS"]


def test_format_status_text_without_workers_or_keys() -> None:
    assert format_status_text({}) == "state -   shards -   days -/- COMPLETE\n(no workers)\n"


def test_format_status_text_shows_rpc_health_per_url() -> None:
    status = {
        "state": "RUNNING",
        "shards": 1,
        "days_complete": 1,
        "days_total": 4,
        "workers": [],
        "rpc": [
            {
                "url": "https://polygon-mainnet.infura.io/v3/***",
                "calls": 12345,
                "calls_per_s": 19.96,
                "http_429": 31,
                "errors": {"rpc_429": 31, "timeout": 2, "range_split": 40},
                "p50_ms": 88.4,
                "p95_ms": 412.0,
                "current_range": 1200,
                "cooling_until": None,
            },
            {
                "url": "https://rpc.ankr.com/polygon/***",
                "calls": 7,
                "calls_per_s": 0.0,
                "http_429": 0,
                "errors": {"conn": 5},
                "p50_ms": None,
                "p95_ms": None,
                "current_range": None,
                "cooling_until": 1_000_025.4,
            },
        ],
    }
    text = format_status_text(status, now=1_000_000.0)
    assert text.splitlines()[2:] == [
        "(no workers)",
        "",
        "RPC URL                                    CALLS  REQ/S  429  P50MS  P95MS  RANGE  STATE"
        "     ERRORS",
        "https://polygon-mainnet.infura.io/v3/***  12,345   20.0   31     88    412  1,200  ok"
        "        range_split 40, rpc_429 31, timeout 2",
        "https://rpc.ankr.com/polygon/***               7    0.0    0      -      -      -"
        "  cool 25s  conn 5",
    ]
