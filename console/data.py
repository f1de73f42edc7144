"""What the console knows: the latest answer (or error) of every engine query, and a way to ask.

Engine calls run on short-lived daemon threads awaited from the event loop (`call_in_thread`), so
a slow or hung store query never blocks input, never overlaps itself (the app coalesces per
source) and never holds up quitting: nothing waits for a daemon thread at exit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from engine.status import DiskReport, DuplicateCheck, EngineStatus

T = TypeVar("T")

# Sources the app polls; each panel renders from one or more of them.
STATUS = "status"
GRID = "grid"
DUPLICATES = "duplicates"
DISK = "disk"
GATES_LOG = "gates_log"
SOURCES = (STATUS, GRID, DUPLICATES, DISK, GATES_LOG)


@dataclass
class ConsoleData:
    """Latest successful result per source, its time, and the latest error per source."""

    status: EngineStatus | None = None
    grid: list[str] | None = None
    duplicates: list[DuplicateCheck] | None = None
    disk: DiskReport | None = None
    gates_log: list[str] | None = None
    updated_at: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    error_at: dict[str, float] = field(default_factory=dict)
    inflight_since: dict[str, float] = field(default_factory=dict)  # calls not answered yet
    every: dict[str, float] = field(default_factory=dict)  # current poll interval per source

    def set_result(self, source: str, value: Any, at: float) -> None:
        setattr(self, source, value)
        self.updated_at[source] = at
        self.errors.pop(source, None)
        self.error_at.pop(source, None)

    def set_error(self, source: str, exc: BaseException, at: float) -> None:
        text = " ".join(str(exc).split()) or type(exc).__name__
        self.errors[source] = f"{type(exc).__name__}: {text}"
        self.error_at[source] = at

    def error(self, source: str) -> str | None:
        return self.errors.get(source)

    def waiting_s(self, source: str, now: float) -> float:
        """How long the current call of `source` has been running (0 when none is)."""
        since = self.inflight_since.get(source)
        return 0.0 if since is None else max(0.0, now - since)


def call_in_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run fn(*args) on a new daemon thread; await the returned future on the event loop."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, exc: BaseException | None) -> None:
        if fut.done():  # cancelled while the call ran (e.g. the app is quitting)
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    def target() -> None:
        try:
            value, exc = fn(*args), None
        except BaseException as e:  # delivered to the awaiting coroutine
            value, exc = None, e
        try:
            loop.call_soon_threadsafe(settle, value, exc)
        except RuntimeError:  # the loop is closed: the app has gone, nobody is waiting
            pass

    name = getattr(fn, "__name__", "engine-call")
    threading.Thread(target=target, name=f"console-{name}", daemon=True).start()
    return fut
