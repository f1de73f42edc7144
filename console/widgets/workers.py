"""Workers panel: one keyed DataTable row per shard, updated cell by cell."""

from __future__ import annotations

from collections import Counter

from rich.text import Text
from textual.app import ComposeResult
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static

from console import fmt
from console.data import STATUS, ConsoleData
from console.widgets.base import BAD, MUTED, OK, STATE_STYLES, WARN, Panel, update_if_changed
from engine.status import Phase, WorkerStatus

COLUMNS = (
    ("shard", "#"),
    ("state", "state"),
    ("pid", "pid"),
    ("day", "day"),
    ("hb", "heartbeat"),
    ("rows", "rows"),
    ("days", "days"),
    ("restarts", "restarts"),
)
#: What every column means (the help screen shows these, one line each).
COLUMN_HELP = (
    ("#", "shard id: the shard owns the days where day % SHARDS == #"),
    ("state", "STARTING RUNNING STALLED BACKOFF STOPPING DONE FATAL STOPPED (see below)"),
    ("pid", "the worker's process id (- when no process runs)"),
    ("day", "the day it fetches now"),
    ("heartbeat", "time since its last heartbeat (green < 60 s, yellow, red past the stall limit)"),
    ("rows", "rows it received this run, over all its processes (re-fetched ones included)"),
    ("days", "days it finished this run / days it had to do when the run started"),
    ("restarts", "its restarts this run (by the supervisor, r/R, and scales)"),
    (
        "notes",
        "under the table: what a worker is doing when not plain fetching, and its last error",
    ),
)
#: Notes under the table: at most this many lines (one per worker with something to say).
MAX_NOTES = 3
QUIET_PHASES = ("", Phase.FETCH)
# What a worker's phase (from its heartbeat) means, in the operator's words.
PHASE_LABELS: dict[str, str] = {
    Phase.START: "starting",
    Phase.RANGE: "finding blocks",
    Phase.RETRY: "retrying",
    Phase.RETRY_WAIT: "waiting to retry the day",
    Phase.WAIT_FINAL: "waiting for final blocks",
    Phase.PAUSED: "paused",
}
FRESH_HEARTBEAT_S = 60.0
TITLE_ORDER = ("FATAL", "STALLED", "BACKOFF", "STOPPING", "STARTING", "RUNNING", "DONE", "STOPPED")


def heartbeat_cell(age_s: float | None, stall_after_s: float) -> Text:
    """Green under a minute, yellow until the stall threshold, red past it."""
    if age_s is None:
        return Text("-", style=MUTED, justify="right")
    if age_s < FRESH_HEARTBEAT_S:
        style = OK
    elif age_s < stall_after_s:
        style = WARN
    else:
        style = BAD
    return Text(fmt.age(age_s), style=style, justify="right")


def _width(value: object) -> int:
    return value.cell_len if isinstance(value, Text) else len(str(value))


def worker_note(w: WorkerStatus) -> Text | None:
    """'5 retrying: rpc_429: ...' for a worker doing something other than fetching, or with an
    error; None for a quiet worker."""
    phase = w.phase not in QUIET_PHASES
    if not phase and not w.last_error and not w.last_restart:
        return None
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{w.shard:>2} ", style="bold")
    if phase:
        label = PHASE_LABELS.get(w.phase, w.phase)
        t.append(label, style=WARN if w.phase == "retry" else MUTED)
        if w.last_error:
            t.append(": ", style=MUTED)
    if w.last_restart:  # why the latest automatic restart happened (restarts counts them)
        t.append(f"restarted: {' '.join(w.last_restart.split())}; ", style=WARN)
    if w.last_error:
        t.append(" ".join(w.last_error.split()), style="red")
    return t


def fit_notes(notes: list[Text], width: int, lines: int) -> list[Text]:
    """Notes within `lines` lines of `width`: a single note wraps onto them; several take one
    line each (cut with an ellipsis), the overflow becoming '+N more' (ctl status lists all)."""
    if not notes or lines <= 0:
        return []
    if len(notes) == 1 and lines > 1:
        one = notes[0].copy()
        one.no_wrap = False
        return [one]
    if len(notes) <= lines or lines == 1:
        return notes[:lines]
    more = len(notes) - (lines - 1)
    return [*notes[: lines - 1], Text(f"+{more} more: ctl status lists every worker", style=MUTED)]


