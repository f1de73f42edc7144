"""The real console on a real devchain: keys drive the real engine; the screen works in tmux."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import ROOT, cli, store_query
from tests.support.config import write_config

pytestmark = pytest.mark.slow  # end to end: the app on a real engine: workers, anvil, store; tmux


async def _until(pilot, pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        await pilot.pause(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_keys_scale_optimize_abort_on_real_engine(tmp_path: Path, devchain_cache: Path):
    asyncio.run(_drive_real_engine(tmp_path, devchain_cache))


async def _drive_real_engine(tmp_path: Path, devchain_cache: Path) -> None:
    from console.app import BackfillApp
    from engine.config import load_config
    from engine.runtime import Engine
    from engine.store.panels import duplicates

    # a low request budget keeps it running
    config = write_config(tmp_path, days=12, devchain_state=devchain_cache, shards=2, rps=2.0)
    cfg = load_config(config)
    engine = Engine(cfg, control=False, run_on_complete=False)
    engine.start()
    try:
        app = BackfillApp(engine, keys=dict(cfg.console.keys), refresh_s=0.5)
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: engine.status().workers, 30, "workers")
            await pilot.press("plus")
            await _until(
                pilot,
                lambda: engine.shards == 3 and "scale" not in engine.busy(),
                60,
                "scale 2 -> 3",
            )
            assert {w.shard for w in engine.status().workers} == {0, 1, 2}
            await pilot.press("o")
            await pilot.pause(0.3)
            await pilot.press("y")  # confirm
            await _until(
                pilot, lambda: any("OPTIMIZE done" in m for m in engine.messages), 60, "optimize"
            )
            # rows staged before the abort (the duplicate figures below compare them)
            await _until(
                pilot, lambda: duplicates(engine.store)[0].raw_rows > 0, 120, "rows staged"
            )
            await pilot.press("a")
            await pilot.pause(0.3)
            await pilot.press("y")  # confirm
            await _until(pilot, lambda: engine.state == "stopped", 60, "abort")
            assert engine.exit_reason == "aborted by operator"
        # Workers are gone: the Duplicates panel's kept check equals the whole-table check.
        kept = [
            (d.table, d.raw_rows, d.unique_keys, d.final_duplicates) for d in engine.duplicates()
        ]
        full = [
            (d.table, d.raw_rows, d.unique_keys, d.final_duplicates)
            for d in duplicates(engine.store)
        ]
        assert kept == full and kept[0][1] > 0
    finally:
        engine.stop()
    # Its key index leaves with the engine.
    left = store_query(
        config, "SELECT name FROM system.tables WHERE name LIKE 'duplicate_check_keys%'"
    )
    assert left == []
    log = (tmp_path / "backfill" / "monitor.log").read_text()
    assert "scale 2 -> 3 shards" in log
    assert "(abort)" in log
    done = store_query(
        config, "SELECT count() FROM {db}.backfill_checkpoint FINAL WHERE status='COMPLETE'"
    )
    assert done[0][0] < 12  # aborted before the end; a rerun resumes (tested elsewhere)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_console_in_tmux_shows_the_panels(tmp_path: Path, devchain_cache: Path) -> None:
    config = write_config(tmp_path, days=12, devchain_state=devchain_cache, shards=2, rps=2.0)
    name = f"bfc-test-{tmp_path.name}"[:40]
    # COLUMNS/LINES from the test runner would override the pane size in Textual.
    cmd = f"cd {ROOT} && env -u COLUMNS -u LINES {sys.executable} -m engine.cli --config {config}"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", name, "-x", "120", "-y", "40", cmd], check=True
    )
    try:
        screen = ""
        end = time.monotonic() + 60
        while time.monotonic() < end:
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", name], capture_output=True, text=True
            ).stdout
            if "Workers" in screen and "RUNNING" in screen:
                break
            time.sleep(0.5)
        for panel in ("Progress", "Workers", "Errors", "Duplicates", "Gates", "RPC", "Disk"):
            assert panel in screen, f"{panel} missing:\n{screen}"
        assert "SHARDS 2" in screen and "devchain" in screen
        # The store answers operators' SQL from another shell while the TUI writes to it.
        out = cli("sql", "--config", str(config), "SELECT count() AS w FROM worker_heartbeats")
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.splitlines()[0].strip() == "w" and out.stdout.endswith("(1 row)\n")
        subprocess.run(["tmux", "send-keys", "-t", name, "q"], check=True)
        time.sleep(0.5)
        subprocess.run(["tmux", "send-keys", "-t", name, "y"], check=True)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            alive = subprocess.run(["tmux", "has-session", "-t", name], capture_output=True)
            if alive.returncode != 0:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the console did not quit after q, y")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
    log = (tmp_path / "backfill" / "monitor.log").read_text()
    assert "(console quit)" in log
