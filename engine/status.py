"""Plain dataclasses describing the engine's live state; the console renders only these."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class WorkerState(StrEnum):
    """A worker (shard) process's state, as in supervisord/circus."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STALLED = "STALLED"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    DONE = "DONE"
    FATAL = "FATAL"
    STOPPED = "STOPPED"


# Short names of the worker states (the same members).
STARTING = WorkerState.STARTING
RUNNING = WorkerState.RUNNING
STALLED = WorkerState.STALLED
BACKOFF = WorkerState.BACKOFF
STOPPING = WorkerState.STOPPING
DONE = WorkerState.DONE
FATAL = WorkerState.FATAL
STOPPED = WorkerState.STOPPED
WORKER_STATES = tuple(WorkerState)


class Phase(StrEnum):
    """What a worker is doing, as its heartbeats say."""

    START = "start"
    RANGE = "range"  # finding the day's blocks
    FETCH = "fetch"
    PAUSED = "paused"
    RETRY = "retry"  # the RPC pool waits before retrying a request
    RETRY_WAIT = "retry_wait"  # waiting to retry a failed day
    WAIT_FINAL = "wait_final"  # the day is not final yet
    DAY_FAILED = "day_failed"


class EngineState(StrEnum):
    """The console's state (EngineStatus.state)."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    ABORTING = "aborting"
    REBUILDING = "rebuilding"
    COMPLETE = "complete"
    STOPPED = "stopped"


#: States in which the console has live workers or work in hand.
LIVE_ENGINE_STATES = (
    EngineState.STARTING,
    EngineState.RUNNING,
    EngineState.PAUSED,
    EngineState.REBUILDING,
    EngineState.ABORTING,
)


class ExitReason(StrEnum):
    """Why the engine stopped on its own (Engine.exit_reason); "" while it has not."""

    NONE = ""
    ABORTED = "aborted by operator"


@dataclass(frozen=True)
class ActionResult:
    """What an operator action answers: whether it was accepted, and the operator's message."""

    ok: bool
    message: str

    def __str__(self) -> str:
        return self.message


# Day cell states in the progress grid.
DAY_PENDING = "pending"
DAY_RUNNING = "running"
DAY_DONE = "done"
DAY_FAILED = "failed"


@dataclass
class WorkerStatus:
    shard: int
    state: WorkerState
    pid: int | None = None
    day: int | None = None
    block_from: int | None = None
    block_to: int | None = None
    phase: Phase | str = ""  # "" before the first heartbeat
    heartbeat_age_s: float | None = None
    #: What it fetched this run, in EngineStatus.fetched_unit: decoded rows, or raw logs.
    rows: int = 0
    days_done: int = 0
    days_planned: int = 0
    restarts: int = 0
    last_error: str = ""
    last_restart: str = ""  # why the latest automatic restart happened


#: EngineStatus.fetched_unit when workers send raw eth_getLogs logs for the store to decode: the
#: Workers panel's count and the re-fetched figure are logs then, not rows (one TransferBatch log
#: becomes a row per token id; an ERC721-shaped Transfer none).
RAW_LOGS = "logs"
#: The key of RunBook's re-fetched figure for raw logs (the others are staging table names).
REFETCHED_LOGS_KEY = "logs"


