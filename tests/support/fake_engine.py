"""A deterministic, recording EngineApi for console tests.

State is injected (`FakeEngine(status=..., grid=...)` or attribute assignment), time is fixed
(`NOW`), and every call is recorded as `(method, args)` in `calls`. A query can be made to raise
by putting an exception in `fail[method]`. Actions answer with a plain string like the engine.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.status import (
    BACKOFF,
    DAY_DONE,
    DAY_FAILED,
    DAY_PENDING,
    DAY_RUNNING,
    DONE,
    FATAL,
    RAW_LOGS,
    RUNNING,
    STALLED,
    ActionResult,
    DiskReport,
    DiskUsage,
    DuplicateCheck,
    EngineState,
    EngineStatus,
    ErrorGroup,
    GateResult,
    RpcHealth,
    WorkerStatus,
)

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the fixed clock of every console test
DAYS = 1048


def fixed_clock() -> float:
    return NOW


def sample_workers(shards: int = 12) -> list[WorkerStatus]:
    workers = []
    for k in range(shards):
        workers.append(
            WorkerStatus(
                shard=k,
                state=RUNNING,
                pid=41000 + k,
                day=600 + k,
                block_from=16_200_000 + 7200 * k,
                block_to=16_200_400 + 7200 * k,
                phase="fetch",
                heartbeat_age_s=float(3 + k * 2),
                rows=1_250_000 + 91_337 * k,
                days_done=50 + k,
                days_planned=88,
                restarts=0,
                last_error="",
            )
        )
    # A few realistic variations: a slow heartbeat, a retrying shard, a restarted one, a DONE one.
    workers[3].heartbeat_age_s = 95.0
    workers[5].phase = "retry"
    workers[5].restarts = 2
    workers[5].last_error = "rpc_429: 429 Too Many Requests from https://eth.example/v2/***"
    last = workers[-1]
    last.state, last.pid, last.day, last.heartbeat_age_s = DONE, None, None, None
    last.days_done = last.days_planned = 87
    return workers


def sample_grid(days: int = DAYS, shards: int = 12) -> list[str]:
    """Complete up to ~day 600 with a hole at 212-214, running days 600-610, failed day 333."""
    grid = []
    for d in range(days):
        if d in (212, 213, 214):
            grid.append(DAY_PENDING)
        elif d == 333:
            grid.append(DAY_FAILED)
        elif d < 600:
            grid.append(DAY_DONE)
        elif d < 600 + shards - 1:
            grid.append(DAY_RUNNING)
        else:
            grid.append(DAY_PENDING)
    return grid


def sample_status(**changes: Any) -> EngineStatus:
    st = EngineStatus(
        state=EngineState.RUNNING,
        chain="https://eth.example/v2/*** (+1 more)",
        store="embedded data/clickhouse",
        shards=12,
        shard_ids=list(range(12)),
        started_at=NOW - 3 * 3600 - 25 * 60 - 7,
        now=NOW,
        days_total=DAYS,
        days_complete=596,
        days_in_progress=11,
        days_failed=1,
        rows_staged={
            "erc20_transfers_staging": 48_211_905,
            "erc1155_transfers_staging": 17_402_118,
            "condition_resolutions": 12_044,
            "token_registrations": 24_090,
        },
        rate_history=[
            900.0 + 40 * (i % 7) + 15 * (i % 3) + (300 if 20 < i < 26 else 0) for i in range(60)
        ],
        rows_per_s=1180.0,
        eta_s=2 * 3600 + 41 * 60 + 12,
        stall_after_s=300.0,
        workers=sample_workers(),
        rpc=[
            RpcHealth(
                url="https://eth.example/v2/***",
                calls=88_120,
                calls_per_s=7.4,
                http_429=31,
                p50_ms=88.0,
                p95_ms=412.0,
                current_range=400,
                cooling_until=None,
            ),
            RpcHealth(
                url="https://rpc.backup.example/***",
                calls=40_551,
                calls_per_s=3.1,
                http_429=212,
                p50_ms=140.0,
                p95_ms=1290.0,
                current_range=100,
                cooling_until=NOW + 14,
            ),
        ],
        errors=[
            ErrorGroup("rpc_429", 180, NOW - 12, "429 Too Many Requests (retry after 2s)", 5),
            ErrorGroup("rpc_429", 63, NOW - 95, "429 Too Many Requests", 2),
            ErrorGroup("range_split", 41, NOW - 300, "too many results: split 2000 -> 1000", 7),
            ErrorGroup(
                "decode_skip", 9, NOW - 3600, "ERC721-shaped Transfer (4 topics) skipped", 1
            ),
            ErrorGroup("timeout", 4, NOW - 7200, "read timeout after 30s", None),
        ],
        gates=[],
        messages=[],
        fetched_unit=RAW_LOGS,  # workers send raw logs, the store decodes them (the product)
    )
    return replace(st, **changes)


def sample_duplicates() -> list[DuplicateCheck]:
    return [
        DuplicateCheck("erc20_transfers_staging", 48_211_905, 48_190_002, 0),
        DuplicateCheck("erc1155_transfers_staging", 17_402_118, 17_402_118, 0),
    ]


def sample_disk() -> DiskReport:
    return DiskReport(
        tables=[
            DiskUsage("erc20_transfers_staging", 48_211_905, 3_221_225_472, 41),
            DiskUsage("erc1155_transfers_staging", 17_402_118, 1_395_864_371, 23),
            DiskUsage("backfill_checkpoint", 612, 40_960, 3),
            DiskUsage("worker_heartbeats", 12, 8_192, 2),
        ],
        free_bytes=118 * 1024**3,
        total_bytes=500 * 1024**3,
    )


def fatal_status() -> EngineStatus:
    st = sample_status()
    w = st.workers[7]
    w.state, w.pid, w.heartbeat_age_s, w.restarts = FATAL, None, None, 5
    w.last_error = "exited 1 five times in 600s: ConnectionRefusedError to https://eth.example/***"
    st.workers[2].state = STALLED
    st.workers[2].heartbeat_age_s = 412.0
    st.workers[9].state = BACKOFF
    st.workers[9].pid = None
    return st


def failing_gate_status() -> EngineStatus:
    return sample_status(
        gates=[
            GateResult("erc20_count_vs_rpc", 0.0, "<= 0.001 relative", True, "strict", NOW - 60),
            GateResult("final_duplicates", 0.0, "== 0", True, "strict", NOW - 60),
            GateResult("erc1155_nonempty", 0.0, ">= 1 row/day", False, "strict", NOW - 60),
        ]
    )


def long_values_status() -> EngineStatus:
    """Ten workers after a scale from the config's 8, with the longest values an operator meets:
    a deep store path, two long provider URLs, phases, long errors, re-fetched rows, 5-digit
    pids and 7-figure row counts."""
    workers = sample_workers(10)
    for w in workers[:-1]:
        w.pid = 3_141_592 + w.shard
        w.rows = 12_345_678 + 1_000_003 * w.shard
        w.days_done, w.days_planned = 95 + w.shard, 105
    workers[1].phase = "range"
    workers[2].phase = "wait_final"
    workers[4].phase = "retry_wait"
    workers[4].last_error = (
        "range_failed: blocks [48211905, 48213904] could not be fetched (http_5xx): 502 Bad "
        "Gateway from https://polygon-mainnet.infura.example/v3/*** after 6 attempts"
    )
    workers[6].restarts = 12
    workers[7].last_error = "timeout: read timeout after 30s from https://rpc.ankr.example/***"
    return sample_status(
        shards=10,
        shard_ids=list(range(10)),
        config_shards=8,
        chain="rpc polygon-mainnet.infura.example, polygon-rpc.ankr.example (+2 more)",
        store="embedded /srv/backfill/production-polymarket-2026/data/clickhouse",
        workers=workers,
        days_in_progress=10,
        rows_refetched={"logs": 2_423_325},
        eta_s=None,
        eta_note="calculating (2/10 shards)",
        rpc=[
            RpcHealth(
                url="https://polygon-mainnet.infura.example/v3/***",
                calls=1_288_120,
                calls_per_s=12.4,
                http_429=1_031,
                p50_ms=188.0,
                p95_ms=2_412.0,
                current_range=400,
                cooling_until=None,
            ),
            RpcHealth(
                url="https://polygon-rpc.ankr.example/polygon/***",
                calls=940_551,
                calls_per_s=3.1,
                http_429=21_212,
                p50_ms=140.0,
                p95_ms=11_290.0,
                current_range=100,
                cooling_until=NOW + 614,
            ),
        ],
        errors=[
            ErrorGroup(
                "range_failed",
                3,
                NOW - 40,
                "blocks [48211905, 48213904] could not be fetched (http_5xx): 502 Bad Gateway "
                "from https://polygon-mainnet.infura.example/v3/*** after 6 attempts",
                4,
            ),
            ErrorGroup(
                "rpc_429",
                21_212,
                NOW - 12,
                "429 Too Many Requests from https://polygon-rpc.ankr.example/polygon/*** "
                "(retry after 2s)",
                5,
            ),
            ErrorGroup(
                "timeout",
                40,
                NOW - 300,
                "read timeout after 30s from https://rpc.ankr.example/***",
                7,
            ),
        ],
    )


def long_values_disk() -> DiskReport:
    """A big disk nearly a third full and our tables in the hundreds of GiB, with a scratch
    table of the duplicate check (the longest names the Disk panel lists)."""
    return DiskReport(
        tables=[
            DiskUsage("erc20_transfers_staging", 1_482_211_905, 412 * 1024**3, 341),
            DiskUsage("erc1155_transfers_staging", 617_402_118, 171 * 1024**3, 223),
            DiskUsage("duplicate_check_keys_63ab9f01", 1_999_614_023, 31 * 1024**3, 12),
            DiskUsage("backfill_checkpoint", 612, 40_960, 3),
            DiskUsage("worker_heartbeats", 12, 8_192, 2),
        ],
        free_bytes=1_228 * 1024**3,
        total_bytes=3_584 * 1024**3,
    )


def end_status(phase: str) -> EngineStatus:
    """The end screen: every day COMPLETE; the rebuild running, swapped in or NOT swapped."""
    from engine.status import RunOutcome

    workers = sample_workers(8)
    for w in workers:
        w.state, w.pid, w.day, w.heartbeat_age_s, w.phase = DONE, None, None, None, ""
        w.days_done = w.days_planned = 131
    outcomes = {
        "rebuilding": RunOutcome(
            "rebuilding",
            "hard gate (strict) on the *_new tables",
            backfill_s=5_130.0,
            rebuild_s=74.0,
        ),
        "swapped": RunOutcome(
            "swapped",
            "all gates passed; swapped with EXCHANGE TABLES",
            snapshot="data/backfill/snapshots/rebuild-20260101T000000Z.json",
            backfill_s=5_130.0,
            rebuild_s=142.0,
        ),
        "not_swapped": RunOutcome(
            "not_swapped",
            "cash_neutrality value=0.031 (needs < 0.02)",
            backfill_s=5_130.0,
            rebuild_s=139.0,
        ),
    }
    state = "rebuilding" if phase == "rebuilding" else "complete"
    return sample_status(
        state=state,
        shards=8,
        shard_ids=list(range(8)),
        config_shards=8,
        workers=workers,
        days_complete=DAYS,
        days_in_progress=0,
        days_failed=0,
        rows_per_s=0.0,
        eta_s=None,
        started_at=NOW
        - 5_130.0
        - (outcomes[phase].rebuild_s or 0.0)
        - (0 if state == "rebuilding" else 600),
        finished_at=NOW - 600 if phase != "rebuilding" else None,
        outcome=outcomes[phase],
        errors=[],
    )


class FakeEngine:
    """Implements engine.status.EngineApi; thread-safe enough for the console's worker threads."""

    def __init__(
        self,
        status: EngineStatus | None = None,
        grid: list[str] | None = None,
        duplicates: list[DuplicateCheck] | None = None,
        disk: DiskReport | None = None,
        gates_log: list[str] | None = None,
        log_dir: str | Path = "/tmp",
    ) -> None:
        self.state = status or sample_status()
        self.grid = grid if grid is not None else sample_grid(self.state.days_total)
        self.dups = duplicates if duplicates is not None else sample_duplicates()
        self.disk_report = disk or sample_disk()
        self.gates_log = gates_log if gates_log is not None else []
        self.log_dir = Path(log_dir)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail: dict[str, BaseException] = {}
        self.gate: dict[str, threading.Event] = {}  # method -> event the call waits for
        self._lock = threading.Lock()

    def _record(self, method: str, *args: Any) -> None:
        with self._lock:
            self.calls.append((method, args))
        if method in self.gate:
            self.gate[method].wait(10)
        if method in self.fail:
            raise self.fail[method]

    def actions(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Recorded calls other than the periodic queries."""
        queries = {"status", "day_grid", "duplicates", "disk", "gates_log_tail"}
        with self._lock:
            return [c for c in self.calls if c[0] not in queries]

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for m, _ in self.calls if m == method)

    # ---- queries -------------------------------------------------------------------------------
    def status(self) -> EngineStatus:
        self._record("status")
        return self.state

    def day_grid(self) -> list[str]:
        self._record("day_grid")
        return list(self.grid)

    def duplicates(self) -> list[DuplicateCheck]:
        self._record("duplicates")
        return list(self.dups)

    def disk(self) -> DiskReport:
        self._record("disk")
        return self.disk_report

    def gates_log_tail(self, n: int = 20) -> list[str]:
        self._record("gates_log_tail", n)
        return self.gates_log[-n:]

    def worker_log_path(self, shard: int) -> str:
        self._record("worker_log_path", shard)
        return str(self.log_dir / f"worker-{shard}.log")

    # ---- actions -------------------------------------------------------------------------------
    def scale(self, shards: int) -> ActionResult:
        self._record("scale", shards)
        return ActionResult(True, f"scaling {self.state.shards} -> {shards} shards")

    def restart_worker(self, shard: int) -> ActionResult:
        self._record("restart_worker", shard)
        return ActionResult(True, f"restarting shard {shard}")

    def restart_stalled(self) -> ActionResult:
        self._record("restart_stalled")
        return ActionResult(True, "restarting shard(s) 2, 7")

    def pause(self) -> ActionResult:
        self._record("pause")
        return ActionResult(True, "paused")

    def resume(self) -> ActionResult:
        self._record("resume")
        return ActionResult(True, "resumed")

    def optimize(self) -> ActionResult:
        self._record("optimize")
        return ActionResult(True, "OPTIMIZE started in the background")

    def abort(self) -> ActionResult:
        self._record("abort")
        self.state = replace(self.state, state=EngineState.ABORTING)
        return ActionResult(True, "aborting: workers finish their current chunk")
