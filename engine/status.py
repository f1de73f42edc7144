"""Plain dataclasses describing the engine's live state; the console renders only these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# Worker (shard) states, as in supervisord/circus.
STARTING = "STARTING"
RUNNING = "RUNNING"
STALLED = "STALLED"
BACKOFF = "BACKOFF"
STOPPING = "STOPPING"
DONE = "DONE"
FATAL = "FATAL"
STOPPED = "STOPPED"
WORKER_STATES = (STARTING, RUNNING, STALLED, BACKOFF, STOPPING, DONE, FATAL, STOPPED)

# Day cell states in the progress grid.
DAY_PENDING = "pending"
DAY_RUNNING = "running"
DAY_DONE = "done"
DAY_FAILED = "failed"


@dataclass
class WorkerStatus:
    shard: int
    state: str
    pid: int | None = None
    day: int | None = None
    block_from: int | None = None
    block_to: int | None = None
    phase: str = ""
    heartbeat_age_s: float | None = None
    rows: int = 0
    days_done: int = 0
    days_planned: int = 0
    restarts: int = 0
    last_error: str = ""


#: Share of provider calls spent on eth_getBlockByNumber above which the RPC panel and `ctl
#: status` say so: the day search costs a few dozen a day, a provider whose logs lack
#: blockTimestamp one per block with logs (~40,000 a day on Polygon).
BLOCK_CALLS_NOTE_SHARE = 0.2


def block_calls_note(block_calls: int, provider_calls: int) -> str:
    """ "" or the note saying that block timestamps cost a large share of the calls."""
    if not provider_calls or block_calls < BLOCK_CALLS_NOTE_SHARE * provider_calls:
        return ""
    return (
        f"block calls {block_calls:,} of {provider_calls:,} ({block_calls / provider_calls:.0%}):"
        " logs lack blockTimestamp, each block with logs costs an eth_getBlockByNumber"
    )


@dataclass
class RpcHealth:
    url: str  # masked
    calls: int = 0
    calls_per_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    http_429: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    current_range: int | None = None
    cooling_until: float | None = None  # unix time, None when healthy
    provider_calls: int = 0  # every call of a JSON-RPC batch counted, as providers bill
    block_calls: int = 0  # eth_getBlockByNumber (block timestamps when logs lack them)

    @property
    def block_share(self) -> float:
        """Share of the provider calls spent on eth_getBlockByNumber."""
        return self.block_calls / self.provider_calls if self.provider_calls else 0.0


@dataclass
class ErrorGroup:
    kind: str
    count: int
    last_at: float  # unix time
    last_message: str
    shard: int | None = None


@dataclass
class GateResult:
    name: str
    value: float | None
    threshold: str
    passed: bool
    mode: str  # "relaxed" | "strict"
    checked_at: float


@dataclass
class EngineStatus:
    # "starting" | "running" | "paused" | "aborting" | "rebuilding" | "complete" | "stopped"
    state: str
    chain: str  # "devchain (anvil 127.0.0.1:PORT)" or masked RPC host(s)
    store: str  # "embedded data/clickhouse" or "server host:port"
    shards: int
    shard_ids: list[int]
    started_at: float
    now: float
    days_total: int
    days_complete: int
    days_in_progress: int
    days_failed: int
    rows_staged: dict[str, int]  # table -> rows written by this run's loader + already stored
    rate_history: list[float]  # rows/s samples, oldest first
    rows_per_s: float
    eta_s: float | None  # None = "calculating"
    stall_after_s: float
    workers: list[WorkerStatus]
    rpc: list[RpcHealth]
    errors: list[ErrorGroup]
    gates: list[GateResult]
    messages: list[str] = field(default_factory=list)  # recent operator-facing notices

    @property
    def elapsed_s(self) -> float:
        return max(0.0, self.now - self.started_at)


@dataclass
class DuplicateCheck:
    table: str
    raw_rows: int
    unique_keys: int
    final_duplicates: int  # count() FINAL minus uniqExact FINAL: must be 0


@dataclass
class DiskUsage:
    table: str
    rows: int
    bytes_on_disk: int
    parts: int


@dataclass
class DiskReport:
    tables: list[DiskUsage]
    free_bytes: int | None
    total_bytes: int | None


class EngineApi(Protocol):
    """What the console (and the control socket and headless mode) may call."""

    def status(self) -> EngineStatus: ...
    def day_grid(self) -> list[str]: ...  # one DAY_* per configured day
    def duplicates(self) -> list[DuplicateCheck]: ...
    def disk(self) -> DiskReport: ...
    def gates_log_tail(self, n: int = 20) -> list[str]: ...
    def worker_log_path(self, shard: int) -> str: ...
    def scale(self, shards: int) -> str: ...
    def restart_worker(self, shard: int) -> str: ...
    def restart_stalled(self) -> str: ...
    def pause(self) -> str: ...
    def resume(self) -> str: ...
    def optimize(self) -> str: ...
    def abort(self) -> str: ...