def refetched_words(refetched: dict[str, int]) -> str:
    """'2,423,325 rows', '81,200 raw logs', both joined by ' + ', or '' when nothing was
    re-fetched: what attempts interrupted by a restart or scale had fetched, in its own unit."""
    logs = refetched.get(REFETCHED_LOGS_KEY, 0)
    rows = sum(n for t, n in refetched.items() if t != REFETCHED_LOGS_KEY)
    parts = [f"{rows:,} rows"] if rows else []
    if logs:
        parts.append(f"{logs:,} raw logs")
    return " + ".join(parts)


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
    #: Unix time since which every live worker's calls to this URL failed (None: it answers).
    failing_since: float | None = None
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
class RebuildProgress:
    """Where a rebuild (or gate build) is: day-range chunks done / total, rows, an ETA."""

    phase: str  # "token_outcomes" | "chunks" | "finish" | "hard_gate" | "done"
    chunks_done: int
    chunks_total: int
    rows_done: int  # staged rows of the chunks done
    rows_total: int
    started_at: float  # unix time
    eta_s: float | None  # seconds left in the chunks; None = "calculating"

    def summary(self, now: float) -> str:
        """One line for the TUI and `ctl status`, e.g. `chunks 12/33 (36%) ETA 4m10s, 2m05s in`."""
        elapsed = _dur(max(0.0, now - self.started_at))
        if self.phase == "chunks":
            pct = 100 * self.rows_done / self.rows_total if self.rows_total else 0.0
            eta = "calculating" if self.eta_s is None else _dur(self.eta_s)
            return (
                f"chunks {self.chunks_done}/{self.chunks_total} ({pct:.0f}% of rows) "
                f"ETA {eta}, {elapsed} in"
            )
        names = {
            "token_outcomes": "token ids",
            "finish": f"chunks {self.chunks_done}/{self.chunks_total} done; wallet PnL",
            "hard_gate": f"chunks {self.chunks_done}/{self.chunks_total} done; hard gate",
            "done": f"built ({self.chunks_total} chunks)",
        }
        return f"{names.get(self.phase, self.phase)}, {elapsed} in"

    def as_dict(self, now: float) -> dict[str, object]:
        """The `ctl status --json` form (`rebuild` key)."""
        return {
            "phase": self.phase,
            "chunks_done": self.chunks_done,
            "chunks_total": self.chunks_total,
            "rows_done": self.rows_done,
            "rows_total": self.rows_total,
            "eta_s": None if self.eta_s is None else round(self.eta_s),
            "elapsed_s": round(max(0.0, now - self.started_at)),
            "summary": self.summary(now),
        }


def _dur(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


@dataclass
class EngineStatus:
    state: EngineState
    chain: str  # "devchain (anvil 127.0.0.1:PORT)" or masked RPC host(s)
    store: str  # "local 127.0.0.1:port" or "server host:port"
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
    rebuild: RebuildProgress | None = None  # the running (or last) on-complete rebuild
    #: Why no remaining shard can make progress ("" while one can): shown as "STALLED: <why>".
    stalled: str = ""
    #: The store's write error while its disk is full ("" otherwise); fetching is paused meanwhile.
    disk_full: str = ""
    # Rows received again after a restart or scale (the store keeps them once: staged rows
    # above are what SQL counts; these are extra work, not extra rows).
    rows_refetched: dict[str, int] = field(default_factory=dict)
    #: What WorkerStatus.rows and the "logs" key of rows_refetched count: "rows" (workers
    #: decode) or RAW_LOGS (workers send raw logs, the store decodes them into rows).
    fetched_unit: str = "rows"
    eta_note: str = ""  # why there is no ETA ("paused", "stalled: shard 3", "calculating")
    config_shards: int = 0  # backfill.shards of the config (a rerun goes back to it); 0 unknown
    finished_at: float | None = None  # unix time the run ended: elapsed stops there
    outcome: RunOutcome | None = None  # the on-complete rebuild: running, swapped in or not

    @property
    def elapsed_s(self) -> float:
        end = self.now if self.finished_at is None else self.finished_at
        return max(0.0, end - self.started_at)


@dataclass
class RunOutcome:
    """What the on-complete rebuild did, for the end screen."""

    phase: str  # "rebuilding" | "swapped" | "not_swapped" | "failed"
    detail: str = ""  # the rebuild's latest step while it runs; why it was NOT swapped
    snapshot: str = ""  # path of the snapshot written after a swap
    backfill_s: float | None = None  # start to the last day COMPLETE
    rebuild_s: float | None = None  # rebuild + hard gate + swap (so far, while it runs)


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
    def scale(self, shards: int) -> ActionResult: ...
    def restart_worker(self, shard: int) -> ActionResult: ...
    def restart_stalled(self) -> ActionResult: ...
    def pause(self) -> ActionResult: ...
    def resume(self) -> ActionResult: ...
    def optimize(self) -> ActionResult: ...
    def abort(self) -> ActionResult: ...
