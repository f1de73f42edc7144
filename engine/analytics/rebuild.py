"""The on-complete rebuild: analytics into `*_new`, hard gate, atomic swap, snapshot.

Steps (each logged to `<data_dir>/on-complete.log` and to the optional `log` callback):
1. token_outcomes_new from ConditionalTokens position ids (analytics/positions.py) of each condition
   seen in condition_resolutions or token_registrations;
2. net_flows_new, trades_with_direction_new, wallet_market_pnl_new by analytics/sql/rebuild.sql;
   (steps 1-2 are `engine.analytics.build.build_analytics`)
3. the strict gates (engine/analytics/gates.py) on the `*_new` tables;
4. only if every gate passes: swap each `X_new` with the live `X` by `EXCHANGE TABLES` (atomic per
   table; a failure part-way swaps the done ones back, so the live set never mixes versions), then
   keep the replaced version as `X_prev`; if a gate fails the live tables are not touched;
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
from engine.analytics.build import (
    ANALYTICS_TABLES,
    BUILD_LOCK,
    NEW_SUFFIX,
    PREV_SUFFIX,
    SWAP_SUFFIX,
    StepTimes,
    build_analytics,
    create_analytics,
    table_count,
    table_exists,
)
from engine.analytics.gates import GateCheck
from engine.analytics.snapshot import write_snapshot
from engine.status import GateResult, RebuildProgress
from engine.store.client import StoreError, open_store

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
# Swap


def _exchange(store: Store, a: str, b: str, use_rename: bool) -> None:
    db = store.database
    if use_rename:
        tmp = f"{a}{SWAP_SUFFIX}"
        store.command(f"DROP TABLE IF EXISTS {db}.{tmp} SYNC")
        store.command(
            f"RENAME TABLE {db}.{a} TO {db}.{tmp}, {db}.{b} TO {db}.{a}, {db}.{tmp} TO {db}.{b}"
        )
    else:
        store.command(f"EXCHANGE TABLES {db}.{a} AND {db}.{b}")


def _exchange_unsupported(exc: Exception) -> bool:
    text = str(exc)
    return "NOT_IMPLEMENTED" in text or "only in Atomic" in text or "Code: 48." in text


def swap_in(store: Store, log: Callable[[str], None]) -> str:
    """Swap every `X_new` with the live `X`; all or nothing. Returns the method used."""
    db = store.database
    missing = [t + NEW_SUFFIX for t in ANALYTICS_TABLES if not table_exists(store, t + NEW_SUFFIX)]
    if missing:
        raise RuntimeError(f"cannot swap, missing {', '.join(missing)}")
    create_analytics(store, "")  # first rebuild: empty live tables so there is something to swap
    expected = {t: table_count(store, t + NEW_SUFFIX) for t in ANALYTICS_TABLES}
    use_rename = False
    done: list[str] = []
    try:
        for t in ANALYTICS_TABLES:
            try:
                _exchange(store, t, t + NEW_SUFFIX, use_rename)
            except StoreError as exc:
                if done or use_rename or not _exchange_unsupported(exc):
                    raise
                log(f"EXCHANGE TABLES not supported by database {db} ({exc}); using RENAME")
                use_rename = True
                _exchange(store, t, t + NEW_SUFFIX, use_rename)
            done.append(t)
            log(f"swapped {t} <-> {t}{NEW_SUFFIX}")
        wrong = {t: table_count(store, t) for t in ANALYTICS_TABLES}
        wrong = {t: n for t, n in wrong.items() if n != expected[t]}
        if wrong:
            raise RuntimeError(f"row counts after the swap differ from the build: {wrong}")
    except Exception as exc:
        for t in reversed(done):
            _exchange(store, t, t + NEW_SUFFIX, use_rename)
            log(f"swapped back {t} <-> {t}{NEW_SUFFIX}")
        raise RuntimeError(f"swap failed and was undone: {exc}") from exc
    # The replaced versions are now in X_new; keep them as X_prev for a manual rollback. The swap
    # is done at this point, so a failure here is only logged.
    try:
        for t in ANALYTICS_TABLES:
            store.command(f"DROP TABLE IF EXISTS {db}.{t}{PREV_SUFFIX} SYNC")
            store.command(f"RENAME TABLE {db}.{t}{NEW_SUFFIX} TO {db}.{t}{PREV_SUFFIX}")
        log(f"previous versions kept as *{PREV_SUFFIX}")
    except StoreError as exc:
        log(f"swapped, but keeping the previous versions as *{PREV_SUFFIX} failed: {exc}")
    return "RENAME" if use_rename else "EXCHANGE TABLES"


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
            method = swap_in(store, say)
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
