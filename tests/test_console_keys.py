"""Pilot tests of the console: every key calls the right engine action with the right argument,
confirm dialogs really gate destructive actions, scaling asks while a gate fails, and a failing or
slow panel query neither crashes the app nor freezes input."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from rich.text import Text

from console.app import ACTION_SPECS, GATE_TEXT, BackfillApp, _new_messages
from console.screens.confirm import ConfirmScreen
from console.screens.help import HelpScreen
from console.screens.log import LogScreen
from console.screens.shards import ShardsScreen, check_shards
from console.widgets.progress import cell_states, days_per_cell
from engine.status import DAY_DONE, DAY_FAILED, DAY_PENDING, DAY_RUNNING
from tests.support.app import (
    dialog_text,
    make_app,
    panel_text,
    press,
    run_keys,
    screen_text,
    settle,
    sync,
)
from tests.support.fake_engine import (
    FakeEngine,
    failing_gate_status,
    fatal_status,
    sample_status,
)

ROOT = Path(__file__).resolve().parent.parent


# ---- one key, one action ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (("plus",), [("scale", (13,))]),
        (("minus",), [("scale", (11,))]),
        (("r",), [("restart_worker", (0,))]),
        (("down", "down", "r"), [("restart_worker", (2,))]),
        (("R",), [("restart_stalled", ())]),
        (("p",), [("pause", ())]),
        (("s", "8", "enter"), [("scale", (8,))]),  # the current value is selected: typing replaces
    ],
    ids=["plus", "minus", "r", "r-selected-row", "R", "p", "s-dialog"],
)
@sync
async def test_key_calls_engine_action(keys, expected):
    engine = FakeEngine()
    await run_keys(engine, *keys)
    assert engine.actions() == expected


@sync
async def test_set_shards_dialog_replaces_the_value():
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "s")
        assert isinstance(app.screen, ShardsScreen)
        box = app.screen.query_one("#shards-input")
        assert box.value == "12"  # the current SHARDS, selected: typing replaces it
        box.value = ""
        await press(pilot, "2", "4", "enter")
    assert engine.actions() == [("scale", (24,))]


@sync
async def test_set_shards_rejects_and_explains():
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "s")
        for typed in ("0", "257", "abc", ""):
            box = app.screen.query_one("#shards-input")
            box.value = typed
            await press(pilot, "enter")
            assert isinstance(app.screen, ShardsScreen)  # still open: nothing was sent
            hint = str(app.screen.query_one("#shards-error").render())
            assert hint == check_shards(typed)[1] and hint, typed
        await press(pilot, "escape")
        assert not isinstance(app.screen, ShardsScreen)
    assert engine.actions() == []


def test_check_shards_messages():
    assert check_shards(" 7 ") == (7, "")
    assert check_shards("1") == (1, "")
    assert check_shards("256") == (256, "")
    assert "out of range" in check_shards("0")[1]
    assert "not a whole number" in check_shards("x")[1]


@sync
async def test_pause_toggles_to_resume_when_paused():
    engine = FakeEngine(status=sample_status(state="paused"))
    await run_keys(engine, "p")
    assert engine.actions() == [("resume", ())]


@sync
async def test_scale_down_never_below_one():
    engine = FakeEngine(status=sample_status(shards=1, shard_ids=[0]))
    app = await run_keys(engine, "minus")
    assert engine.actions() == []
    assert any("minimum" in n.message for n in app._notifications)


@sync
async def test_engine_answer_is_notified():
    engine = FakeEngine()
    app = await run_keys(engine, "plus")
    assert any(n.message == "scaling 12 -> 13 shards" for n in app._notifications)


@sync
async def test_remapped_keys():
    engine = FakeEngine()
    await run_keys(engine, "p", "x", "A", keys={"pause": "x", "restart_stalled": "A"})
    assert engine.actions() == [("pause", ()), ("restart_stalled", ())]


@sync
async def test_restart_without_workers_does_nothing():
    engine = FakeEngine(status=sample_status(workers=[]))
    await run_keys(engine, "r", "l")
    assert engine.actions() == []


# ---- confirm dialogs gate destructive actions ----------------------------------------------
@pytest.mark.parametrize("key", ["a", "o"])
@sync
async def test_confirm_cancelled_calls_nothing(key):
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for cancel in ("n", "escape", "enter"):  # enter presses the focused button: Cancel
            await press(pilot, key)
            assert isinstance(app.screen, ConfirmScreen)
            await press(pilot, cancel)
            assert not isinstance(app.screen, ConfirmScreen), cancel
            assert app.is_running
    assert engine.actions() == []


@pytest.mark.parametrize(("key", "method"), [("a", "abort"), ("o", "optimize")])
@sync
async def test_confirm_accepted_calls_action(key, method):
    engine = FakeEngine()
    await run_keys(engine, key, "y")
    assert engine.actions() == [(method, ())]


@sync
async def test_abort_dialog_says_what_happens():
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "a")
        text = dialog_text(app)
        for phrase in ("current chunk", "flushed", "checkpoints stay consistent", "rerun resumes"):
            assert phrase in text, phrase


@sync
async def test_abort_shows_aborting_then_exits_when_stopped():
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "a", "y")
        assert engine.actions() == [("abort", ())]
        assert "ABORTING" in screen_text(app)
        assert app.is_running
        engine.state = replace(engine.state, state="stopped", messages=["abort: done"])
        app.poll_now("status")
        await settle(pilot)
    assert app.return_value == "aborted"


@sync
async def test_quit_asks_while_running():
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "q")
        assert isinstance(app.screen, ConfirmScreen)
        assert "rerun resumes from checkpoints" in dialog_text(app)
        await press(pilot, "n")
        assert app.is_running
        await press(pilot, "ctrl+q")  # Textual's own quit key asks too
        assert isinstance(app.screen, ConfirmScreen)
        await press(pilot, "y")
    assert app.return_value == "quit"
    assert engine.actions() == []  # quitting only exits; the caller stops the engine


@sync
async def test_quit_without_asking_when_complete():
    engine = FakeEngine(status=sample_status(state="complete", days_complete=1048))
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "COMPLETE: all 1,048 days staged" in screen_text(app)
        await press(pilot, "q")
    assert app.return_value == "quit"


# ---- failing gate: scaling asks first ------------------------------------------------------
@pytest.mark.parametrize(("key", "target"), [("plus", 13), ("minus", 11)])
@sync
async def test_scaling_while_gate_fails_asks(key, target):
    engine = FakeEngine(status=failing_gate_status())
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, key)
        assert isinstance(app.screen, ConfirmScreen)
        assert GATE_TEXT in dialog_text(app)
        await press(pilot, "n")
        assert engine.actions() == []
        await press(pilot, key, "y")
    assert engine.actions() == [("scale", (target,))]


@sync
async def test_set_shards_while_gate_fails_asks():
    engine = FakeEngine(status=failing_gate_status())
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "s")
        app.screen.query_one("#shards-input").value = "4"
        await press(pilot, "enter")
        assert isinstance(app.screen, ConfirmScreen)
        await press(pilot, "escape")
    assert engine.actions() == []


# ---- log, filter, help, palette ---------------------------------------------------------------
@sync
async def test_open_log_follows_and_filters(tmp_path):
    log = tmp_path / "worker-2.log"
    log.write_text("start shard 2\nday 602 fetch 0-400\nrpc_429 retry in 2s\n")
    engine = FakeEngine(log_dir=tmp_path)
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "down", "down", "l")
        assert engine.actions() == [("worker_log_path", (2,))]
        assert isinstance(app.screen, LogScreen)
        assert "day 602 fetch" in screen_text(app)
        with log.open("a") as fh:
            fh.write("day 602 done rows=1234\n")
        await pilot.pause(0.7)  # one poll of the file
        await pilot.pause()
        assert "day 602 done rows=1234" in screen_text(app)
        await press(pilot, "slash", "4", "2", "9")
        text = screen_text(app)
        assert "rpc_429 retry" in text and "start shard 2" not in text
        await press(pilot, "escape", "escape")
        assert not isinstance(app.screen, LogScreen)


@sync
async def test_filter_errors():
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "range_split" in screen_text(app)
        await press(pilot, "slash", "4", "2", "9")
        text = screen_text(app)
        assert "rpc_429" in text and "range_split" not in text
        await press(pilot, "enter")  # keeps the filter, back to the workers
        assert "range_split" not in screen_text(app)
        await press(pilot, "p")  # keys work again
        await press(pilot, "slash", "escape")  # Esc clears
        assert "range_split" in screen_text(app)
    assert engine.actions() == [("pause", ())]


@sync
async def test_help_lists_every_binding_as_remapped():
    engine = FakeEngine()
    app = make_app(engine, keys={"abort": "A"})
    async with app.run_test(size=(120, 50)) as pilot:
        await settle(pilot)
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for spec in ACTION_SPECS:
            assert spec.id in text, spec.id
        rows = dict((i, k) for k, i, _ in app.help_rows())
        assert rows["abort"] == "A" and rows["help"] == "?" and rows["scale_up"] == "+"
        await press(pilot, "a")  # main keys are inert while help is open
        assert engine.actions() == []
        await press(pilot, "escape")
        assert not isinstance(app.screen, HelpScreen)


@sync
async def test_command_palette_lists_every_action():
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for spec in ACTION_SPECS:
            assert any(t.startswith(spec.title) for t in titles), spec.title
        assert "Quit" not in titles  # Textual's unconfirmed quit is replaced by ours
        cmd = next(c for c in app.get_system_commands(app.screen) if c.title.startswith("Pause"))
        await cmd.callback()
        await settle(pilot)
    assert engine.actions() == [("pause", ())]


def test_every_binding_has_an_id_and_avoids_taken_keys():
    ids = [s.id for s in ACTION_SPECS]
    assert len(ids) == len(set(ids))
    for binding in BackfillApp.BINDINGS:
        assert binding.id, binding
        assert binding.key not in ("ctrl+b", "ctrl+a", "ctrl+s", "ctrl+enter")
    for required in (
        "scale_up scale_down set_shards restart_worker restart_stalled optimize pause abort "
        "open_log filter_errors help quit"
    ).split():
        assert required in ids


# ---- robustness --------------------------------------------------------------------------------
@sync
async def test_failing_query_shows_error_and_app_keeps_running():
    engine = FakeEngine()
    engine.fail["disk"] = RuntimeError("Code: 241. DB::Exception: MEMORY_LIMIT_EXCEEDED")
    engine.fail["duplicates"] = TimeoutError("read timed out")
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        disk = panel_text(app, "#disk")
        assert "disk query failed" in disk and "MEMORY_LIMIT_EXCEEDED" in disk
        dups = panel_text(app, "#duplicates")
        assert "check failed" in dups and "read timed out" in dups
        assert app.is_running
        await press(pilot, "p")
        assert engine.actions() == [("pause", ())]
        # Recovery: the next successful query replaces the error.
        del engine.fail["disk"]
        app.poll_now("disk")
        await settle(pilot)
        assert "disk query failed" not in screen_text(app)


@sync
async def test_failing_status_and_action_keep_the_app_alive():
    engine = FakeEngine()
    engine.fail["status"] = ConnectionError("engine lock timeout")
    engine.fail["pause"] = RuntimeError("supervisor gone")
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "engine status unavailable" in screen_text(app)
        del engine.fail["status"]
        app.poll_now("status")
        await settle(pilot)
        await press(pilot, "p")
        assert app.is_running
        assert any("supervisor gone" in n.message for n in app._notifications)


@sync
async def test_slow_query_is_coalesced_and_input_stays_live():
    engine = FakeEngine()
    release = threading.Event()
    engine.gate["duplicates"] = release
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        for _ in range(5):
            app.poll_now("duplicates")
            await pilot.pause()
        assert engine.count("duplicates") == 1  # never overlaps itself
        await pilot.press("p")
        for _ in range(50):  # the slow query does not hold up the action
            if engine.actions():
                break
            await pilot.pause(0.02)
        assert engine.actions() == [("pause", ())]
        release.set()
        await settle(pilot)
        app.poll_now("duplicates")
        await settle(pilot)
        assert engine.count("duplicates") == 2


@sync
async def test_hung_engine_is_shown_and_does_not_block_quit():
    engine = FakeEngine()
    hang = threading.Event()
    now = [1000.0]
    app = BackfillApp(engine, refresh_s=1.0, clock=lambda: now[0])
    app.animation_level = "none"
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        engine.gate["status"] = hang  # the engine stops answering (e.g. a lock held)
        app.poll_now("status")
        await pilot.pause()
        now[0] += 9.0
        app.poll_due()
        await pilot.pause()
        assert "engine busy, status 9s old" in screen_text(app)
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
    assert app.return_value == "quit"  # quitting did not wait for the hung call
    hang.set()


@sync
async def test_heavy_queries_run_less_often():
    engine = FakeEngine()
    now = [1000.0]
    app = BackfillApp(engine, refresh_s=1.0, clock=lambda: now[0])
    app.animation_level = "none"
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for _ in range(11):
            now[0] += 1.0
            app.poll_due()
            await settle(pilot)
    assert engine.count("status") == 12
    assert engine.count("duplicates") == 1  # about every 15 s
    assert engine.count("disk") == 2  # about every 10 s


@sync
async def test_small_and_large_sizes_render():
    engine = FakeEngine(status=fatal_status())
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for size in ((80, 24), (40, 10), (20, 6), (110, 30), (200, 50), (60, 16)):
            await pilot.resize_terminal(*size)
            await settle(pilot)
            await press(pilot, "d", "d")  # the narrow-screen panel switch, both ways
            assert app.is_running, size
            assert screen_text(app).strip(), size


@sync
async def test_narrow_details_switch_shows_the_other_panels():
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "Duplicates" not in screen_text(app)
        await press(pilot, "d")
        text = screen_text(app)
        assert "Duplicates" in text and "Workers" not in text
        await press(pilot, "d", "r")
    assert engine.actions() == [("restart_worker", (0,))]


@sync
async def test_new_engine_messages_become_notifications():
    engine = FakeEngine(status=sample_status(messages=["old notice"]))
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        engine.state = replace(engine.state, messages=["old notice", "OPTIMIZE done: 3 parts"])
        app.poll_now("status")
        await settle(pilot)
    shown = [n.message for n in app._notifications]
    assert "OPTIMIZE done: 3 parts" in shown and "old notice" not in shown


def test_new_messages():
    assert _new_messages([], ["a"]) == ["a"]
    assert _new_messages(["a", "b"], ["a", "b", "c"]) == ["c"]
    assert _new_messages(["a", "b", "c"], ["b", "c", "d"]) == ["d"]  # bounded list rolled
    assert _new_messages(["a"], ["a"]) == []


def test_day_grid_folding_never_hides_a_gap():
    assert days_per_cell(1048, 116, 10) == 1
    assert days_per_cell(1048, 76, 3) == 5
    grid = [DAY_DONE] * 4 + [DAY_PENDING] + [DAY_DONE] * 5 + [DAY_FAILED] + [DAY_RUNNING]
    assert cell_states(grid, 5) == ["partial", DAY_DONE, DAY_FAILED]
    assert cell_states(grid, 1) == grid


def test_boundaries_engine_never_imports_textual_console_has_no_sql():
    code = (
        "import sys, engine.status, engine.store.panels, engine.runtime, engine.cli,"
        " engine.supervisor;"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    for path in (ROOT / "console").rglob("*.py"):
        text = path.read_text()
        for word in ("SELECT ", "INSERT ", "OPTIMIZE TABLE", "subprocess", "psutil", "os.kill"):
            assert word not in text, f"{path}: {word}"


@sync
async def test_workers_columns_widen_when_their_text_grows():
    """Day 9 -> 10 done of 131: the days cell reads 10/131, never a clipped 10/13."""
    workers = [replace(w, days_done=9, days_planned=131, day=99) for w in sample_status().workers]
    engine = FakeEngine(status=sample_status(workers=workers))
    app = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "9/131" in panel_text(app, "#workers")
        grown = [replace(w, days_done=10, day=100) for w in workers]
        grown[0] = replace(grown[0], days_done=100)
        engine.state = replace(engine.state, workers=grown)
        app.poll_now("status")
        await settle(pilot)
        text = panel_text(app, "#workers")
    assert "100/131" in text and "10/131" in text
    assert " 100 " in text  # the day column too


def test_worker_notes_fit_their_lines_errors_whole_first() -> None:
    """Notes wrap whole while lines last; a note that cannot is cut on its last line with an
    ellipsis, each later note keeps a line; more notes than lines end in '+N more'."""
    from console.widgets.workers import fit_notes

    long = Text("7 exited 1 five times in 600s: ConnectionRefusedError to https://x.example/***")
    short = Text("5 finding blocks")
    assert [t.plain for t in fit_notes([long, short], 40, 4)] == [
        "7 exited 1 five times in 600s:",
        "ConnectionRefusedError to",
        "https://x.example/***",
        "5 finding blocks",
    ]
    cut = [t.plain for t in fit_notes([long, short], 40, 3)]
    assert cut[0] == "7 exited 1 five times in 600s:"
    assert cut[1].endswith("…") and len(cut[1]) <= 40
    assert cut[2] == "5 finding blocks"
    three = [long, short, Text("2 waiting for final blocks")]
    assert [t.plain for t in fit_notes(three, 40, 2)][1] == (
        "+2 more: ctl status lists every worker"
    )
    assert fit_notes([], 40, 3) == []


@pytest.mark.parametrize(
    ("state", "phase", "error", "note"),
    [
        ("RUNNING", "range", "", " 3 finding blocks"),
        ("STALLED", "retry", "", " 3 retrying"),
        ("DONE", "range", "", None),  # its last heartbeat's phase is over
        ("FATAL", "range", "exit 1", " 3 exit 1"),
        ("RUNNING", "fetch", "", None),
    ],
)
def test_worker_notes_say_a_phase_only_while_a_process_works_on_it(
    state: str, phase: str, error: str, note: str | None
) -> None:
    from console.widgets.workers import worker_note
    from engine.status import WorkerStatus

    got = worker_note(WorkerStatus(shard=3, state=state, phase=phase, last_error=error))
    assert (None if got is None else got.plain) == note
