"""Top of the main screen: the one-line header, the state banner and (narrow terminals) a
one-line health summary of the panels that do not fit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from rich.text import Text
from textual.widgets import Static

from console import fmt
from console.data import DISK, DUPLICATES, GATES_LOG, STATUS, ConsoleData
from console.widgets.base import (
    ALARM,
    BAD,
    ENGINE_STATE_STYLES,
    MUTED,
    OK,
    WARN,
    DataView,
    pack,
    update_if_changed,
)
from engine.status import EngineState, EngineStatus, WorkerState

STALE_AFTER_S = 5.0
#: Engine states an operator's pending abort is shown over (the engine has not caught up yet).
OVERRIDDEN_STATES = (EngineState.RUNNING, EngineState.PAUSED, EngineState.STARTING)


def _key(hints: Mapping[str, str], action_id: str) -> str:
    return hints.get(action_id, "?")


class HeaderBar(DataView, Static):
    """State, SHARDS, elapsed, chain and store on one line (most important first)."""

    SOURCES = (STATUS,)

    def __init__(self) -> None:
        super().__init__(Text(" backfill-console: waiting for the engine…"), id="header")
        self.override_state: EngineState | None = None  # ABORTING right after the operator confirms

    def show(self, data: ConsoleData, now: float) -> None:
        st = data.status
        t = Text(no_wrap=True, overflow="ellipsis")
        if st is None:
            t.append(" backfill-console ", style="bold")
            err = data.error(STATUS)
            t.append(f"engine status unavailable: {err}" if err else "waiting for the engine…")
            update_if_changed(self, t)
            return
        state = st.state
        if self.override_state and state in OVERRIDDEN_STATES:
            state = self.override_state
        t.append(f" {state.upper()} ", style=ENGINE_STATE_STYLES.get(state, "bold"))
        if st.stalled:
            t.append(f" STALLED: {st.stalled} ", style=ALARM)
        verdict = outcome_words(st)
        if verdict:
            t.append(f" {verdict} ", style=OUTCOME_STYLES.get(st.outcome.phase, "bold"))  # type: ignore[union-attr]
        waited = data.waiting_s(STATUS, now)
        if waited >= STALE_AFTER_S:
            # Input still works, but the engine has not answered: say so, not a frozen clock.
            t.append(f" engine busy, status {fmt.age(waited)} old ", style="bold black on yellow")
        if data.error(STATUS):
            t.append(f" status stale: {data.error(STATUS)} ", style=ALARM)
        t.append("  SHARDS ", style=MUTED)
        t.append(str(st.shards), style="bold")
        if st.config_shards and st.config_shards != st.shards:
            t.append(f" (config {st.config_shards})", style=WARN)
        if st.shard_ids and sorted(st.shard_ids) != list(range(st.shards)):
            t.append(f" (ids {fmt.ranges(st.shard_ids)})")
        t.append("  elapsed ", style=MUTED)
        t.append(fmt.duration(st.elapsed_s), style="bold")
        o = st.outcome
        if o is not None and o.backfill_s is not None:
            t.append(f" (backfill {fmt.duration(o.backfill_s)}", style=MUTED)
            if o.rebuild_s is not None:
                t.append(f", rebuild {fmt.duration(o.rebuild_s)}", style=MUTED)
            t.append(")", style=MUTED)
        # Chain and store share what is left of the line; paths keep their end.
        room = max(0, self.size.width or 120) - t.cell_len - len("  chain   store ")
        chain, store = st.chain, st.store
        if len(chain) + len(store) > room:
            # The chain first; the store (also in the Disk panel's title) gets what is left,
            # its path cut from the left so its end stays readable.
            chain = fmt.clip(chain, max(12, room - min(len(store), max(16, room * 2 // 5))))
            store = fmt.elide_path(store, room - len(chain))
            if len(store) < 12:  # no room for a useful path: the chain takes the line
                chain, store = fmt.clip(st.chain, max(12, room + 8)), ""
        t.append("  chain ", style=MUTED)
        t.append(chain)
        if len(store) >= 12:
            t.append("  store ", style=MUTED)
            t.append(store)
        update_if_changed(self, t)

    def on_resize(self) -> None:
        data = getattr(self.app, "data", None)
        if isinstance(data, ConsoleData) and data.status is not None:
            self.show(data, data.status.now)


OUTCOME_STYLES = {
    "swapped": "bold black on green",
    "not_swapped": ALARM,
    "failed": ALARM,
    "rebuilding": "bold cyan",
}


def outcome_words(st: EngineStatus) -> str:
    """'swapped in' / 'NOT swapped' / 'rebuild FAILED' for the header; '' while none."""
    o = st.outcome
    if o is None or o.phase == "rebuilding":
        return ""
    return {"swapped": "swapped in", "not_swapped": "NOT swapped", "failed": "rebuild FAILED"}.get(
        o.phase, o.phase
    )


class Banner(DataView, Static):
    """One or two lines that say plainly what state the run is in when it needs attention."""

    SOURCES = (STATUS,)

    def __init__(self, hints: Mapping[str, str] | None = None) -> None:
        super().__init__("", id="banner")
        self.override_state: EngineState | None = None
        self.hints = dict(hints or {})

    def show(self, data: ConsoleData, now: float) -> None:
        st = data.status
        lines: list[Text] = []
        if st is not None:
            state = st.state
            if self.override_state and state in OVERRIDDEN_STATES:
                state = self.override_state
            o = st.outcome
            if o is not None and o.phase == "rebuilding":
                took = f" {fmt.duration(o.rebuild_s)}" if o.rebuild_s is not None else ""
                if st.rebuild is not None:  # chunks done / total and its ETA
                    o = replace(o, detail=st.rebuild.summary(st.now))
                lines.append(
                    Text(
                        f" REBUILDING analytics{took}: {o.detail or 'starting'} ",
                        style="bold black on cyan",
                    )
                )
            elif state == EngineState.COMPLETE:
                lines += complete_lines(st, self.app.size.width)
            elif state == EngineState.ABORTING:
                lines.append(
                    Text(
                        " ABORTING: workers stop after their current chunk, fetched rows are "
                        "flushed; the console exits when the engine has stopped ",
                        style=ALARM,
                    )
                )
            elif state == EngineState.STOPPED:
                lines.append(Text(" STOPPED: a rerun resumes from checkpoints ", style=ALARM))
            if st.disk_full:
                lines.append(
                    Text(
                        " DISK FULL: the store cannot write; fetching paused, nothing is lost; "
                        "free space on the store's disk (Disk panel) and it resumes by itself ",
                        style=ALARM,
                    )
                )
            failing = [g for g in st.gates if not g.passed]
            if failing:
                names = ", ".join(g.name for g in failing)
                lines.append(
                    Text(
                        f" GATE FAILING: {names}: pause scaling until diagnosed (Gates panel) ",
                        style=ALARM,
                    )
                )
            fatal = [w.shard for w in st.workers if w.state == WorkerState.FATAL]
            stalled = [w.shard for w in st.workers if w.state == WorkerState.STALLED]
            if fatal or stalled:
                parts = []
                if fatal:
                    parts.append(f"FATAL shard {fmt.ranges(fatal)}")
                if stalled:
                    parts.append(f"STALLED shard {fmt.ranges(stalled)}")
                lines.append(
                    Text(
                        f" {' · '.join(parts)}: read its log ({_key(self.hints, 'open_log')}), "
                        f"restart it ({_key(self.hints, 'restart_worker')}) "
                        f"or all ({_key(self.hints, 'restart_stalled')}) ",
                        style="bold black on yellow",
                    )
                )
            if state == EngineState.PAUSED:
                lines.append(
                    Text(
                        " PAUSED: workers idle, heartbeats continue; "
                        f"{_key(self.hints, 'pause')} resumes ",
                        style=WARN,
                    )
                )
        lines = lines[:2]
        self.set_class(bool(lines), "-show")
        update_if_changed(self, Text("\n").join(lines) if lines else "")


def complete_lines(st: EngineStatus, width: int) -> list[Text]:
    """The end screen's banner: all staged, and what the rebuild did (snapshot or gate). The
    snapshot's path goes on a line of its own when it does not fit beside (elided from the left
    when even that is too narrow: its file name is what tells snapshots apart)."""
    t = complete_line(st)
    o = st.outcome
    if width <= 0 or t.cell_len <= width or o is None or o.phase != "swapped" or not o.snapshot:
        return [t]
    t = complete_line(replace(st, outcome=replace(o, snapshot="")))
    path = Text(" snapshot ", style=MUTED, no_wrap=True, overflow="ellipsis")
    path.append(fmt.elide_path(o.snapshot, width - path.cell_len))
    return [t, path]


def complete_line(st: EngineStatus) -> Text:
    """The end screen's banner on one line: all staged, and what the rebuild did."""
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f" COMPLETE: all {st.days_total:,} days staged ", style="bold black on green")
    o = st.outcome
    if o is None:
        return t
    if o.phase == "swapped":
        t.append(" analytics swapped in ", style="bold black on green")
        if o.snapshot:
            t.append(" snapshot ", style=MUTED)
            t.append(o.snapshot)
    elif o.phase == "not_swapped":
        t.append(" analytics NOT swapped: ", style=ALARM)
        t.append(o.detail, style="bold red")
        t.append("  (on-complete.log)", style=MUTED)
    elif o.phase == "failed":
        t.append(" rebuild FAILED: ", style=ALARM)
        t.append(o.detail, style="bold red")
    return t