def worker_cells(w: WorkerStatus, stall_after_s: float) -> dict[str, object]:
    """The row of one worker, by column key."""
    day = Text("-" if w.day is None else str(w.day), justify="right")
    planned = (
        f"{w.days_done}/{w.days_planned}"
        if w.days_planned >= w.days_done and w.days_planned
        else str(w.days_done)
    )
    return {
        "shard": w.shard,
        "state": Text(w.state, style=STATE_STYLES.get(w.state, "")),
        "pid": Text("-" if w.pid is None else str(w.pid), justify="right"),
        "day": day,
        "hb": heartbeat_cell(w.heartbeat_age_s, stall_after_s),
        "rows": Text(fmt.short(w.rows), justify="right"),
        "days": Text(planned, justify="right"),
        "restarts": Text(str(w.restarts), style=WARN if w.restarts else "", justify="right"),
    }


class WorkersPanel(Panel):
    """Shard, state (coloured), pid, day, heartbeat age, rows, days, restarts; under the table,
    one note per worker that is not plainly fetching or has an error (full width, so the text is
    read, not guessed from a clipped column)."""

    SOURCES = (STATUS,)
    TITLE = "Workers"

    def __init__(self) -> None:
        super().__init__(id="workers")
        self._cells: dict[int, dict[str, object]] = {}

    def compose(self) -> ComposeResult:
        table: DataTable[object] = DataTable(
            id="workers-table", cursor_type="row", zebra_stripes=False
        )
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Static("", id="workers-notes")

    @property
    def table(self) -> DataTable[object]:
        return self.query_one("#workers-table", DataTable)

    def selected_shard(self) -> int | None:
        """The shard of the row under the cursor, if any."""
        table = self.table
        if table.row_count == 0:
            return None
        row = max(0, min(table.cursor_row, table.row_count - 1))
        key = table.coordinate_to_cell_key(Coordinate(row, 0)).row_key
        return None if key.value is None else int(key.value)

    def show(self, data: ConsoleData, now: float) -> None:
        st = data.status
        if st is None:
            return
        table = self.table
        seen: set[int] = set()
        added = False
        for w in st.workers:
            seen.add(w.shard)
            cells = worker_cells(w, st.stall_after_s)
            old = self._cells.get(w.shard)
            if old is None:
                table.add_row(*(cells[k] for k, _ in COLUMNS), key=str(w.shard))
                added = True
            else:
                for key, value in cells.items():
                    prev = old.get(key)
                    if prev != value:
                        # Widen a column when its text grows (day 99 -> 100, 9/131 -> 10/131).
                        grows = _width(value) > _width(prev)
                        table.update_cell(str(w.shard), key, value, update_width=grows)
            self._cells[w.shard] = cells
        for shard in [s for s in self._cells if s not in seen]:
            table.remove_row(str(shard))
            del self._cells[shard]
        if added:
            table.sort("shard")
        # Errors first (they need reading), then the other phases, in shard order.
        ordered = sorted(st.workers, key=lambda w: (not w.last_error, w.shard))
        notes = [n for w in ordered if (n := worker_note(w)) is not None]
        box = self.query_one("#workers-notes", Static)
        budget = 1 if self.app.size.height < 32 else MAX_NOTES
        shown = fit_notes(notes, box.content_size.width or self.app.size.width - 4, budget)
        box.set_class(bool(shown), "-show")
        box.set_class(len(shown) == 1, "-wrap")
        text = Text("\n", no_wrap=len(shown) > 1, overflow="ellipsis").join(shown)
        update_if_changed(box, text if shown else "")
        counts: Counter[str] = Counter(w.state for w in st.workers)
        # Alarming states first, so a narrow title never cuts them off.
        summary = " · ".join(f"{counts[s]} {s}" for s in TITLE_ORDER if counts[s])
        self.border_title = f"Workers {len(st.workers)}" + (f" · {summary}" if summary else "")
