"""A lock that lives in the store: one analytics build (rebuild, hard gate) at a time, across
every process and host that uses the same ClickHouse server and database.

The lock is a table, `{db}.lock_NAME`: `CREATE TABLE` without IF NOT EXISTS is atomic on the
server, so exactly one of several contenders creates it; the holder writes who it is and a
heartbeat row every few seconds, and drops the table on release. A holder that died (its
heartbeat older than `stale_after_s`) is broken by the next contender: the stale table is renamed
away (one rename wins) and dropped, then the contender tries again. A holder on the same machine
(same host, boot and pid namespace: its token says so) whose process is gone is broken at once,
without waiting for its heartbeat to age (a rebuild SIGKILLed mid-swap is repaired by the next
start, not a minute later).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from types import TracebackType
from typing import TYPE_CHECKING

from engine.store.client import StoreError

if TYPE_CHECKING:
    from engine.store.client import Store

#: The lock of analytics builds: rebuild, hard gate, the periodic gates, the swap repair.
ANALYTICS_LOCK = "analytics"
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0


class LockHeld(Exception):
    """Someone else holds the lock; the message says who, since when and how fresh."""


def holder_label(what: str) -> str:
    return f"{what} on {socket.gethostname()} pid {os.getpid()}"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_ns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time (clock ticks after boot, /proc/PID/stat field 22); '' when it is
    gone or a zombie (dead, not yet reaped)."""
    fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return ""
    return fields[19]


def process_identity(pid: int | None = None) -> str:
    """host|boot id|pid namespace|pid|start time of a process of this machine (this one)."""
    pid = os.getpid() if pid is None else pid
    boot = _read("/proc/sys/kernel/random/boot_id")
    return "|".join([socket.gethostname(), boot, _pid_ns(), str(pid), _start_ticks(pid)])


def holder_gone(token: str) -> bool:
    """True only when the token's process ran on this machine (host, boot, pid namespace) and is
    gone (no such pid, or a pid reused by a later process); False whenever that is not sure."""
    parts = token.split("@", 1)[-1].split("|") if "@" in token else []
    if len(parts) != 5 or not all(parts[:3]) or not parts[3].isdigit() or not parts[4]:
        return False
    host, boot, ns, pid, start = parts
    mine = process_identity().split("|")
    if [host, boot, ns] != mine[:3] or not all(mine[:3]):
        return False
    return _start_ticks(int(pid)) != start


class StoreLock:
    """`with StoreLock(store, "analytics", holder_label("rebuild")):` or acquire()/release()."""

    def __init__(
        self,
        store: Store,
        name: str,
        holder: str,
        stale_after_s: float = STALE_AFTER_S,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.store = store
        self.name = name
        self.holder = holder
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.token = f"{uuid.uuid4().hex}@{process_identity()}"
        self.table = f"{store.database}.lock_{name}"
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # ---- public -------------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lock or raise LockHeld (after breaking a stale one once)."""
        for attempt in (0, 1):
            try:
                self.store.command(
                    f"CREATE TABLE {self.table} (token String, holder String, "
                    "at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY at"
                )
            except StoreError as exc:
                if "already exists" not in str(exc).lower():
                    raise
                who = self.current()
                if (
                    attempt == 0
                    and who is not None
                    and (who[2] > self.stale_after_s or holder_gone(who[3]))
                ):
                    self._break_stale()
                    continue
                raise LockHeld(self._held_message(who)) from None
            self._write_beat()
            self._stop.clear()
            self._beat = threading.Thread(target=self._beat_loop, name=f"lock-{self.name}")
            self._beat.daemon = True
            self._beat.start()
            return
        raise LockHeld(self._held_message(self.current()))

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(10)
            self._beat = None
        who = self.current()
        if who is not None and who[3] == self.token:
            self.store.command(f"DROP TABLE IF EXISTS {self.table} SYNC")

    def current(self) -> tuple[str, str, float, str] | None:
        """(holder, since, heartbeat age s, token) of the lock now, None when free.

        A lock table without rows (its creator died before writing one) counts as stale from
        its creation time.
        """
        db, tbl = self.table.split(".", 1)
        try:
            rows = self.store.query(
                f"SELECT argMin(holder, at), toString(min(at)), "
                f"dateDiff('millisecond', max(at), now64(3)) / 1000, argMin(token, at), count() "
                f"FROM {self.table}"
            )
        except StoreError as exc:
            if "unknown_table" in str(exc).lower() or "doesn't exist" in str(exc).lower():
                return None
            raise
        holder, since, age, token, n = rows[0]
        if not n:
            made = self.store.query(
                f"SELECT dateDiff('second', metadata_modification_time, now()) "
                f"FROM system.tables WHERE database = '{db}' AND name = '{tbl}'"
            )
            if not made:
                return None
            return ("(unknown: it wrote no row)", "?", float(made[0][0]), "")
        return (str(holder), str(since), float(age), str(token))

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # ---- inside -------------------------------------------------------------------------------
    def _held_message(self, who: tuple[str, str, float, str] | None) -> str:
        if who is None:
            return f"the {self.name} lock was taken and released meanwhile; try again"
        holder, since, age, _ = who
        return (
            f"another {self.name} run holds the store's lock ({self.table}): {holder}, "
            f"since {since} UTC, last heartbeat {age:.0f} s ago; it is released when that run "
            f"ends (or broken once its heartbeat is {self.stale_after_s:.0f} s old)"
        )

    def _write_beat(self) -> None:
        self.store.insert_json_rows(self.table, ["token", "holder"], [[self.token, self.holder]])

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._write_beat()
            except Exception:
                pass  # the next beat tries again; a long outage lets others break the lock

    def _break_stale(self) -> None:
        aside = f"{self.table}_stale_{uuid.uuid4().hex[:8]}"
        try:
            self.store.command(f"RENAME TABLE {self.table} TO {aside}")
        except StoreError:
            return  # someone else broke it first
        self.store.command(f"DROP TABLE IF EXISTS {aside} SYNC")
