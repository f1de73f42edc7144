"""Errors an operator can meet at start-up: one line in words saying what to do, no traceback,
and nothing created before the first check (the real CLI in a subprocess, real anvil / chdb)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine.preflight import connection_reason
from tests.support.anvil import AnvilNode, free_port

pytestmark = pytest.mark.slow  # end to end: real CLI and anvil

REPO = Path(__file__).resolve().parent.parent


def _run(
    args: list[str], cwd: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    unset = ("SHARDS", "ETHEREUM_RPC_URLS", "CLICKHOUSE_URL", "CLICKHOUSE_PASSWORD")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(extra_env or {})
    env["PYTHONPATH"] = str(REPO)
    env["BACKFILL_CONSOLE_RUNTIME_DIR"] = str(cwd / "runtime")
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _config(folder: Path, rpc: str, store_url: str = "") -> Path:
    path = folder / "config.toml"
    path.write_text(
        f'[rpc]\nurls = ["{rpc}"]\ntimeout_s = 5.0\n'
        f'[clickhouse]\nurl = "{store_url}"\npath = "data/clickhouse"\n'
        '[backfill]\ndays = 2\nshards = 1\ndata_dir = "data/backfill"\n'
    )
    return path


def _created(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "config.toml")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ConnectionRefusedError: [Errno 111] Connection refused", "connection refused"),
        ("gaierror: [Errno -2] Name or service not known", "host name not found"),
        ("TimeoutError: timed out", "no answer: timed out"),
        (
            "SSLCertVerificationError: certificate verify failed",
            "TLS failed (certificate or protocol)",
        ),
        ("RemoteDisconnected: Remote end closed connection", "connection reset by the server"),
        ("OSError: [Errno 101] Network is unreachable", "network unreachable"),
        ("WeirdError: something", "WeirdError"),
    ],
)
def test_connection_reason(text: str, words: str) -> None:
    assert connection_reason(text) == words


@pytest.mark.slow
def test_unreachable_rpc_is_said_in_words_and_creates_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9")
    out = _run(["--no-ui", "--config", str(config)], tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "backfill-console: could not start: cannot reach http://127.0.0.1:9 "
        "(connection refused, 3 attempts): check rpc.urls / ETHEREUM_RPC_URLS"
    )
    assert "Traceback" not in out.stdout + out.stderr
    assert _created(tmp_path) == []  # no data/clickhouse, no data/backfill, no console.log


@pytest.mark.slow
def test_an_rpc_key_in_the_url_is_masked_in_the_error(tmp_path: Path) -> None:
    key = "Zk3x9QpL2mWv7RtY4bNc8HdF"
    config = _config(tmp_path, f"http://127.0.0.1:9/v2/{key}")
    out = _run(["--no-ui", "--config", str(config)], tmp_path)
    assert out.returncode == 1
    assert key not in out.stderr
    assert "cannot reach http://127.0.0.1:9/v2/*** (connection refused, 3 attempts)" in out.stderr


@pytest.mark.slow
def test_unreachable_store_server_is_said_in_words_and_creates_nothing(tmp_path: Path) -> None:
    port = free_port()
    with AnvilNode() as node:
        config = _config(tmp_path, node.url, store_url=f"http://127.0.0.1:{port}")
        out = _run(["--no-ui", "--config", str(config)], tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"backfill-console: could not start: cannot reach ClickHouse at http://127.0.0.1:{port} "
        "(connection refused): check clickhouse.url / CLICKHOUSE_URL"
    )
    assert _created(tmp_path) == []


@pytest.mark.slow
def test_a_store_holding_another_chains_days_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9")
    seed = (
        "from engine.config import load_config\n"
        "from engine.store.client import open_store\n"
        f"s = open_store(load_config({str(config)!r}))\n"
        's.command("INSERT INTO polymarket.day_blocks (chain_id, start_date, day_idx, '
        "from_block, to_block, n_blocks) VALUES (137, '2022-12-18', 0, 10, 20, 11), "
        "(137, '2022-12-18', 1, 21, 30, 10)\")\n"
        "s.close()\n"
    )
    subprocess.run([sys.executable, "-c", seed], cwd=REPO, check=True, timeout=120)
    with AnvilNode() as node:  # anvil serves chain id 31337
        _config(tmp_path, node.url)
        out = _run(["--no-ui", "--config", str(config)], tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "backfill-console: could not start: the store's database 'polymarket' holds 2 cached "
        "day(s) of chain id 137 (start 2022-12-18), but the RPC serves chain id 31337: point "
        "rpc.urls at that chain, or use another clickhouse.database for this one (rows of two "
        "chains would mix)"
    )
    assert "Traceback" not in out.stdout + out.stderr
    log = (tmp_path / "data/backfill/console.log").read_text()
    assert "Traceback" not in log


@pytest.mark.slow
def test_devchain_port_taken_is_said_in_words(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        out = _run(["devchain", "--port", str(port), "--days", "2"], tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"backfill-console devchain: port {port} on 127.0.0.1 is taken by another process: "
        "choose another --port, or leave --port out for a free one"
    )
    assert _created(tmp_path) == []


WRONG_PASSWORD = "not-the-Server-Password-7Qx"


def _store_config(folder: Path, clickhouse: str) -> Path:
    """A devchain config (no rpc.urls: the store is checked first, no anvil starts)."""
    path = folder / "config.toml"
    path.write_text(
        f"[clickhouse]\n{clickhouse}"
        '[backfill]\ndays = 2\nshards = 1\ndata_dir = "data/backfill"\n'
        '[devchain]\nstate_dir = "data/devchain"\n'
    )
    return path


@pytest.mark.slow
def test_a_wrong_store_password_is_said_in_words_masked_and_creates_nothing(
    tmp_path: Path, store_server
) -> None:
    """The real local store server (started with its generated password) as clickhouse.url,
    the config's password wrong: the console, `sql` and `hard-gate` name the key, never the
    password, and create nothing."""
    config = _store_config(
        tmp_path,
        f'url = "{store_server.url}"\nuser = "backfill"\npassword = "{WRONG_PASSWORD}"\n',
    )
    words = (
        f"ClickHouse at {store_server.url} refused user 'backfill': the password from "
        "clickhouse.password is wrong, or the user is unknown: check clickhouse.password and "
        "clickhouse.user"
    )
    out = _run(["--no-ui", "--config", str(config)], tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip() == f"backfill-console: could not start: {words}"
    for args, prefix in (
        (["sql", "SELECT 1"], "sql"),
        (["hard-gate"], "hard-gate"),
    ):
        out2 = _run([*args, "--config", str(config)], tmp_path)
        assert out2.returncode == 1
        assert (out2.stdout + out2.stderr).strip() == f"{prefix}: cannot open the store: {words}"
        assert WRONG_PASSWORD not in out2.stdout + out2.stderr
    for text in (out.stdout, out.stderr):
        assert WRONG_PASSWORD not in text and store_server.password not in text
        assert "Traceback" not in text
    assert _created(tmp_path) == []


@pytest.mark.slow
def test_a_wrong_store_password_from_the_environment_names_the_variable(
    tmp_path: Path, store_server
) -> None:
    """CLICKHOUSE_URL and CLICKHOUSE_PASSWORD (the remote-server form of the README) with a
    wrong password: the error names env CLICKHOUSE_PASSWORD; no password at all is said too."""
    config = _store_config(tmp_path, 'user = "backfill"\n')
    env = {"CLICKHOUSE_URL": store_server.url, "CLICKHOUSE_PASSWORD": WRONG_PASSWORD}
    out = _run(["--no-ui", "--config", str(config)], tmp_path, env)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"backfill-console: could not start: ClickHouse at {store_server.url} refused user "
        "'backfill': the password from env CLICKHOUSE_PASSWORD is wrong, or the user is unknown: "
        "check env CLICKHOUSE_PASSWORD and clickhouse.user"
    )
    assert WRONG_PASSWORD not in out.stdout + out.stderr
    out = _run(["--no-ui", "--config", str(config)], tmp_path, {"CLICKHOUSE_URL": store_server.url})
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"backfill-console: could not start: ClickHouse at {store_server.url} refused user "
        "'backfill' with no password (clickhouse.password and env CLICKHOUSE_PASSWORD are empty), "
        "or the user is unknown: set clickhouse.password or env CLICKHOUSE_PASSWORD, and check "
        "clickhouse.user"
    )
    assert _created(tmp_path) == []


@pytest.mark.slow
def test_a_password_in_the_store_url_is_refused_masked(tmp_path: Path, store_server) -> None:
    """The password written into clickhouse.url (user:password@host): refused as bad config
    (exit 2), masked, saying where user and password go; nothing created."""
    host = store_server.url.removeprefix("http://")
    config = _store_config(tmp_path, f'url = "http://backfill:{WRONG_PASSWORD}@{host}"\n')
    out = _run(["--no-ui", "--config", str(config)], tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"backfill-console: {config}: clickhouse.url = 'http://***@{host}': expected empty (the "
        "local store server) or http(s)://host[:port] without a user or password in it: put "
        "them in clickhouse.user and clickhouse.password (or env CLICKHOUSE_PASSWORD)"
    )
    assert WRONG_PASSWORD not in out.stdout + out.stderr
    assert _created(tmp_path) == []


@pytest.mark.slow
def test_a_taken_clickhouse_port_is_said_in_words_and_creates_nothing(tmp_path: Path) -> None:
    """clickhouse.port held by another process (a real socket listening on 127.0.0.1): the
    console and `sql` name the key, the port and what to do; nothing is created."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        config = _store_config(tmp_path, f'port = {port}\npath = "data/clickhouse"\n')
        out = _run(["--no-ui", "--config", str(config)], tmp_path)
        sql = _run(["sql", "SELECT 1", "--config", str(config)], tmp_path)
    words = (
        f"clickhouse.port = {port}: port {port} on 127.0.0.1 is taken by another process: stop "
        "that process, choose another clickhouse.port, or set it to 0 (a free port at each start)"
    )
    assert out.returncode == 1
    assert out.stderr.strip() == f"backfill-console: could not start: {words}"
    assert sql.returncode == 1
    assert sql.stderr.strip() == f"sql: cannot open the store: {words}"
    assert "Traceback" not in out.stderr + sql.stderr
    assert _created(tmp_path) == []
