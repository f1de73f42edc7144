"""Fixtures shared by the end-to-end tests: one devchain cache for the whole session."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

E2E_DAYS = 8


@pytest.fixture(scope="session", autouse=True)
def console_pointers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Consoles started by tests record themselves here, not in the user's runtime dir."""
    d = tmp_path_factory.mktemp("runtime")
    old = os.environ.get("BACKFILL_CONSOLE_RUNTIME_DIR")
    os.environ["BACKFILL_CONSOLE_RUNTIME_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("BACKFILL_CONSOLE_RUNTIME_DIR", None)
    else:
        os.environ["BACKFILL_CONSOLE_RUNTIME_DIR"] = old


@pytest.fixture(scope="session")
def devchain_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding built devchains; each spec is built once per session, then loaded."""
    return tmp_path_factory.mktemp("devchain-cache")


def ground_truth_for(config: Path) -> dict:
    """The ground truth of the devchain a config describes (built by the console on first run)."""
    from engine.config import load_config
    from engine.devchain import DevchainSpec

    cfg = load_config(config)
    spec = DevchainSpec.from_config(cfg)
    return json.loads((cfg.devchain.state_dir / spec.key() / "ground_truth.json").read_text())


@pytest.fixture(scope="session")
def store_server(tmp_path_factory: pytest.TempPathFactory):
    """One local ClickHouse store server for the whole session (engine/store/server.py).

    Tests that need a store take a database of their own on it (`server_store`,
    `server_toml`), which is cheap, instead of starting a server each.
    """
    from engine.store.server import ensure_server

    server = ensure_server(tmp_path_factory.mktemp("store-server"))
    yield server
    server.stop()


def server_section(server, database: str) -> dict:
    """The [clickhouse] section (for tests/support/config.write_config) pointing at `server`
    as a remote server: url, user, password."""
    return {
        "url": server.url,
        "user": server.user,
        "password": server.password,
        "database": database,
    }


def server_toml(server, database: str) -> str:
    """A [clickhouse] section pointing at `server` (as a remote server: url, user, password)."""
    return (
        f'[clickhouse]\nurl = "{server.url}"\nuser = "{server.user}"\n'
        f'password = "{server.password}"\ndatabase = "{database}"\n'
    )


def server_store(server, database: str):
    """A Store on `server` with an empty database `database` holding the schema."""
    from engine.store.client import Store

    store = Store(server.url, database, server.user, server.password)
    store.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    store.ensure_schema()
    return store
