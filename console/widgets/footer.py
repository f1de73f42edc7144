"""The key footer: every binding on wide terminals, the essential ones on narrow ones.

At 80 columns Textual's footer cannot show every key on one line; the ones left out here are in
the help screen (?), the command palette (ctrl+p) and the banner's hints when they matter.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

#: Actions whose keys the narrow footer leaves out.
NARROW_HIDDEN = frozenset({"restart_stalled", "optimize", "open_log", "filter_errors"})


class ConsoleFooter(Footer):
    """Footer that drops NARROW_HIDDEN keys while `narrow`."""

    narrow: reactive[bool] = reactive(False, recompose=True)

    def compose(self) -> ComposeResult:
        kept = [
            w
            for w in super().compose()
            if not (self.narrow and isinstance(w, FooterKey) and w.action in NARROW_HIDDEN)
        ]
        self.styles.grid_size_columns = max(1, len(kept))
        yield from kept
