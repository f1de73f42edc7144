"""Progress panel: days COMPLETE, rows per table, rows/s sparkline, ETA and the per-day grid."""

from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.geometry import Size
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from console import fmt
from console.data import GRID, STATUS, ConsoleData
from console.widgets.base import (
    BAD,
    MUTED,
    OK,
    WARN,
    Panel,
    error_text,
    pack,
    update_if_changed,
)
from engine.status import (
    DAY_DONE,
    DAY_FAILED,
    DAY_PENDING,
    DAY_RUNNING,
    EngineState,
    EngineStatus,
    refetched_words,
)

PARTIAL = "partial"  # a cell of several days, some COMPLETE and some not
# Glyph and style per cell state; glyphs differ so the grid reads without colour too.
CELL = {
    DAY_DONE: ("█", "green"),
    PARTIAL: ("▄", "green"),
    DAY_RUNNING: ("▒", "yellow"),
    DAY_FAILED: ("✗", "bold red"),
    DAY_PENDING: ("·", "bright_black"),
}
# When a cell holds several days, the most alarming state wins, so a gap is never hidden.
RANK = {DAY_FAILED: 4, DAY_RUNNING: 3, DAY_PENDING: 2, DAY_DONE: 0}
TABLE_ORDER = (
    "erc20_transfers_staging",
    "erc1155_transfers_staging",
    "condition_resolutions",
    "token_registrations",
)


def max_grid_rows(screen_height: int) -> int:
    """Grid rows allowed for a terminal height: small screens keep room for the workers."""
    if screen_height < 32:
        return 1
    if screen_height < 45:
        return 6
    return 10


def days_per_cell(n_days: int, width: int, max_rows: int) -> int:
    """Fewest days per cell so the grid fits width x max_rows."""
    if n_days <= 0 or width <= 0:
        return 1
    return max(1, math.ceil(n_days / (width * max(1, max_rows))))


def cell_states(grid: list[str], per_cell: int) -> list[str]:
    """Fold consecutive days into cells (worst state wins; done + not done = partial)."""
    out: list[str] = []
    for i in range(0, len(grid), per_cell):
        chunk = grid[i : i + per_cell]
        worst = max(chunk, key=lambda s: RANK.get(s, 2))
        if worst == DAY_PENDING and DAY_DONE in chunk:
            worst = PARTIAL
        out.append(worst)
    return out


def legend(per_cell: int) -> str:
    """The Progress panel title: glyph legend and the cell size (Textual content markup)."""
    unit = "1 day/cell" if per_cell == 1 else f"{per_cell} days/cell"
    parts = "[green]█[/]done [yellow]▒[/]run [bold red]✗[/]fail [bright_black]·[/]todo"
    if per_cell > 1:
        parts += " [green]▄[/]part"
    return f"Progress  {parts}  {unit}"


class DayGrid(Widget):
    """One glyph per day (or per few days on small screens), wrapping to the panel width."""

    DEFAULT_CSS = "DayGrid { height: auto; }"

    def __init__(self) -> None:
        super().__init__(id="day-grid")
        self.grid: list[str] = []

    def set_grid(self, grid: list[str]) -> None:
        if grid == self.grid:
            return
        resized = len(grid) != len(self.grid)
        self.grid = list(grid)
        self.refresh(layout=resized)

    def per_cell(self, width: int | None = None) -> int:
        w = self.size.width if width is None else width
        return days_per_cell(len(self.grid), w, max_grid_rows(self.app.size.height))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if not self.grid or width <= 0:
            return 1
        cells = math.ceil(len(self.grid) / self.per_cell(width))
        return max(1, min(math.ceil(cells / width), max_grid_rows(self.app.size.height)))

    def render(self) -> Text:
        width = self.size.width
        if not self.grid:
            return Text("day grid: waiting for the engine…", style=MUTED)
        if width <= 0:
            return Text("")
        cells = cell_states(self.grid, self.per_cell(width))
        out = Text(no_wrap=True, overflow="crop")
        for row in range(0, len(cells), width):
            if row:
                out.append("\n")
            for state in cells[row : row + width]:
                glyph, style = CELL.get(state, CELL[DAY_PENDING])
                out.append(glyph, style=style)
        return out

    def on_resize(self) -> None:
        if isinstance(self.parent, Panel):
            self.parent.border_title = legend(self.per_cell())


