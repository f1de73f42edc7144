"""The `s` dialog: type a shard count (1..256); invalid input is explained, never sent."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widgets import Input, Static

MIN_SHARDS = 1
MAX_SHARDS = 256


def check_shards(text: str) -> tuple[int | None, str]:
    """(count, "") for a valid shard count, else (None, an explanation for the operator)."""
    raw = text.strip()
    if not raw:
        return None, f"Type the number of shards, a whole number from {MIN_SHARDS} to {MAX_SHARDS}."
    try:
        n = int(raw)
    except ValueError:
        return None, f"'{raw}' is not a whole number: type digits only, e.g. 8."
    if not MIN_SHARDS <= n <= MAX_SHARDS:
        return None, (
            f"{n} is out of range: SHARDS must be {MIN_SHARDS}..{MAX_SHARDS} "
            "(each shard is one worker process)."
        )
    return n, ""


class ShardCount(Validator):
    def validate(self, value: str) -> ValidationResult:
        n, why = check_shards(value)
        return self.success() if n is not None else self.failure(why)


class ShardsScreen(ModalScreen[int | None]):
    """Dismisses with the new shard count, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "cancel", show=False)]

    def __init__(self, current: int) -> None:
        super().__init__(classes="dialog-screen")
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="shards-dialog"):
            yield Static("Set SHARDS", classes="dialog-title")
            yield Static(
                f"Current SHARDS: {self.current}. Changing it is not a rolling restart: every "
                "worker finishes its current chunk and stops, then all start again with the new "
                "SHARDS (fetching pauses for a few seconds). Rows already inserted stay, COMPLETE "
                "days are skipped, a half-done day is redone harmlessly. A rerun goes back to "
                "the config's backfill.shards.",
                classes="dialog-body",
            )
            yield Input(
                value=str(self.current),
                placeholder=f"{MIN_SHARDS}..{MAX_SHARDS}",
                validators=[ShardCount()],
                validate_on=["changed", "submitted"],
                id="shards-input",
            )
            yield Static("Enter applies · Esc cancels", id="shards-error", classes="dialog-hint")

    def on_mount(self) -> None:
        box = self.query_one(Input)
        box.cursor_blink = False
        box.focus()

    @on(Input.Changed, "#shards-input")
    def _changed(self, event: Input.Changed) -> None:
        _, why = check_shards(event.value)
        hint = self.query_one("#shards-error", Static)
        hint.update(why or "Enter applies · Esc cancels")
        hint.set_class(bool(why), "-error")

    @on(Input.Submitted, "#shards-input")
    def _submitted(self, event: Input.Submitted) -> None:
        n, why = check_shards(event.value)
        if n is None:
            hint = self.query_one("#shards-error", Static)
            hint.update(why)
            hint.add_class("-error")
            return
        self.dismiss(n)

    def action_cancel(self) -> None:
        self.dismiss(None)
