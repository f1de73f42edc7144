"""The `?` screen: every key binding (as remapped in config.toml [keys]), how to read panels."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


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
            "Duplicates: 'waiting' rows disappear at the next merge; 'FINAL dup' must be 0.\n"
            'Remap keys in config.toml \\[keys] (id = "key"); ctrl+b/a/s and ctrl+enter are '
            "refused. Scaling asks first while a gate fails. docs/OPERATIONS.md is the playbook.",
        )
        with VerticalScroll(classes="dialog", id="help-dialog"):
            yield Static("Keys", classes="dialog-title")
            yield Static(Group(keys, Text(""), notes), classes="dialog-body")
            yield Static("Esc, q or ? closes", classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
