"""`backfill-console --version`: the product's version and what it runs on.

Lines: the product (and the folder its code runs from), Python, Textual, clickhouse-connect, the
store's ClickHouse engine (asked with `SELECT version()` of a clickhouse.url server; for the local
store server chdb's engine version and whether a server runs on the data dir, never starting
one), and anvil's version when the config uses the devchain. A part that cannot be found says
why instead of failing the command.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import Config

PRODUCT = "backfill-console"
PROBE_TIMEOUT_S = 3.0


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def store_engine_version(cfg: Config) -> str:
    """ClickHouse version of the configured store, or why it is unknown."""
    ch = cfg.clickhouse
    if not ch.url:
        from engine.store.server import running_server

        info = running_server(ch.path)
        where = f"local store server on {ch.path}, " + (
            f"running on 127.0.0.1:{info.port}" if info is not None else "not running"
        )
        try:
            import chdb

            return f"{chdb.engine_version} (chdb {chdb.__version__}, {where})"
        except Exception as exc:  # chdb missing or broken
            return f"unknown (chdb: {type(exc).__name__}; {where})"
    from engine.preflight import StartupError, store_server_version

    try:
        return f"{store_server_version(cfg, timeout_s=PROBE_TIMEOUT_S)} (server)"
    except StartupError as exc:
        return f"unknown ({exc})"


def anvil_version() -> str:
    from engine.devchain.anvil import AnvilError, find_anvil

    try:
        binary = find_anvil()
        out = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (AnvilError, OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    first = (out.stdout or out.stderr).strip().splitlines()
    return (
        first[0].removeprefix("anvil ").removeprefix("Version: ").strip()
        if first
        else f"unknown (exit {out.returncode})"
    )


def version_text(cfg: Config | None, config_error: str = "") -> str:
    """The --version report; `cfg` None (bad config) skips the store and anvil lines."""
    code = Path(__file__).resolve().parent.parent
    lines = [
        f"{PRODUCT} {package_version(PRODUCT)} (code in {code})",
        f"Python {platform.python_version()} ({platform.python_implementation()})",
        f"Textual {package_version('textual')}",
        f"clickhouse-connect {package_version('clickhouse-connect')}",
    ]
    if cfg is None:
        lines.append(f"store: not checked ({config_error})")
        return "\n".join(lines)
    lines.append(f"ClickHouse {store_engine_version(cfg)}")
    if cfg.uses_devchain:
        lines.append(f"anvil {anvil_version()} (devchain: no rpc.urls configured)")
    return "\n".join(lines)
