"""Find, start and stop a local anvil node on a free loopback port; a minimal JSON-RPC client.

The binary comes from the npm package `@foundry-rs/anvil-linux-amd64` installed by `make setup` into
`tools/anvil/node_modules`; env `ANVIL_BIN` overrides. The node listens on 127.0.0.1 only, mines
nothing by itself (`--no-mining`), keeps no historical states (`--prune-history`; logs, blocks and
receipts are kept), and can start from a saved state (`--load-state`).
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_REL = Path("tools/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
HOST = "127.0.0.1"
# A block gas limit far above anything a day's busiest block needs, so the node never splits the
# transactions meant for one block across two.
GAS_LIMIT = 2_000_000_000
# Shanghai has PUSH0 but none of the later per-block system contracts (EIP-4788 beacon roots,
# EIP-2935 block hashes) whose storage grows with every block and slows mining ~100x here.
HARDFORK = "shanghai"


class AnvilError(RuntimeError):
    """anvil missing, failed to start, or answered a JSON-RPC error."""


def find_anvil() -> Path:
    """Path of the anvil binary: $ANVIL_BIN, the project-local npm install, or PATH."""
    env = os.environ.get("ANVIL_BIN")
    if env:
        p = Path(env)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise AnvilError(f"ANVIL_BIN={env} is not an executable file")
        return p
    local = REPO_ROOT / ANVIL_REL
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise AnvilError(
        f"anvil not found at {local} (run `make setup`) and not on PATH; set ANVIL_BIN"
    )


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Rpc:
    """Plain JSON-RPC over one keep-alive HTTP connection (http.client: ~10x less per-call
    overhead than requests); batch results come back in call order."""

    def __init__(self, url: str, timeout: float = 600.0) -> None:
        self.url = url
        self.timeout = timeout
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or HOST, parts.port or 80
        self._path = parts.path or "/"
        self._conn: http.client.HTTPConnection | None = None
        self._id = 0

    def _post(self, body: Any) -> Any:
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(payload))}
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, self.timeout)
                self._conn.connect()
                assert self._conn.sock is not None
                self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self._conn.request("POST", self._path, payload, headers)
                resp = self._conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
                continue
            if resp.status != 200:
                raise AnvilError(f"HTTP {resp.status}: {data[:200]!r}")
            return json.loads(data)
        raise AssertionError("unreachable")

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        self._id += 1
        out = self._post(
            {"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)}
        )
        if "error" in out:
            raise AnvilError(f"{method}: {out['error']}")
        return out["result"]

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Send calls as one JSON-RPC batch; results in call order; raise on any error."""
        if not calls:
            return []
        base = self._id + 1
        self._id += len(calls)
        body = [
            {"jsonrpc": "2.0", "id": base + i, "method": m, "params": list(p)}
            for i, (m, p) in enumerate(calls)
        ]
        by_id = {item["id"]: item for item in self._post(body)}
        results = []
        for i, (m, _) in enumerate(calls):
            item = by_id[base + i]
            if "error" in item:
                raise AnvilError(f"{m}: {item['error']}")
            results.append(item["result"])
        return results

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# The node runs under a tiny watchdog (its own process group, so a terminal's Ctrl-C reaches only
# our code, which then stops the node in order). The watchdog's stdin is a pipe from the process
# that started it: when that process dies, even by SIGKILL, the pipe reaches EOF and the watchdog
# stops anvil, so no orphaned node outlives its owner. SIGTERM/SIGINT to the watchdog stop anvil
# too.
WATCHDOG = """
import os, select, signal, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)
def stop(*_):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
while p.poll() is None:
    r = select.select([0], [], [], 0.5)[0]
    if r and not os.read(0, 4096):
        stop()
sys.exit(p.returncode)
"""


def spawn_watched(args: list[str], stdout: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Start the command `args` (an anvil) under WATCHDOG, in its own session; stderr joins
    stdout."""
    return subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, *args],
        stdin=subprocess.PIPE,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class AnvilProcess:
    """A running anvil node on 127.0.0.1:port (`proc` is its watchdog; see WATCHDOG)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path | None) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the watchdog stops anvil), then SIGKILL to the node's own process group after
        `timeout` seconds. Idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()


def port_taken_error(port: int) -> str | None:
    """Why anvil cannot listen on HOST:port (another process holds it), or None when free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {HOST} is taken by another process: choose another --port, "
                    "or leave --port out for a free one"
                )
            return f"cannot listen on {HOST}:{port} ({exc.strerror or exc})"
    return None


def start_anvil(
    *,
    port: int | None = None,
    genesis_timestamp: int | None = None,
    load_state: Path | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 120.0,
    automine: bool = False,
    hardfork: str = HARDFORK,
) -> AnvilProcess:
    """Start anvil on 127.0.0.1 and return once it answers `eth_blockNumber`.

    `genesis_timestamp` sets `--timestamp` (a fresh chain); `load_state` restores a dumped chain.
    With `port=None` a free port is picked (retrying if another process grabs it first).
    Blocks are mined only on request unless `automine` (then one per transaction).
    """
    binary = find_anvil()
    if port is not None and (taken := port_taken_error(port)):
        # Checked first: anvil would fail, or the readiness probe would talk to the other process.
        raise AnvilError(taken)
    attempts = 1 if port is not None else 5
    last_err = ""
    for _ in range(attempts):
        p = port if port is not None else free_port()
        args = [
            str(binary),
            "--host",
            HOST,
            "--port",
            str(p),
            "--gas-limit",
            str(GAS_LIMIT),
            "--hardfork",
            hardfork,
            "--prune-history",
            "--silent",
        ]
        if not automine:
            args.append("--no-mining")
        if genesis_timestamp is not None:
            args += ["--timestamp", str(genesis_timestamp)]
        if load_state is not None:
            args += ["--load-state", str(load_state)]
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = spawn_watched(args, out)
        finally:
            if log_path:
                out.close()  # type: ignore[union-attr]
        node = AnvilProcess(proc, p, log_path)
        err = _wait_ready(node, ready_timeout)
        if err is None:
            return node
        node.stop()
        last_err = err
    raise AnvilError(f"anvil did not start: {last_err}")


def _wait_ready(node: AnvilProcess, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    rpc = Rpc(node.url, timeout=5.0)
    try:
        while time.monotonic() < deadline:
            if not node.alive():
                tail = ""
                if node.log_path and node.log_path.exists():
                    tail = node.log_path.read_text(errors="replace")[-500:]
                return f"exited with code {node.proc.returncode} {tail}".strip()
            try:
                rpc.call("eth_blockNumber")
                return None
            except (OSError, http.client.HTTPException, AnvilError):
                time.sleep(0.05)
        return f"not ready after {timeout:.0f} s"
    finally:
        rpc.close()
