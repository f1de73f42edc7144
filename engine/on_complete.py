"""The on-complete rebuild: exactly once per backfill, across every console on one store.

A console whose own days are all COMPLETE runs the rebuild only when the store shows every
configured day COMPLETE (with --shard-ids other consoles may still be working: the one that
completes the last day rebuilds). The rebuild runs under the store's analytics lock
(engine/store/lock.py); once it has run, a row in `on_complete_runs` for (chain, start_date, days)
tells every later console that it is done. Before trusting it, a swap cut short (a process
killed mid-swap, engine/analytics/swap.py) is repaired.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.store.lock import ANALYTICS_LOCK, LockHeld, StoreLock, holder_label

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.client import Store

WAIT_POLL_S = 2.0


def store_complete_days(store: Store, chain_id: int, start_date: dt.date, days: int) -> set[int]:
    """Days COMPLETE in the store (every console's checkpoints), among the configured ones."""
    rows = store.query(
        f"SELECT day_idx FROM {store.database}.backfill_checkpoint FINAL "
        f"WHERE status = 'COMPLETE' AND chain_id = {int(chain_id)} "
        f"AND start_date = '{start_date.isoformat()}' AND day_idx < {int(days)}"
    )
    return {int(r[0]) for r in rows}


def previous_run(store: Store, chain_id: int, start_date: dt.date, days: int) -> str | None:
    """Who ran the on-complete rebuild of this backfill and how it ended, or None."""
    rows = store.query(
        f"SELECT holder, swapped, reason, toString(finished_at) "
        f"FROM {store.database}.on_complete_runs "
        f"WHERE chain_id = {int(chain_id)} AND start_date = '{start_date.isoformat()}' "
        f"AND days = {int(days)} ORDER BY finished_at LIMIT 1"
    )
    if not rows:
        return None
    holder, swapped, reason, at = rows[0]
    return f"{holder} at {at} UTC ({'swapped' if swapped else 'not swapped'}: {reason})"


def rebuild_once(
    store: Store,
    cfg: Config,
    chain_id: int,
    log: Callable[[str], None],
    stop: threading.Event,
    rebuild_fn: Callable[..., object] | None = None,
    progress: Callable[..., None] | None = None,
) -> object | None:
    """Run the rebuild unless this backfill's on-complete rebuild already ran.

    Waits (polling, until `stop`) while another process holds the analytics lock. Returns the
    RebuildOutcome, or None when it was done elsewhere or `stop` was set. `progress` goes to
    the rebuild (chunks done / total, ETA).
    """
    if rebuild_fn is None:
        from engine.analytics.rebuild import rebuild

        rebuild_fn = rebuild
    sd, days = cfg.backfill.start_date, cfg.backfill.days
    holder = holder_label("console on-complete rebuild")
    lock = StoreLock(store, ANALYTICS_LOCK, holder)
    said_waiting = False
    while not stop.is_set():
        try:
            lock.acquire()
        except LockHeld as exc:
            if not said_waiting:
                log(f"rebuild: waiting: {exc}")
                said_waiting = True
            stop.wait(WAIT_POLL_S)
            continue
        try:
            # A swap cut short is repaired first, whoever ran it (an earlier on-complete rebuild,
            # a manual `backfill-console rebuild`): "done" must mean whole live tables.
            from engine.analytics.swap import repair

            repair(store, log)
            done = previous_run(store, chain_id, sd, days)
            if done is not None:
                log(f"rebuild: already done for this backfill by {done}")
                return None
            outcome = rebuild_fn(store, cfg, log=log, progress=progress)
            swapped = bool(getattr(outcome, "swapped", False))
            reason = str(getattr(outcome, "reason", ""))
            store.insert_json_rows(
                f"{store.database}.on_complete_runs",
                ["chain_id", "start_date", "days", "holder", "swapped", "reason"],
                [[chain_id, sd.isoformat(), days, holder, int(swapped), reason[:500]]],
            )
            return outcome
        finally:
            lock.release()
    return None
