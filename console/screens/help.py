"""The `?` screen: every key binding (as remapped in config.toml [keys]), and what every column
of every panel means, one line each (PANEL_COLUMNS; the Workers lines come from its panel)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from console.widgets.workers import COLUMN_HELP as WORKER_COLUMNS

#: Panel -> (column or figure, what it means). Keep in step with the panels.
PANEL_COLUMNS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Header",
        (
            ("STATE", "starting running paused aborting rebuilding complete stopped"),
            (
                "swapped in / NOT swapped",
                "after the on-complete rebuild: analytics replaced or kept",
            ),
            (
                "SHARDS",
                "worker processes now; '(config N)' when a scale changed it (a rerun uses N)",
            ),
            ("elapsed", "since start; frozen at the end, with the backfill and rebuild times"),
            ("chain / store", "the RPC host(s) (keys masked) and the ClickHouse store"),
        ),
    ),
    (
        "Progress",
        (
            ("days", "COMPLETE (checkpoint written) / total · running · failed (retried) · todo"),
            ("rows/s", "rows received per second over the last 10 s; the sparkline is its history"),
            ("ETA", "from the recent rate of days and rows per shard; none while paused/stalled"),
            ("staged", "rows per table as SQL counts them (distinct keys)"),
            (
                "re-fetched",
                "rows (or raw logs) fetched again after a restart or scale; the store keeps one",
            ),
            ("grid", "one cell per day (or several): done, running, failed, todo"),
        ),
    ),
    ("Workers", WORKER_COLUMNS),
    (
        "Errors",
        (
            (
                "kind",
                "rpc_429 timeout http_5xx conn range_split decode_skip range_failed store ...",
            ),
            ("count / last", "how many this run / how long ago the latest was"),
            ("per shard", "shard:count ('-' = the console itself)"),
            ("last message", "the latest text of that kind (secrets masked)"),
        ),
    ),
    (
        "Duplicates",
        (
            ("raw / unique", "rows stored / distinct natural keys"),
            ("waiting", "raw - unique: duplicates a background merge will remove (harmless)"),
            ("FINAL dup", "duplicates even after FINAL: must be 0"),
        ),
    ),
    (
        "Gates",
        (("gate", "name, value, threshold, pass/FAIL; relaxed while running, strict after"),),
    ),
    (
        "RPC",
        (
            ("url", "endpoint, keys masked ('#n' = position in rpc.urls when two mask alike)"),
            ("req/s", "calls per second now, all workers together"),
            ("429", "rate-limit answers this run"),
            ("p50 / p95", "call latency in ms (median / slowest 5%)"),
            ("range", "blocks per eth_getLogs call now"),
            ("state", "ok, or cool Ns: resting after repeated failures"),
        ),
    ),
    (
        "Disk",
        (
            ("free / ours", "free space of the store's disk / bytes of our tables"),
            (
                "rows / bytes / parts",
                "per table: rows, bytes on disk, data parts (merges lower it)",
            ),
        ),
    ),
)


class HelpScreen(ModalScreen[None]):
    """rows: (key as shown, binding id, what it does)."""

    BINDINGS = [
        Binding("escape", "close", "close", show=False),
        Binding("q", "close", "close", show=False),
        Binding("question_mark", "close", "close", show=False),
    ]

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__(classes="dialog-screen")
        self.rows = rows

    def compose(self) -> ComposeResult:
        keys = Table(box=None, pad_edge=False, padding=(0, 1), expand=True, show_edge=False)
        keys.add_column("key", style="bold cyan", no_wrap=True)
        keys.add_column("id", style="dim", no_wrap=True)
        keys.add_column("action", ratio=1)
        for key, binding_id, text in self.rows:
            keys.add_row(key, binding_id, text)
        keys.add_row("ctrl+p", "", "command palette: every action by name")
        notes = Text.from_markup(
            "[bold]Reading the screen[/]\n"
            "Day grid: [green]█[/] COMPLETE  [yellow]▒[/] in progress  [bold red]✗[/] failed  "
            "[bright_black]·[/] pending  [green]▄[/] cell with some days done (small screens fold "
            "several days into a cell; the worst state wins, so a gap always shows).\n"
            "Heartbeat: [green]green[/] < 60 s, [yellow]yellow[/] older, [bold red]red[/] past "
            "the stall threshold (the supervisor restarts the worker).\n"
            "Worker states: STARTING launched · RUNNING fetching · STALLED no heartbeat past the "
            "limit · BACKOFF waiting to relaunch · STOPPING finishing its chunk · DONE all its "
            "days · FATAL too many restarts (needs you: r) · STOPPED stopped by you or a scale.\n"
            "Duplicates: 'waiting' rows disappear at the next merge; 'FINAL dup' must be 0.\n"
            'Remap keys in config.toml \\[keys] (id = "key"); ctrl+b/a/s and ctrl+enter are '
            "refused. Scaling asks first while a gate fails. docs/OPERATIONS.md is the playbook.",
        )
        columns = Table(box=None, pad_edge=False, padding=(0, 1), expand=True, show_edge=False)
        columns.add_column("panel", style="bold", no_wrap=True)
        columns.add_column("column", style="cyan", no_wrap=True)
        columns.add_column("meaning", ratio=1)
        for panel, rows in PANEL_COLUMNS:
            for i, (name, text) in enumerate(rows):
                columns.add_row(panel if i == 0 else "", name, text)
        body = Group(keys, Text(""), notes, Text(""), Text("Columns", style="bold"), columns)
        with VerticalScroll(classes="dialog", id="help-dialog"):
            yield Static("Keys", classes="dialog-title")
            yield Static(body, classes="dialog-body")
            yield Static("Esc, q or ? closes", classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
