"""Right-hand panels: Duplicates, Gates, RPC health and Disk."""

from __future__ import annotations

import re

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from console import fmt
from console.data import DISK, DUPLICATES, GATES_LOG, STATUS, ConsoleData
from console.widgets.base import (
    ALARM,
    BAD,
    MUTED,
    OK,
    WARN,
    Panel,
    error_text,
    pack,
    update_if_changed,
)
from engine.status import RpcHealth, block_calls_note

DUPLICATES_EVERY_S = 15.0
DISK_EVERY_S = 10.0
PARTS_WARN = 300  # ClickHouse slows inserts near 1000 active parts per partition
PARTS_BAD = 1000
FREE_WARN = 0.15
FREE_BAD = 0.05
DISK_ROWS = 6  # largest tables shown; the rest are summed on one line


def _table() -> Table:
    return Table(box=None, expand=True, pad_edge=False, padding=(0, 1), show_edge=False)


class _BodyPanel(Panel):
    """A panel with one Static body."""

    def compose(self) -> ComposeResult:
        yield Static("", classes="body")

    def body(self, renderable: object) -> None:
        update_if_changed(self.query_one(".body", Static), renderable)


def _checked(updated: float | None, now: float, every: float) -> str:
    if updated is None:
        return f"every {every:.0f}s"
    return f"checked {fmt.age(now - updated)} ago · every {every:.0f}s"


class DuplicatesPanel(_BodyPanel):
    """Raw rows vs unique keys without FINAL (waiting for a merge) and the FINAL check (0)."""

    SOURCES = (DUPLICATES, STATUS)  # STATUS: keeps "checked N s ago" current
    TITLE = "Duplicates"

    def __init__(self) -> None:
        super().__init__(id="duplicates")

    def show(self, data: ConsoleData, now: float) -> None:
        every = data.every.get(DUPLICATES, DUPLICATES_EVERY_S)
        self.border_subtitle = _checked(data.updated_at.get(DUPLICATES), now, every)
        parts: list[RenderableType] = []
        if data.error(DUPLICATES):
            parts.append(
                error_text("check", data.errors[DUPLICATES], data.error_at.get(DUPLICATES), now)
            )
        if data.duplicates is None:
            if not parts:
                parts.append(Text("checking… (the first check can take a moment)", style=MUTED))
            self.body(Group(*parts))
            return
        t = _table()
        t.add_column("table", no_wrap=True)
        t.add_column("raw", justify="right", no_wrap=True)
        t.add_column("unique", justify="right", no_wrap=True)
        t.add_column("waiting", justify="right", no_wrap=True)
        t.add_column("FINAL dup", justify="right", no_wrap=True)
        bad = False
        for c in data.duplicates:
            waiting = max(0, c.raw_rows - c.unique_keys)
            final = (
                Text("0 ok", style=OK)
                if c.final_duplicates == 0
                else Text(f"{c.final_duplicates:,}", style=ALARM)
            )
            bad = bad or c.final_duplicates != 0
            t.add_row(
                fmt.table_name(c.table),
                fmt.short(c.raw_rows),
                fmt.short(c.unique_keys),
                Text(fmt.short(waiting), style=WARN if waiting else MUTED),
                final,
            )
        parts.insert(0, t)
        if bad:
            parts.append(
                Text("FINAL must show 0 duplicates: stop and diagnose (OPERATIONS.md)", style=BAD)
            )
        else:
            parts.append(Text("waiting = duplicates a background merge will remove", style=MUTED))
        self.body(Group(*parts))


