"""A worker's log file: scrollable, follows new lines (f toggles), filters by text (/)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, Log, Static

TAIL_BYTES = 512 * 1024  # read this much of an existing log when the screen opens
READ_CHUNK = 1024 * 1024  # at most this much new text per poll
KEEP_LINES = 20_000
POLL_S = 0.5


class LogScreen(Screen[None]):
    """Follows `path` like `tail -f`; the log may not exist yet, be truncated or rotated."""

    BINDINGS = [
        Binding("escape", "close", "close"),
        Binding("f", "toggle_follow", "follow on/off"),
        Binding("slash", "filter", "filter"),
        Binding("q", "close", "close", show=False),
    ]

    def __init__(self, path: str, title: str) -> None:
        super().__init__()
        self.path = Path(path)
        self.log_title = title
        self.buffer: deque[str] = deque(maxlen=KEEP_LINES)
        self.read_offset = 0
        self.partial = ""
        self.follow = True
        self.text_filter = ""

    def compose(self) -> ComposeResult:
        yield Static("", id="log-header")
        yield Input(placeholder="filter lines by text (Enter keeps, Esc clears)", id="log-filter")
        yield Log(highlight=False, max_lines=KEEP_LINES, auto_scroll=True, id="log-view")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#log-filter", Input).display = False
        self._poll(initial=True)
        self.set_interval(POLL_S, self._poll)
        self.query_one(Log).focus()

    def _header(self) -> None:
        state = "following" if self.follow else "paused (f follows)"
        filt = f" · filter '{self.text_filter}'" if self.text_filter else ""
        exists = "" if self.path.exists() else " · not created yet, waiting"
        self.query_one("#log-header", Static).update(
            f" {self.log_title}  {self.path}  ·  {len(self.buffer):,} lines · {state}{filt}{exists}"
        )

    def _read_new(self, initial: bool) -> list[str]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.read_offset:  # truncated or replaced: start over
            self.read_offset, self.partial = 0, ""
            self.buffer.clear()
            self.query_one(Log).clear()
        if initial and size > TAIL_BYTES:
            self.read_offset = size - TAIL_BYTES
        if size == self.read_offset:
            return []
        with self.path.open("rb") as fh:
            fh.seek(self.read_offset)
            chunk = fh.read(READ_CHUNK)
        first_partial = initial and self.read_offset > 0
        self.read_offset += len(chunk)
        text = self.partial + chunk.decode("utf-8", errors="replace")
        pieces = text.split("\n")
        self.partial = pieces.pop()
        if first_partial and pieces:
            pieces = pieces[1:]  # the first line of a tail read is cut
        return pieces

    def _matches(self, line: str) -> bool:
        return not self.text_filter or self.text_filter.lower() in line.lower()

    def _poll(self, initial: bool = False) -> None:
        new = self._read_new(initial)
        if new:
            self.buffer.extend(new)
            shown = [ln for ln in new if self._matches(ln)]
            if shown:
                self.query_one(Log).write_lines(shown, scroll_end=self.follow)
        self._header()

    def _rewrite(self) -> None:
        view = self.query_one(Log)
        view.clear()
        view.write_lines([ln for ln in self.buffer if self._matches(ln)], scroll_end=self.follow)
        self._header()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        view = self.query_one(Log)
        view.auto_scroll = self.follow
        if self.follow:
            view.scroll_end(animate=False)
        self._header()

    def action_filter(self) -> None:
        box = self.query_one("#log-filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#log-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.text_filter = event.value
        self._rewrite()

    @on(Input.Submitted, "#log-filter")
    def _filter_submitted(self) -> None:
        self.query_one(Log).focus()

    def action_close(self) -> None:
        box = self.query_one("#log-filter", Input)
        if box.has_focus:  # Esc in the filter clears it first
            box.value = ""
            box.display = False
            self.query_one(Log).focus()
            return
        self.dismiss(None)
