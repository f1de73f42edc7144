"""Workers panel: one keyed DataTable row per shard, updated cell by cell."""

from __future__ import annotations

from collections import Counter

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable

from console import fmt
from console.data import STATUS, ConsoleData
from console.widgets.base import BAD, MUTED, OK, STATE_STYLES, WARN, Panel
from engine.status import WORKER_STATES, Phase, WorkerStatus

COLUMNS = (
    ("shard", "#"),
    ("state", "state"),
    ("pid", "pid"),
    ("day", "day"),
    ("hb", "hb"),
    ("rows", "rows"),
    ("days", "days"),
    ("restarts", "rst"),
    ("error", "doing · last error"),
)
ERROR_WIDTH = 60
QUIET_PHASES = ("", Phase.FETCH)
# What a worker's phase (from its heartbeat) means, in the operator's words.
PHASE_LABELS = {
    Phase.START: "starting",
    Phase.RANGE: "finding blocks",
    Phase.RETRY: "retrying",
    Phase.RETRY_WAIT: "waiting to retry the day",
    Phase.WAIT_FINAL: "waiting for final blocks",
    Phase.PAUSED: "paused",
}
FRESH_HEARTBEAT_S = 60.0


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


def worker_cells(w: WorkerStatus, stall_after_s: float) -> dict[str, object]:
    """The row of one worker, by column key."""
    day = Text("-" if w.day is None else str(w.day), justify="right")
    # The worker's phase (retry, wait_final, paused) leads the last column: it explains a slow
    # heartbeat before the error does.
    note = Text(no_wrap=True)
    if w.phase not in QUIET_PHASES:
        label = PHASE_LABELS.get(w.phase, w.phase)
        note.append(f"[{label}] ", style=WARN if w.phase == Phase.RETRY else MUTED)
    if w.last_restart:
        # Why the latest automatic restart happened (the rst column counts them).
        note.append(f"[restarted: {fmt.clip(w.last_restart, 30)}] ", style=WARN)
    note.append(fmt.clip(w.last_error, ERROR_WIDTH), style="red")
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
        "error": note,
    }


class WorkersPanel(Panel):
    """Shard, state (coloured), pid, day, heartbeat age, rows, days, restarts, last error."""

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

    @property
    def table(self) -> DataTable[object]:
        return self.query_one("#workers-table", DataTable)

    def selected_shard(self) -> int | None:
        """The shard of the row under the cursor, if any."""
        table = self.table
        if table.row_count == 0:
            return None
        row = max(0, min(table.cursor_row, table.row_count - 1))
        key = table.coordinate_to_cell_key((row, 0)).row_key
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
                        # Widen a column when its text grows (day 99 -> 100, 9/131 -> 10/131);
                        # the last column also shrinks back when an error clears.
                        grows = _width(value) > _width(prev)
                        table.update_cell(
                            str(w.shard), key, value, update_width=grows or key == "error"
                        )
            self._cells[w.shard] = cells
        for shard in [s for s in self._cells if s not in seen]:
            table.remove_row(str(shard))
            del self._cells[shard]
        if added:
            table.sort("shard")
        counts = Counter(w.state for w in st.workers)
        summary = " · ".join(f"{counts[s]} {s}" for s in WORKER_STATES if counts[s])
        self.border_title = f"Workers {len(st.workers)}" + (f" · {summary}" if summary else "")