class GatesPanel(_BodyPanel):
    """Latest result of each gate (value, threshold, pass/fail) and the gates.log tail."""

    SOURCES = (STATUS, GATES_LOG)
    TITLE = "Gates"

    def __init__(self) -> None:
        super().__init__(id="gates")

    def show(self, data: ConsoleData, now: float) -> None:
        st = data.status
        parts: list[RenderableType] = []
        gates = st.gates if st is not None else []
        if not gates:
            parts.append(Text("no gate has run yet", style=MUTED))
            self.border_title = "Gates"
        else:
            failing = sum(1 for g in gates if not g.passed)
            self.border_title = f"Gates · {failing} FAILING" if failing else "Gates · all pass"
            # Failing gates first; one line each (a failing one may wrap so it can be read).
            for g in sorted(gates, key=lambda g: (g.passed, g.name)):
                line = Text(no_wrap=g.passed, overflow="ellipsis")
                line.append_text(Text("PASS", style=OK) if g.passed else Text("FAIL", style=ALARM))
                line.append(f" {g.name}", style="bold")
                line.append(" = " + ("-" if g.value is None else f"{g.value:,.6g}"))
                # The bound first, its description ("of USDC volume") last: a cut line keeps
                # the number that decides (every gate's detail is in gates.log).
                bound, _, what = g.threshold.partition(" of ")
                line.append(f"  needs {bound}", style=MUTED)
                line.append(f"  {g.mode} {fmt.age(now - g.checked_at)} ago", style=MUTED)
                if what:
                    line.append(f"  (of {what})", style=MUTED)
                parts.append(line)
        if data.error(GATES_LOG):
            parts.append(
                error_text("gates.log", data.errors[GATES_LOG], data.error_at.get(GATES_LOG), now)
            )
        elif data.gates_log:
            parts.append(Text("gates.log", style="bold"))
            for entry in data.gates_log:
                parts.append(Text(entry, style=MUTED, no_wrap=True, overflow="ellipsis"))
        elif data.gates_log is not None:
            parts.append(Text("gates.log is empty", style=MUTED))
        self.body(Group(*parts))


#: "<masked url> #N": the runtime tags URLs that mask alike with their position in rpc.urls.
_URL_TAG = re.compile(r"^(?P<url>.*) #(?P<n>\d+)$")


def _url_cell(label: str) -> Text:
    """The URL without its scheme; a position tag goes first so an ellipsis cannot hide it."""
    m = _URL_TAG.match(label)
    tag, url = (f"#{m['n']} ", m["url"]) if m else ("", label)
    text = Text(tag, style="bold", no_wrap=True, overflow="ellipsis")
    text.append(url.removeprefix("https://").removeprefix("http://"))
    return text


#: The RPC panel's figure columns, after the URL.
RPC_COLUMNS = ("req/s", "429", "p50", "p95", "range", "state")


def rpc_figures(h: RpcHealth, now: float) -> list[Text]:
    """One URL's figures, in RPC_COLUMNS order."""
    cooling = h.cooling_until is not None and h.cooling_until > now
    state = (
        Text(f"cool {fmt.age(h.cooling_until - now)}", style=WARN)
        if cooling and h.cooling_until is not None
        else Text("ok", style=OK)
    )
    return [
        Text(f"{h.calls_per_s:.1f}"),
        Text(fmt.num(h.http_429), style=WARN if h.http_429 else MUTED),
        Text("-" if h.p50_ms is None else f"{h.p50_ms:.0f}"),
        Text("-" if h.p95_ms is None else f"{h.p95_ms:.0f}"),
        Text(fmt.short(h.current_range)),
        state,
    ]


def _figures_line(cells: list[Text], widths: list[int], width: int) -> Text:
    """Cells right-aligned in their columns (the last, state, left-aligned), flush right."""
    line = Text(no_wrap=True, overflow="ellipsis")
    for i, (cell, w) in enumerate(zip(cells, widths, strict=True)):
        pad = " " * (w - cell.cell_len)
        line.append(" ")
        if i == len(cells) - 1:
            line.append_text(cell)
            line.append(pad)
        else:
            line.append(pad)
            line.append_text(cell)
    out = Text(" " * max(0, width - line.cell_len), no_wrap=True, overflow="ellipsis")
    out.append_text(line)
    return out


