"""The operator console: a Textual app over an already started engine (engine.status.EngineApi).

    app = BackfillApp(engine, keys={"abort": "A"}, refresh_s=1.0)
    run_console(engine, keys, refresh_s) -> exit code   # runs it, restores the terminal on crash

The app renders only what `EngineApi` returns and calls only its actions. Every engine call runs on
a daemon thread (console.data.call_in_thread) from an async Textual worker with
exit_on_error=False, one at a time per source, so a slow query never overlaps itself, a failing one
shows its error in its panel, and input never waits on the engine. Quitting only exits the app; the
caller stops the engine (workers stop cleanly, a rerun resumes from checkpoints).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input

from console.data import (
    DISK,
    DUPLICATES,
    GATES_LOG,
    GRID,
    SOURCES,
    STATUS,
    ConsoleData,
    call_in_thread,
)
from console.screens.confirm import ConfirmScreen
from console.screens.help import HelpScreen
from console.screens.log import LogScreen
from console.screens.shards import MAX_SHARDS, MIN_SHARDS, ShardsScreen
from console.widgets.base import DataView
from console.widgets.errors import ErrorsPanel
from console.widgets.footer import ConsoleFooter
from console.widgets.header import Banner, HeaderBar, HealthStrip
from console.widgets.health import (
    DISK_EVERY_S,
    DUPLICATES_EVERY_S,
    DiskPanel,
    DuplicatesPanel,
    GatesPanel,
    RpcPanel,
)
from console.widgets.progress import ProgressPanel
from console.widgets.workers import WorkersPanel
from engine.status import LIVE_ENGINE_STATES, EngineApi, EngineState, EngineStatus

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ABORTED = 3
GATES_LOG_LINES = 20
FOOTER_PALETTE_MIN_WIDTH = 120
FOOTER_ALL_KEYS_WIDTH = 110  # below it the footer shows the essential keys (ConsoleFooter)
# A heavy store query (duplicates, disk) waits at least this many times its own duration before
# it runs again, so on a big table it never turns into a constant load on the store.
HEAVY_QUERY_SPACING = 10.0
# Engine states in which quitting needs a confirmation (workers would be stopped).
LIVE_STATES = LIVE_ENGINE_STATES

QUIT_TEXT = "Quit? Workers are stopped cleanly; a rerun resumes from checkpoints."
ABORT_TEXT = (
    "Every worker stops after its current chunk. Rows already fetched are flushed to the store, "
    "then checkpoints are written, so checkpoints stay consistent (a day is COMPLETE only once "
    "all of its rows are in). The console exits when the engine has stopped. "
    "A rerun resumes from the checkpoints; nothing is lost or duplicated."
)
OPTIMIZE_TEXT = (
    "OPTIMIZE ... FINAL merges away duplicate rows in finished partitions of the staging "
    "tables, then the small tables. It runs in the background while the backfill continues, "
    "but it rewrites data: expect heavy disk I/O and temporary extra space on big tables. "
    "You are told when it is done."
)
GATE_TEXT = "A gate is failing: pause scaling until diagnosed. Scale anyway?"


@dataclass(frozen=True)
class ActionSpec:
    """One operator action: its binding id (config.toml [keys]), default key, and texts."""

    id: str
    key: str
    action: str
    label: str  # footer
    title: str  # command palette / help
    help: str


ACTION_SPECS: tuple[ActionSpec, ...] = (
    ActionSpec("help", "question_mark", "help", "help", "Help", "show every key binding"),
    ActionSpec(
        "scale_up",
        "plus",
        "scale_up",
        "+1",
        "Scale up",
        "SHARDS + 1 (every worker stops, then all restart)",
    ),
    ActionSpec(
        "scale_down",
        "minus",
        "scale_down",
        "-1",
        "Scale down",
        "SHARDS - 1, never below 1 (every worker stops, then all restart)",
    ),
    ActionSpec(
        "set_shards", "s", "set_shards", "shards", "Set shards", "type a shard count (1..256)"
    ),
    ActionSpec(
        "restart_worker",
        "r",
        "restart_worker",
        "restart",
        "Restart worker",
        "restart the selected worker (its day is redone harmlessly)",
    ),
    ActionSpec(
        "restart_stalled",
        "R",
        "restart_stalled",
        "stalled",
        "Restart stalled",
        "restart every STALLED or FATAL worker",
    ),
    ActionSpec(
        "pause", "p", "pause", "pause", "Pause / resume", "pause or resume fetching (toggle)"
    ),
    ActionSpec(
        "optimize",
        "o",
        "optimize",
        "optimize",
        "Optimize",
        "OPTIMIZE ... FINAL on the staging tables (asks first)",
    ),
    ActionSpec(
        "abort",
        "a",
        "abort",
        "abort",
        "Abort",
        "stop every worker cleanly and exit; a rerun resumes (asks first)",
    ),
    ActionSpec(
        "open_log", "l", "open_log", "log", "Worker log", "open the selected worker's log file"
    ),
    ActionSpec(
        "filter_errors",
        "slash",
        "filter_errors",
        "filter",
        "Filter errors",
        "filter errors by text",
    ),
    ActionSpec(
        "details",
        "d",
        "details",
        "panels",
        "Show panels",
        "narrow terminals: switch between workers and duplicates/gates/RPC/disk",
    ),
    ActionSpec(
        "quit", "q", "request_quit", "quit", "Quit", "quit (asks while running); a rerun resumes"
    ),
)
DEFAULT_KEYS: dict[str, str] = {a.id: a.key for a in ACTION_SPECS}
MAIN_ACTIONS = frozenset(a.action for a in ACTION_SPECS)


def key_display(key: str) -> str:
    """'question_mark' -> '?', 'plus' -> '+', 'ctrl+x' -> 'ctrl+x'."""
    names = {
        "question_mark": "?",
        "plus": "+",
        "minus": "-",
        "slash": "/",
        "space": "space",
        "escape": "esc",
    }
    return ",".join(names.get(k, k) for k in key.split(","))


class BackfillApp(App[str]):
    """Main screen: header, banner, Progress, Workers | Duplicates, Gates, RPC, Disk; Errors
    under both columns."""

    CSS_PATH = "styles.tcss"
    TITLE = "backfill-console"
    HORIZONTAL_BREAKPOINTS = [
        (0, "-narrow"),
        (110, "-wide"),
        (180, "-xwide"),
    ]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS: ClassVar[list[Binding]] = [  # type: ignore[assignment]
        Binding(a.key, a.action, a.label, id=a.id, tooltip=a.help) for a in ACTION_SPECS
    ] + [
        # Textual's own ctrl+q quits at once; here it asks like q does.
        Binding("ctrl+q", "request_quit", "quit", show=False, priority=True, id="quit_ctrl_q"),
    ]

    def __init__(
        self,
        engine: EngineApi,
        keys: Mapping[str, str] | None = None,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.refresh_s = max(0.1, float(refresh_s))
        self.clock = clock
        self.keys = {**DEFAULT_KEYS, **{k: v for k, v in (keys or {}).items() if k in DEFAULT_KEYS}}
        self.set_keymap(self.keys)
        self.data = ConsoleData()
        self.base_intervals = {
            STATUS: self.refresh_s,
            GRID: self.refresh_s,
            GATES_LOG: self.refresh_s,
            DUPLICATES: DUPLICATES_EVERY_S,
            DISK: DISK_EVERY_S,
        }
        self.intervals = self.data.every = dict(self.base_intervals)
        self._inflight: set[str] = set()
        self._last_started: dict[str, float] = {}
        self._seen_messages: list[str] | None = None
        self.aborting = False

    # ---- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        hints = {a.id: key_display(self.keys[a.id]) for a in ACTION_SPECS}
        yield HeaderBar()
        yield Banner(hints)
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield ProgressPanel(id="progress")
                yield WorkersPanel()
                yield HealthStrip(hints)
            with Vertical(id="right"):
                yield DuplicatesPanel()
                yield GatesPanel()
                yield RpcPanel()
                yield DiskPanel()
        # Full width under both columns: an error message is read, not guessed from a cut.
        yield ErrorsPanel()
        yield ConsoleFooter(compact=True, show_command_palette=False)

    def on_resize(self, event: events.Resize) -> None:
        self.fit_footer(event.size.width)

    def fit_footer(self, width: int | None = None) -> None:
        """Show the footer's "^p palette" item only when every key fits beside it (it overlaps
        the keys on narrow terminals); ctrl+p always works and the help screen lists it."""
        w = self.size.width if width is None else width
        wide = w >= FOOTER_PALETTE_MIN_WIDTH
        for footer in self.main_screen.query(Footer):
            if footer.show_command_palette != wide:
                footer.show_command_palette = wide
            if isinstance(footer, ConsoleFooter) and footer.narrow != (w < FOOTER_ALL_KEYS_WIDTH):
                footer.narrow = w < FOOTER_ALL_KEYS_WIDTH

    def on_mount(self) -> None:
        self.query_one("#workers-table").focus()
        self.set_interval(self.refresh_s, self.poll_due)
        self.poll_now()

    @property
    def main_screen(self) -> Screen[Any]:
        return self.screen_stack[0]

    # ---- polling -----------------------------------------------------------------------------
    def poll_due(self) -> None:
        """Start every source whose interval has passed and which is not already running."""
        now = self.clock()
        for source in SOURCES:
            last = self._last_started.get(source)
            if last is None or now - last >= 0.8 * self.intervals[source]:
                self.start_poll(source)
        if STATUS in self._inflight:  # the engine is slow to answer: let the header say so
            self.render_source(STATUS)
        self.fit_footer()  # also after a resize the app did not see (e.g. tmux resize-window)

    def poll_now(self, *sources: str) -> None:
        """Query these sources (default: all) now, unless one is already in flight."""
        for source in sources or SOURCES:
            self.start_poll(source)

    def start_poll(self, source: str) -> None:
        if source in self._inflight:  # coalesced: a slow query never overlaps itself
            return
        self._inflight.add(source)
        self._last_started[source] = self.data.inflight_since[source] = self.clock()
        self.run_worker(
            self._poll(source), name=f"poll-{source}", group=f"poll-{source}", exit_on_error=False
        )

    def _query(self, source: str) -> Callable[[], Any]:
        eng = self.engine
        return {
            STATUS: eng.status,
            GRID: eng.day_grid,
            DUPLICATES: eng.duplicates,
            DISK: eng.disk,
            GATES_LOG: lambda: eng.gates_log_tail(GATES_LOG_LINES),
        }[source]

    async def _poll(self, source: str) -> None:
        started = self.clock()  # the app's clock, so tests with a fixed clock are exact
        try:
            try:
                result = await call_in_thread(self._query(source))
            except Exception as exc:
                self.data.inflight_since.pop(source, None)
                self.data.set_error(source, exc, self.clock())
            else:
                self.data.inflight_since.pop(source, None)
                self.data.set_result(source, result, self.clock())
                if source == STATUS:
                    self._on_status(result)
            if source in (DUPLICATES, DISK):
                took = max(0.0, self.clock() - started)
                self.intervals[source] = max(
                    self.base_intervals[source], round(HEAVY_QUERY_SPACING * took)
                )
            self.render_source(source)
        finally:
            self._inflight.discard(source)
            self.data.inflight_since.pop(source, None)

    def render_source(self, source: str) -> None:
        """Re-render every view that shows this source (a render bug shows in the view)."""
        now = self.clock()
        for widget in self.main_screen.walk_children():
            if isinstance(widget, DataView) and source in widget.SOURCES:
                try:
                    widget.show(self.data, now)
                except Exception as exc:  # keep the console alive; say what broke
                    self.data.set_error(source, exc, now)
                    self.log.error(f"render {type(widget).__name__}: {exc!r}")

    def _on_status(self, st: EngineStatus) -> None:
        if self._seen_messages is not None:
            for msg in _new_messages(self._seen_messages, st.messages):
                self.notify(msg, title="engine", markup=False)
        self._seen_messages = list(st.messages)
        if st.state in (EngineState.ABORTING, EngineState.STOPPED):
            self._set_override(None)
        if st.state == EngineState.STOPPED:
            self.exit(result="aborted" if self.aborting else "stopped", return_code=EXIT_OK)

    def _set_override(self, state: EngineState | None) -> None:
        for w in self.main_screen.query(HeaderBar):
            w.override_state = state
        for b in self.main_screen.query(Banner):
            b.override_state = state
        self.render_source(STATUS)

    # ---- engine actions ----------------------------------------------------------------------
    def call_engine(self, method: str, *args: Any) -> None:
        """Call an engine action off the UI thread; its answer becomes a notification."""
        self.run_worker(
            self._call(method, *args), name=f"action-{method}", group="actions", exit_on_error=False
        )

    async def _call(self, method: str, *args: Any) -> None:
        fn = getattr(self.engine, method)
        try:
            answer = await call_in_thread(fn, *args)
        except Exception as exc:
            self.notify(f"{method} failed: {exc}", title=method, severity="error", markup=False)
        else:
            self.notify(answer.message, title=method.replace("_", " "), markup=False)
        self.poll_now(STATUS, GRID)

    @property
    def status(self) -> EngineStatus | None:
        return self.data.status

    def _need_status(self) -> EngineStatus | None:
        st = self.data.status
        if st is None:
            self.notify("no engine status yet; try again in a moment", severity="warning")
        return st

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Main-screen keys do nothing while a dialog, help or a log is on top.
        if action in MAIN_ACTIONS and len(self.screen_stack) > 1:
            return False
        return True

    def request_scale(self, target: int) -> None:
        """Scale to `target` shards; asks first while any gate fails."""
        st = self._need_status()
        if st is None:
            return
        if target < MIN_SHARDS:
            self.notify(f"SHARDS is already {st.shards}: the minimum is {MIN_SHARDS}")
            return
        if target > MAX_SHARDS:
            self.notify(f"SHARDS is already {st.shards}: the maximum is {MAX_SHARDS}")
            return
        failing = [g for g in st.gates if not g.passed]
        if failing:
            detail = "; ".join(f"{g.name} = {g.value} (needs {g.threshold})" for g in failing)
            self.push_screen(
                ConfirmScreen(
                    "Gate failing",
                    f"{GATE_TEXT}\n\nFailing: {detail}\n\nScale {st.shards} -> {target} shards?",
                    "Scale anyway",
                ),
                lambda ok: self.call_engine("scale", target) if ok else self._cancelled("scale"),
            )
            return
        self.call_engine("scale", target)

    def _cancelled(self, what: str) -> None:
        self.notify(f"{what}: cancelled, nothing was changed")

    def action_scale_up(self) -> None:
        if st := self._need_status():
            self.request_scale(st.shards + 1)

    def action_scale_down(self) -> None:
        if st := self._need_status():
            self.request_scale(st.shards - 1)

    def action_set_shards(self) -> None:
        if st := self._need_status():
            self.push_screen(
                ShardsScreen(st.shards), lambda n: self.request_scale(n) if n else None
            )

    def selected_shard(self) -> int | None:
        shard = self.main_screen.query_one(WorkersPanel).selected_shard()
        if shard is None:
            self.notify("no worker selected (move with the arrow keys)", severity="warning")
        return shard

    def action_restart_worker(self) -> None:
        shard = self.selected_shard()
        if shard is not None:
            self.call_engine("restart_worker", shard)

    def action_restart_stalled(self) -> None:
        self.call_engine("restart_stalled")

    def action_pause(self) -> None:
        st = self._need_status()
        if st is not None:
            self.call_engine("resume" if st.state == EngineState.PAUSED else "pause")

    def action_optimize(self) -> None:
        self.push_screen(
            ConfirmScreen("OPTIMIZE staging tables?", OPTIMIZE_TEXT, "Optimize", danger=False),
            lambda ok: self.call_engine("optimize") if ok else self._cancelled("optimize"),
        )

    def action_abort(self) -> None:
        if self.aborting:
            self.notify("already aborting: the console exits when the engine has stopped")
            return

        def done(ok: bool | None) -> None:
            if not ok:
                self._cancelled("abort")
                return
            self.aborting = True
            self._set_override(EngineState.ABORTING)
            self.call_engine("abort")

        self.push_screen(ConfirmScreen("Abort the backfill?", ABORT_TEXT, "Abort"), done)

    def action_open_log(self) -> None:
        shard = self.selected_shard()
        if shard is None:
            return

        async def open_it() -> None:
            try:
                path = await call_in_thread(self.engine.worker_log_path, shard)
            except Exception as exc:
                self.notify(f"log of shard {shard}: {exc}", severity="error", markup=False)
                return
            self.push_screen(LogScreen(str(path), f"worker-{shard} log"))

        self.run_worker(open_it(), name="open-log", exit_on_error=False)

    def action_filter_errors(self) -> None:
        self.main_screen.remove_class("-details")
        self.main_screen.add_class("-errors")  # small screens show the Errors panel only now
        self.main_screen.query_one(ErrorsPanel).open_filter()

    def action_details(self) -> None:
        screen = self.main_screen
        if not screen.has_class("-narrow"):
            self.notify("every panel is already on screen at this width")
            return
        screen.toggle_class("-details")
        if not screen.has_class("-details"):
            self.query_one("#workers-table").focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_rows()))

    def help_rows(self) -> list[tuple[str, str, str]]:
        """(key as shown, binding id, description) for every binding, as remapped."""
        return [(key_display(self.keys[a.id]), a.id, f"{a.title}: {a.help}") for a in ACTION_SPECS]

    def action_request_quit(self) -> None:
        st = self.data.status
        if st is not None and st.state not in LIVE_STATES:
            self.exit(result="quit", return_code=EXIT_OK)
            return
        self.push_screen(
            ConfirmScreen("Quit backfill-console?", QUIT_TEXT, "Quit"),
            lambda ok: self.exit(result="quit", return_code=EXIT_OK) if ok else None,
        )

    # ---- errors filter input ------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "errors-filter":
            self.main_screen.query_one(ErrorsPanel).close_filter(clear=False)
            self.query_one("#workers-table").focus()

    def on_key(self, event: Any) -> None:
        focused = self.focused
        if event.key == "escape" and focused is not None and focused.id == "errors-filter":
            self.main_screen.query_one(ErrorsPanel).close_filter(clear=True)
            self.main_screen.remove_class("-errors")
            self.query_one("#workers-table").focus()
            event.stop()

    # ---- command palette ---------------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for a in ACTION_SPECS:
            yield SystemCommand(
                f"{a.title} ({key_display(self.keys[a.id])})",
                a.help,
                _action_callback(self, a.action),
            )
        for cmd in super().get_system_commands(screen):
            if cmd.title != "Quit":  # Textual's own Quit skips the confirmation
                yield cmd


def _action_callback(app: BackfillApp, action: str) -> Callable[[], Any]:
    async def run() -> None:
        await app.run_action(action)

    return run


def _new_messages(old: list[str], new: list[str]) -> list[str]:
    """Messages in `new` not already shown: the longest suffix of `old` that starts `new`."""
    for k in range(min(len(old), len(new)), 0, -1):
        if old[-k:] == new[:k]:
            return new[k:]
    return list(new)


# ---- running it --------------------------------------------------------------------------------
_RESET = (
    "\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l"  # mouse reporting off
    "\x1b[?2004l"  # bracketed paste off
    "\x1b[?1004l"  # focus events off
    "\x1b[<u"  # kitty keyboard protocol: pop
    "\x1b[?25h"  # cursor visible
    "\x1b[?1049l"  # leave the alternate screen
)


def _save_tty() -> tuple[int, Any] | None:
    try:
        import termios

        fd = sys.stdin.fileno()
        if not os.isatty(fd):
            return None
        return fd, termios.tcgetattr(fd)
    except Exception:
        return None


def _restore_tty(saved: tuple[int, Any] | None) -> None:
    """Put the terminal back the way it was (after a crash Textual could not clean up)."""
    try:
        out = sys.__stdout__
        if out is not None and out.isatty():
            out.write(_RESET)
            out.flush()
    except Exception:
        pass
    if saved is not None:
        try:
            import termios

            termios.tcsetattr(saved[0], termios.TCSADRAIN, saved[1])
        except Exception:
            pass


def run_console(
    engine: EngineApi, keys: Mapping[str, str] | None = None, refresh_s: float = 1.0
) -> int:
    """Run the console until the operator quits or the engine stops; return an exit code.

    0 quit (or the engine stopped by itself), 3 aborted from the console, 1 the app crashed
    (the terminal is restored and the traceback printed). The caller stops the engine.
    """
    saved = _save_tty()
    app = BackfillApp(engine, keys=keys, refresh_s=refresh_s)
    try:
        result = app.run()
    except BaseException:
        _restore_tty(saved)
        raise
    if app.return_code not in (None, 0):
        _restore_tty(saved)
        return EXIT_FAILED
    st = app.data.status
    if result in ("aborted", "stopped") and st is not None and st.messages:
        print(f"backfill-console: {st.messages[-1]}", flush=True)
    elif result == "quit" and (st is None or st.state in LIVE_STATES):
        print(
            "backfill-console: stopping workers cleanly (each finishes its current chunk); "
            "a rerun resumes from checkpoints…",
            flush=True,
        )
    return EXIT_ABORTED if result == "aborted" else EXIT_OK
