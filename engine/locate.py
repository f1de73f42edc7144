"""Per-user runtime pointers to running consoles, so `ctl` finds one from any directory.

A console writes `<runtime dir>/consoles/<pid>-<socket hash>.json` ({"pid", "socket", "config",
"cwd", "started_at"}) once its control socket listens, and removes it when it stops. The runtime
dir is `$BACKFILL_CONSOLE_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/backfill-console`, else
`/tmp/backfill-console-<uid>` (mode 0700, refused when another user owns it). `ctl` without
`--config` and without `./config.toml` uses the live consoles listed there (pointers whose pid is
gone or whose socket vanished are removed as it reads them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ConsolePointer:
    pid: int
    socket: Path
    config: str
    cwd: str
    started_at: float


def runtime_dir() -> Path:
    """The per-user folder of console pointers (not created here)."""
    env = os.environ.get("BACKFILL_CONSOLE_RUNTIME_DIR", "").strip()
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / "backfill-console"
    return Path(f"/tmp/backfill-console-{os.getuid()}")


def _pointer_dir(create: bool) -> Path | None:
    d = runtime_dir() / "consoles"
    if create:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        st = os.lstat(d.parent)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return None  # somebody else's folder in /tmp: never trust or write it
    return d


def write_pointer(socket_path: Path, config: str) -> Path | None:
    """Record this process's console; None when the runtime dir cannot be used (not fatal)."""
    try:
        d = _pointer_dir(create=True)
        if d is None:
            return None
        sock = str(Path(socket_path).resolve())
        tag = hashlib.sha1(sock.encode()).hexdigest()[:8]
        path = d / f"{os.getpid()}-{tag}.json"
        body = {
            "pid": os.getpid(),
            "socket": sock,
            "config": config,
            "cwd": os.getcwd(),
            "started_at": time.time(),
        }
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)
        os.replace(tmp, path)
        return path
    except OSError:
        return None


def remove_pointer(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_consoles() -> list[ConsolePointer]:
    """Running consoles of this user, newest first; stale pointers are removed."""
    d = _pointer_dir(create=False)
    if d is None or not d.is_dir():
        return []
    out: list[ConsolePointer] = []
    for path in d.glob("*.json"):
        try:
            body = json.loads(path.read_text())
            ptr = ConsolePointer(
                pid=int(body["pid"]),
                socket=Path(body["socket"]),
                config=str(body.get("config", "")),
                cwd=str(body.get("cwd", "")),
                started_at=float(body.get("started_at", 0.0)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _alive(ptr.pid) or not ptr.socket.exists():
            remove_pointer(path)
            continue
        out.append(ptr)
    return sorted(out, key=lambda p: -p.started_at)
