"""Worker processes: spawn, watch, detect stalls, restart with backoff, scale, stop.

One `python -m engine.worker` process per shard, tracked by pid (psutil). Each shard has a state
(STARTING, RUNNING, STALLED, BACKOFF, STOPPING, DONE, FATAL, STOPPED); every change is one line in
monitor.log. A shard never has two live processes: the old one is reaped before a new one starts,
and every tick also scans the process table for strays.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from engine.config import MonitorConfig
from engine.protocol import (
    PARENT_PID_ENV,
    DayDone,
    Done,
    Error,
    Heartbeat,
    Hello,
    Logs,
    Message,
    Pause,
    Phase,
    Plan,
    ProtocolError,
    Range,
    Resume,
    Rows,
    encode,
    read_message,
)
from engine.status import (
    BACKOFF,
    DONE,
    FATAL,
    RUNNING,
    STALLED,
    STARTING,
    STOPPED,
    STOPPING,
    WorkerState,
)

log = logging.getLogger("supervisor")

#: Worker stdout pipe capacity and the console's read buffer on it.
PIPE_BYTES = 1 << 20
READ_BUFFER_BYTES = 1 << 16
#: Error kinds that leave a day not COMPLETE; they stay the shard's last error until it is.
STICKY_ERRORS = frozenset({"range_failed", "day_failed"})
#: Signals other processes send to stop or kill a worker (an operator's kill, the OOM killer, a
#: scheduler, a terminal): a worker ended by one of them did not fail by itself. Any other signal
#: (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL, ...) is the worker's own crash.
OUTSIDE_SIGNALS = frozenset(
    {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}
)


def killed_from_outside(returncode: int | None) -> bool:
    """Whether an exit code (Popen's: -N for signal N) says the worker was killed from outside."""
    return returncode is not None and returncode < 0 and -returncode in OUTSIDE_SIGNALS


def _widen_pipe(proc: subprocess.Popen) -> None:
    """Give the worker's stdout pipe room for several rows messages (64 KiB by default), so a
    worker rarely blocks on a console that is busy inserting (Linux only; best effort)."""
    if proc.stdout is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    try:
        fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size for an unprivileged user: keep the default


@dataclass
class Shard:
    shard: int
    state: WorkerState = STOPPED
    proc: subprocess.Popen | None = None
    pid: int | None = None
    started_at: float = 0.0
    last_hb: float = 0.0  # monotonic
    day: int | None = None
    block_from: int | None = None
    block_to: int | None = None
    phase: Phase | str = ""  # "" until the first heartbeat
    rows: int = 0
    days_done: int = 0
    days_planned: int = 0
    restarts: int = 0
    restart_times: deque = field(default_factory=deque)
    backoff_s: float = 0.0
    backoff_until: float = 0.0
    last_error: str = ""
    #: Days this shard reported failed (day -> why), until it reports them COMPLETE. While any is
    #: pending, last_error keeps naming one: routine events (a 429, a split) do not hide it.
    failed_days: dict[int, str] = field(default_factory=dict)
    got_done: bool = False
    exit_handled: bool = False
    heard: bool = False  # a message arrived from the current process
    #: The current process made progress (a range found, a chunk of rows, a day done): when it
    #: dies, the restart does not count toward FATAL and the backoff starts again.
    progressed: bool = False
    exits_without_progress: int = 0  # in a row, whatever ended them (the backoff's exponent)
    last_restart_reason: str = ""  # why the latest automatic restart happened
    stop_requested: bool = False
    term_sent_at: float | None = None
    reader: threading.Thread | None = None
    log_file: IO[bytes] | None = None


class Supervisor:
    """Owns the worker processes of one console. Thread-safe; call tick() periodically."""

    def __init__(
        self,
        settings: MonitorConfig,
        log_dir: Path,
        plan_for: Callable[[int, int], Plan],
        on_message: Callable[[Shard, Message], None],
        shards: int,
        shard_ids: list[int] | None = None,
        python: str = sys.executable,
        clock: Callable[[], float] = time.monotonic,
        command_for: Callable[[int, int], list[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.plan_for = plan_for
        self.on_message = on_message
        self.shards_total = shards
        self.shard_ids = list(shard_ids) if shard_ids is not None else list(range(shards))
        self.python = python
        self.command_for = command_for or self.worker_command
        self.clock = clock
        self.lock = threading.RLock()
        self.shards: dict[int, Shard] = {}
        self.paused = False
        self.last_stall_check = 0.0
        self.monitor_log = self.log_dir / "monitor.log"
        self.duplicate_kills = 0
        self._spawned: list[subprocess.Popen] = []  # every worker started, until reaped

    # ---- logging ------------------------------------------------------------------------------
    def _monitor_line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with open(self.monitor_log, "a") as f:
            f.write(f"{stamp} {text}\n")

    def _set_state(self, sh: Shard, new: WorkerState, reason: str) -> None:
        if sh.state == new:
            return
        self._monitor_line(f"shard={sh.shard} pid={sh.pid or '-'} {sh.state} -> {new} ({reason})")
        log.info("shard %d %s -> %s (%s)", sh.shard, sh.state, new, reason)
        sh.state = new

    # ---- process control ----------------------------------------------------------------------
    def worker_log_path(self, shard: int) -> Path:
        return self.log_dir / f"worker-{shard}.log"

    def worker_command(self, shard: int, shards: int) -> list[str]:
        """`python -m engine.worker --shard-id K --shards N`, as `ps aux | grep shard-id` shows."""
        return [
            self.python,
            "-m",
            "engine.worker",
            "--shard-id",
            str(shard),
            "--shards",
            str(shards),
        ]

    def start_all(self) -> None:
        with self.lock:
            for k in self.shard_ids:
                sh = self.shards.setdefault(k, Shard(k))
                if sh.state not in (DONE,) and not self._alive(sh):
                    self._spawn(sh, "start")

    def _spawn(self, sh: Shard, reason: str) -> None:
        """Start the shard's worker. Caller holds the lock and has reaped any old process."""
        assert not self._alive(sh), f"shard {sh.shard} already has a live process"
        plan = self.plan_for(sh.shard, self.shards_total)
        sh.days_planned = len(plan.days)
        sh.days_done = 0  # of this process's plan
        sh.got_done = False
        sh.exit_handled = False
        sh.heard = False
        sh.progressed = False
        sh.stop_requested = False
        sh.term_sent_at = None
        sh.day = None
        sh.phase = Phase.START
        sh.rows = 0
        if not plan.days:
            sh.pid = None
            self._set_state(sh, DONE, "no day left for this shard")
            return
        if sh.log_file is None or sh.log_file.closed:
            sh.log_file = open(self.worker_log_path(sh.shard), "ab")
        env = dict(os.environ, SHARD_ID=str(sh.shard), SHARDS=str(self.shards_total))
        env["PYTHONUNBUFFERED"] = "1"
        # The worker asks the kernel for SIGTERM when this process dies (engine.worker); doing it
        # there rather than in a preexec_fn lets Popen use vfork (8 spawns: 0.3 s -> ~0.02 s).
        env[PARENT_PID_ENV] = str(os.getpid())
        proc = subprocess.Popen(
            self.command_for(sh.shard, self.shards_total),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sh.log_file,
            env=env,
            cwd=str(Path(__file__).resolve().parent.parent),
            bufsize=READ_BUFFER_BYTES,
        )
        _widen_pipe(proc)
        sh.proc = proc
        self._spawned.append(proc)
        sh.pid = proc.pid
        sh.started_at = time.time()
        sh.last_hb = self.clock()
        self._set_state(sh, STARTING, reason)
        try:
            assert proc.stdin is not None
            proc.stdin.write(encode(plan))
            if self.paused:
                proc.stdin.write(encode(Pause()))
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            sh.last_error = f"could not send plan: {exc}"
        sh.reader = threading.Thread(
            target=self._read_loop, args=(sh, proc), name=f"reader-{sh.shard}", daemon=True
        )
        sh.reader.start()

    def _read_loop(self, sh: Shard, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        try:
            while True:
                try:
                    msg = read_message(proc.stdout)
                except ProtocolError as exc:
                    sh.last_error = str(exc)[:200]
                    continue
                if msg is None:
                    break
                # No supervisor lock here: stop_all/tick hold it while they wait for readers.
                if sh.proc is not proc:
                    break  # a message from a process we already replaced
                self._note(sh, msg)
                self.on_message(sh, msg)
        finally:
            proc.stdout.close()

    def _note(self, sh: Shard, msg: Message) -> None:
        now = self.clock()
        if isinstance(msg, (Heartbeat, Hello, Rows, Logs, DayDone, Range)):
            sh.last_hb = now
            sh.heard = True  # tick() turns STARTING into RUNNING
        if isinstance(msg, (Rows, Logs, DayDone, Range)):
            sh.progressed = True
        if isinstance(msg, Heartbeat):
            sh.day = msg.day
            sh.block_from = msg.first
            sh.block_to = msg.last
            sh.phase = msg.phase
        elif isinstance(msg, DayDone):
            if sh.failed_days.pop(msg.day, None) is not None and sh.failed_days:
                sh.last_error = next(reversed(sh.failed_days.values()))
            sh.days_done += 1
        elif isinstance(msg, Rows | Logs):
            sh.rows += msg.n
        elif isinstance(msg, Error):
            text = f"{msg.kind}: {msg.msg}"[:300]
            day = msg.day
            if msg.kind in STICKY_ERRORS and isinstance(day, int):
                # The range that failed says more than the day_failed summary after it.
                if msg.kind == "range_failed" or day not in sh.failed_days:
                    sh.failed_days[day] = text
            sh.last_error = next(reversed(sh.failed_days.values()), text)
        elif isinstance(msg, Done):
            sh.got_done = True

    @staticmethod
    def _alive(sh: Shard) -> bool:
        return sh.proc is not None and sh.proc.poll() is None

    def _signal(self, sh: Shard, sig: int) -> None:
        if self._alive(sh):
            try:
                assert sh.proc is not None
                sh.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _reap(self, sh: Shard, timeout_s: float) -> int | None:
        """Wait for the shard's process to exit (SIGKILL after timeout). Returns its exit code."""
        if sh.proc is None:
            return None
        try:
            return sh.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._signal(sh, signal.SIGKILL)
            return sh.proc.wait()

    def _graceful_stop(self, sh: Shard, reason: str) -> None:
        """SIGTERM, wait grace_s, SIGKILL. Caller holds the lock."""
        if not self._alive(sh):
            return
        sh.stop_requested = True
        self._set_state(sh, STOPPING, reason)
        self._signal(sh, signal.SIGTERM)
        self._reap(sh, self.settings.grace_s)

    # ---- the monitor tick ---------------------------------------------------------------------
    def tick(self) -> None:
        now = self.clock()
        with self.lock:
            check_stalls = now - self.last_stall_check >= self.settings.check_interval_s
            if check_stalls:
                self.last_stall_check = now
            for sh in self.shards.values():
                self._tick_shard(sh, now, check_stalls)
            self._kill_strays()
            if check_stalls:
                self._kill_untracked_children()

    def _tick_shard(self, sh: Shard, now: float, check_stalls: bool) -> None:
        if sh.proc is not None and not sh.exit_handled and sh.proc.poll() is not None:
            sh.exit_handled = True  # each exit is handled (and counted) exactly once
            code = sh.proc.returncode
            if sh.reader is not None:
                sh.reader.join(2.0)  # let the reader hand over the last messages
            if code == 0 and sh.got_done:
                self._set_state(sh, DONE, "all days COMPLETE, exit 0")
                return
            if sh.stop_requested:
                self._set_state(sh, STOPPED, f"stopped by request, exit {code}")
                return
            why = f"exited with code {code}" if code is not None else "exited"
            if code is not None and code < 0:
                why = f"killed by signal {-code}"
            sh.last_error = sh.last_error or why
            self._schedule_restart(sh, why, now, killed=killed_from_outside(code))
            return
        if sh.state == STARTING and sh.heard and self._alive(sh):
            self._set_state(sh, RUNNING, "heartbeat")
        if sh.state == BACKOFF and now >= sh.backoff_until:
            self._spawn(sh, f"restart after {sh.backoff_s:.1f}s backoff")
            return
        if (
            check_stalls
            and sh.state in (RUNNING, STARTING)
            and self._alive(sh)
            and now - sh.last_hb > self.settings.stall_after_s
        ):
            age = now - sh.last_hb
            self._set_state(sh, STALLED, f"no heartbeat for {age:.0f}s")
            sh.last_error = f"stalled: no heartbeat for {age:.0f}s"
            self._signal(sh, signal.SIGTERM)
            self._reap(sh, self.settings.grace_s)
            sh.exit_handled = True
            self._schedule_restart(sh, "stalled", now)

    def _schedule_restart(self, sh: Shard, why: str, now: float, killed: bool = False) -> None:
        """Restart after a backoff, or FATAL for a crash loop (supervisord's rule).

        A crash loop is a worker that cannot stay up: it exits by itself (or hangs and is
        stopped as STALLED) before making progress, more than max_restarts times in a row within
        restart_window_s. A process that made progress (a range found, rows, a day done) and then
        died resets the count and the backoff, however often that happens. A process killed by a
        signal from outside (``killed``: OUTSIDE_SIGNALS, from an operator, the OOM killer) did
        not fail by itself: it does not count toward FATAL either; one that died of its own crash
        signal (SIGSEGV, SIGABRT, ...) does. The backoff doubles with each exit in a row without
        progress, whatever ended it.
        """
        window = self.settings.restart_window_s
        sh.last_restart_reason = why
        if sh.progressed:
            # It was working: not a crash loop. The count and the backoff start again.
            sh.restart_times.clear()
            sh.exits_without_progress = 0
            sh.progressed = False
        else:
            sh.exits_without_progress += 1
            if not killed:
                sh.restart_times.append(now)
        while sh.restart_times and now - sh.restart_times[0] > window:
            sh.restart_times.popleft()
        if len(sh.restart_times) > self.settings.max_restarts:
            self._set_state(
                sh,
                FATAL,
                f"{why}; {len(sh.restart_times)} exits in a row without progress in "
                f"{window:.0f}s (restarts {sh.restarts}): needs operator",
            )
            return
        sh.restarts += 1
        s = self.settings
        streak = sh.exits_without_progress
        sh.backoff_s = min(s.backoff_max_s, s.backoff_initial_s * 2 ** max(0, streak - 1))
        sh.backoff_until = now + sh.backoff_s
        loop = f"{streak} in a row without progress" if streak else "after progress"
        self._set_state(
            sh, BACKOFF, f"{why}; restart {sh.restarts} in {sh.backoff_s:.1f}s ({loop})"
        )

    def _kill_strays(self) -> None:
        """Every worker process this supervisor ever started that is still alive but is not the
        tracked process of a shard is killed (never two live processes for one shard).

        Runs at every tick, so it only polls our own Popen objects (waitpid, no /proc scan).
        """
        tracked = {id(sh.proc) for sh in self.shards.values() if sh.proc is not None}
        for proc in list(self._spawned):
            if proc.poll() is not None:
                if id(proc) not in tracked:
                    self._spawned.remove(proc)  # exited and reaped: forget it
                continue
            if id(proc) in tracked:
                continue
            self.duplicate_kills += 1
            self._monitor_line(f"pid={proc.pid} untracked worker process killed")
            proc.kill()

    def _kill_untracked_children(self) -> None:
        """Safety net at the stall-check cadence: scan our children by pid (psutil) for any
        `engine.worker` process that no shard tracks, whatever started it, and kill it."""
        tracked = {sh.pid for sh in self.shards.values() if self._alive(sh)}
        for shard, pids in self.live_pids().items():
            for pid in pids:
                if pid in tracked:
                    continue
                self.duplicate_kills += 1
                self._monitor_line(f"shard={shard} pid={pid} untracked worker process killed")
                try:
                    psutil.Process(pid).kill()
                except psutil.Error:
                    pass

    # ---- operator actions ---------------------------------------------------------------------
    def restart(self, shard: int, reason: str = "operator restart") -> str:
        with self.lock:
            sh = self.shards.get(shard)
            if sh is None:
                return f"shard {shard} is not run by this console (shards {self.shard_ids})"
            self._graceful_stop(sh, reason)
            sh.restart_times.clear()
            sh.exits_without_progress = 0
            sh.backoff_s = 0.0
            sh.restarts += 1
            self._spawn(sh, reason)
            return f"shard {shard} restarted (pid {sh.pid})"

    def restart_stalled(self) -> str:
        with self.lock:
            targets = [s.shard for s in self.shards.values() if s.state in (STALLED, FATAL)]
        if not targets:
            return "no STALLED or FATAL worker"
        for k in targets:
            self.restart(k, "operator restart of stalled/fatal")
        return f"restarted shard(s) {', '.join(map(str, targets))}"

    def scale(self, shards: int, shard_ids: list[int] | None = None) -> str:
        """Rolling restart with a new SHARDS: stop each worker gracefully, then start the new."""
        with self.lock:
            old = self.shards_total
            for sh in list(self.shards.values()):
                self._graceful_stop(sh, f"scaling {old} -> {shards}")
                self._set_state(sh, STOPPED, f"scaled {old} -> {shards}")
                if sh.log_file is not None:
                    sh.log_file.close()
            self.shards_total = shards
            self.shard_ids = list(shard_ids) if shard_ids is not None else list(range(shards))
            self.shards = {}
            self._monitor_line(f"scale {old} -> {shards} shards")
            self.start_all()
        return f"scaled {old} -> {shards} shards"

    def _send(self, sh: Shard, msg: Message) -> None:
        if self._alive(sh) and sh.proc is not None and sh.proc.stdin is not None:
            try:
                sh.proc.stdin.write(encode(msg))
                sh.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

    def pause(self) -> str:
        with self.lock:
            self.paused = True
            for sh in self.shards.values():
                self._send(sh, Pause())
        return "paused: workers idle after their current chunk, heartbeats continue"

    def resume(self) -> str:
        with self.lock:
            self.paused = False
            for sh in self.shards.values():
                self._send(sh, Resume())
        return "resumed"

    def stop_all(self, reason: str = "stop") -> None:
        """Graceful stop of every worker in parallel: SIGTERM all, wait grace, SIGKILL the rest."""
        with self.lock:
            live = [sh for sh in self.shards.values() if self._alive(sh)]
            for sh in live:
                sh.stop_requested = True
                self._set_state(sh, STOPPING, reason)
                self._signal(sh, signal.SIGTERM)
            deadline = time.monotonic() + self.settings.grace_s
            for sh in live:
                self._reap(sh, max(0.1, deadline - time.monotonic()))
            for sh in self.shards.values():
                if sh.reader is not None:
                    sh.reader.join(5.0)
                if sh.state not in (DONE, FATAL):
                    self._set_state(sh, STOPPED, reason)
                if sh.log_file is not None:
                    sh.log_file.close()

    def live_pids(self) -> dict[int, list[int]]:
        """shard -> pids of live worker processes claiming it (for tests and the invariant)."""
        out: dict[int, list[int]] = {}
        for child in psutil.Process().children(recursive=False):
            try:
                cmd = child.cmdline()
                if "engine.worker" not in cmd or child.status() == psutil.STATUS_ZOMBIE:
                    continue
                k = int(cmd[cmd.index("--shard-id") + 1])
            except (psutil.Error, ValueError, IndexError):
                continue
            out.setdefault(k, []).append(child.pid)
        return out

    def all_done(self) -> bool:
        with self.lock:
            return bool(self.shards) and all(sh.state == DONE for sh in self.shards.values())
