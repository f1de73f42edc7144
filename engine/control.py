"""Remote control of a running console over a unix socket (`backfill-console ctl ...`).

The console serves `data_dir/console.sock` (mode 0600). It first takes an exclusive `flock` on
`console.sock.lock`, which holds its pid, so a second console on the same data dir is refused with
the holder's pid, and a socket left by a console that died is safely replaced. The protocol is one
JSON request line -> one JSON response line per connection, e.g. `{"cmd": "status"}`,
`{"cmd": "scale", "shards": 4}`, `{"cmd": "restart", "target": 3 | "stalled"}`, `{"cmd": "pause"}`,
`resume`, `optimize`, `abort`. Responses carry `"ok": true|false` and `"error"` when not ok.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeGuard

from engine import locate
from engine.masking import mask_secrets
from engine.status import RAW_LOGS, block_calls_note, refetched_words

SOCKET_NAME = "console.sock"
MAX_REQUEST_BYTES = 1 << 20
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes on Linux, including the NUL


class ControlError(Exception):
    """The control channel failed; the message says what to do about it."""


class ConsoleAlreadyRunning(ControlError):
    """Another live console holds the control socket's lock."""

    def __init__(self, pid: int, socket_path: Path) -> None:
        self.pid = pid
        self.socket_path = socket_path
        who = f"pid {pid}" if pid > 0 else "pid unknown"
        super().__init__(
            f"another console is already running ({who}) with control socket {socket_path}; "
            f"stop it (backfill-console ctl abort) or use another backfill.data_dir"
        )


def socket_path_for(data_dir: Path) -> Path:
    """Where the console for this data dir listens."""
    return Path(data_dir) / SOCKET_NAME


def _lock_path(socket_path: Path) -> Path:
    return socket_path.with_name(socket_path.name + ".lock")


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    """A path usable in sockaddr_un: itself, or /proc/self/fd/N/name when it is too long."""
    if len(os.fsencode(str(path))) <= _SUN_PATH_MAX:
        yield str(path)
        return
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise ControlError(f"cannot open folder of control socket {path}: {e.strerror}") from None
    try:
        yield f"/proc/self/fd/{dir_fd}/{path.name}"
    finally:
        os.close(dir_fd)


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


