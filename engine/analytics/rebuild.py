"""The on-complete rebuild: analytics into `*_new`, hard gate, atomic swap, snapshot.

Steps (each logged to `<data_dir>/on-complete.log` and to the optional `log` callback):
0. a swap cut short by an earlier process (killed mid-swap) is completed or undone first
   (engine/analytics/swap.py repair);
1. token_outcomes_new from ConditionalTokens position ids (analytics/positions.py) of each condition
   seen in condition_resolutions or token_registrations;
2. net_flows_new, trades_with_direction_new, wallet_market_pnl_new by analytics/sql/rebuild.sql;
   (steps 1-2 are `engine.analytics.build.build_analytics`)
3. the strict gates (engine/analytics/gates.py) on the `*_new` tables;
4. only if every gate passes: swap each `X_new` with the live `X` by `EXCHANGE TABLES` (atomic per
   table; a failure part-way swaps the done ones back, a kill part-way is repaired by the next
   start, so the live set never stays mixed), then keep the replaced version as `X_prev`; if a
   gate fails the live tables are not touched;
5. `data/post_rebuild_snapshot_<UTC>.json` of the new live tables.

EXCHANGE TABLES needs an Atomic database (ClickHouse's default, and what `CREATE DATABASE` gives in
chdb; chdb's own `default` database also supports it). On an Ordinary database the same swap is
done with one `RENAME TABLE x TO x_swap, x_new TO x, x_swap TO x_new` per table, which is quick but
not atomic for concurrent readers; the on-complete.log says which was used.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.analytics import gates as gates_mod
from engine.analytics.build import BUILD_LOCK, NEW_SUFFIX, StepTimes, build_analytics
from engine.analytics.gates import GateCheck
from engine.analytics.snapshot import write_snapshot
from engine.analytics.swap import repair, swap_in
from engine.status import GateResult, RebuildProgress
from engine.store.client import StoreError, open_store
from engine.store.lock import holder_label

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.client import Store

_rebuild_lock = threading.Lock()


@dataclass
class RebuildOutcome:
    swapped: bool
    reason: str
    snapshot_path: Path | None
    gates: list[GateResult] = field(default_factory=list)
    run_id: str = ""
    counts: dict[str, int] = field(default_factory=dict)


class OnCompleteLog:
    """Appends `<UTC> rebuild run=<id>: message` lines to on-complete.log; echoes to a callback."""

    def __init__(self, cfg: Config, run_id: str, echo: Callable[[str], None] | None) -> None:
        self.path = cfg.backfill.data_dir / "on-complete.log"
        self.run_id = run_id
        self.echo = echo

    def __call__(self, message: str) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        gates_mod.append_log(self.path, [f"{stamp} rebuild run={self.run_id}: {message}"])
        if self.echo is not None:
            try:
                self.echo(f"rebuild: {message}")
            except Exception:
                pass


# --------------------------------------------------------------------------------------------
# Public API


def rebuild(
    store: Store,
    cfg: Config,
    log: Callable[[str], None] | None = None,
    progress: Callable[[RebuildProgress], None] | None = None,
) -> RebuildOutcome:
    """Rebuild the analytics, run the hard gate, swap only if it passes, write the snapshot.

    `progress` gets the build's chunks done / total and ETA (engine status, TUI, ctl status),
    then phase "hard_gate" while the strict gates run.
    """
    run_id = gates_mod.new_run_id("rebuild")
    say = OnCompleteLog(cfg, run_id, log)
    report = progress or (lambda _p: None)
    with _rebuild_lock, BUILD_LOCK:
        say(
            f"started (database {store.database}, {cfg.backfill.days} days from "
            f"{cfg.backfill.start_date.isoformat()})"
        )
        last: list[RebuildProgress] = []

        def keep(p: RebuildProgress) -> None:
            last[:] = [p]
            report(p)

        try:
            repair(store, say)  # a swap cut short (a process killed mid-swap) first
        except Exception as exc:
            say(f"NOT started: a swap cut short could not be repaired: {exc}")
            return RebuildOutcome(False, f"swap repair failed: {exc}", None, [], run_id)
        try:
            counts = build_analytics(store, cfg, NEW_SUFFIX, say, progress=keep)
        except Exception as exc:
            say(f"build FAILED, live tables untouched: {exc}")
            return RebuildOutcome(False, f"build failed: {exc}", None, [], run_id)
        say("hard gate (strict) on the *_new tables")
        if last:
            report(dataclasses.replace(last[0], phase="hard_gate", eta_s=None))
        times = StepTimes()
        try:
            checks: list[GateCheck] = gates_mod.evaluate(
                store, cfg, gates_mod.STRICT, NEW_SUFFIX, run_id=run_id, times=times
            )
        except Exception as exc:
            say(f"hard gate could not run, live tables untouched: {exc}")
            return RebuildOutcome(False, f"hard gate error: {exc}", None, [], run_id, counts)
        for label, secs, runs in times.slowest():
            say(f"step {label} took {secs:.1f} s ({runs} run(s))")
        results = [c.result for c in checks]
        for c in checks:
            r = c.result
            verdict = "PASS" if r.passed else "FAIL"
            say(
                f"gate {r.name} {verdict} value={gates_mod.fmt_value(r.value)} "
                f"threshold {r.threshold} | {c.detail}"
            )
        failed = [c for c in checks if not c.result.passed]
        if failed:
            reason = "hard gate failed: " + "; ".join(
                f"{c.result.name} value={gates_mod.fmt_value(c.result.value)} "
                f"(needs {c.result.threshold}): {c.detail}"
                for c in failed
            )
            say(
                f"NOT swapped, live tables kept as they were; *{NEW_SUFFIX} left for inspection. "
                + reason
            )
            return RebuildOutcome(False, reason, None, results, run_id, counts)
        try:
            method = swap_in(store, say, run_id, holder_label("rebuild"))
        except Exception as exc:
            say(f"NOT swapped: {exc}")
            return RebuildOutcome(False, str(exc), None, results, run_id, counts)
        say(f"swapped in with {method}")
        try:
            path = write_snapshot(store, cfg, checks, run_id)
        except Exception as exc:
            say(f"swapped, but the snapshot failed: {exc}")
            return RebuildOutcome(
                True, f"swapped; snapshot failed: {exc}", None, results, run_id, counts
            )
        say(f"snapshot {path}")
        return RebuildOutcome(
            True, f"all gates passed; swapped with {method}", path, results, run_id, counts
        )


def cli_rebuild(cfg: Config) -> int:
    """`backfill-console rebuild`: rebuild on demand; exit 0 only if the new tables were swapped."""
    try:
        store = open_store(cfg)
    except StoreError as exc:
        print(f"rebuild: cannot open the store: {exc}")
        return 1
    try:
        outcome = rebuild(store, cfg, log=print)
    finally:
        store.close()
    print(("SWAPPED: " if outcome.swapped else "NOT SWAPPED: ") + outcome.reason)
    if outcome.snapshot_path:
        print(f"snapshot: {outcome.snapshot_path}")
    return 0 if outcome.swapped else 1
