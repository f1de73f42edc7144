"""The Engine: wires config, store, devchain, supervisor and loader; operator actions; status.

Everything an operator can do (scale, restart, pause, OPTIMIZE, abort) is a method here, so the
TUI keys, headless mode and the control socket all call the same code.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from engine.analytics.gates import run_gates
from engine.analytics.rebuild import rebuild
from engine.config import MAX_SHARDS, Config
from engine.constants import check_topics
from engine.control import ControlServer, socket_path_for
from engine.decode import TABLES
from engine.masking import mask_url
from engine.rpc.pool import RpcPool
from engine.status import (
    DONE,
    FATAL,
    STALLED,
    EngineStatus,
    ErrorGroup,
    GateResult,
    RpcHealth,
    WorkerStatus,
)
from engine.store import maintenance, panels
from engine.store.client import Store, open_store
from engine.store.loader import Loader
from engine.supervisor import Shard, Supervisor

log = logging.getLogger("engine")

#: Longest pause of the monitor between two ticks (it also wakes on worker events).
MONITOR_TICK_S = 0.5


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


#: Key of the gone worker processes' RPC counts among the shards' reports (never a live shard).
RETIRED_REPORTS = -1

#: Separates a masked URL from its position in rpc.urls when two URLs mask alike ("... #2").
RPC_LABEL_TAG = " #"


def merge_rpc_health(
    by_shard: dict[int, list[dict]], live: set[int] | None = None
) -> list[RpcHealth]:
    """One row per RPC URL from the workers' RpcPool.health() reports, in rpc.urls order.

    Rows are keyed by the URL's position in the URL list ("index", the same in every worker of a
    console), not by the masked URL: two keys at one provider mask to the same text but are
    separate budgets, backoffs and cooldowns. A report without an index (an older worker) is
    keyed by its masked URL. Labels that still collide get RPC_LABEL_TAG + the 1-based position.

    Counts (calls, 429s, errors by kind) add up over every report kept, finished shards included:
    they are the run's history. What describes the URL now comes from the shards in ``live``
    (None: all): calls/s (a stopped worker makes no calls; its last report's rate is stale),
    cooling-until, and latency and range (those two fall back to every report when no live worker
    reported the URL, so the last known values stay visible after the workers are done).

    p95 is the worst worker's p95 (a tail: the slowest worker is the one to look at). p50 is the
    mean of the workers' p50s weighted by their calls: workers hit the same URL with the same kind
    of requests, so this approximates the median of all their calls, and a just-restarted worker
    with a handful of calls cannot swing it the way a max or a plain mean would.
    """
    # Key: (0, index) for a report with its position in the URL list, else (1, masked url).
    rows: dict[tuple[int, int | str], RpcHealth] = {}
    # Per row: (live, p50, p95, calls, current_range) of each report, for the "now" values.
    samples: dict[tuple[int, int | str], list[tuple[bool, Any, Any, int, Any]]] = {}
    for shard, healths in by_shard.items():
        is_live = live is None or shard in live
        for h in healths:
            url = str(h.get("url", "?"))
            idx = h.get("index")
            key: tuple[int, int | str] = (0, int(idx)) if idx is not None else (1, url)
            agg = rows.get(key)
            if agg is None:
                agg = rows[key] = RpcHealth(url=url)
            calls = int(h.get("calls", 0))
            agg.calls += calls
            agg.http_429 += int(h.get("http_429", 0))
            for k, v in (h.get("errors") or {}).items():
                agg.errors[k] = agg.errors.get(k, 0) + int(v)
            samples.setdefault(key, []).append(
                (is_live, h.get("p50_ms"), h.get("p95_ms"), calls, h.get("current_range"))
            )
            if is_live:
                agg.calls_per_s += float(h.get("calls_per_s", 0.0) or 0.0)
                cu = h.get("cooling_until")
                if cu:
                    agg.cooling_until = max(agg.cooling_until or 0.0, float(cu))
    for key, agg in rows.items():
        reports = samples[key]
        now = [r for r in reports if r[0]]
        lat = [r for r in now if r[1] is not None or r[2] is not None] or [
            r for r in reports if r[1] is not None or r[2] is not None
        ]
        p95s = [float(r[2]) for r in lat if r[2] is not None]
        agg.p95_ms = max(p95s) if p95s else None
        p50s = [(float(r[1]), r[3]) for r in lat if r[1] is not None]
        weight = sum(n for _, n in p50s)
        if weight > 0:
            agg.p50_ms = sum(p50 * n for p50, n in p50s) / weight
        elif p50s:
            agg.p50_ms = sum(p50 for p50, _ in p50s) / len(p50s)
        spans = [int(r[4]) for r in now if r[4] is not None] or [
            int(r[4]) for r in reports if r[4] is not None
        ]
        agg.current_range = min(spans) if spans else None  # the narrowest any worker uses
    order = sorted(rows, key=lambda k: (k[0], k[1] if k[0] == 0 else 0))
    label_count: dict[str, int] = {}
    for key in order:
        label_count[rows[key].url] = label_count.get(rows[key].url, 0) + 1
    nth: dict[str, int] = {}
    out = []
    for key in order:
        agg = rows[key]
        if label_count[agg.url] > 1:
            nth[agg.url] = nth.get(agg.url, 0) + 1
            tag = int(key[1]) + 1 if key[0] == 0 else nth[agg.url]
            agg.url = f"{agg.url}{RPC_LABEL_TAG}{tag}"
        out.append(agg)
    return out


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
        self.state = "starting"
        self.started_at = clock()
        self.store: Store | None = None
        self.devchain: Any = None
        self.control: ControlServer | None = None
        self.loader: Loader | None = None
        self.supervisor: Supervisor | None = None
        self.urls: list[str] = []
        self.chain = ""
        self.chain_id = 0
        self.lock = threading.RLock()
        self.complete: set[int] = set()
        self.pending_checkpoint: set[int] = set()
        self.failed: dict[int, str] = {}
        self.ranges: dict[int, tuple[int, int]] = {}
        self.rows_at_start: dict[str, int] = {}
        self.completed_by_shard: dict[int, int] = {}
        self.errors: dict[tuple[str, int | None], ErrorGroup] = {}
        self.rpc_by_shard: dict[int, list[dict]] = {}
        self.rpc_pid: dict[int, int | None] = {}  # the process each shard's report came from
        # Counts of worker processes that are gone (restarted, scaled away), per URL: the panel's
        # calls, 429s and errors stay totals of the run rather than of the current processes.
        self.rpc_retired: dict[object, dict] = {}
        self.gates: list[GateResult] = []
        self.messages: deque[str] = deque(maxlen=20)
        self.rate_samples: deque[tuple[float, int]] = deque(maxlen=600)
        self.rate_history: deque[float] = deque(maxlen=120)
        self._stop = threading.Event()
        # Wakes the monitor early: a worker finished, or checkpoints were written.
        self._wake = threading.Event()
        self._monitor: threading.Thread | None = None
        self._busy: dict[str, threading.Thread] = {}
        self.exit_reason = ""
        self.last_gates_at = 0.0

    # ---- life cycle ---------------------------------------------------------------------------
    @property
    def days_total(self) -> int:
        return self.cfg.backfill.days

    def scope_days(self) -> list[int]:
        """Days this console is responsible for (all, or those of its --shard-ids)."""
        ids = set(self.shard_ids)
        return [d for d in range(self.days_total) if d % self.shards in ids]

    def start(self) -> None:
        check_topics()
        data_dir = self.cfg.backfill.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        if self.use_control:
            self.control = ControlServer(socket_path_for(data_dir), self.handle_command)
            self.control.start()  # refuses when another console holds the data dir
        try:
            self._start_inner()
        except BaseException:
            self.stop()
            raise

    def _start_inner(self) -> None:
        self.store = open_store(self.cfg)
        if self.cfg.uses_devchain:
            from engine.devchain import DevchainSpec, start_devchain

            self.say("devchain: starting anvil (first start builds the chain and caches it)")
            self.devchain = start_devchain(
                DevchainSpec.from_config(self.cfg), self.cfg.devchain.state_dir, log=self.say
            )
            self.urls = [self.devchain.url]
            self.chain = f"devchain ({urlsplit(self.devchain.url).netloc})"
        else:
            self.urls = list(self.cfg.rpc.urls)
            self.chain = chain_label_for(self.urls)
        probe = RpcPool(self.urls, timeout_s=self.cfg.rpc.timeout_s, max_attempts=3)
        self.chain_id = int(probe.call("eth_chainId", []), 16)
        self._load_progress()
        self.loader = Loader(
            self.store,
            self.chain_id,
            self.cfg.backfill.start_date,
            on_checkpoint=self._on_checkpoint,
            on_error=lambda m: self._record_error("store", m, None),
        )
        self.loader.start()
        self.supervisor = Supervisor(
            self.cfg.monitor,
            self.cfg.backfill.data_dir,
            self.plan_for,
            self._on_message,
            self.shards,
            self.shard_ids,
        )
        self.state = "running"
        self.say(
            f"backfill: {len(self.complete)}/{self.days_total} days already COMPLETE; "
            f"starting {len(self.shard_ids)} worker(s) of SHARDS={self.shards} on {self.chain}"
        )
        self.supervisor.start_all()
        # Everything loaded so far (modules, the devchain's ground truth: ~450k objects) lives
        # as long as the console: keep it out of the collector's full passes (0.1 s each).
        gc.freeze()
        self._monitor = threading.Thread(target=self._monitor_loop, name="monitor", daemon=True)
        self._monitor.start()

    def _load_progress(self) -> None:
        assert self.store is not None
        db = self.store.database
        sd = self.cfg.backfill.start_date.isoformat()
        rows = self.store.query(
            f"SELECT day_idx FROM {db}.backfill_checkpoint FINAL WHERE status = 'COMPLETE' "
            f"AND chain_id = {self.chain_id} AND start_date = '{sd}' "
            f"AND day_idx < {self.days_total}"
        )
        self.complete = {int(r[0]) for r in rows}
        rows = self.store.query(
            f"SELECT day_idx, from_block, to_block, n_blocks FROM {db}.day_blocks FINAL "
            f"WHERE chain_id = {self.chain_id} AND start_date = '{sd}'"
        )
        self.ranges = {
            int(d): (int(f), int(t) if int(n) > 0 else int(f) - 1) for d, f, t, n in rows
        }
        self.rows_at_start = panels.staged_rows(self.store)

    def plan_for(self, shard: int, shards: int) -> dict[str, Any]:
        """The plan a (re)started worker receives on stdin."""
        own = self.shard_ids if self.supervisor is None else self.supervisor.shard_ids
        with self.lock:
            skip = self.complete | self.pending_checkpoint
            todo = [d for d in range(self.days_total) if d not in skip]
            days = [d for d in todo if d % shards == shard]
            ranges = {str(d): list(self.ranges[d]) for d in days if d in self.ranges}
        with_work = len({d % shards for d in todo} & set(own))
        c = self.cfg.contracts
        r = self.cfg.rpc
        rps = worker_budget(r.requests_per_second, shards, with_work, self.explicit_shard_ids)
        return {
            "t": "plan",
            "shard": shard,
            "shards": shards,
            "days": days,
            "ranges": ranges,
            "rpc": {
                "urls": self.urls,
                # This worker's share of the per-URL budget (worker_budget).
                "requests_per_second": rps,
                "timeout_s": r.timeout_s,
                "max_block_range": r.max_block_range,
            },
            "backfill": {
                "start_date": self.cfg.backfill.start_date.isoformat(),
                "confirmations": self.cfg.backfill.confirmations,
                "failed_day_retry_s": self.cfg.backfill.failed_day_retry_s,
            },
            "contracts": {
                "erc20_tokens": list(c.erc20_tokens),
                "erc20_counterparties": list(c.erc20_counterparties),
                "erc1155": list(c.erc1155),
                "exchanges": list(c.exchanges),
            },
        }

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
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.control is not None:
            self.control.stop()
            self.control = None
        if self.state not in ("complete",):
            self.state = "stopped"

    def wait(self, poll_s: float = 0.5) -> str:
        """Block until complete or stopped; returns the final state."""
        while self.state not in ("complete", "stopped"):
            time.sleep(poll_s)
        return self.state

    # ---- messages from workers ----------------------------------------------------------------
    def _on_message(self, sh: Shard, msg: dict[str, Any]) -> None:
        t = msg.get("t")
        loader = self.loader
        assert loader is not None
        if t == "rows":
            loader.add_rows(msg["table"], msg["data"], int(msg["n"]))
        elif t == "day_done":
            day = int(msg["day"])
            with self.lock:
                self.pending_checkpoint.add(day)
                self.ranges[day] = (int(msg["from"]), int(msg["to"]))
            loader.add_checkpoint(sh.shard, msg)
        elif t == "range":
            day = int(msg["day"])
            with self.lock:
                self.ranges[day] = (int(msg["from"]), int(msg["to"]))
            loader.add_range(day, int(msg["from"]), int(msg["to"]))
        elif t == "hb":
            day = msg.get("day")
            batch = f"day {day} blocks {msg.get('from')}-{msg.get('to')} {msg.get('phase', '')}"
            loader.set_heartbeat(
                f"shard-{sh.shard}",
                [
                    f"shard-{sh.shard}",
                    sh.shard,
                    self.shards,
                    sh.pid or 0,
                    sh.state,
                    int(day if day is not None else -1),
                    int(msg.get("from") or 0),
                    int(msg.get("to") or 0),
                    int(msg.get("rows") or 0),
                    batch.strip(),
                    sh.last_error[:200],
                ],
            )
        elif t == "error":
            kind = str(msg.get("kind", "error"))
            self._record_error(kind, str(msg.get("msg", "")), sh.shard, int(msg.get("count", 1)))
            if kind == "day_failed" and msg.get("day") is not None:
                with self.lock:
                    self.failed[int(msg["day"])] = str(msg.get("msg", ""))
        elif t == "rpc":
            sup = self.supervisor
            if sup is not None and sup.shards.get(sh.shard) is not sh:
                return  # a late report of a worker scaled away (its entry is dropped in scale)
            with self.lock:
                if self.rpc_pid.get(sh.shard, sh.pid) != sh.pid:
                    # A new process of this shard: the old one's last report is final.
                    self._retire_rpc(self.rpc_by_shard.get(sh.shard, []))
                self.rpc_pid[sh.shard] = sh.pid
                self.rpc_by_shard[sh.shard] = list(msg.get("health") or [])
        elif t == "done":
            # Its last checkpoints should not wait for the loader's timer.
            loader.flush_soon()
            self._wake.set()

    def _on_checkpoint(self, day: int) -> None:
        with self.lock:
            self.complete.add(day)
            self.pending_checkpoint.discard(day)
            self.failed.pop(day, None)
            shard = day % self.shards
            self.completed_by_shard[shard] = self.completed_by_shard.get(shard, 0) + 1
        self._wake.set()

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
        last_sample = 0.0
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
            self._check_complete()
            self._maybe_run_gates()

    def _sample_rate(self, now: float) -> None:
        assert self.loader is not None
        total = sum(self.loader.rows_written.values())
        self.rate_samples.append((now, total))
        window = [s for s in self.rate_samples if now - s[0] <= 10.0]
        rate = 0.0
        if len(window) >= 2 and window[-1][0] > window[0][0]:
            rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
        self.rate_history.append(rate)

    def _check_complete(self) -> None:
        if self.state not in ("running", "paused"):
            return
        assert self.supervisor is not None
        with self.lock:
            missing = [d for d in self.scope_days() if d not in self.complete]
        if missing or not self.supervisor.all_done():
            return
        self.notice(f"COMPLETE: all {len(self.scope_days())} days of this console are staged")
        if self.run_on_complete and not self.explicit_shard_ids:
            self._on_complete_hook()  # state: rebuilding, then complete
        else:
            self.state = "complete"

    def _on_complete_hook(self) -> None:
        """Rebuild analytics once everything is staged (analytics/rebuild.py), in the background."""

        def run() -> None:
            assert self.store is not None
            self.state = "rebuilding"
            try:
                outcome = rebuild(self.store, self.cfg, log=self.notice)
                self.gates = list(outcome.gates)
                self.notice(
                    "rebuild: swapped in"
                    if outcome.swapped
                    else f"rebuild: NOT swapped ({outcome.reason})"
                )
            except Exception as exc:
                self._record_error("rebuild", str(exc), None)
                self.notice(f"rebuild failed: {exc}")
            finally:
                self.state = "complete"

        self.state = "rebuilding"
        self._background("rebuild", run)

    def _maybe_run_gates(self) -> None:
        interval = self.cfg.gates.interval_s
        if self.state != "running" or time.monotonic() - self.last_gates_at < interval:
            return
        if self.last_gates_at == 0.0:
            self.last_gates_at = time.monotonic()  # first run one interval after start
            return
        self.last_gates_at = time.monotonic()

        def run() -> None:
            assert self.store is not None
            try:
                self.gates = list(run_gates(self.store, self.cfg, "relaxed"))
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
        workers: list[WorkerStatus] = []
        mono = time.monotonic()
        sup = self.supervisor
        if sup is not None:
            # No supervisor lock: status must answer while stop_all/scale hold it.
            shards = dict(sup.shards)
            for k in sorted(shards):
                sh = shards[k]
                age = mono - sh.last_hb if sh.last_hb and sh.pid else None
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
                        rows=sh.rows,
                        days_done=sh.days_done,
                        days_planned=sh.days_planned,
                        restarts=sh.restarts,
                        last_error=sh.last_error,
                    )
                )
        with self.lock:
            complete = len(self.complete)
            failed = len(self.failed)
            errors = sorted(self.errors.values(), key=lambda g: -g.last_at)
            live = None if sup is None else {w.shard for w in workers if w.pid is not None}
            rpc = self._rpc_health(live)
        in_progress = len({w.day for w in workers if w.day is not None and w.state != DONE})
        rows = dict(self.rows_at_start)
        if self.loader is not None:
            for kind, n in self.loader.rows_written.items():
                table = TABLES[kind][0]
                rows[table] = rows.get(table, 0) + n
        rate = self.rate_history[-1] if self.rate_history else 0.0
        state = self.state
        if state == "running" and sup is not None and sup.paused:
            state = "paused"
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
            rate_history=list(self.rate_history),
            rows_per_s=rate,
            eta_s=self._eta(now),
            stall_after_s=self.cfg.monitor.stall_after_s,
            workers=workers,
            rpc=rpc,
            errors=errors,
            gates=list(self.gates),
            messages=list(self.messages),
        )

    def _eta(self, now: float) -> float | None:
        """Seconds until the slowest shard finishes; None while the rate has not settled."""
        elapsed = now - self.started_at
        if elapsed < 15:
            return None
        worst = 0.0
        with self.lock:
            for k in self.shard_ids:
                remaining = sum(
                    1 for d in range(k, self.days_total, self.shards) if d not in self.complete
                )
                if remaining == 0:
                    continue
                done = self.completed_by_shard.get(k, 0)
                if done == 0:
                    return None
                worst = max(worst, remaining * elapsed / done)
        return worst

    def _retire_rpc(self, report: list[dict]) -> None:
        """Fold the counts of a gone process's last report into rpc_retired (lock held)."""
        for h in report:
            key = h.get("index", h.get("url"))
            tot = self.rpc_retired.get(key)
            if tot is None:
                tot = {"url": h.get("url"), "calls": 0, "http_429": 0, "errors": {}}
                if h.get("index") is not None:
                    tot["index"] = h["index"]
                self.rpc_retired[key] = tot
            tot["calls"] += int(h.get("calls", 0))
            tot["http_429"] += int(h.get("http_429", 0))
            errors = tot["errors"]
            for kind, n in (h.get("errors") or {}).items():
                errors[kind] = errors.get(kind, 0) + int(n)

    def _rpc_health(self, live: set[int] | None = None) -> list[RpcHealth]:
        """Per URL health over the workers' latest reports and the gone processes' counts
        (caller holds the lock)."""
        reports = dict(self.rpc_by_shard)
        if self.rpc_retired:
            # Counts only (no rate, latency, range or cooldown), under a key no shard has.
            reports[RETIRED_REPORTS] = list(self.rpc_retired.values())
            live = set(self.rpc_by_shard) if live is None else live
        return merge_rpc_health(reports, live)

    def day_grid(self) -> list[str]:
        with self.lock:
            complete = set(self.complete)
            failed = set(self.failed)
        running: set[int] = set()
        if self.supervisor is not None:
            running = {
                sh.day
                for sh in list(self.supervisor.shards.values())
                if sh.day is not None and sh.state not in (DONE,)
            }
        return panels.day_states(self.days_total, complete, failed, running)

    def duplicates(self) -> list:
        assert self.store is not None
        return panels.duplicates(self.store)

    def disk(self):
        assert self.store is not None
        return panels.disk(self.store)

    def gates_log_tail(self, n: int = 20) -> list[str]:
        path = self.cfg.backfill.data_dir / "gates.log"
        if not path.exists():
            return []
        return path.read_text(errors="replace").splitlines()[-n:]

    def worker_log_path(self, shard: int) -> str:
        return str(self.cfg.backfill.data_dir / f"worker-{shard}.log")

    # ---- operator actions ---------------------------------------------------------------------
    def scale(self, shards: int) -> str:
        if not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
            return f"scale: {shards!r} is not a shard count (expected 1..{MAX_SHARDS})"
        if self.explicit_shard_ids:
            return "scale: this console runs --shard-ids; restart each host with the new SHARDS"
        if self.state not in ("running", "paused"):
            return f"scale: not running (state {self.state})"
        old = self.shards
        if shards == old:
            return f"already at {shards} shards"
        sup = self.supervisor
        assert sup is not None

        def run() -> None:
            with self.lock:
                self.shards = shards
                self.shard_ids = list(range(shards))
                self.completed_by_shard = {}
            sup.scale(shards)
            with self.lock:
                # Shards scaled away will not report again: their counts move to the retired
                # totals (their stale rates and latencies go). A DONE shard's report is kept as
                # it is (merge_rpc_health counts it as history and takes no rate from it).
                for k in [k for k in self.rpc_by_shard if k >= shards]:
                    self._retire_rpc(self.rpc_by_shard.pop(k))
                    self.rpc_pid.pop(k, None)
            self.notice(f"scaled {old} -> {shards} shards")

        if not self._background("scale", run):
            return "scale: a scaling is already in progress"
        return f"scaling {old} -> {shards} shards (rolling restart; COMPLETE days are skipped)"

    def restart_worker(self, shard: int) -> str:
        assert self.supervisor is not None
        ok = self._background(
            f"restart-{shard}", lambda: self.notice(self.supervisor.restart(shard))
        )
        return f"restarting shard {shard}" if ok else f"shard {shard} is already restarting"

    def restart_stalled(self) -> str:
        assert self.supervisor is not None
        with self.supervisor.lock:
            targets = [
                s.shard for s in self.supervisor.shards.values() if s.state in (STALLED, FATAL)
            ]
        if not targets:
            return "no STALLED or FATAL worker"
        self._background("restart-stalled", lambda: self.notice(self.supervisor.restart_stalled()))
        return f"restarting shard(s) {', '.join(map(str, targets))}"

    def pause(self) -> str:
        assert self.supervisor is not None
        return self.supervisor.pause()

    def resume(self) -> str:
        assert self.supervisor is not None
        return self.supervisor.resume()

    def optimize(self) -> str:
        def run() -> None:
            assert self.store is not None
            t0 = time.monotonic()
            try:
                with self.lock:
                    complete = set(self.complete)
                done = maintenance.optimize(self.store, complete, self.days_total)
                self.notice(f"OPTIMIZE done: {done} in {time.monotonic() - t0:.1f}s")
            except Exception as exc:
                self._record_error("optimize", str(exc), None)
                self.notice(f"OPTIMIZE failed: {exc}")

        if not self._background("optimize", run):
            return "OPTIMIZE is already running"
        return "OPTIMIZE started in the background (finished partitions, then small tables)"

    def abort(self) -> str:
        if self.state in ("aborting", "stopped"):
            return f"already {self.state}"
        self.state = "aborting"
        self.exit_reason = "aborted by operator"

        def run() -> None:
            assert self.supervisor is not None and self.loader is not None
            self.supervisor.stop_all("abort")
            self.notice("abort: workers stopped, flushing rows and checkpoints")
            self._stop.set()
            self._wake.set()
            self.loader.close()
            self.state = "stopped"
            self.notice("abort: done; a rerun resumes from checkpoints")

        self._background("abort", run)
        return "aborting: workers finish their current chunk, rows are flushed, then exit"

    # ---- control socket -----------------------------------------------------------------------
    def status_dict(self) -> dict[str, Any]:
        st = self.status()
        return {
            "shards": st.shards,
            "shard_ids": st.shard_ids,
            "state": st.state,
            "chain": st.chain,
            "store": st.store,
            "days_complete": st.days_complete,
            "days_total": st.days_total,
            "days_failed": st.days_failed,
            "rows_staged": st.rows_staged,
            "rows_per_s": round(st.rows_per_s, 1),
            "eta_s": None if st.eta_s is None else round(st.eta_s),
            "elapsed_s": round(st.elapsed_s),
            "busy": self.busy(),
            "workers": [
                {
                    "shard": w.shard,
                    "pid": w.pid,
                    "state": w.state,
                    "day": w.day,
                    "heartbeat_age_s": None
                    if w.heartbeat_age_s is None
                    else round(w.heartbeat_age_s, 1),
                    "rows": w.rows,
                    "restarts": w.restarts,
                    "last_error": w.last_error,
                }
                for w in st.workers
            ],
            "errors": [
                {"kind": e.kind, "shard": e.shard, "count": e.count, "last": e.last_message}
                for e in st.errors
            ],
            # Per URL (masked), merged over the workers: see merge_rpc_health.
            "rpc": [
                {
                    "url": h.url,
                    "calls": h.calls,
                    "calls_per_s": round(h.calls_per_s, 2),
                    "http_429": h.http_429,
                    "errors": dict(h.errors),
                    "p50_ms": h.p50_ms,
                    "p95_ms": h.p95_ms,
                    "current_range": h.current_range,
                    "cooling_until": h.cooling_until,
                }
                for h in st.rpc
            ],
        }

    def handle_command(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status_dict()}
        if self.supervisor is None:
            return {"ok": False, "error": f"console is {self.state}, not ready for {cmd}"}
        if cmd == "scale":
            shards = req.get("shards")
            msg = self.scale(shards if isinstance(shards, int) else -1)
            return {"ok": msg.startswith("scaling") or msg.startswith("already"), "message": msg}
        if cmd == "restart":
            target = req.get("target")
            if target == "stalled":
                return {"ok": True, "message": self.restart_stalled()}
            if isinstance(target, int) and target in self.supervisor.shards:
                return {"ok": True, "message": self.restart_worker(target)}
            return {"ok": False, "error": f"restart: no shard {target!r} in {self.shard_ids}"}
        actions = {
            "pause": self.pause,
            "resume": self.resume,
            "optimize": self.optimize,
            "abort": self.abort,
        }
        if cmd in actions:
            return {"ok": True, "message": actions[cmd]()}
        return {"ok": False, "error": f"unknown command {cmd!r}"}
