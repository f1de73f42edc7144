"""Errors panel: worker errors grouped by kind (counts, last occurrence, per shard), filterable."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import Input, Static

from console import fmt
from console.data import STATUS, ConsoleData
from console.widgets.base import MUTED, WARN, Panel, update_if_changed
from engine.status import ErrorGroup


@dataclass
class KindSummary:
    kind: str
    count: int = 0
    last_at: float = 0.0
    last_message: str = ""
    per_shard: dict[int | None, int] = field(default_factory=dict)


def group_by_kind(groups: list[ErrorGroup], text_filter: str = "") -> list[KindSummary]:
    """Fold the engine's (kind, shard) groups into one line per kind, most recent first."""
    needle = text_filter.strip().lower()
    kinds: dict[str, KindSummary] = {}
    for g in groups:
        if needle:
            hay = f"{g.kind} {g.last_message} shard {g.shard}".lower()
            if needle not in hay:
                continue
        k = kinds.setdefault(g.kind, KindSummary(g.kind))
        k.count += g.count
        k.per_shard[g.shard] = k.per_shard.get(g.shard, 0) + g.count
        if g.last_at >= k.last_at:
            k.last_at = g.last_at
            k.last_message = g.last_message
    return sorted(kinds.values(), key=lambda k: (-k.last_at, k.kind))


def shards_text(per_shard: dict[int | None, int]) -> str:
    parts = [
        f"{'-' if s is None else s}:{n}"
        for s, n in sorted(per_shard.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
    ]
    return " ".join(parts)


class ErrorsPanel(Panel):
    """Grouped errors; `/` opens a text filter (Enter keeps it, Escape clears it)."""

    SOURCES = (STATUS,)
    TITLE = "Errors"

    def __init__(self) -> None:
        super().__init__(id="errors")
        self.text_filter = ""
        self._data: ConsoleData | None = None
        self._now = 0.0

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="filter errors by text (Enter keeps, Esc clears)", id="errors-filter"
        )
        yield Static("", id="errors-body")

    def open_filter(self) -> None:
        box = self.query_one("#errors-filter", Input)
        box.add_class("-show")
        box.focus()

    def close_filter(self, clear: bool) -> None:
        box = self.query_one("#errors-filter", Input)
        if clear:
            box.value = ""
            self.text_filter = ""
            self._refresh_body()
        box.remove_class("-show")

    @on(Input.Changed, "#errors-filter")
    def _changed(self, event: Input.Changed) -> None:
        self.text_filter = event.value
        self._refresh_body()

    def show(self, data: ConsoleData, now: float) -> None:
        self._data, self._now = data, now
        self._refresh_body()

    def _refresh_body(self) -> None:
        body = self.query_one("#errors-body", Static)
        st = self._data.status if self._data else None
        if st is None:
            update_if_changed(body, Text("waiting for the engine…", style=MUTED))
            return
        kinds = group_by_kind(st.errors, self.text_filter)
        total = sum(g.count for g in st.errors)
        title = f"Errors {total:,}" if total else "Errors"
        if self.text_filter:
            title += f" · filter '{self.text_filter}': {len(kinds)} kind(s)"
        self.border_title = title
        if not kinds:
            msg = "no errors" if not self.text_filter else "no error matches the filter"
            update_if_changed(body, Text(msg, style="green" if not self.text_filter else MUTED))
            return
        table = Table(box=None, expand=True, pad_edge=False, padding=(0, 1), show_edge=False)
        table.add_column("kind", style="bold", no_wrap=True)
        table.add_column("count", justify="right", no_wrap=True)
        table.add_column("last", justify="right", no_wrap=True)
        table.add_column("per shard", no_wrap=True, overflow="ellipsis", max_width=24)
        # The message wraps (the panel is full width): an error is read whole, not guessed.
        table.add_column("last message", overflow="fold", ratio=1)
        for k in kinds:
            table.add_row(
                k.kind,
                Text(fmt.num(k.count), style=WARN),
                fmt.age(st.now - k.last_at) + " ago",
                shards_text(k.per_shard),
                Text(" ".join(k.last_message.split()), style="red"),
            )
        update_if_changed(body, table)
