"""The Engine: wires config, store, devchain, supervisor and loader; worker messages; status.

Its parts live beside it: progress and ETA in engine/progress.py, per-URL RPC health in
engine/rpc_health.py, operator actions and control commands in engine/actions.py. Everything an
operator can do (scale, restart, pause, OPTIMIZE, abort) is a method of the Engine delegating to
engine/actions.py, so the TUI keys, headless mode and the control socket all call the same code.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from engine import preflight
from engine.actions import Operator, status_dict
from engine.analytics.gates import run_gates
from engine.analytics.rebuild import RebuildOutcome
from engine.analytics.swap import repair_at_start
from engine.config import Config
from engine.constants import check_topics
from engine.control import ControlServer, socket_path_for
from engine.decode import TABLES
from engine.eta import DayCost, Estimate
from engine.masking import mask_url
from engine.progress import Progress
from engine.protocol import (
    DayDone,
    Done,
    Error,
    Heartbeat,
    Logs,
    Message,
    Plan,
    PlanBackfill,
    PlanContracts,
    PlanRpc,
    Range,
    Rows,
    RpcReport,
)
from engine.rpc_health import RpcHealthBook
from engine.run_view import RunView
from engine.stall import stall_reason
from engine.status import (
    DONE,
    RAW_LOGS,
    ActionResult,
    DiskReport,
    DuplicateCheck,
    EngineState,
    EngineStatus,
    ErrorGroup,
    ExitReason,
    GateResult,
    RebuildProgress,
    RpcHealth,
    WorkerStatus,
)
from engine.store import panels, raw_logs
from engine.store.client import Store, open_store
from engine.store.duplicates import DuplicateChecker
from engine.store.loader import Loader, disk_full
from engine.supervisor import Shard, Supervisor

log = logging.getLogger("engine")

#: Longest pause of the monitor between two ticks (it also wakes on worker events).
MONITOR_TICK_S = 0.5
#: With --shard-ids: how often the whole backfill's progress is read from the store.
STORE_SYNC_S = 5.0


def worker_budget(rps: float, shards: int, own_shards_with_work: int, explicit: bool) -> float:
    """Requests per second per URL for one worker, so that all workers together stay within rps.

    ``rpc.requests_per_second`` is the budget of each URL for the whole backfill. With explicit
    ``--shard-ids`` other hosts may run the other shards of the same SHARDS, so each worker takes
    rps / SHARDS whatever this console runs. Otherwise this console runs every shard and the
    budget is split among its shards that still have days to do (shards with nothing left do not
    start a worker). The share is fixed when a worker starts: a restarted worker gets the current
    share, running ones keep theirs (shards only ever finish, so shares only grow and the sum of
    the running workers' shares stays within rps).
    """
    if explicit:
        return rps / max(1, shards)
    return rps / max(1, own_shards_with_work)


def chain_label_for(urls: list[str]) -> str:
    hosts = []
    for u in urls:
        parts = urlsplit(mask_url(u))
        hosts.append(parts.netloc.split("@")[-1] or parts.path)
    return "rpc " + ", ".join(hosts)


class Engine:
    """One console's backfill: start(), status(), actions, stop()."""

    def __init__(
        self,
        cfg: Config,
        shard_ids: list[int] | None = None,
        shards: int | None = None,
        clock: Callable[[], float] = time.time,
        say: Callable[[str], None] | None = None,
        control: bool = True,
        run_on_complete: bool = True,
    ) -> None:
        self.cfg = cfg
        self.shards = shards or cfg.backfill.shards
        self.explicit_shard_ids = shard_ids is not None
        self.shard_ids = sorted(shard_ids) if shard_ids is not None else list(range(self.shards))
        self.clock = clock
        self.say = say or (lambda msg: log.info("%s", msg))
        self.use_control = control
        self.run_on_complete = run_on_complete
        self.state = EngineState.STARTING
        self.started_at = clock()
        self.store: Store | None = None
        # The Duplicates panel's check keeps figures per partition between runs (one at a time).
        self.duplicate_checker: DuplicateChecker | None = None
        self._dup_lock = threading.Lock()
        self.devchain: Any = None
        self.control: ControlServer | None = None
        self.loader: Loader | None = None
        self.supervisor: Supervisor | None = None
        self.urls: list[str] = []
        self._shares: dict[int, float] = {}  # each worker's request budget (all URLs), the ETA's
        self.chain = ""
        self.chain_id = 0
        self.lock = threading.RLock()  # shards, shard_ids, errors, background threads
        self.progress = Progress(cfg.backfill.days, self.started_at)
        self.view = RunView(clock)  # run totals, heartbeat rows, ETA, the end of the run
        self.rpc = RpcHealthBook()
        self.operator = Operator(self)
        self.errors: dict[tuple[str, int | None], ErrorGroup] = {}
        self.gates: list[GateResult] = []
        self.rebuild_progress: RebuildProgress | None = None
        self.messages: deque[str] = deque(maxlen=20)
        self._stop = threading.Event()
        # Wakes the monitor early: a worker finished, or checkpoints were written.
        self._wake = threading.Event()
        self._monitor: threading.Thread | None = None
        self._busy: dict[str, threading.Thread] = {}
        self.exit_reason = ExitReason.NONE
        self.last_gates_at = 0.0
        self.stalled = ""  # engine.stall.stall_reason while no remaining shard can progress
        self.disk_full = ""  # the store's "not enough space" error, while it lasts
        self._disk_full_at = 0.0
        self._paused_for_disk = False
        self._preflight_done = False

    # ---- life cycle ---------------------------------------------------------------------------
    @property
    def days_total(self) -> int:
        return self.cfg.backfill.days

    def scope_days(self) -> list[int]:
        """Days this console is responsible for (all, or those of its --shard-ids)."""
        ids = set(self.shard_ids)
        return [d for d in range(self.days_total) if d % self.shards in ids]

    def preflight(self) -> None:
        """Check the RPC endpoints and a store server before anything is created (StartupError
        in words: engine.preflight). Idempotent; start() runs it when the caller did not."""
        if self._preflight_done:
            return
        check_topics()
        if not self.cfg.uses_devchain:
            self.urls = list(self.cfg.rpc.urls)
            self.chain = chain_label_for(self.urls)
            self.chain_id = preflight.check_rpc(
                self.urls, timeout_s=self.cfg.rpc.timeout_s, say=self.say
            )
        if self.cfg.clickhouse.url:
            preflight.check_store_server(self.cfg, timeout_s=self.cfg.rpc.timeout_s)
        else:
            preflight.check_store_port(self.cfg)
        self._preflight_done = True

    def start(self) -> None:
        self.preflight()
        data_dir = self.cfg.backfill.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        if self.use_control:
            shown = (
                str(self.cfg.path)
                if self.cfg.from_file
                else f"(built-in defaults in {self.cfg.base_dir})"
            )
            self.control = ControlServer(
                socket_path_for(data_dir), self.handle_command, pointer=shown
            )
            self.control.start()  # refuses when another console holds the data dir
        try:
            self._start_inner()
        except BaseException:
            self.stop()
            raise

    def _start_inner(self) -> None:
        self.store = open_store(self.cfg)
        self._repair_swap()
        if self.cfg.uses_devchain:
            from engine.devchain import DevchainSpec, start_devchain

            self.say("devchain: starting anvil (first start builds the chain and caches it)")
            self.devchain = start_devchain(
                DevchainSpec.from_config(self.cfg), self.cfg.devchain.state_dir, log=self.say
            )
            self.urls = [self.devchain.url]
            self.chain = f"devchain ({urlsplit(self.devchain.url).netloc})"
            self.chain_id = preflight.check_rpc([self.devchain.url], timeout_s=30.0)
        preflight.check_chain_matches_store(
            self.store, self.chain_id, self.cfg.backfill.start_date.isoformat()
        )
        self.progress.load(self.store, self.chain_id, self.cfg.backfill.start_date)
        self.view.book.set_base(
            panels.checkpointed_rows(
                self.store, self.chain_id, self.cfg.backfill.start_date, self.days_total
            )
        )
        if not self.explicit_shard_ids:  # rows of shards a past run scaled to and this one has not
            panels.mark_heartbeats_gone(self.store, self.shards)
        self.loader = Loader(
            self.store,
            self.chain_id,
            self.cfg.backfill.start_date,
            on_checkpoint=self._on_checkpoint,
            on_error=self._on_store_error,
            decode_filter=raw_logs.filter_of(self.cfg.contracts),
            on_skip=self._on_skip,
        )
        self.loader.on_counts = self.view.on_checkpoint_counts
        self.loader.start()
        self.supervisor = Supervisor(
            self.cfg.monitor,
            self.cfg.backfill.data_dir,
            self.plan_for,
            self._on_message,
            self.shards,
            self.shard_ids,
        )
        self.state = EngineState.RUNNING
        self.say(
            f"backfill: {self.progress.counts()[0]}/{self.days_total} days already COMPLETE; "
            f"starting {len(self.shard_ids)} worker(s) of SHARDS={self.shards} on {self.chain}"
        )
        self.supervisor.start_all()
        # Everything loaded so far (modules, the devchain's ground truth: ~450k objects) lives
        # as long as the console: keep it out of the collector's full passes (0.1 s each).
        gc.freeze()
        self._monitor = threading.Thread(target=self._monitor_loop, name="monitor", daemon=True)
        self._monitor.start()

    def _repair_swap(self) -> None:
        """A rebuild's swap cut short (a process killed mid-swap) is completed or undone first,
        and the operator told (engine/analytics/swap.py); a failure is reported, not fatal."""
        assert self.store is not None
        try:
            repair_at_start(self.store, lambda m: self.notice(f"rebuild: {m}"), "console start")
        except Exception as exc:
            self._record_error("rebuild", f"swap repair: {exc}", None)
            self.notice(f"rebuild: a swap cut short could not be repaired: {exc}")

    def plan_for(self, shard: int, shards: int) -> Plan:
        """The plan a (re)started worker receives on stdin."""
        own = self.shard_ids if self.supervisor is None else self.supervisor.shard_ids
        todo = self.progress.todo()
        days = [d for d in todo if d % shards == shard]
        ranges = self.progress.plan_ranges(days)
        with_work = len({d % shards for d in todo} & set(own))
        c = self.cfg.contracts
        r = self.cfg.rpc
        rps = worker_budget(r.requests_per_second, shards, with_work, self.explicit_shard_ids)
        if days:  # the ETA carries day times over to this share (a budget per URL)
            self._shares[shard] = rps * len(self.urls)
            self.view.on_start(shard, self._shares[shard])
        return Plan(
            shard=shard,
            shards=shards,
            days=days,
            ranges=ranges,
            rpc=PlanRpc(
                urls=self.urls,
                # This worker's share of the per-URL budget (worker_budget).
                requests_per_second=rps,
                timeout_s=r.timeout_s,
                max_block_range=r.max_block_range,
            ),
            backfill=PlanBackfill(
                start_date=self.cfg.backfill.start_date.isoformat(),
                confirmations=self.cfg.backfill.confirmations,
                failed_day_retry_s=self.cfg.backfill.failed_day_retry_s,
            ),
            contracts=PlanContracts(
                erc20_tokens=list(c.erc20_tokens),
                erc20_counterparties=list(c.erc20_counterparties),
                erc1155=list(c.erc1155),
                exchanges=list(c.exchanges),
            ),
            # Store-side decoding: the store is a server (local or remote), the bytes travel
            # in the HTTP body (Store.decodes_raw_logs).
            raw_logs=getattr(self.store, "decodes_raw_logs", True),
        )

    def stop(self, reason: str = "stop") -> None:
        """Stop workers gracefully, flush the loader, release everything. Idempotent."""
        self._stop.set()
        self._wake.set()
        if self.supervisor is not None:
            self.supervisor.stop_all(reason)
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(5.0)
        if self.loader is not None:
            self.loader.close()
        for t in list(self._busy.values()):
            t.join(60.0)
        if self.devchain is not None:
            self.devchain.stop()
            self.devchain = None
        self._close_duplicate_checker()
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.control is not None:
            self.control.stop()
            self.control = None
        self.view.finish()
        if self.state != EngineState.COMPLETE:
            self.state = EngineState.STOPPED

    def wait(self, poll_s: float = 0.5) -> EngineState:
        """Block until complete or stopped; returns the final state."""
        while self.state not in (EngineState.COMPLETE, EngineState.STOPPED):
            time.sleep(poll_s)
        return self.state

    # ---- messages from workers ----------------------------------------------------------------
    def _on_message(self, sh: Shard, msg: Message) -> None:
        loader = self.loader
        assert loader is not None
        if isinstance(msg, Logs):
            stamps = {int(b): int(t) for b, t in msg.ts}
            loader.add_chunk(
                raw_logs.Chunk(msg.chunk, msg.day, msg.data, msg.n, msg.skip_cp_from, stamps)
            )
            self.view.on_logs(sh.shard, sh.pid, msg.day, msg.n)
        elif isinstance(msg, Rows):
            loader.add_rows(msg.table, msg.data, msg.n)
            self.view.on_rows(sh.shard, sh.pid, msg.day, msg.table, msg.n)
        elif isinstance(msg, DayDone):
            self.progress.day_done(msg.day, msg.first, msg.last)
            counts = {
                "erc20": msg.erc20,
                "erc1155": msg.erc1155,
                "resolutions": msg.resolutions,
                "registrations": msg.registrations,
            }
            chunks = (int(msg.chunks[0]), int(msg.chunks[1])) if msg.chunks else None
            loader.add_checkpoint(
                sh.shard, msg.day, msg.first, msg.last, counts, chunks=chunks, logs=msg.logs
            )
            cost = DayCost(msg.seconds, msg.wait_s, msg.calls, self._shares.get(sh.shard, 0.0))
            self.view.on_day_done(sh.shard, sh.pid, msg.day, cost)
        elif isinstance(msg, Range):
            self.progress.set_range(msg.day, msg.first, msg.last)
            loader.add_range(msg.day, msg.first, msg.last)
        elif isinstance(msg, Heartbeat):
            self.view.on_beat(
                sh, self.shards, msg.day, msg.first, msg.last, msg.rows, str(msg.phase)
            )
        elif isinstance(msg, Error):
            self._record_error(msg.kind, msg.msg, sh.shard, msg.count)
            if msg.kind == "day_failed" and msg.day is not None:
                self.progress.day_failed(msg.day, msg.msg)
        elif isinstance(msg, RpcReport):
            sup = self.supervisor
            if sup is not None and sup.shards.get(sh.shard) is not sh:
                return  # a late report of a worker scaled away (its entry is dropped in scale)
            self.rpc.report(sh.shard, sh.pid, list(msg.health))
        elif isinstance(msg, Done):
            # Its last checkpoints should not wait for the loader's timer.
            loader.flush_soon()
            self._wake.set()

    def _on_checkpoint(self, day: int) -> None:
        self.progress.checkpointed(day)
        self.view.on_checkpoint(day)
        self._wake.set()

    def _on_skip(self, shard: int, day: int, reason: str, n: int) -> None:
        """The store skipped logs of a day it decoded (erc721-shaped, malformed): reported as the
        worker's decoder did."""
        self._record_error("decode_skip", f"day {day}: {reason}: {n} log(s) skipped", shard, n)

    def _record_error(self, kind: str, message: str, shard: int | None, count: int = 1) -> None:
        with self.lock:
            key = (kind, shard)
            g = self.errors.get(key)
            if g is None:
                g = self.errors[key] = ErrorGroup(kind, 0, 0.0, "", shard)
            g.count += count
            g.last_at = self.clock()
            g.last_message = message[:300]

    def notice(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.clock()))
        self.messages.append(f"{stamp} {text}")
        self.say(text)

    # ---- monitor ------------------------------------------------------------------------------
    def _monitor_loop(self) -> None:
        assert self.supervisor is not None and self.loader is not None
        last_sample = last_sync = 0.0
        while True:
            self._wake.wait(MONITOR_TICK_S)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.supervisor.tick()
            except Exception as exc:  # never let the monitor die
                log.exception("monitor tick failed")
                self._record_error("monitor", str(exc), None)
            now = time.monotonic()
            if now - last_sample >= 1.0:
                last_sample = now
                self._sample_rate(now)
            if self.explicit_shard_ids and now - last_sync >= STORE_SYNC_S:
                last_sync = now
                self._sync_store_progress()
            self._check_disk()
            self._check_stalled()
            self._tick_view()
            self._check_complete()
            self._maybe_run_gates()

    def _on_store_error(self, message: str) -> None:
        """A failed store write (the loader retries it). A full disk also pauses fetching."""
        self._record_error("store", message, None)
        if not disk_full(message):
            return
        self._disk_full_at = time.time()
        if self.disk_full:
            return
        self.disk_full = message[:300]
        sup = self.supervisor
        if sup is not None and not sup.paused:
            sup.pause()
            self._paused_for_disk = True
        self.notice(
            "DISK FULL: the store cannot write (not enough space); fetching paused, rows kept "
            "in memory and retried until space returns"
        )

    def _check_disk(self) -> None:
        """Once the store writes again after a full disk, resume what the full disk paused."""
        loader = self.loader
        if not self.disk_full or loader is None or loader.last_write_ok_at <= self._disk_full_at:
            return
        self.disk_full = ""
        sup = self.supervisor
        if self._paused_for_disk and sup is not None:
            self._paused_for_disk = False
            sup.resume()
        self.notice("disk space is back: the store writes again; fetching resumed")

    def _check_stalled(self) -> None:
        """Set self.stalled (engine/stall.py) and say when it starts or ends."""
        sup = self.supervisor
        reason = ""
        if sup is not None and self.state == EngineState.RUNNING and not sup.paused:
            shards = dict(sup.shards)
            complete, _ = self.progress.complete_and_failed()
            left = {
                k: (sh.state, sh.last_error)
                for k, sh in shards.items()
                if sh.state != DONE
                and any(d not in complete for d in range(k, self.days_total, self.shards))
            }
            live = {k for k, sh in shards.items() if sup._alive(sh)}
            reason = stall_reason(
                left, self._rpc_health(live), self.clock(), self.cfg.rpc.give_up_after_s
            )
        if reason and not self.stalled:
            self.notice(f"STALLED: {reason}")
        elif self.stalled and not reason:
            self.notice("no longer stalled: progress is possible again")
        self.stalled = reason

    def _tick_view(self) -> None:
        """Heartbeat rows follow the supervisor's states (written with their real times); the
        ETA's clock advances (not while paused)."""
        sup, loader = self.supervisor, self.loader
        assert sup is not None and loader is not None
        shards = dict(sup.shards)
        self.view.tick(shards, self.shards, sup.paused, self._left_by_shard())
        for row in self.view.heartbeat_rows():
            loader.set_heartbeat(str(row[0]), row)

    def _left_by_shard(self) -> dict[int, int]:
        """Days neither COMPLETE nor waiting for their checkpoint, per shard of this console."""
        left = {k: 0 for k in self.shard_ids}
        for d in self.progress.todo():
            k = d % self.shards
            if k in left:
                left[k] += 1
        return left

    def _sample_rate(self, now: float) -> None:
        assert self.loader is not None
        self.progress.sample_rate(now, sum(self.loader.rows_written.values()))

    def _check_complete(self) -> None:
        if self.state not in (EngineState.RUNNING, EngineState.PAUSED):
            return
        assert self.supervisor is not None
        missing = self.progress.missing(self.scope_days())
        if missing or not self.supervisor.all_done():
            return
        self.notice(f"COMPLETE: all {len(self.scope_days())} days of this console are staged")
        self.view.backfill_complete()
        if self.run_on_complete and self.explicit_shard_ids:
            self._sync_store_progress()
            others = self.progress.missing(list(range(self.days_total)))
            if others:
                self.notice(
                    f"rebuild: left to the console that completes the last day "
                    f"({len(others)} day(s) of other shards not COMPLETE in the store yet)"
                )
                self.view.finish()
                self.state = EngineState.COMPLETE
                return
        if self.run_on_complete:
            self._on_complete_hook()  # state: rebuilding, then complete
        else:
            self.view.finish()
            self.state = EngineState.COMPLETE

    def _sync_store_progress(self) -> None:
        """Every console's COMPLETE days and staged rows, as the store has them now."""
        from engine.on_complete import store_complete_days

        assert self.store is not None and self.loader is not None
        try:
            days = store_complete_days(
                self.store, self.chain_id, self.cfg.backfill.start_date, self.days_total
            )
            staged = panels.staged_rows(self.store)
            checkpointed = panels.checkpointed_rows(
                self.store, self.chain_id, self.cfg.backfill.start_date, self.days_total
            )
        except Exception as exc:
            self._record_error("store", f"progress from the store: {exc}", None)
            return
        written = {TABLES[k][0]: n for k, n in self.loader.rows_written.items()}
        self.progress.merge_from_store(days, staged, written)
        self.view.book.rebase(checkpointed)  # other hosts' COMPLETE days count as staged too

    def _on_complete_hook(self) -> None:
        """Rebuild analytics once everything is staged (analytics/rebuild.py), in the background."""

        def run() -> None:
            from engine.on_complete import rebuild_once

            assert self.store is not None
            self.state = EngineState.REBUILDING
            self.view.rebuild_step("starting")

            def step(text: str) -> None:
                self.view.rebuild_step(text)
                self.notice(text)

            try:
                # Exactly once per backfill across consoles, under the store's analytics lock.
                outcome = rebuild_once(
                    self.store,
                    self.cfg,
                    self.chain_id,
                    step,
                    self._stop,
                    progress=self._on_progress,
                )
                if outcome is None:
                    return
                assert isinstance(outcome, RebuildOutcome)
                self.gates = list(outcome.gates)
                failing = [g for g in outcome.gates if not g.passed]
                why = (
                    "; ".join(
                        f"{g.name} value={g.value:.4g} (needs {g.threshold})"
                        if isinstance(g.value, float)
                        else f"{g.name} value={g.value} (needs {g.threshold})"
                        for g in failing
                    )
                    or outcome.reason
                )
                self.view.rebuild_done(
                    outcome.swapped,
                    outcome.reason if outcome.swapped else why,
                    str(outcome.snapshot_path or ""),
                    failed=False,
                )
                self.notice(
                    "rebuild: swapped in"
                    if outcome.swapped
                    else f"rebuild: NOT swapped ({outcome.reason})"
                )
            except Exception as exc:
                self._record_error("rebuild", str(exc), None)
                self.view.rebuild_done(False, str(exc)[:200], "", failed=True)
                self.notice(f"rebuild failed: {exc}")
            finally:
                self.state = EngineState.COMPLETE

        self.state = EngineState.REBUILDING
        self._background("rebuild", run)

    def _on_progress(self, progress: RebuildProgress) -> None:
        self.rebuild_progress = progress

    def _maybe_run_gates(self) -> None:
        interval = self.cfg.gates.interval_s
        if self.state != EngineState.RUNNING or time.monotonic() - self.last_gates_at < interval:
            return
        if self.last_gates_at == 0.0:
            self.last_gates_at = time.monotonic()  # first run one interval after start
            return
        self.last_gates_at = time.monotonic()

        def run() -> None:
            from engine.on_complete import ANALYTICS_LOCK
            from engine.store.lock import LockHeld, StoreLock, holder_label

            assert self.store is not None
            try:
                lock = StoreLock(self.store, ANALYTICS_LOCK, holder_label("console relaxed gates"))
                with lock:
                    self.gates = list(run_gates(self.store, self.cfg, "relaxed"))
            except LockHeld as exc:
                self.notice(f"gates: skipped this round: {exc}")
            except Exception as exc:
                self._record_error("gates", str(exc), None)

        self._background("gates", run)

    def busy(self) -> list[str]:
        """Background actions still running (scale, optimize, abort, rebuild, ...)."""
        with self.lock:
            return sorted(n for n, t in self._busy.items() if t.is_alive())

    def _background(self, name: str, fn: Callable[[], None]) -> bool:
        """Run fn in a named thread unless one with that name is still running."""
        with self.lock:
            t = self._busy.get(name)
            if t is not None and t.is_alive():
                return False
            t = threading.Thread(target=fn, name=name, daemon=True)
            self._busy[name] = t
            t.start()
            return True

    # ---- status -------------------------------------------------------------------------------
    def status(self) -> EngineStatus:
        now = self.clock()
        stalled = self.stalled if self.state == EngineState.RUNNING else ""
        workers: list[WorkerStatus] = []
        mono = time.monotonic()
        sup = self.supervisor
        # Rows and per-shard totals at one instant, so the figures add up exactly.
        staged, refetched, totals = self.view.book.snapshot()
        left = self._left_by_shard()
        if sup is not None:
            # No supervisor lock: status must answer while stop_all/scale hold it.
            shards = dict(sup.shards)
            for k in sorted(shards):
                sh = shards[k]
                age = mono - sh.last_hb if sh.last_hb and sh.pid else None
                # Run totals (restarts and scales do not reset them): rows, days, restarts.
                run_rows, run_days, run_restarts = totals.get(k, (0, 0, 0))
                days_left = left.get(k, 0)
                workers.append(
                    WorkerStatus(
                        shard=k,
                        state=sh.state,
                        pid=sh.pid if sup._alive(sh) else None,
                        day=sh.day if sh.day is not None and sh.day >= 0 else None,
                        block_from=sh.block_from,
                        block_to=sh.block_to,
                        phase=sh.phase,
                        heartbeat_age_s=age if sh.state not in (DONE,) else None,
                        rows=run_rows,
                        days_done=max(run_days, sh.days_done),
                        days_planned=max(run_days, sh.days_done) + days_left,
                        restarts=max(run_restarts, sh.restarts),
                        last_error=sh.last_error,
                        last_restart=sh.last_restart_reason,
                    )
                )
        complete, failed = self.progress.counts()
        with self.lock:
            errors = sorted(self.errors.values(), key=lambda g: -g.last_at)
        live = None if sup is None else {w.shard for w in workers if w.pid is not None}
        rpc = self._rpc_health(live)
        in_progress = len({w.day for w in workers if w.day is not None and w.state != DONE})
        rows = staged
        state = self.state
        paused = state == EngineState.RUNNING and sup is not None and sup.paused
        if paused:
            state = EngineState.PAUSED
        if state in (EngineState.RUNNING, EngineState.PAUSED) and sup is not None:
            eta = self.view.estimate(left, paused, dict(sup.shards))
        elif state == EngineState.STARTING:
            eta = Estimate(None, "calculating")  # not 0:00:00 before any worker ran
        else:
            eta = self.view.estimate({}, False, {})
        return EngineStatus(
            state=state,
            chain=self.chain,
            store=self.store.label if self.store is not None else "",
            shards=self.shards,
            shard_ids=list(self.shard_ids),
            started_at=self.started_at,
            now=now,
            days_total=self.days_total,
            days_complete=complete,
            days_in_progress=in_progress,
            days_failed=failed,
            rows_staged=rows,
            rate_history=list(self.progress.rate_history),
            rows_per_s=self.progress.rate(),
            # Nothing progresses while stalled: no ETA.
            eta_s=None if stalled else eta.seconds,
            stall_after_s=self.cfg.monitor.stall_after_s,
            workers=workers,
            rpc=rpc,
            errors=errors,
            gates=list(self.gates),
            messages=list(self.messages),
            rebuild=self.rebuild_progress,
            stalled=stalled,
            disk_full=self.disk_full,
            rows_refetched=refetched,
            fetched_unit=RAW_LOGS if getattr(self.store, "decodes_raw_logs", True) else "rows",
            eta_note=f"none: {stalled}" if stalled else eta.note,
            config_shards=self.cfg.backfill.shards,
            finished_at=self.view.finished_at,
            outcome=self.view.outcome_now(self.started_at),
        )

    def _rpc_health(self, live: set[int] | None = None) -> list[RpcHealth]:
        """Per URL health over the workers' latest reports and the gone processes' counts."""
        return self.rpc.rows(live)

    def day_grid(self) -> list[str]:
        complete, failed = self.progress.complete_and_failed()
        running: set[int] = set()
        if self.supervisor is not None:
            running = {
                sh.day
                for sh in list(self.supervisor.shards.values())
                if sh.day is not None and sh.state not in (DONE,)
            }
        return panels.day_states(self.days_total, complete, failed, running)

    def duplicates(self) -> list[DuplicateCheck]:
        assert self.store is not None
        with self._dup_lock:
            if self.duplicate_checker is None:
                # One key index per console (data_dir): two consoles on one store stay apart.
                where = str(self.cfg.backfill.data_dir.resolve())
                tag = hashlib.sha1(where.encode()).hexdigest()[:10]
                self.duplicate_checker = DuplicateChecker(self.store, tag=tag)
            return self.duplicate_checker.check()

    def _close_duplicate_checker(self) -> None:
        """Drop the duplicate check's key index (a check still running gets 30 s to end)."""
        if self.duplicate_checker is None or not self._dup_lock.acquire(timeout=30.0):
            return
        try:
            if self.duplicate_checker is not None and self.store is not None:
                self.duplicate_checker.close()
        except Exception as exc:  # the store may already be gone: the next start drops it
            log.warning("duplicate check: dropping its key index failed: %s", exc)
        finally:
            self.duplicate_checker = None
            self._dup_lock.release()

    def disk(self) -> DiskReport:
        assert self.store is not None
        return panels.disk(self.store)

    def gates_log_tail(self, n: int = 20) -> list[str]:
        path = self.cfg.backfill.data_dir / "gates.log"
        if not path.exists():
            return []
        return path.read_text(errors="replace").splitlines()[-n:]

    def worker_log_path(self, shard: int) -> str:
        return str(self.cfg.backfill.data_dir / f"worker-{shard}.log")

    # ---- operator actions and control commands (engine/actions.py) ----------------------------
    def scale(self, shards: int) -> ActionResult:
        return self.operator.scale(shards)

    def restart_worker(self, shard: int) -> ActionResult:
        return self.operator.restart_worker(shard)

    def restart_stalled(self) -> ActionResult:
        return self.operator.restart_stalled()

    def pause(self) -> ActionResult:
        return self.operator.pause()

    def resume(self) -> ActionResult:
        return self.operator.resume()

    def optimize(self) -> ActionResult:
        return self.operator.optimize()

    def abort(self) -> ActionResult:
        return self.operator.abort()

    def status_dict(self) -> dict[str, Any]:
        return status_dict(self.status(), self.busy())

    def handle_command(self, req: dict[str, Any]) -> dict[str, Any]:
        return self.operator.handle_command(req)