class ControlServer:
    """Serves control requests for one console; `handler(request) -> response` runs per request."""

    def __init__(
        self, socket_path: Path, handler: Callable[[dict], dict], pointer: str | None = None
    ) -> None:
        """`pointer`: the console's config (as shown to operators); when given, a per-user
        runtime pointer (engine.locate) lets `ctl` find this console from any directory."""
        self.socket_path = Path(socket_path)
        self.lock_path = _lock_path(self.socket_path)
        self.handler = handler
        self.pointer = pointer
        self._pointer_path: Path | None = None
        self._lock_fd: int | None = None
        self._sock: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Lock, replace a stale socket, bind (0600), and serve in a daemon thread."""
        if self._sock is not None:
            raise ControlError("control server already started")
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._remove_stale_socket()
            self._bind()
        except BaseException:
            self._release_lock()
            raise
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="control-server", daemon=True)
        self._thread.start()
        if self.pointer is not None:
            self._pointer_path = locate.write_pointer(self.socket_path, self.pointer)

    def stop(self) -> None:
        """Stop serving, unlink the socket (if still ours) and release the lock. Idempotent."""
        self._stopping.set()
        locate.remove_pointer(self._pointer_path)
        self._pointer_path = None
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._thread = None
        if self._inode is not None:
            with contextlib.suppress(OSError):
                st = os.lstat(self.socket_path)
                if (st.st_dev, st.st_ino) == self._inode:
                    os.unlink(self.socket_path)
            self._inode = None
        self._release_lock()

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._sock is not None and not self._stopping.is_set()

    # -- internals -----------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ControlError(f"cannot open lock file {self.lock_path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise ControlError(f"cannot lock {self.lock_path}: {e.strerror}") from None
            pid = _read_pid(fd)
            if pid == 0:  # the holder may not have written its pid yet
                threading.Event().wait(0.2)
                pid = _read_pid(fd)
            os.close(fd)
            raise ConsoleAlreadyRunning(pid, self.socket_path) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o600)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        # The lock file itself stays: deleting it would let two consoles lock different inodes.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def _remove_stale_socket(self) -> None:
        """We hold the lock, so any socket file here belongs to a console that is gone."""
        try:
            st = os.lstat(self.socket_path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(
                f"{self.socket_path} exists and is not a socket; move it away and start again"
            )
        os.unlink(self.socket_path)

    def _bind(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _short_path(self.socket_path) as address:
                old_umask = os.umask(0o177)  # the socket is born 0600, never world-accessible
                try:
                    sock.bind(address)
                finally:
                    os.umask(old_umask)
            os.chmod(self.socket_path, 0o600)
            sock.listen(16)
            sock.settimeout(0.25)
            st = os.lstat(self.socket_path)
        except OSError as e:
            sock.close()
            raise ControlError(
                f"cannot listen on control socket {self.socket_path}: {e.strerror or e}"
            ) from None
        self._inode = (st.st_dev, st.st_ino)
        self._sock = sock

    def _serve(self) -> None:
        sock = self._sock
        while sock is not None and not self._stopping.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            threading.Thread(
                target=self._handle_connection, args=(conn,), name="control-conn", daemon=True
            ).start()

    def _handle_connection(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10.0)
            try:
                line = _read_line(conn)
            except (OSError, ValueError) as e:
                self._reply(conn, {"ok": False, "error": f"bad request: {e}"})
                return
            self._reply(conn, self.dispatch(line))

    def dispatch(self, line: bytes) -> dict:
        """Decode one request line, run the handler, and return the response dict."""
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            return {"ok": False, "error": f"bad request: not JSON ({e})"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'bad request: expected an object with a "cmd" string'}
        try:
            response = self.handler(request)
        except Exception as e:  # any handler failure is reported to the client, never fatal
            text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            return {"ok": False, "error": mask_secrets(text, [])}
        if not isinstance(response, dict):
            return {"ok": False, "error": f"handler returned {type(response).__name__}, not a dict"}
        return {"ok": True, **response}

    @staticmethod
    def _reply(conn: socket.socket, response: dict) -> None:
        try:
            data = json.dumps(response, default=str, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            data = json.dumps({"ok": False, "error": f"response not serialisable: {e}"})
        with contextlib.suppress(OSError):
            conn.sendall(data.encode() + b"\n")


def _read_line(conn: socket.socket) -> bytes:
    """Read up to the first newline (or EOF); refuse requests over MAX_REQUEST_BYTES."""
    buf = bytearray()
    while b"\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST_BYTES:
            raise ValueError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    line = bytes(buf).split(b"\n", 1)[0].strip()
    if not line:
        raise ValueError("empty request")
    return line


def send_command(socket_path: Path, request: dict, timeout_s: float = 10.0) -> dict:
    """Send one request to the console at `socket_path` and return its response."""
    socket_path = Path(socket_path)
    if not socket_path.exists():
        raise ControlError(f"no console is running (no socket at {socket_path})")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        with _short_path(socket_path) as address:
            try:
                sock.connect(address)
            except ConnectionRefusedError:
                raise ControlError(
                    f"no console is running (stale socket at {socket_path}, nothing listening)"
                ) from None
            except FileNotFoundError:
                raise ControlError(f"no console is running (no socket at {socket_path})") from None
            except PermissionError:
                raise ControlError(
                    f"cannot connect to console at {socket_path}: permission denied "
                    "(the socket belongs to another user)"
                ) from None
        sock.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        buf = bytearray()
        while b"\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    except TimeoutError:
        raise ControlError(
            f"console at {socket_path} is not answering: no reply within {timeout_s:g} s"
        ) from None
    except ControlError:
        raise
    except OSError as e:
        raise ControlError(
            f"console at {socket_path} is not answering: {e.strerror or e}"
        ) from None
    finally:
        sock.close()
    line = bytes(buf).split(b"\n", 1)[0]
    if not line.strip():
        raise ControlError(f"console at {socket_path} is not answering: it closed the connection")
    try:
        response = json.loads(line)
    except ValueError:
        raise ControlError(
            f"console at {socket_path} is not answering: reply is not JSON: {line[:200]!r}"
        ) from None
    if not isinstance(response, dict):
        raise ControlError(f"console at {socket_path} is not answering: reply is not an object")
    return response


# -- shard id lists ----------------------------------------------------------------------------

_PART = re.compile(r"(\d+)(?:-(\d+))?")


def parse_shard_ids(text: str, shards: int) -> list[int]:
    """Parse "0-3", "0,2,5", "1-2,6" into sorted unique shard ids in [0, shards).

    Raises ValueError naming the text and the valid range.
    """
    if shards < 1:
        raise ValueError(f"shard ids {text!r}: SHARDS must be >= 1, got {shards}")
    valid = f"expected ids in 0-{shards - 1} (SHARDS = {shards}), e.g. '0-3' or '0,2,5'"
    ids: set[int] = set()
    parts = [p.strip() for p in text.split(",")]
    if not text.strip():
        raise ValueError(f"shard ids {text!r}: empty; {valid}")
    for part in parts:
        m = _PART.fullmatch(part.replace(" ", ""))
        if not m:
            raise ValueError(f"shard ids {text!r}: cannot read {part!r}; {valid}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"shard ids {text!r}: range {part!r} runs backwards; {valid}")
        if hi >= shards:
            raise ValueError(f"shard ids {text!r}: {hi} is out of range; {valid}")
        ids.update(range(lo, hi + 1))
    return sorted(ids)


# -- human rendering of `ctl status` -----------------------------------------------------------


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _age(seconds: Any) -> str:
    if not _number(seconds):
        return "-"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return " ".join(str(value).split())  # one line


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(columns: list[str], right: set[str], rows: list[list[str]]) -> list[str]:
    """Aligned lines of a table: a header, then one line per row."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        out = [
            cell.rjust(widths[i]) if columns[i] in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    return [line(columns), *(line(r) for r in rows)]