class RpcPanel(_BodyPanel):
    """Per URL (masked): requests/s, 429s, p50/p95 latency, current block range, cooling down."""

    SOURCES = (STATUS,)
    TITLE = "RPC"

    def __init__(self) -> None:
        super().__init__(id="rpc")

    def show(self, data: ConsoleData, now: float) -> None:
        st = data.status
        if st is None or not st.rpc:
            self.border_subtitle = ""
            self.body(Text("no RPC calls reported yet", style=MUTED))
            return
        self.border_subtitle = "p50/p95 in ms · range in blocks"
        blocks = sum(h.block_calls for h in st.rpc)
        billed = sum(h.provider_calls for h in st.rpc)
        if block_calls_note(blocks, billed):
            # Logs without blockTimestamp: a timestamp call per block with logs.
            self.border_subtitle = f"block calls {blocks / billed:.0%} of calls · no blockTimestamp"
        rows = [(_url_cell(h.url), rpc_figures(h, st.now)) for h in st.rpc]
        # Each figure column as wide as its widest cell, one space before each.
        widths = [
            max(len(name), *(cells[i].cell_len for _, cells in rows))
            for i, name in enumerate(RPC_COLUMNS)
        ]
        figures = sum(widths) + len(widths)
        width = self.content_size.width or max(20, self.size.width - 4)
        if max(url.cell_len for url, _ in rows) <= width - figures:
            t = Table(box=None, expand=True, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False)
            t.add_column("url", no_wrap=True, overflow="ellipsis", ratio=1)
            for name in RPC_COLUMNS:
                t.add_column(name, justify="left" if name == "state" else "right", no_wrap=True)
            for url, cells in rows:
                t.add_row(url, *cells)
            self.body(t)
            return
        # A URL longer than its column: each URL whole on a line of its own (masked), its
        # figures on the next line under the column names.
        lines = [_figures_line([Text(n, style="bold") for n in RPC_COLUMNS], widths, width)]
        for url, cells in rows:
            lines += [url, _figures_line(cells, widths, width)]
        self.body(Text("\n").join(lines))


class DiskPanel(_BodyPanel):
    """Free space (system.disks) first, then bytes and active parts per table (system.parts)."""

    SOURCES = (DISK, STATUS)
    TITLE = "Disk"

    def __init__(self) -> None:
        super().__init__(id="disk")

    def show(self, data: ConsoleData, now: float) -> None:
        every = data.every.get(DISK, DISK_EVERY_S)
        self.border_subtitle = _checked(data.updated_at.get(DISK), now, every)
        if data.status is not None and data.status.store:
            width = max(10, self.size.width - 12) if self.size.width else 60
            self.border_title = f"Disk · {fmt.elide_path(data.status.store, width)}"
        parts: list[RenderableType] = []
        st = data.status
        if st is not None and st.disk_full:
            parts.append(
                Text(
                    "DISK FULL: the store cannot write; fetching paused until space returns: "
                    + st.disk_full,
                    style=BAD,
                )
            )
        if data.error(DISK):
            parts.append(error_text("disk query", data.errors[DISK], data.error_at.get(DISK), now))
        rep = data.disk
        if rep is None:
            if not parts:
                parts.append(Text("reading system.parts…", style=MUTED))
            self.body(Group(*parts))
            return
        free = Text("free ", style=MUTED, no_wrap=True, overflow="ellipsis")
        if rep.free_bytes is None:
            free.append("unknown", style=MUTED)
        else:
            share = rep.free_bytes / rep.total_bytes if rep.total_bytes else None
            style = OK
            if share is not None and share < FREE_BAD:
                style = BAD
            elif share is not None and share < FREE_WARN:
                style = WARN
            free.append(fmt.size(rep.free_bytes), style=style)
            if rep.total_bytes:
                free.append(f" of {fmt.size(rep.total_bytes)} ({100 * (share or 0):.0f}%)")
        ours = Text("ours ", style=MUTED)
        ours.append(fmt.size(sum(u.bytes_on_disk for u in rep.tables)), style="bold")
        # Our size goes to a line of its own rather than being cut when both do not fit.
        width = self.content_size.width or max(20, self.size.width - 4)
        parts.insert(0, pack([free, ours], width, sep=" · "))
        t = _table()
        t.add_column("table", no_wrap=True, overflow="ellipsis", ratio=1)
        t.add_column("rows", justify="right", no_wrap=True)
        t.add_column("bytes", justify="right", no_wrap=True)
        t.add_column("parts", justify="right", no_wrap=True)
        for u in rep.tables[:DISK_ROWS]:
            style = BAD if u.parts >= PARTS_BAD else WARN if u.parts >= PARTS_WARN else ""
            t.add_row(
                fmt.table_name(u.table),
                fmt.short(u.rows),
                fmt.size(u.bytes_on_disk),
                Text(str(u.parts), style=style),
            )
        rest = rep.tables[DISK_ROWS:]
        if rest:
            t.add_row(
                Text(f"+{len(rest)} more", style=MUTED),
                Text(fmt.short(sum(u.rows for u in rest)), style=MUTED),
                Text(fmt.size(sum(u.bytes_on_disk for u in rest)), style=MUTED),
                Text(str(sum(u.parts for u in rest)), style=MUTED),
            )
        parts.append(t)
        self.body(Group(*parts))
