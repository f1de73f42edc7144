"""Running the real CLI (to completion or in the background) and reading its store in a subprocess.

Checks on a console's store run in a short-lived subprocess (`python -m tests.support.cli FILE
SQL`): it uses the console's local store server while one runs, or starts one for the query.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    """This environment without the operator overrides a test must not inherit, plus `extra`."""
    e = {k: v for k, v in os.environ.items() if k not in ("ETHEREUM_RPC_URLS", "SHARDS")}
    e.update(extra or {})
    return e


def cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None):
    """Run `backfill-console ARGS` (as `python -m engine.cli`) to completion."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `backfill-console ARGS` in the background (stdout/stderr piped, text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT,
        env=_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def store_query(config: Path, sql: str) -> list[list[Any]]:
    """Rows of `sql` ({db} = the configured database) from the config's store, in a subprocess."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.cli", str(config), sql],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise AssertionError(f"store query failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def _main() -> None:
    from engine.config import load_config
    from engine.store.client import open_store

    cfg = load_config(sys.argv[1])
    store = open_store(cfg)
    try:
        rows = store.query(sys.argv[2].replace("{db}", store.database))
    finally:
        store.close()
    print(json.dumps([list(r) for r in rows], default=str))


class ConsoleRun:
    """A headless console running in the background; its output is collected line by line."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        import threading

        self.config = config
        self.proc = start_cli("--no-ui", "--config", str(config), *args, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pred, timeout: float = 120.0, what: str = "condition") -> None:
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            if self.proc.poll() is not None and not pred():
                raise AssertionError(
                    f"console exited ({self.proc.returncode}) before {what}:\n{self.output[-3000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output[-3000:]}")

    def days_complete(self) -> int:
        """Days COMPLETE according to the last progress line (-1 before the first)."""
        import re

        for line in reversed(self.lines):
            m = re.search(r" days (\d+)/(\d+) ", line)
            if m:
                return int(m.group(1))
        return -1

    def ctl(self, *args: str, timeout: float = 60):
        return cli("ctl", "--config", str(self.config), *args, timeout=timeout)

    def status(self) -> dict:
        out = self.ctl("status", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def worker_states(self) -> list[str]:
        """States of the workers, [] while the console is not answering yet."""
        out = self.ctl("status", "--json")
        if out.returncode != 0:
            return []
        return [w["state"] for w in json.loads(out.stdout)["workers"]]

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def worker_processes(console_pid: int) -> dict[int, list[int]]:
    """shard -> pids of live `engine.worker` children of a console."""
    import psutil

    out: dict[int, list[int]] = {}
    try:
        children = psutil.Process(console_pid).children(recursive=False)
    except psutil.Error:
        return out
    for child in children:
        try:
            cmd = child.cmdline()
            if "engine.worker" not in cmd or child.status() == psutil.STATUS_ZOMBIE:
                continue
            out.setdefault(int(cmd[cmd.index("--shard-id") + 1]), []).append(child.pid)
        except (psutil.Error, ValueError, IndexError):
            continue
    return out


if __name__ == "__main__":
    _main()
