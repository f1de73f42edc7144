"""Panel base class and shared styles: a bordered box that renders from ConsoleData."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import Vertical
from textual.widgets import Static

from console import fmt
from console.data import ConsoleData
from engine.status import EngineState, WorkerState

# Rich styles used across panels (plain colour names: readable in 16- and 256-colour tmux too).
OK = "green"
WARN = "yellow"
BAD = "bold red"
ALARM = "bold white on red"
MUTED = "dim"

STATE_STYLES = {
    WorkerState.STARTING: "cyan",
    WorkerState.RUNNING: "green",
    WorkerState.STALLED: "bold yellow",
    WorkerState.BACKOFF: "yellow",
    WorkerState.STOPPING: "magenta",
    WorkerState.DONE: "blue",
    WorkerState.FATAL: ALARM,
    WorkerState.STOPPED: MUTED,
}
ENGINE_STATE_STYLES = {
    EngineState.STARTING: "bold cyan",
    EngineState.RUNNING: "bold green",
    EngineState.PAUSED: "bold black on yellow",
    EngineState.ABORTING: ALARM,
    EngineState.STOPPED: ALARM,
    EngineState.COMPLETE: "bold black on green",
    EngineState.REBUILDING: "bold cyan",
}


class DataView:
    """Mixin for widgets that render ConsoleData; the app calls show() when a SOURCE changes."""

    SOURCES: ClassVar[tuple[str, ...]] = ()

    def show(self, data: ConsoleData, now: float) -> None:
        """Render the latest data (called on the UI thread after a source changed)."""


class Panel(DataView, Vertical):
    """A titled box on the main screen. Subclasses list the data SOURCES they render."""

    TITLE: ClassVar[str] = ""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = self.TITLE


def pack(items: list[Text], width: int, sep: str = "  ") -> Text:
    """Items on as few lines as fit `width`, never split inside an item (0: one line)."""
    out = Text(no_wrap=True, overflow="ellipsis")
    used = 0
    for item in items:
        if used and width > 0 and used + len(sep) + item.cell_len > width:
            out.append("\n")
            used = 0
        elif used:
            out.append(sep)
            used += len(sep)
        out.append_text(item)
        used += item.cell_len
    return out


def error_text(what: str, message: str, at: float | None, now: float) -> Text:
    """'<what> failed 3s ago: <message>' in red, for a panel whose query raised."""
    when = f" {fmt.age(now - at)} ago" if at is not None else ""
    t = Text(f"{what} failed{when}: ", style=BAD)
    t.append(message, style="red")
    return t


def signature(renderable: object) -> object:
    """A cheap, comparable fingerprint of what a renderable will show (Text, Table, Group, str)."""
    if isinstance(renderable, str):
        return renderable
    if isinstance(renderable, Text):
        return (renderable.plain, tuple(map(str, renderable.spans)), str(renderable.style))
    if isinstance(renderable, Table):
        return tuple(
            (c.header if isinstance(c.header, str) else str(c.header),)
            + tuple(signature(cell) for cell in c._cells)
            for c in renderable.columns
        )
    if isinstance(renderable, Group):
        return tuple(signature(r) for r in renderable.renderables)
    return id(renderable)  # unknown: always different


def update_if_changed(widget: Static, renderable: object) -> None:
    """Static.update only when the content differs: no repaint for an unchanged panel."""
    sig = signature(renderable)
    if getattr(widget, "_console_signature", None) == sig:
        return
    widget._console_signature = sig  # type: ignore[attr-defined]
    widget.update(renderable)  # type: ignore[arg-type]