class HealthStrip(DataView, Static):
    """Narrow terminals: duplicates, gates, disk and RPC flags on one line (d shows the panels)."""

    SOURCES = (STATUS, DUPLICATES, DISK, GATES_LOG)

    def __init__(self, hints: Mapping[str, str] | None = None) -> None:
        super().__init__("", id="health")
        self.hints = dict(hints or {})

    def show(self, data: ConsoleData, now: float) -> None:
        segments: list[Text] = []
        t = Text()
        # Duplicates
        t.append("dups ", style="bold")
        if data.error(DUPLICATES):
            t.append("query failed", style=BAD)
        elif data.duplicates is None:
            t.append("checking…", style=MUTED)
        else:
            waiting = sum(max(0, c.raw_rows - c.unique_keys) for c in data.duplicates)
            final = sum(c.final_duplicates for c in data.duplicates)
            t.append(f"wait {fmt.short(waiting)} ")
            t.append(f"FINAL {final}", style=OK if final == 0 else "bold white on red")
        segments.append(t)
        t = Text()
        # Gates
        t.append("gates ", style="bold")
        st = data.status
        if st is None or not st.gates:
            t.append("none yet", style=MUTED)
        else:
            bad = [g.name for g in st.gates if not g.passed]
            if bad:
                t.append(f"FAIL {', '.join(bad)}", style=ALARM)
            else:
                t.append(f"{len(st.gates)} pass", style=OK)
        segments.append(t)
        t = Text()
        # Disk
        t.append("disk ", style="bold")
        if data.error(DISK):
            t.append("query failed", style=BAD)
        elif data.disk is None:
            t.append("…", style=MUTED)
        else:
            used = sum(u.bytes_on_disk for u in data.disk.tables)
            t.append(fmt.size(used))
            if data.disk.free_bytes is not None:
                low = bool(data.disk.total_bytes) and data.disk.free_bytes < 0.1 * (
                    data.disk.total_bytes or 1
                )
                t.append(f" free {fmt.size(data.disk.free_bytes)}", style=BAD if low else "")
        segments.append(t)
        t = Text()
        # RPC
        t.append("rpc ", style="bold")
        if st is None or not st.rpc:
            t.append("no data", style=MUTED)
        else:
            n429 = sum(h.http_429 for h in st.rpc)
            cooling = sum(1 for h in st.rpc if h.cooling_until and h.cooling_until > st.now)
            t.append(f"{len(st.rpc)} url · {sum(h.calls_per_s for h in st.rpc):.0f}/s")
            t.append(f" · 429s {n429}", style=WARN if n429 else "")
            if cooling:
                t.append(f" · {cooling} cooling", style=WARN)
        segments.append(t)
        t = Text()
        # Errors (their panel is hidden on short narrow screens)
        t.append("errors ", style="bold")
        if st is None or not st.errors:
            t.append("none", style=MUTED)
        else:
            kinds: dict[str, int] = {}
            for g in st.errors:
                kinds[g.kind] = kinds.get(g.kind, 0) + g.count
            top = sorted(kinds.items(), key=lambda kv: -kv[1])[:1]
            t.append(f"{sum(kinds.values()):,}", style=WARN)
            t.append(" (" + ", ".join(f"{k} {n:,}" for k, n in top) + ")", style=MUTED)
            t.append(f" {_key(self.hints, 'filter_errors')}: list", style=MUTED)
        segments.append(t)
        width = self.content_size.width or max(20, self.app.size.width - 2)
        update_if_changed(self, pack(segments, width, sep=" │ "))
