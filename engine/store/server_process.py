"""`python -m engine.store.server_process DATA_DIR`: the local ClickHouse store server process.

chdb's module-level `_chdb.query(sql, fmt, path=DATA_DIR)` runs the full clickhouse-local
LocalServer, which reads `config.xml` from the current directory (written beside the data by
engine/store/server.py) and can open the real HTTP interface. Listeners live only while that call
runs, so the call starts them and then holds with a query that sleeps until it is killed. While it
holds, this process serves and does nothing else.

The hold runs in a thread; the main thread waits for SIGTERM (sent by the owner's stop(), or by
the kernel when the owner dies: PR_SET_PDEATHSIG against env BACKFILL_STORE_OWNER_PID) and then
ends the hold with `KILL QUERY ... SYNC` over HTTP, so LocalServer shuts down cleanly (parts
flushed, the data dir's lock released). If that does not finish in time the process exits hard;
MergeTree data stays consistent either way (an insert is atomic per part).
"""

from __future__ import annotations

import base64
import os
import signal
import sys
import threading
import urllib.request
from pathlib import Path

from engine.lifeline import die_with
from engine.store.server import SERVER_USER, read_password, read_port_from_config

OWNER_PID_ENV = "BACKFILL_STORE_OWNER_PID"
#: log_comment of the query that keeps the listeners alive (KILL QUERY finds it by this).
HOLD_COMMENT = "backfill-store-server-hold"
HOLD_SQL = (
    "SYSTEM START LISTEN HTTP; "
    "SELECT count() FROM numbers(1000000000000000) WHERE NOT ignore(sleepEachRow(1)) "
    f"SETTINGS max_block_size = 1, max_execution_time = 0, log_comment = '{HOLD_COMMENT}'"
)
STOP_TIMEOUT_S = 20.0


def die_with_owner() -> None:
    """SIGTERM when the process that started us dies; exit now if it already has."""
    die_with(OWNER_PID_ENV)


def _kill_hold(port: int, user: str, password: str) -> None:
    """End the hold query (and with it LocalServer) through the server's own HTTP interface."""
    sql = f"KILL QUERY WHERE query LIKE '%{HOLD_COMMENT}%' AND query NOT LIKE '%KILL QUERY%' SYNC"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/",
        data=sql.encode(),
        headers={"Authorization": f"Basic {token}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=STOP_TIMEOUT_S) as resp:
        resp.read()


def main(argv: list[str]) -> int:
    data_dir = Path(argv[0]).resolve()
    die_with_owner()
    port = read_port_from_config(data_dir)
    password = read_password(data_dir)
    # `import chdb` opens an in-process connection that reads ./config.xml: import it from a
    # directory without one, then move into the data dir, where LocalServer reads ours.
    os.chdir("/")
    from chdb import _chdb

    # Signals are ours (SIGTERM: the clean stop below), not ClickHouse's.
    # chdb's bundled _chdb stub omits the C extension's functions.
    _chdb.set_signal_handlers_enabled(0)  # type: ignore[attr-defined]
    os.chdir(data_dir)
    outcome: dict[str, str] = {}

    def hold() -> None:
        try:
            _chdb.query(HOLD_SQL, "CSV", path=str(data_dir))  # type: ignore[attr-defined]
            outcome["end"] = "stopped"
        except Exception as exc:  # a failed start (port taken, data dir locked, ...)
            outcome["end"] = f"error: {exc}"

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    holder = threading.Thread(target=hold, name="hold", daemon=True)
    holder.start()
    while holder.is_alive() and not stop.wait(0.2):
        pass
    if holder.is_alive():
        try:
            _kill_hold(port, SERVER_USER, password)
        except Exception as exc:
            print(f"store server: KILL QUERY failed: {exc}", file=sys.stderr, flush=True)
        holder.join(STOP_TIMEOUT_S)
        if holder.is_alive():
            print("store server: did not stop in time; exiting", file=sys.stderr, flush=True)
            os._exit(1)
    end = outcome.get("end", "stopped")
    print(f"store server on port {port}: {end}", file=sys.stderr, flush=True)
    sys.stderr.flush()
    # LocalServer's global state does not like a second teardown by the interpreter.
    os._exit(0 if end == "stopped" else 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
