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


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SHARDS", "ETHEREUM_RPC_URLS")}
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
