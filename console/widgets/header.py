"""Top of the main screen: the one-line header, the state banner and (narrow terminals) a
one-line health summary of the panels that do not fit."""

from __future__ import annotations

from collections.abc import Mapping

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
    update_if_changed,
)
from engine.status import EngineState, WorkerState

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
        waited = data.waiting_s(STATUS, now)
        if waited >= STALE_AFTER_S:
            # Input still works, but the engine has not answered: say so, not a frozen clock.
            t.append(f" engine busy, status {fmt.age(waited)} old ", style="bold black on yellow")
        if data.error(STATUS):
            t.append(f" status stale: {data.error(STATUS)} ", style=ALARM)
        t.append("  SHARDS ", style=MUTED)
        t.append(str(st.shards), style="bold")
        if st.shard_ids and sorted(st.shard_ids) != list(range(st.shards)):
            t.append(f" (ids {fmt.ranges(st.shard_ids)})")
        t.append("  elapsed ", style=MUTED)
        t.append(fmt.duration(st.elapsed_s), style="bold")
        t.append("  chain ", style=MUTED)
        t.append(st.chain)
        t.append("  store ", style=MUTED)
        t.append(st.store)
        update_if_changed(self, t)


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
            if state == EngineState.COMPLETE:
                lines.append(
                    Text(
                        f" COMPLETE: all {st.days_total:,} days staged ",
                        style="bold black on green",
                    )
                )
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


class HealthStrip(DataView, Static):
    """Narrow terminals: duplicates, gates, disk and RPC flags on one line (d shows the panels)."""

    SOURCES = (STATUS, DUPLICATES, DISK, GATES_LOG)

    def __init__(self, hints: Mapping[str, str] | None = None) -> None:
        super().__init__("", id="health")
        self.hints = dict(hints or {})

    def show(self, data: ConsoleData, now: float) -> None:
        t = Text(no_wrap=False)
        sep = Text(" │ ", style=MUTED)
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
        t.append_text(sep)
        # Gates
        t.append("gates ", style="bold")
        st = data.status
        if st is None or not st.gates:
            t.append("none run yet", style=MUTED)
        else:
            bad = [g.name for g in st.gates if not g.passed]
            if bad:
                t.append(f"FAIL {', '.join(bad)}", style=ALARM)
            else:
                t.append(f"{len(st.gates)} pass", style=OK)
        t.append_text(sep)
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
        t.append_text(sep)
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
        t.append(f"   {_key(self.hints, 'details')}: all panels", style=MUTED)
        update_if_changed(self, t)
