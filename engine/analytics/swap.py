"""The analytics swap (every `X_new` in for the live `X`) and the repair of a swap cut short.

Before the first EXCHANGE the swap tags each `X_new` with a table comment naming its run
(`rebuild run=<id>`) and writes a marker row in `{db}.swap_in_progress` (run, holder, the built row
counts); the marker is cleared once every table is swapped and the replaced ones kept as `X_prev`
(or swapped back after a failure). A process killed in between (SIGKILL, its server gone) leaves
the marker: `repair` finds it and, from the comments (they travel with the tables through
EXCHANGE and RENAME, in Atomic and Ordinary databases alike), sees which tables were swapped. It
completes the swap when every new table is there with its built row count (the hard gate passed
before the marker was written), else undoes it; either way the live set is all old or all new.

`repair` runs under the store's analytics lock: from rebuild_once, the rebuild, the hard gate,
and at every console start (`repair_at_start` takes the lock; a holder alive is left alone).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.analytics.build import (
    ANALYTICS_TABLES,
    NEW_SUFFIX,
    PREV_SUFFIX,
    SWAP_SUFFIX,
    create_analytics,
    table_count,
    table_exists,
)
from engine.store.client import StoreError
from engine.store.lock import ANALYTICS_LOCK, LockHeld, StoreLock, holder_label

if TYPE_CHECKING:
    from engine.store.client import Store

MARKER_TABLE = "swap_in_progress"
MARKER_DDL = """CREATE TABLE IF NOT EXISTS {db}.swap_in_progress
(
    run_id     String,
    holder     String,
    counts     String,
    started_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY started_at"""


class SwapRepairError(RuntimeError):
    """A half swap that can be neither completed nor undone (a table's versions are gone)."""


def run_tag(run_id: str) -> str:
    """The comment a rebuild's new tables carry through the swap."""
    return f"rebuild run={run_id}"


# --------------------------------------------------------------------------------------------
# Marker


@dataclass(frozen=True)
class Marker:
    run_id: str
    holder: str
    counts: dict[str, int]
    started_at: str


def ensure_marker_table(store: Store) -> None:
    store.command(MARKER_DDL.replace("{db}", store.database))


def read_marker(store: Store) -> Marker | None:
    """The swap in progress (or cut short), None when no swap is."""
    try:
        rows = store.query(
            f"SELECT run_id, holder, counts, toString(started_at) "
            f"FROM {store.database}.{MARKER_TABLE} ORDER BY started_at DESC LIMIT 1"
        )
    except StoreError as exc:
        text = str(exc).lower()
        if "unknown_table" in text or "doesn't exist" in text or "does not exist" in text:
            return None
        raise
    if not rows:
        return None
    run_id, holder, counts, at = rows[0]
    return Marker(str(run_id), str(holder), {k: int(v) for k, v in json.loads(counts).items()}, at)


def write_marker(store: Store, run_id: str, holder: str, counts: dict[str, int]) -> None:
    ensure_marker_table(store)
    store.insert_json_rows(
        f"{store.database}.{MARKER_TABLE}",
        ["run_id", "holder", "counts"],
        [[run_id, holder, json.dumps(counts, sort_keys=True)]],
    )


def clear_marker(store: Store) -> None:
    store.command(f"TRUNCATE TABLE IF EXISTS {store.database}.{MARKER_TABLE}")


# --------------------------------------------------------------------------------------------
# Moving tables


class Mover:
    """EXCHANGE TABLES, or on a database without it (Ordinary) a three-way RENAME."""

    def __init__(self, store: Store, log: Callable[[str], None]) -> None:
        self.store = store
        self.log = log
        self.use_rename = False

    @property
    def method(self) -> str:
        return "RENAME" if self.use_rename else "EXCHANGE TABLES"

    def exchange(self, a: str, b: str, fallback: bool = True) -> None:
        """Swap a and b; without EXCHANGE (Ordinary) fall back to RENAME when `fallback`."""
        try:
            _exchange(self.store, a, b, self.use_rename)
        except StoreError as exc:
            if self.use_rename or not fallback or not _exchange_unsupported(exc):
                raise
            self.log(
                f"EXCHANGE TABLES not supported by database {self.store.database} ({exc}); "
                "using RENAME"
            )
            self.use_rename = True
            _exchange(self.store, a, b, self.use_rename)

    def rename(self, a: str, b: str) -> None:
        db = self.store.database
        self.store.command(f"RENAME TABLE {db}.{a} TO {db}.{b}")

    def drop(self, a: str) -> None:
        self.store.command(f"DROP TABLE IF EXISTS {self.store.database}.{a} SYNC")


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


# --------------------------------------------------------------------------------------------
# Swap


def swap_in(store: Store, log: Callable[[str], None], run_id: str = "", holder: str = "") -> str:
    """Swap every `X_new` with the live `X`; all or nothing. Returns the method used.

    A failure part-way swaps the done ones back; a process killed part-way leaves the marker
    for `repair`.
    """
    missing = [t + NEW_SUFFIX for t in ANALYTICS_TABLES if not table_exists(store, t + NEW_SUFFIX)]
    if missing:
        raise RuntimeError(f"cannot swap, missing {', '.join(missing)}")
    create_analytics(store, "")  # first rebuild: empty live tables so there is something to swap
    expected = {t: table_count(store, t + NEW_SUFFIX) for t in ANALYTICS_TABLES}
    run_id = run_id or "unnamed"
    tag = run_tag(run_id).replace("'", "")
    for t in ANALYTICS_TABLES:
        store.command(f"ALTER TABLE {store.database}.{t}{NEW_SUFFIX} MODIFY COMMENT '{tag}'")
    write_marker(store, run_id, holder, expected)
    mover = Mover(store, log)
    done: list[str] = []
    try:
        for t in ANALYTICS_TABLES:
            mover.exchange(t, t + NEW_SUFFIX, fallback=not done)  # RENAME all or none
            done.append(t)
            log(f"swapped {t} <-> {t}{NEW_SUFFIX}")
        wrong = {t: table_count(store, t) for t in ANALYTICS_TABLES}
        wrong = {t: n for t, n in wrong.items() if n != expected[t]}
        if wrong:
            raise RuntimeError(f"row counts after the swap differ from the build: {wrong}")
    except Exception as exc:
        for t in reversed(done):
            mover.exchange(t, t + NEW_SUFFIX)
            log(f"swapped back {t} <-> {t}{NEW_SUFFIX}")
        clear_marker(store)
        raise RuntimeError(f"swap failed and was undone: {exc}") from exc
    # The replaced versions are now in X_new; keep them as X_prev for a manual rollback. The swap
    # is done at this point, so a failure here is only logged (the marker then stays, and the
    # next start's repair moves them).
    try:
        for t in ANALYTICS_TABLES:
            mover.drop(t + PREV_SUFFIX)
            mover.rename(t + NEW_SUFFIX, t + PREV_SUFFIX)
        log(f"previous versions kept as *{PREV_SUFFIX}")
        clear_marker(store)
    except StoreError as exc:
        log(f"swapped, but keeping the previous versions as *{PREV_SUFFIX} failed: {exc}")
    return mover.method


# --------------------------------------------------------------------------------------------
# Repair


@dataclass(frozen=True)
class Step:
    """One move of a repair: `exchange` a and b, `rename` a to b, or `drop` a."""

    op: str
    a: str
    b: str = ""


#: Where one analytics table's versions can be during a swap, per suffix.
SLOTS = ("", NEW_SUFFIX, SWAP_SUFFIX, PREV_SUFFIX)


def plan_repair(
    present: dict[str, tuple[bool, int]], counts: dict[str, int]
) -> tuple[str, list[Step]]:
    """("completed" | "undone", steps) that make the live analytics all new or all old.

    `present`: every existing table among X, X_new, X_swap, X_prev of the analytics tables ->
    (carries the swap's tag, rows); `counts`: the built rows per table (the marker's). Completes
    when each table's new version is there with its built count, else undoes when each table's
    old version is there; raises SwapRepairError when neither is possible.
    """
    new_at: dict[str, str] = {}
    for t in ANALYTICS_TABLES:
        tagged = [t + s for s in SLOTS[:3] if present.get(t + s, (False, 0))[0]]
        odd = tagged == [t + SWAP_SUFFIX] and t in present  # never a state a swap leaves
        if len(tagged) == 1 and present[tagged[0]][1] == counts.get(t, -1) and not odd:
            new_at[t] = tagged[0]
    if len(new_at) == len(ANALYTICS_TABLES):
        return "completed", [s for t in ANALYTICS_TABLES for s in _complete(t, new_at[t], present)]
    steps: list[Step] = []
    lost: list[str] = []
    for t in ANALYTICS_TABLES:
        got = _undo(t, present)
        if got is None:
            lost.append(t)
        else:
            steps.extend(got)
    if lost:
        where = {n: ("tagged" if tag else "untagged", rows) for n, (tag, rows) in present.items()}
        raise SwapRepairError(
            f"cannot complete or undo the swap: neither version of {', '.join(lost)} is whole "
            f"(tables: {where}; built rows: {counts}); run `backfill-console rebuild`"
        )
    return "undone", steps


def _old(t: str, present: dict[str, tuple[bool, int]], slots: tuple[str, ...]) -> str | None:
    for s in slots:
        name = t + s
        if name in present and not present[name][0]:
            return name
    return None


def _complete(t: str, new: str, present: dict[str, tuple[bool, int]]) -> list[Step]:
    steps: list[Step] = []
    live_old = t in present and not present[t][0]
    if new != t:
        steps.append(Step("exchange", t, new) if live_old else Step("rename", new, t))
    # The replaced version (now in X_new or X_swap) is kept as X_prev, as the swap does.
    spare = [t + s for s in (NEW_SUFFIX, SWAP_SUFFIX) if t + s in present or t + s == new]
    if new != t and live_old:
        spare = [new, *[n for n in spare if n != new]]  # the exchange put the old one there
    else:
        spare = [n for n in spare if n != new]
    if spare:
        steps.append(Step("drop", t + PREV_SUFFIX))
        steps.append(Step("rename", spare[0], t + PREV_SUFFIX))
        steps.extend(Step("drop", n) for n in spare[1:])
    return steps


def _undo(t: str, present: dict[str, tuple[bool, int]]) -> list[Step] | None:
    if t in present and not present[t][0]:
        return []  # the old version is live
    old = _old(t, present, (NEW_SUFFIX, SWAP_SUFFIX, PREV_SUFFIX))
    if old is None:
        return None
    if t not in present:
        return [Step("rename", old, t)]
    if old == t + NEW_SUFFIX:
        return [Step("exchange", t, old)]
    # The old one in X_swap (a RENAME cut short) or X_prev: the new one goes to X_new (left for
    # inspection, as after a failed swap), the old one back. Never an exchange with X_swap: the
    # RENAME fallback uses that name as its scratch.
    return [Step("drop", t + NEW_SUFFIX), Step("rename", t, t + NEW_SUFFIX), Step("rename", old, t)]


def _present(store: Store, tag: str) -> dict[str, tuple[bool, int]]:
    names = [t + s for t in ANALYTICS_TABLES for s in SLOTS]
    rows = store.query(
        f"SELECT name, comment FROM system.tables WHERE database = '{store.database}' "
        f"AND name IN ({', '.join(repr(n) for n in names)})"
    )
    return {str(n): (str(c) == tag, table_count(store, str(n))) for n, c in rows}


def repair(store: Store, log: Callable[[str], None]) -> str:
    """Complete or undo a swap cut short (the caller holds the analytics lock); '' when there was
    none, else what was done, in words (also given to `log`)."""
    marker = read_marker(store)
    if marker is None:
        return ""
    tag = run_tag(marker.run_id).replace("'", "")
    present = _present(store, tag)
    how, steps = plan_repair(present, marker.counts)
    mover = Mover(store, log)
    for step in steps:
        if step.op == "exchange":
            mover.exchange(step.a, step.b)
        elif step.op == "rename":
            mover.rename(step.a, step.b)
        else:
            mover.drop(step.a)
    after = _present(store, tag)
    bad = {
        t: after.get(t)
        for t in ANALYTICS_TABLES
        if after.get(t, (None, -1))[0] != (how == "completed")
        or (how == "completed" and after[t][1] != marker.counts[t])
    }
    if bad:
        raise SwapRepairError(f"the swap repair left {bad} (expected every table {how})")
    clear_marker(store)
    swapped = sorted(t for t in ANALYTICS_TABLES if present.get(t, (False, 0))[0])
    text = (
        f"repaired a swap cut short (rebuild run={marker.run_id} by {marker.holder or '?'}, "
        f"started {marker.started_at} UTC; {len(swapped)} of {len(ANALYTICS_TABLES)} tables "
        f"were swapped): {how} it, every analytics table is now the "
        + ("new build" if how == "completed" else "version from before that rebuild")
        + f" ({', '.join(f'{t}={after[t][1]}' for t in ANALYTICS_TABLES)} rows)"
    )
    log(text)
    return text


def repair_at_start(store: Store, log: Callable[[str], None], what: str) -> str:
    """At a console start: repair a swap cut short unless its process is alive (it holds the
    analytics lock: left alone; its own end or the next lock holder repairs). '' when nothing
    was done."""
    marker = read_marker(store)
    if marker is None:
        return ""
    try:
        with StoreLock(store, ANALYTICS_LOCK, holder_label(what)):
            return repair(store, log)
    except LockHeld as exc:
        log(
            f"a swap of rebuild run={marker.run_id} is in progress or was cut short; not "
            f"repaired now: {exc}"
        )
        return ""