class ProgressPanel(Panel):
    """Days COMPLETE/total and %, rows staged per table, rows/s sparkline, ETA, day grid."""

    SOURCES = (STATUS, GRID)
    TITLE = "Progress"

    def compose(self) -> ComposeResult:
        yield Static("", id="p-days")
        with Horizontal(id="p-rate"):
            yield Static("", id="p-rps")
            yield Sparkline([0.0], id="p-spark")
            yield Static("", id="p-eta")
        yield Static("", id="p-rows")
        yield DayGrid()

    def show(self, data: ConsoleData, now: float) -> None:
        st = data.status
        grid_widget = self.query_one(DayGrid)
        if data.grid is not None:
            grid_widget.set_grid(data.grid)
        self.border_title = legend(grid_widget.per_cell())
        if data.error(GRID):
            self.border_subtitle = f"day grid failed: {data.error(GRID)}"
        else:
            self.border_subtitle = ""
        if st is None:
            if data.error(STATUS):
                update_if_changed(
                    self.query_one("#p-days", Static),
                    error_text("status", data.errors[STATUS], data.error_at.get(STATUS), now),
                )
            return
        width = self._line_width()
        pct = 100.0 * st.days_complete / st.days_total if st.days_total else 0.0
        pending = max(0, st.days_total - st.days_complete - st.days_in_progress - st.days_failed)
        head = Text()
        head.append("days ", style=MUTED)
        head.append(f"{st.days_complete:,}/{st.days_total:,}", style="bold")
        head.append(" COMPLETE ", style=MUTED)
        head.append(
            f"{pct:.1f}%", style="bold green" if st.days_complete == st.days_total else "bold"
        )
        items = [
            head,
            Text(f"· {st.days_in_progress:,} running", style="yellow"),
            Text(f"· {st.days_failed:,} failed", style=BAD if st.days_failed else MUTED),
            Text(f"· {pending:,} todo", style=MUTED),
        ]
        update_if_changed(self.query_one("#p-days", Static), pack(items, width, sep=" "))

        rps = Text(no_wrap=True)
        rps.append(f"{fmt.num(round(st.rows_per_s))}", style="bold")
        rps.append(" rows/s ", style=MUTED)
        update_if_changed(self.query_one("#p-rps", Static), rps)
        spark = self.query_one(Sparkline)
        history = list(st.rate_history[-120:]) or [0.0]
        if spark.data != history:
            spark.data = history
        update_if_changed(self.query_one("#p-eta", Static), eta_text(st))

        names = [n for n in TABLE_ORDER if n in st.rows_staged]
        names += sorted(n for n in st.rows_staged if n not in TABLE_ORDER)
        cells = [Text("staged", style=MUTED)]
        for name in names:
            t = Text()
            t.append(f"{fmt.table_name(name)} ", style=MUTED)
            t.append(fmt.num(st.rows_staged[name]), style="bold")
            cells.append(t)
        refetched = refetched_words(st.rows_refetched)
        if refetched:
            t = Text()
            t.append(f"re-fetched {refetched}", style=WARN)
            t.append(" (kept once)", style=MUTED)
            cells.append(t)
        update_if_changed(self.query_one("#p-rows", Static), pack(cells, width))

    def _line_width(self) -> int:
        """Width of a text line inside the panel (before the first layout: the screen's)."""
        w = self.content_size.width
        return w if w > 0 else max(20, self.app.size.width - 4)

    def on_resize(self) -> None:
        app = self.app
        data = getattr(app, "data", None)
        if isinstance(data, ConsoleData):
            self.show(data, data.status.now if data.status is not None else 0.0)


def eta_text(st: EngineStatus) -> Text:
    """' ETA 1:02:03', ' ETA done', or no ETA and why (paused, stalled, calculating)."""
    eta = Text(no_wrap=True)
    eta.append(" ETA ", style=MUTED)
    if st.state == EngineState.REBUILDING and st.rebuild is not None:
        eta.append("rebuild ", style=MUTED)
        eta.append(st.rebuild.summary(st.now), style="bold")
    elif st.state == EngineState.COMPLETE or (st.days_total and st.days_complete == st.days_total):
        eta.append("done", style=OK)
    elif st.stalled:
        eta.append("none: STALLED (see the header)", style=BAD)
    elif st.state == EngineState.PAUSED:
        eta.append("none while paused", style=WARN)
    elif st.eta_s is None:
        eta.append(st.eta_note or "calculating", style=WARN if st.eta_note else MUTED)
    else:
        eta.append(fmt.duration(st.eta_s), style="bold")
    return eta
