"""The console under test: the app on a fake engine, and pilot helpers to drive and read it.

Shared by the key tests and the SVG snapshots (one `make_app`, one `settle`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from textual.pilot import Pilot
from textual.widgets import Static

from console.app import BackfillApp
from tests.support.fake_engine import FakeEngine, fixed_clock

T = TypeVar("T")


def sync(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async test on its own event loop (no pytest-asyncio needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def make_app(engine: FakeEngine | None = None, **kw: Any) -> BackfillApp:
    """The console on a fake engine: fixed clock, no periodic refresh (an hour), no animations."""
    app = BackfillApp(
        engine or FakeEngine(), refresh_s=kw.pop("refresh_s", 3600.0), clock=fixed_clock, **kw
    )
    app.animation_level = "none"
    return app


async def settle(pilot: Pilot) -> None:
    """Wait until every poll started so far has rendered."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def press(pilot: Pilot, *keys: str) -> None:
    """Press `keys` one at a time, settling after each."""
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


def screen_text(app: BackfillApp) -> str:
    """The text of the screen on top, one line per row."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def panel_text(app: BackfillApp, selector: str) -> str:
    """The words inside one widget's content region, lines joined."""
    region = app.screen.query_one(selector).content_region
    lines = screen_text(app).split("\n")[region.y : region.bottom]
    return " ".join(" ".join(ln[region.x : region.right] for ln in lines).split())


def dialog_text(app: BackfillApp) -> str:
    """The words of the dialog on top, unwrapped."""
    return " ".join(" ".join(str(w.render()) for w in app.screen.query(Static)).split())


async def run_keys(
    engine: FakeEngine, *keys: str, size: tuple[int, int] = (120, 40), **kw: Any
) -> BackfillApp:
    """Run the app on `engine`, press `keys`, and return the app after it has exited."""
    app = make_app(engine, **kw)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await press(pilot, *keys)
    return app