def _days_cell(done: Any, planned: Any) -> str:
    if isinstance(done, int) and isinstance(planned, int) and planned >= done and planned:
        return f"{done}/{planned}"
    return _cell(done)


def _table_name(table: Any) -> str:
    short = {"condition_resolutions": "resolutions", "token_registrations": "registrations"}
    return short.get(str(table), str(table).removesuffix("_transfers_staging"))


def _ms(value: Any) -> str:
    return f"{value:.0f}" if _number(value) else "-"


def _rate(value: Any) -> str:
    return f"{value:.1f}" if _number(value) else "-"


def _rpc_table(urls: list[dict], now: float) -> list[str]:
    """The RPC health rows of `ctl status`: one per URL (masked)."""
    columns = ["RPC URL", "CALLS", "REQ/S", "429", "P50MS", "P95MS", "RANGE", "STATE", "ERRORS"]
    right = {"CALLS", "REQ/S", "429", "P50MS", "P95MS", "RANGE"}
    rows = []
    for h in urls:
        errors = h.get("errors") or {}
        cool = h.get("cooling_until")
        state = f"cool {max(0, int(cool - now))}s" if _number(cool) else "ok"
        rows.append(
            [
                _cell(h.get("url")),
                _cell(h.get("calls")),
                _rate(h.get("calls_per_s")),
                _cell(h.get("http_429")),
                _ms(h.get("p50_ms")),
                _ms(h.get("p95_ms")),
                _cell(h.get("current_range")),
                state,
                ", ".join(f"{k} {v:,}" for k, v in sorted(errors.items(), key=lambda kv: -kv[1]))
                or "-",
            ]
        )
    return _table(columns, right, rows)


