"""Rows of `worker_heartbeats` that tell SQL the truth.

The operator's playbook reads `now() - updated_at` per worker ("a live worker silent for 5 min is
stalled"). So a row's `updated_at` is the time of that worker's last real heartbeat (a message from
the process), never the time the console wrote it; its `state` is the worker's real state,
DONE, STOPPED, FATAL and BACKOFF included; a shard that no longer exists after a scale is `GONE`.
A row is written when its heartbeat or state changed, not re-stamped at every flush.

`HeartbeatBook` keeps the latest row per worker and hands out the changed ones (`take()`), each
with its own `updated_at`; the loader writes them as they are.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, replace

GONE = "GONE"  # a shard scaled away: no worker will report for it again
#: States with no live worker: the playbook's stall check skips them.
NOT_LIVE = ("DONE", "STOPPED", GONE)


def stamp(unix: float) -> str:
    """updated_at text (DateTime('UTC'), whole seconds)."""
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Beat:
    shard: int
    shards: int
    pid: int
    state: str
    day: int
    block_from: int
    block_to: int
    rows: int
    last_batch: str
    last_error: str
    at: float  # unix time of the worker's last real heartbeat

    def row(self) -> list[object]:
        """In engine.store.loader.HEARTBEAT_COLUMNS order, updated_at last."""
        return [
            f"shard-{self.shard}",
            self.shard,
            self.shards,
            self.pid,
            self.state,
            self.day,
            self.block_from,
            self.block_to,
            self.rows,
            self.last_batch,
            self.last_error[:200],
            stamp(self.at),
        ]


class HeartbeatBook:
    """Latest heartbeat row per shard; `take()` returns the rows changed since the last take."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.beats: dict[int, Beat] = {}
        self.dirty: set[int] = set()

    def beat(self, beat: Beat) -> None:
        """A real heartbeat from the worker process (its time is `beat.at`)."""
        with self.lock:
            self.beats[beat.shard] = beat
            self.dirty.add(beat.shard)

    def state(
        self, shard: int, shards: int, state: str, pid: int | None, now: float, error: str = ""
    ) -> None:
        """The supervisor's view of the shard; updated_at stays the last real heartbeat's."""
        with self.lock:
            old = self.beats.get(shard)
            if old is None:
                new = Beat(shard, shards, pid or 0, state, -1, 0, 0, 0, "", error, now)
            else:
                new = replace(
                    old,
                    state=state,
                    pid=pid or 0,
                    shards=shards,
                    last_error=error or old.last_error,
                )
            if new != old:
                self.beats[shard] = new
                self.dirty.add(shard)

    def gone(self, keep: set[int], note: str) -> None:
        """Shards outside `keep` were scaled away: GONE, with `note` as their last error."""
        with self.lock:
            for shard, b in list(self.beats.items()):
                if shard not in keep and b.state != GONE:
                    self.beats[shard] = replace(b, state=GONE, last_error=note)
                    self.dirty.add(shard)

    def take(self) -> list[list[object]]:
        with self.lock:
            rows = [self.beats[s].row() for s in sorted(self.dirty) if s in self.beats]
            self.dirty.clear()
            return rows

    def put_back(self, rows: list[list[object]]) -> None:
        """A failed write: those shards are written again next time."""
        with self.lock:
            for r in rows:
                self.dirty.add(int(str(r[0]).removeprefix("shard-")))
