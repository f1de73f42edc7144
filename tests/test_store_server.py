"""The local store server (engine/store/server.py) and the Store client against real servers.

One session server serves most tests (a database each); tests about the server's own life cycle
(restart, SIGTERM, owner death, an old embedded data dir) start servers of their own.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from engine.store.client import Store, StoreError
from engine.store.server import (
    INFO_FILE,
    LOG_FILE,
    PASSWORD_FILE,
    SERVER_USER,
    ensure_server,
    read_info,
    running_server,
)
from tests.conftest import server_store

ROOT = Path(__file__).resolve().parent.parent

# (expression, value every caller sees): the JSON types of engine/store/client.py's docstring.
TYPE_CASES = [
    ("toUInt8(7)", 7),
    ("toUInt64(18446744073709551615)", 2**64 - 1),
    ("toInt64(-5)", -5),
    (
        "toUInt256('115792089237316195423570985008687907853269984665640564039457584007913129639935')",
        2**256 - 1,
    ),
    ("toInt128('-170141183460469231731687303715884105728')", -(2**127)),
    ("toFloat64(1.5)", 1.5),
    ("toDecimal128('1.25', 18)", 1.25),
    ("toDateTime('2024-01-02 03:04:05', 'UTC')", "2024-01-02 03:04:05"),
    ("toDateTime64('2024-01-02 03:04:05.123', 3, 'UTC')", "2024-01-02 03:04:05.123"),
    ("toDate('2024-01-02')", "2024-01-02"),
    ("'text'", "text"),
    ("toLowCardinality('lc')", "lc"),
    ("[1, 2]", [1, 2]),
    ("tuple(1, 'a')", [1, "a"]),
    ("map('k', 1)", {"k": 1}),
    ("NULL", None),
    ("1 = 1", 1),
]


@pytest.fixture(scope="module")
def store(store_server):
    st = server_store(store_server, "t_store_server")
    yield st
    st.close()


@pytest.mark.parametrize(("expr", "want"), TYPE_CASES, ids=[c[0][:40] for c in TYPE_CASES])
def test_result_types_are_plain_json_types(store: Store, expr: str, want: object) -> None:
    got = store.scalar(f"SELECT {expr}")
    assert got == want and type(got) is type(want)


def test_query_dicts_and_column_names(store: Store) -> None:
    assert store.query_dicts("SELECT 1 AS a, 'x' AS b") == [{"a": 1, "b": "x"}]
    assert store.query("SELECT 1 WHERE 0") == []


def test_ddl_insert_optimize_and_exchange(store: Store) -> None:
    db = store.database
    store.command(f"DROP TABLE IF EXISTS {db}.a SYNC")
    store.command(f"DROP TABLE IF EXISTS {db}.b SYNC")
    ddl = "(k UInt32, v UInt256, at DateTime('UTC')) ENGINE = ReplacingMergeTree(at) ORDER BY k"
    store.command(f"CREATE TABLE {db}.a {ddl}")
    store.command(f"CREATE TABLE {db}.b {ddl}")
    cols = ["k", "v", "at"]
    store.insert_json_rows(f"{db}.a", cols, [[1, str(2**255), "2024-01-01 00:00:00"]])
    store.insert_json_rows(
        f"{db}.a", cols, [[1, "5", "2024-01-01 00:00:01"], [2, "6", "2024-01-01"]]
    )
    assert store.scalar(f"SELECT count() FROM {db}.a") == 3  # waiting for a merge
    store.command(f"OPTIMIZE TABLE {db}.a FINAL")
    assert store.query(f"SELECT k, v FROM {db}.a ORDER BY k") == [(1, 5), (2, 6)]
    store.insert_jsonl(f"{db}.b", cols, b'[9,"1","2024-01-01 00:00:00"]\n')
    store.command(f"EXCHANGE TABLES {db}.a AND {db}.b")
    assert store.query(f"SELECT k FROM {db}.a") == [(9,)]
    assert store.scalar(f"SELECT count() FROM {db}.b") == 2


def test_schema_is_created_on_an_atomic_database(store: Store) -> None:
    engine = store.scalar(f"SELECT engine FROM system.databases WHERE name = '{store.database}'")
    assert engine == "Atomic"
    tables = {r[0] for r in store.query(f"SHOW TABLES FROM {store.database}")}
    assert {"erc20_transfers_staging", "backfill_checkpoint", "worker_heartbeats"} <= tables


def test_concurrent_threads_and_processes(store: Store, store_server) -> None:
    db = store.database
    store.command(f"DROP TABLE IF EXISTS {db}.c SYNC")
    store.command(f"CREATE TABLE {db}.c (t UInt32, i UInt32) ENGINE = MergeTree ORDER BY (t, i)")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(20):
                store.insert_json_rows(f"{db}.c", ["t", "i"], [[t, i]])
                assert store.scalar(f"SELECT count() FROM {db}.c WHERE t = {t}") == i + 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    # Another process writes at the same time through its own client.
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from engine.store.client import Store; "
            "s = Store(sys.argv[1], sys.argv[2], sys.argv[3], sys.stdin.read()); "
            "[s.insert_json_rows(sys.argv[2] + '.c', ['t', 'i'], [[99, i]]) for i in range(50)]",
            store_server.url,
            db,
            store_server.user,
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        text=True,
    )
    assert other.stdin is not None
    other.stdin.write(store_server.password)
    other.stdin.close()
    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert other.wait(60) == 0
    assert errors == []
    assert store.query(f"SELECT t, count() FROM {db}.c GROUP BY t ORDER BY t") == [
        (0, 20),
        (1, 20),
        (2, 20),
        (3, 20),
        (99, 50),
    ]


def _http(
    port: int,
    sql: str | None,
    *,
    auth: str | None = None,
    path: str = "/",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, str]:
    """Status and body of one raw HTTP request to the local server (`auth`: basic `user:pw`)."""
    hdrs = dict(headers or {})
    if auth is not None:
        hdrs["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    data = sql.encode() if sql is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers=hdrs, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _bypass_attempts(pw: str) -> list[tuple[str, dict]]:
    """(name, _http keyword arguments) of every way in without the password we could think of:
    each must be refused before any query runs. `default` (LocalServer's own user, no password)
    is what most of them try to become."""
    mark = "SELECT concat('ran as ', currentUser())"
    q = urllib.parse.quote(mark)
    wrong = f"{SERVER_USER}:wrong-{pw[:4]}"
    b = "/?user=default"
    return [
        ("no credentials", {"sql": mark}),
        ("GET, query in the URL", {"sql": None, "method": "GET", "path": f"/?query={q}"}),
        ("URL user=default", {"sql": mark, "path": b}),
        ("URL user=default, query in the URL", {"sql": None, "path": f"{b}&query={q}"}),
        ("URL us%65r=default", {"sql": mark, "path": "/?us%65r=default"}),
        ("URL password= only", {"sql": mark, "path": "/?password="}),
        (
            "URL user+password of backfill",
            {"sql": mark, "path": f"/?user={SERVER_USER}&password=x"},
        ),
        ("basic default:", {"sql": mark, "auth": "default:"}),
        ("basic default:x", {"sql": mark, "auth": "default:x"}),
        ("basic backfill: (empty)", {"sql": mark, "auth": f"{SERVER_USER}:"}),
        ("basic backfill:wrong", {"sql": mark, "auth": wrong}),
        # The hole of session 6: a basic-auth header that only starts like ours, and the user
        # from the URL (which ClickHouse lets win): it ran as `default`.
        ("basic backfill:wrong + URL user=default", {"sql": mark, "auth": wrong, "path": b}),
        (
            "basic backfill:wrong + URL password=",
            {"sql": mark, "auth": wrong, "path": "/?password="},
        ),
        (
            "basic backfill:wrong + SYSTEM STOP LISTEN as default",
            {"sql": "SYSTEM STOP LISTEN HTTP", "auth": wrong, "path": b},
        ),
        (
            "basic backfill:wrong + KILL the hold as default",
            {"sql": "KILL QUERY WHERE 1 SYNC", "auth": wrong, "path": b},
        ),
        ("basic with the password plus a suffix", {"sql": mark, "auth": f"{SERVER_USER}:{pw}x"}),
        ("basic with a prefix of the password", {"sql": mark, "auth": f"{SERVER_USER}:{pw[:-1]}"}),
        ("X-ClickHouse-User default", {"sql": mark, "headers": {"X-ClickHouse-User": "default"}}),
        (
            "X-ClickHouse-User backfill, no key",
            {"sql": mark, "headers": {"X-ClickHouse-User": SERVER_USER}},
        ),
        (
            "X-ClickHouse-User backfill, wrong key",
            {"sql": mark, "headers": {"X-ClickHouse-User": SERVER_USER, "X-ClickHouse-Key": "x"}},
        ),
        (
            "X-ClickHouse-User default with our key",
            {"sql": mark, "headers": {"X-ClickHouse-User": "default", "X-ClickHouse-Key": pw}},
        ),
        (
            "X-ClickHouse headers + URL user=default",
            {
                "sql": mark,
                "path": b,
                "headers": {"X-ClickHouse-User": SERVER_USER, "X-ClickHouse-Key": "x"},
            },
        ),
        (
            "basic wrong + X-ClickHouse-User default",
            {"sql": mark, "auth": wrong, "headers": {"X-ClickHouse-User": "default"}},
        ),
        ("path /play", {"sql": None, "method": "GET", "path": "/play"}),
        ("path /dashboard", {"sql": None, "method": "GET", "path": "/dashboard"}),
        ("path /replicas_status", {"sql": None, "method": "GET", "path": "/replicas_status"}),
        ("OPTIONS", {"sql": None, "method": "OPTIONS"}),
    ]


def test_requests_without_the_password_are_refused(store: Store, store_server) -> None:
    port, pw = store_server.port, store_server.password
    table = f"{store.database}.backfill_checkpoint"
    for name, kwargs in _bypass_attempts(pw):
        code, body = _http(port, **kwargs)
        assert code == 403 and "AUTHENTICATION_FAILED" in body, (name, code, body)
        assert "ran as" not in body and pw not in body, (name, body)
    # Still serving (no attempt stopped the listener or killed the hold), to the password only:
    # basic auth and the X-ClickHouse headers.
    assert _http(port, "SELECT currentUser()", auth=f"{SERVER_USER}:{pw}") == (200, "backfill\n")
    keyed = {"X-ClickHouse-User": SERVER_USER, "X-ClickHouse-Key": pw}
    assert _http(port, f"SELECT count() FROM {table}", headers=keyed)[0] == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10) as resp:
        assert resp.read() == b"Ok.\n"
    bad = Store(store_server.url, store.database, SERVER_USER, "wrong-" + pw)
    with pytest.raises(StoreError) as err:
        bad.query("SELECT 1")
    assert pw not in str(err.value) and "refused user 'backfill'" in str(err.value)
    bad.close()


def test_listens_on_loopback_only_with_a_private_password(store_server) -> None:
    pw_file = store_server.data_dir / PASSWORD_FILE
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    for name in ("config.xml", "users.xml", INFO_FILE):
        assert stat.S_IMODE((store_server.data_dir / name).stat().st_mode) == 0o600
    assert len(store_server.password) >= 24
    # /proc/net/tcp: the listening socket (state 0A) on our port is bound to 127.0.0.1 only.
    port_hex = f"{store_server.port:04X}"
    binds = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local.endswith(":" + port_hex):
                binds.append(local.split(":")[0])
    assert binds == ["0100007F"], binds
    # The password (in config.xml for the HTTP handlers) is in no log, neither as it is nor as
    # the basic-auth token.
    log = (store_server.data_dir / LOG_FILE).read_text()
    token = base64.b64encode(f"{SERVER_USER}:{store_server.password}".encode()).decode()
    assert token in (store_server.data_dir / "config.xml").read_text()
    assert store_server.password not in log and token not in log


def _refused_and_dropped() -> list[tuple[str, BaseException, bool]]:
    """(case, the error clickhouse-connect raised against a real socket, was_refused)."""
    import socket

    import clickhouse_connect

    def error_from(port: int) -> BaseException:
        try:
            clickhouse_connect.get_client(host="127.0.0.1", port=port, username="u", password="p")
        except Exception as exc:
            return exc
        raise AssertionError("connected")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens once closed: refused
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def accept_and_drop() -> None:  # each request reaches a server, which hangs up
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return  # closed
            conn.recv(65536)
            conn.close()

    t = threading.Thread(target=accept_and_drop, daemon=True)
    t.start()
    dropped = error_from(srv.getsockname()[1])
    srv.close()
    return [
        ("nothing listens", error_from(closed_port), True),
        ("accepted, read, hung up", dropped, False),
        ("a plain reset", ConnectionResetError(104, "reset"), False),
        ("refused itself", ConnectionRefusedError(111, "refused"), True),
        ("an SQL error", StoreError("Code: 60. Unknown table"), False),
    ]


def test_only_a_refused_connection_counts_as_never_sent() -> None:
    """A call is repeated after a revive only when its request cannot have reached a server."""
    from engine.store.client import was_refused

    for case, exc, want in _refused_and_dropped():
        assert was_refused(exc) is want, (case, repr(exc))


# ---- life cycle: servers of their own ---------------------------------------------------------


def _wait(pred, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_restart_keeps_rows_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    server = ensure_server(tmp_path)
    assert server.owned and read_info(tmp_path).port == server.port
    st = Store(server.url, "keep", server.user, server.password)
    st.ensure_schema()
    st.insert_json_rows("keep.day_blocks", ["chain_id", "day_idx", "n_blocks"], [[1, 3, 7]])
    st.close()
    # A second ensure_server finds the running one instead of starting another.
    again = ensure_server(tmp_path)
    assert not again.owned and again.pid == server.pid
    again.stop()  # not ours: left running
    assert server.alive()
    server.stop()
    assert server.proc.returncode == 0
    assert "stopped" in (tmp_path / LOG_FILE).read_text()
    assert running_server(tmp_path) is None and not (tmp_path / INFO_FILE).exists()
    server = ensure_server(tmp_path)
    try:
        st = Store(server.url, "keep", server.user, server.password)
        assert st.query("SELECT chain_id, day_idx, n_blocks FROM keep.day_blocks") == [(1, 3, 7)]
        st.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_the_server_dies_with_its_owner(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from engine.store.server import ensure_server; "
            "s = ensure_server(sys.argv[1]); print(s.pid, flush=True); time.sleep(600)",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    pid = int(owner.stdout.readline())
    assert running_server(tmp_path) is not None
    owner.kill()
    owner.wait()
    assert _wait(lambda: running_server(tmp_path) is None and not _alive(pid)), "server outlived"
    # The data dir is free again: a new server starts on it.
    server = ensure_server(tmp_path)
    server.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat_line = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
    return bool(stat_line) and stat_line.rsplit(")", 1)[-1].split()[0] != "Z"


@pytest.mark.slow
def test_a_killed_local_server_is_started_again_by_the_store(tmp_path: Path) -> None:
    """SIGKILLed: the next store call starts a new server and succeeds (not only the one after)."""
    from types import SimpleNamespace

    from engine.store.client import open_store

    cfg = SimpleNamespace(
        clickhouse=SimpleNamespace(
            url="", path=tmp_path, port=0, database="rv", user="", password=""
        )
    )
    st = open_store(cfg)
    try:
        st.insert_json_rows("rv.day_blocks", ["chain_id", "day_idx"], [[1, 1]])
        old = st.local.pid
        os.kill(old, signal.SIGKILL)
        assert _wait(lambda: not _alive(old))
        # The first call after the death finds the connection refused (nothing was sent): the
        # server is started again and that same call is repeated on it, and answers, exact.
        assert st.query("SELECT chain_id, day_idx FROM rv.day_blocks") == [(1, 1)]
        assert st.local.pid != old and st.local.owned and st.local.alive()
        assert running_server(tmp_path).pid == st.local.pid
        assert str(st.local.port) in st.label
        # An insert the same way: killed again, the insert lands once (no FINAL: a second copy
        # would show).
        os.kill(st.local.pid, signal.SIGKILL)
        assert _wait(lambda: running_server(tmp_path) is None)
        st.insert_json_rows("rv.day_blocks", ["chain_id", "day_idx"], [[1, 2]])
        assert st.query("SELECT chain_id, day_idx FROM rv.day_blocks ORDER BY day_idx") == [
            (1, 1),
            (1, 2),
        ]
    finally:
        st.close()
    assert running_server(tmp_path) is None


@pytest.mark.slow
def test_an_embedded_store_of_an_earlier_version_opens_with_its_data(tmp_path: Path) -> None:
    """Data written in process by chdb (what the embedded store was) is served as it is."""
    code = (
        "import sys; from chdb import session; s = session.Session(sys.argv[1]); "
        "s.query('CREATE DATABASE IF NOT EXISTS old'); "
        "s.query('CREATE TABLE old.t (k UInt32, v UInt256) "
        "ENGINE = ReplacingMergeTree ORDER BY k'); "
        "s.query(\"INSERT INTO old.t VALUES (1, 2), (3, '4')\"); s.close()"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd="/", timeout=120)
    server = ensure_server(tmp_path)
    try:
        st = Store(server.url, "old", server.user, server.password)
        assert st.query("SELECT k, v FROM old.t ORDER BY k") == [(1, 2), (3, 4)]
        st.close()
    finally:
        server.stop()
    assert read_info(tmp_path) is None


NOT_RESULTS = [
    (b"", "an empty body"),
    (b"  \n", "an empty body"),
    (
        b'{\n\t"meta":\n\t[\n\t\t{"name": "c", "type": "UInt64"}\n\t],\n\t"data":\n\t[\n\t\t[10',
        "not a whole",
    ),
    (b'{"meta": [{"name": "c", "type": "UInt64"}], "data": [[1], [2]], "rows": 3}', "2 of the 3"),
    (b'{"meta": [], "data": []}', "not a whole"),
    (b"Code: 243. DB::Exception: not enough space", "not a whole"),
]


@pytest.mark.parametrize("body, words", NOT_RESULTS)
def test_a_body_that_is_not_a_whole_result_is_an_error(body: bytes, words: str) -> None:
    """Never read as no rows (an empty count read as 0 rows would mark days wrongly)."""
    from engine.store.client import _parse_json

    with pytest.raises(StoreError, match=words):
        _parse_json(body)
    names, rows = _parse_json(b'{"meta": [{"name": "c", "type": "UInt64"}], "data": [], "rows": 0}')
    assert (names, rows) == (["c"], [])


def _fill(path: Path) -> None:
    """Write zeros to `path` until its filesystem is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "96m"):
    """A tmpfs mounted on `path` (skips the test where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode()[:200]}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.slow
def test_queries_on_a_full_disk_answer_or_fail_never_empty(tmp_path: Path) -> None:
    """The server's disk full: a count still answers (held in memory, RESPONSE_BUFFER_BYTES),
    an answer too big for the buffer is an error (ClickHouse sends a cut 200), writes fail with
    NOT_ENOUGH_SPACE; once space returns all works again."""
    from engine.store.client import RESPONSE_BUFFER_BYTES

    data = small_tmpfs(tmp_path / "disk")
    with data:
        server = ensure_server(tmp_path / "disk" / "clickhouse")
        st = Store(server.url, "full", server.user, server.password)
        try:
            st.command("CREATE DATABASE IF NOT EXISTS full")
            st.command("CREATE TABLE full.t (k UInt64) ENGINE = MergeTree ORDER BY k")
            st.command("INSERT INTO full.t SELECT number FROM numbers(1000)")
            big = f"SELECT number FROM numbers({RESPONSE_BUFFER_BYTES // 8})"  # > the buffer
            assert len(st.query(big)) == RESPONSE_BUFFER_BYTES // 8
            _fill(tmp_path / "disk" / "filler")
            assert st.query("SELECT count() FROM full.t") == [(1000,)]
            with pytest.raises(StoreError, match="is the store's disk full"):
                st.query(big)
            with pytest.raises(StoreError, match="NOT_ENOUGH_SPACE"):
                st.command("INSERT INTO full.t SELECT number FROM numbers(10)")
            (tmp_path / "disk" / "filler").unlink()
            st.command("INSERT INTO full.t SELECT number FROM numbers(10)")
            assert st.query("SELECT count() FROM full.t") == [(1010,)]
            assert len(st.query(big)) == RESPONSE_BUFFER_BYTES // 8
        finally:
            st.close()
            server.stop()