def format_status_text(status_dict: dict, now: float | None = None) -> str:
    """Render a `ctl status` reply: a header line, a per-worker table, then a per-URL RPC table."""
    s = status_dict
    done, total = s.get("days_complete"), s.get("days_total")
    days = f"{_cell(done)}/{_cell(total)} COMPLETE"
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        days += f" ({100 * done / total:.1f}%)"
    shards = _cell(s.get("shards"))
    cfg_shards = s.get("config_shards")
    if isinstance(cfg_shards, int) and cfg_shards and cfg_shards != s.get("shards"):
        shards += f" (config {cfg_shards}: a rerun uses it)"
    header = f"state {_cell(s.get('state'))}   shards {shards}   days {days}"
    eta = s.get("eta_s")
    if _number(eta):
        header += f"   ETA {_age(eta)}"
    elif s.get("eta_note"):
        header += f"   ETA {s['eta_note']}"
    outcome = s.get("outcome")
    if isinstance(outcome, dict) and outcome.get("phase"):
        words = {
            "rebuilding": "rebuilding analytics",
            "swapped": "analytics swapped in",
            "not_swapped": "analytics NOT swapped",
            "failed": "rebuild FAILED",
        }.get(str(outcome["phase"]), str(outcome["phase"]))
        detail = outcome.get("detail") or ""
        header += f"\n{words}" + (f": {detail}" if detail else "")
        if outcome.get("snapshot"):
            header += f"; snapshot {outcome['snapshot']}"
    rebuild = s.get("rebuild")
    if isinstance(rebuild, dict) and rebuild.get("summary"):
        header += f"\nrebuild {_cell(rebuild.get('summary'))}"
    if s.get("stalled"):
        header += f"   STALLED: {s['stalled']}"
    if s.get("disk_full"):
        header += f"   DISK FULL (fetching paused): {_clip(str(s['disk_full']), 120)}"
    staged = s.get("rows_staged") or {}
    if staged:
        header += "\nrows staged " + ", ".join(
            f"{_table_name(t)} {_cell(n)}" for t, n in staged.items()
        )
        refetched = refetched_words(s.get("rows_refetched") or {})
        if refetched:
            header += f"; re-fetched {refetched} (kept once)"
    # What the workers fetched: rows they decoded, or raw logs the store decodes.
    fetched = "LOGS" if s.get("fetched_unit") == RAW_LOGS else "ROWS"
    columns = [
        "SHARD",
        "PID",
        "STATE",
        "DAY",
        "HEARTBEAT",
        fetched,
        "DAYS",
        "RESTARTS",
        "LAST ERROR",
    ]
    right = {"SHARD", "PID", "DAY", "HEARTBEAT", fetched, "DAYS", "RESTARTS"}
    # The reason of the latest automatic restart, when any worker has one.
    restarted = any(w.get("last_restart") for w in s.get("workers") or [])
    if restarted:
        columns.insert(-1, "LAST RESTART")
    rows: list[list[str]] = []
    for w in s.get("workers") or []:
        restart = [_clip(_cell(w.get("last_restart")), 40)] if restarted else []
        rows.append(
            [
                _cell(w.get("shard")),
                str(w["pid"]) if isinstance(w.get("pid"), int) else _cell(w.get("pid")),
                _cell(w.get("state")),
                _cell(w.get("day")),
                _age(w.get("heartbeat_age_s")),
                _cell(w.get("rows")),
                _days_cell(w.get("days_done"), w.get("days_planned")),
                _cell(w.get("restarts")),
                *restart,
                _clip(_cell(w.get("last_error")), 80),
            ]
        )
    lines = [header, ""] + (_table(columns, right, rows) if rows else ["(no workers)"])
    if s.get("rpc"):
        lines += ["", *_rpc_table(s["rpc"], time.time() if now is None else now)]
        note = block_calls_note(
            sum(int(h.get("block_calls") or 0) for h in s["rpc"]),
            sum(int(h.get("provider_calls") or 0) for h in s["rpc"]),
        )
        if note:
            lines.append(note)
    if not rows and not s.get("rpc"):
        return header + "\n(no workers)\n"
    return "\n".join(lines) + "\n"
