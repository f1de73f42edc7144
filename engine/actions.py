"""Operator actions (scale, restart, pause, resume, OPTIMIZE, abort) and the control commands.

The TUI keys, headless mode and the control socket (engine/control.py) all end here, so every
way of driving a console runs the same code. Long actions run in the engine's named background
threads; each returns at once with a message for the operator.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from engine.config import MAX_SHARDS
from engine.status import FATAL, STALLED, ActionResult, EngineState, EngineStatus, ExitReason
from engine.store import maintenance

if TYPE_CHECKING:
    from engine.runtime import Engine


class Operator:
    """The actions of one Engine."""

    def __init__(self, engine: Engine) -> None:
        self.eng = engine

    def scale(self, shards: int) -> ActionResult:
        eng = self.eng
        if not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
            return refused(f"scale: {shards!r} is not a shard count (expected 1..{MAX_SHARDS})")
        if eng.explicit_shard_ids:
            return refused(
                "scale: this console runs --shard-ids; restart each host with the new SHARDS"
            )
        if eng.state not in (EngineState.RUNNING, EngineState.PAUSED):
            return refused(f"scale: not running (state {eng.state})")
        old = eng.shards
        if shards == old:
            return done(f"already at {shards} shards")
        sup = eng.supervisor
        assert sup is not None

        def run() -> None:
            with eng.lock:
                eng.shards = shards
                eng.shard_ids = list(range(shards))
            sup.scale(shards)
            eng.rpc.drop_shards_from(shards)
            eng.view.on_scale(old, shards)
            eng.notice(f"scaled {old} -> {shards} shards")

        if not eng._background("scale", run):
            return refused("scale: a scaling is already in progress")
        return done(
            f"scaling {old} -> {shards} shards: every worker finishes its chunk and stops, then "
            "all restart (COMPLETE days are skipped)"
        )

    def restart_worker(self, shard: int) -> ActionResult:
        eng = self.eng
        sup = eng.supervisor
        assert sup is not None
        ok = eng._background(f"restart-{shard}", lambda: eng.notice(sup.restart(shard)))
        return done(f"restarting shard {shard}" if ok else f"shard {shard} is already restarting")

    def restart_stalled(self) -> ActionResult:
        eng = self.eng
        sup = eng.supervisor
        assert sup is not None
        with sup.lock:
            targets = [s.shard for s in sup.shards.values() if s.state in (STALLED, FATAL)]
        if not targets:
            return done("no STALLED or FATAL worker")
        eng._background("restart-stalled", lambda: eng.notice(sup.restart_stalled()))
        return done(f"restarting shard(s) {', '.join(map(str, targets))}")

    def pause(self) -> ActionResult:
        assert self.eng.supervisor is not None
        self.eng._paused_for_disk = False  # the operator's pause: space returning keeps it
        return done(self.eng.supervisor.pause())

    def resume(self) -> ActionResult:
        assert self.eng.supervisor is not None
        self.eng._paused_for_disk = False
        return done(self.eng.supervisor.resume())

    def optimize(self) -> ActionResult:
        eng = self.eng

        def run() -> None:
            assert eng.store is not None
            t0 = time.monotonic()
            try:
                complete, _ = eng.progress.complete_and_failed()
                done = maintenance.optimize(eng.store, complete, eng.days_total)
                eng.notice(f"OPTIMIZE done: {done} in {time.monotonic() - t0:.1f}s")
            except Exception as exc:
                eng._record_error("optimize", str(exc), None)
                eng.notice(f"OPTIMIZE failed: {exc}")

        if not eng._background("optimize", run):
            return done("OPTIMIZE is already running")
        return done("OPTIMIZE started in the background (finished partitions, then small tables)")

    def abort(self) -> ActionResult:
        eng = self.eng
        if eng.state in (EngineState.ABORTING, EngineState.STOPPED):
            return done(f"already {eng.state}")
        eng.state = EngineState.ABORTING
        eng.exit_reason = ExitReason.ABORTED

        def run() -> None:
            assert eng.supervisor is not None and eng.loader is not None
            eng.supervisor.stop_all("abort")
            eng.notice("abort: workers stopped, flushing rows and checkpoints")
            eng._stop.set()
            eng._wake.set()
            eng.loader.close()
            eng.state = EngineState.STOPPED
            eng.notice("abort: done; a rerun resumes from checkpoints")

        eng._background("abort", run)
        return done("aborting: workers finish their current chunk, rows are flushed, then exit")

    # ---- control socket -----------------------------------------------------------------------
    def handle_command(self, req: dict[str, Any]) -> dict[str, Any]:
        """One control-socket request ({"cmd": ...}) -> its JSON answer."""
        eng = self.eng
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": status_dict(eng.status(), eng.busy())}
        if eng.supervisor is None:
            return {"ok": False, "error": f"console is {eng.state}, not ready for {cmd}"}
        result: ActionResult | None = None
        if cmd == "scale":
            shards = req.get("shards")
            result = self.scale(shards if isinstance(shards, int) else -1)
        elif cmd == "restart":
            target = req.get("target")
            if target == "stalled":
                result = self.restart_stalled()
            elif isinstance(target, int) and target in eng.supervisor.shards:
                result = self.restart_worker(target)
            else:
                return {"ok": False, "error": f"restart: no shard {target!r} in {eng.shard_ids}"}
        else:
            actions = {
                "pause": self.pause,
                "resume": self.resume,
                "optimize": self.optimize,
                "abort": self.abort,
            }
            if cmd not in actions:
                return {"ok": False, "error": f"unknown command {cmd!r}"}
            result = actions[cmd]()
        return {"ok": result.ok, "message": result.message}


def status_dict(st: EngineStatus, busy: list[str]) -> dict[str, Any]:
    """The control socket's status answer (`ctl status --json`)."""
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
        "rows_refetched": st.rows_refetched,
        "fetched_unit": st.fetched_unit,
        "rows_per_s": round(st.rows_per_s, 1),
        "eta_s": None if st.eta_s is None else round(st.eta_s),
        "eta_note": st.eta_note,
        "config_shards": st.config_shards,
        "elapsed_s": round(st.elapsed_s),
        "stalled": st.stalled,
        "disk_full": st.disk_full,
        "outcome": None
        if st.outcome is None
        else {
            "phase": st.outcome.phase,
            "detail": st.outcome.detail,
            "snapshot": st.outcome.snapshot,
            "backfill_s": st.outcome.backfill_s,
            "rebuild_s": st.outcome.rebuild_s,
        },
        "busy": busy,
        "rebuild": None if st.rebuild is None else st.rebuild.as_dict(st.now),
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
                "days_done": w.days_done,
                "days_planned": w.days_planned,
                "restarts": w.restarts,
                "last_error": w.last_error,
                "last_restart": w.last_restart,
            }
            for w in st.workers
        ],
        "errors": [
            {"kind": e.kind, "shard": e.shard, "count": e.count, "last": e.last_message}
            for e in st.errors
        ],
        # Per URL (masked), merged over the workers: see engine.rpc_health.merge_rpc_health.
        "rpc": [
            {
                "url": h.url,
                "calls": h.calls,
                "provider_calls": h.provider_calls,
                "block_calls": h.block_calls,
                "calls_per_s": round(h.calls_per_s, 2),
                "http_429": h.http_429,
                "errors": dict(h.errors),
                "p50_ms": h.p50_ms,
                "p95_ms": h.p95_ms,
                "current_range": h.current_range,
                "cooling_until": h.cooling_until,
                "failing_since": h.failing_since,
            }
            for h in st.rpc
        ],
    }


def done(message: str) -> ActionResult:
    """An action accepted (or one with nothing to do: "already ...")."""
    return ActionResult(True, message)


def refused(message: str) -> ActionResult:
    """An action refused: bad input, or the console cannot do it now."""
    return ActionResult(False, message)
