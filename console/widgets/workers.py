"""Workers panel: one keyed DataTable row per shard, updated cell by cell."""

from __future__ import annotations

import io
from collections import Counter

from rich.console import Console
from rich.text import Text
from textual.app import ComposeResult
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static

from console import fmt
from console.data import STATUS, ConsoleData
from console.widgets.base import BAD, MUTED, OK, STATE_STYLES, WARN, Panel, update_if_changed
from engine.status import RAW_LOGS, Phase, WorkerState, WorkerStatus

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
    ("logs", "raw logs it fetched this run (re-fetched too); one TransferBatch log = a row per id"),
    ("rows", "(when workers decode) rows it received this run, re-fetched ones included"),
    ("days", "days it finished this run / days it had to do when the run started"),
    ("restarts", "its restarts this run (by the supervisor, r/R, and scales)"),
    (
        "notes",
        "under the table: what a worker is doing when not plain fetching, and its last error",
    ),
)
#: Notes under the table: at most this many lines (one per worker with something to say).
MAX_NOTES = 3
#: ... and at most this many lines when the panel has room for them under the table.
MAX_NOTES_TALL = 10
QUIET_PHASES = ("", Phase.FETCH)
LIVE_STATES = (WorkerState.STARTING, WorkerState.RUNNING, WorkerState.STALLED)
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
    # A phase is news only while a process works on it (a DONE or FATAL worker's last
    # heartbeat may still say "finding blocks").
    phase = w.phase not in QUIET_PHASES and w.state in LIVE_STATES
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


def wrap_note(note: Text, width: int) -> list[Text]:
    """The note wrapped at `width`, one Text per line."""
    one = note.copy()
    one.no_wrap = False
    lines = list(one.wrap(Console(width=width, file=io.StringIO()), width))
    for line in lines:
        line.rstrip()
        line.no_wrap = True
    return lines or [Text("")]


def fit_notes(notes: list[Text], width: int, lines: int) -> list[Text]:
    """The notes as at most `lines` lines of `width`: each note wrapped whole while the lines
    last (earlier notes first: errors come first), a note that does not fit whole cut with an
    ellipsis on its last line, one line kept for each later note. More notes than lines: one
    line each and '+N more' (ctl status lists all)."""
    if not notes or lines <= 0:
        return []
    if width <= 0:
        return notes[:lines]
    if len(notes) > lines:
        if lines == 1:
            return notes[:1]
        more = len(notes) - (lines - 1)
        return [
            *notes[: lines - 1],
            Text(f"+{more} more: ctl status lists every worker", style=MUTED),
        ]
    out: list[Text] = []
    left = lines
    for i, note in enumerate(notes):
        room = left - (len(notes) - i - 1)  # the later notes keep a line each
        wrapped = wrap_note(note, width)
        if len(wrapped) > room:
            wrapped = wrapped[:room]
            last = wrapped[-1]
            last.truncate(max(0, width - 1))
            last.rstrip()
            last.append("…", style=MUTED)
        out += wrapped
        left -= len(wrapped)
    return out


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
    """Shard, state (coloured), pid, day, heartbeat age, logs (or rows) fetched, days, restarts;
    under the table,
    one note per worker that is not plainly fetching or has an error (full width, so the text is
    read, not guessed from a clipped column)."""

    SOURCES = (STATUS,)
    TITLE = "Workers"

    def __init__(self) -> None:
        super().__init__(id="workers")
        self._cells: dict[int, dict[str, object]] = {}
        self._unit = RAW_LOGS  # what the "rows" column counts (EngineStatus.fetched_unit)

    def compose(self) -> ComposeResult:
        table: DataTable[object] = DataTable(
            id="workers-table", cursor_type="row", zebra_stripes=False
        )
        self._add_columns(table)
        yield table
        yield Static("", id="workers-notes")

    def _add_columns(self, table: DataTable[object]) -> None:
        for key, label in COLUMNS:
            table.add_column(self._unit if key == "rows" else label, key=key)

    def _set_unit(self, unit: str) -> None:
        """Label the fetched-count column with what it counts: raw logs or rows."""
        if unit == self._unit:
            return
        self._unit = unit
        table = self.table
        table.clear(columns=True)
        self._cells.clear()
        self._add_columns(table)

    @property
    def table(self) -> DataTable[object]:
        return self.query_one("#workers-table", DataTable)

    def on_resize(self) -> None:
        """The notes' lines depend on the panel's height: fit them again."""
        data = getattr(self.app, "data", None)
        if isinstance(data, ConsoleData) and data.status is not None:
            self.show(data, data.status.now)

    def _notes_budget(self, workers: int) -> int:
        """Lines for the notes: one on short terminals, else at least MAX_NOTES and whatever
        the panel has left under a table showing every worker."""
        if self.app.size.height < 32:
            return 1
        free = self.content_size.height - (workers + 1)  # the table: a header and the rows
        return max(MAX_NOTES, min(MAX_NOTES_TALL, free))

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
        self._set_unit(st.fetched_unit)
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
        # FATAL first, then errors (they need reading), then the other phases, in shard order.
        ordered = sorted(
            st.workers, key=lambda w: (w.state != WorkerState.FATAL, not w.last_error, w.shard)
        )
        notes = [n for w in ordered if (n := worker_note(w)) is not None]
        box = self.query_one("#workers-notes", Static)
        budget = self._notes_budget(len(st.workers))
        box.styles.max_height = budget
        width = box.content_size.width or self.content_size.width or self.app.size.width - 4
        shown = fit_notes(notes, width, budget)
        box.set_class(bool(shown), "-show")
        text = Text("\n", no_wrap=True, overflow="ellipsis").join(shown)
        update_if_changed(box, text if shown else "")
        counts: Counter[str] = Counter(w.state for w in st.workers)
        # Alarming states first, so a narrow title never cuts them off.
        summary = " · ".join(f"{counts[s]} {s}" for s in TITLE_ORDER if counts[s])
        self.border_title = f"Workers {len(st.workers)}" + (f" · {summary}" if summary else "")
