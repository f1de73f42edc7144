"""Worker process: fetch one shard's days from JSON-RPC and stream decoded rows to the console.

Run as `python -m engine.worker --shard-id K --shards N` by the supervisor. The first stdin line is
the plan (days, cached day ranges, RPC and contract settings); later lines are pause/resume/stop.
Messages go to stdout (engine/protocol.py); human-readable logs go to stderr (worker-K.log).
The worker never opens the store. It exits when stdin closes (console gone), on SIGTERM after the
current chunk, or after its last day.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import random
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import IO, Any

from engine.constants import (
    CONDITION_RESOLUTION_TOPIC,
    TOKEN_REGISTERED_TOPIC,
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
)
from engine.days import BlockClock, blocks_text, day_start_ts
from engine.decode import DecodeFilter, decode_logs
from engine.lifeline import die_with
from engine.masking import mask_secrets
from engine.protocol import (
    PARENT_PID_ENV,
    DayDone,
    Done,
    Error,
    Heartbeat,
    Hello,
    Logs,
    Message,
    Pause,
    Phase,
    Plan,
    ProtocolError,
    Range,
    Resume,
    RpcReport,
    Stop,
    decode_line,
    encode,
    encode_header,
    encode_rows,
)
from engine.rpc.pool import RangeFailed, RpcError, RpcPool

log = logging.getLogger("worker")

HEARTBEAT_EVERY_S = 2.0
RPC_HEALTH_EVERY_S = 5.0
FINALITY_POLL_S = 10.0
#: Default seconds before a day that failed is tried again (plan backfill.failed_day_retry_s).
FAILED_DAY_RETRY_S = 30.0
CHUNK_HEARTBEAT_S = 0.5
#: Largest piece of an eth_getLogs answer sent to the console at once (a 2,000-block answer of
#: 200,000 logs, ~130 MB, goes in ~33 pieces, each inserted and decoded on its own).
PIECE_BYTES = 4 << 20
_BETWEEN_LOGS = re.compile(rb"\}\s*,\s*\{")
#: This worker's request budget (per URL, per second) from which the day search batches probes.
BATCH_SEARCH_MIN_RPS = 50.0
#: Most eth_getBlockByNumber calls in one JSON-RPC batch for log timestamps (providers commonly
#: accept 100-1,000 per batch); below it, this worker's requests_per_second.
TS_BATCH_MAX = 100


def split_pieces(data: bytes, n: int, limit: int) -> Iterator[tuple[bytes, int]]:
    """A JSON array of log objects in pieces of about ``limit`` bytes, each a JSON array, cut
    between two log objects (log objects hold no nested objects), with its log count."""
    if len(data) <= limit or n <= 1:
        yield data, n
        return
    body_end = data.rindex(b"]")
    start = data.index(b"[") + 1
    while True:
        m = _BETWEEN_LOGS.search(data, start + limit, body_end)
        if m is None:
            piece = b"[" + data[start:body_end].strip() + b"]"
            yield piece, piece.count(b'"logIndex"')
            return
        piece = b"[" + data[start : m.start() + 1].strip() + b"]"
        yield piece, piece.count(b'"logIndex"')
        start = m.end() - 1


def topic_for_address(addr: str) -> str:
    return "0x" + "0" * 24 + addr.lower()[2:]


def queries_for(f: DecodeFilter) -> list[tuple[list[str], list]]:
    """(addresses, topics) eth_getLogs filters that together return every captured log."""
    events = [
        TRANSFER_SINGLE_TOPIC,
        TRANSFER_BATCH_TOPIC,
        CONDITION_RESOLUTION_TOPIC,
        TOKEN_REGISTERED_TOPIC,
    ]
    tokens = sorted(f.erc20_tokens)
    others = sorted(f.erc1155 | f.exchanges)
    if not f.erc20_counterparties:
        return [(tokens + others, [[TRANSFER_TOPIC, *events]])]
    # Counterparty on either side: two topic filters (topics AND across positions).
    cps = [topic_for_address(a) for a in sorted(f.erc20_counterparties)]
    return [
        (tokens, [TRANSFER_TOPIC, cps]),
        (tokens, [TRANSFER_TOPIC, None, cps]),
        (others, [events]),
    ]


class Worker:
    def __init__(self, shard: int, shards: int, plan: Plan, out: IO[bytes] | None = None) -> None:
        self.shard = shard
        self.shards = shards
        self.plan = plan
        self.out = out or sys.stdout.buffer
        self.out_lock = threading.Lock()
        self.stop = threading.Event()
        self.resumed = threading.Event()
        self.resumed.set()
        rpc = plan.rpc
        self.secrets = list(rpc.urls)
        self.alive_window_s = 2 * float(rpc.timeout_s) + 60
        self.pool = RpcPool(
            rpc.urls,
            requests_per_second=float(rpc.requests_per_second),
            timeout_s=float(rpc.timeout_s),
            max_block_range=int(rpc.max_block_range),
            on_event=self.on_rpc_event,
        )
        c = plan.contracts
        self.filter = DecodeFilter(
            erc20_tokens=frozenset(c.erc20_tokens),
            erc20_counterparties=frozenset(c.erc20_counterparties),
            erc1155=frozenset(c.erc1155),
            exchanges=frozenset(c.exchanges),
        )
        b = plan.backfill
        self.start_date = dt.date.fromisoformat(b.start_date)
        self.confirmations = int(b.confirmations)
        self.failed_day_retry_s = float(b.failed_day_retry_s)
        self.ranges: dict[int, tuple[int, int]] = dict(plan.ranges)
        # Batched day search reads ~35 blocks a day in ~1.5 round trips; one call at a time reads
        # ~6.5 but waits for each. Under a tight request budget (each call of a batch counts)
        # the fewest calls win; with room to spare, the fewest round trips.
        batched = float(rpc.requests_per_second) >= BATCH_SEARCH_MIN_RPS
        self.clock = BlockClock(
            self.pool.block_timestamp, self.pool.block_timestamps if batched else None
        )
        # Timestamps of blocks with logs when the provider's logs lack blockTimestamp: this
        # day's only (kept apart from the day search's sorted index, which they would bloat).
        self.log_ts: dict[int, int] = {}
        rps = float(rpc.requests_per_second)
        self.ts_batch = TS_BATCH_MAX if rps <= 0 else max(1, min(TS_BATCH_MAX, int(rps)))
        # What the heartbeat reports (note aside).
        self.state = Heartbeat(day=-1, first=0, last=0, rows=0, phase=Phase.START)
        self.last_alive = time.monotonic()
        self.last_chunk_hb = 0.0
        self.safe_head = -1
        # Chunk ids: this process's nonce in the high 32 bits, a sequence number in the low ones.
        self.nonce = random.SystemRandom().getrandbits(31) + 1
        self.chunk_seq = 0
        # (monotonic start, provider calls, budget wait) when the current day began.
        self.day_started: tuple[float, int, float] = (time.monotonic(), 0, 0.0)

    # ---- output -------------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        self._write(encode(msg))

    def _write(self, *parts: bytes) -> None:
        """Write parts as one uninterrupted stretch of the stream (no joined copy of them)."""
        with self.out_lock:
            try:
                for data in parts:
                    self.out.write(data)
                self.out.flush()
            except (BrokenPipeError, ValueError):
                os._exit(3)  # console gone: nobody to report to

    def alive(self, **state: Any) -> None:
        """Progress: update what the heartbeat reports (Heartbeat fields) and when."""
        for k, v in state.items():
            setattr(self.state, k, v)
        self.last_alive = time.monotonic()

    def _heartbeat(self, note: str = "") -> Heartbeat:
        return dataclasses.replace(self.state, note=note)

    def heartbeat(self, note: str = "") -> None:
        self.send(self._heartbeat(note))

    def error(self, kind: str, msg: str, day: int | None = None, count: int = 1) -> None:
        msg = mask_secrets(msg, self.secrets)
        log.warning("%s day=%s %s", kind, day, msg)
        self.send(Error(kind=kind, msg=msg, day=day, count=count))

    def on_rpc_event(self, kind: str, message: str) -> None:
        # Retries in progress are progress: keep heartbeating while the pool waits.
        self.last_alive = time.monotonic()
        if kind == "retry_wait":
            self.state.phase = Phase.RETRY
            return
        self.error(kind, message, self.state.day)

    # ---- threads ------------------------------------------------------------------------------
    def heartbeat_loop(self) -> None:
        next_rpc = 0.0
        while not self.stop.wait(HEARTBEAT_EVERY_S):
            # A hung main loop (no chunk, no retry, no wait for longer than the window) goes quiet
            # so the monitor can see the stall.
            if time.monotonic() - self.last_alive < self.alive_window_s:
                self.heartbeat()
            if time.monotonic() >= next_rpc:
                next_rpc = time.monotonic() + RPC_HEALTH_EVERY_S
                self.send(RpcReport(health=self.pool.health()))

    def command_loop(self, stream: IO[Any]) -> None:
        for line in stream:
            try:
                cmd = decode_line(line)
            except ProtocolError:
                log.warning("ignoring bad command line %r", line[:100])
                continue
            if isinstance(cmd, Pause):
                self.resumed.clear()
            elif isinstance(cmd, Resume):
                self.resumed.set()
            elif isinstance(cmd, Stop):
                self.request_stop()
        # stdin closed: the console is gone. Exit now, leaving no orphan.
        log.warning("stdin closed: console gone, exiting")
        os._exit(3)

    def request_stop(self) -> None:
        self.stop.set()
        self.resumed.set()

    # ---- main work ----------------------------------------------------------------------------
    def wait_if_paused(self) -> None:
        if not self.resumed.is_set():
            self.alive(phase=Phase.PAUSED)
            self.heartbeat("paused")
            while not self.resumed.wait(1.0):
                self.alive(phase=Phase.PAUSED)
            self.alive(phase=Phase.FETCH)

    def refresh_safe_head(self) -> int:
        self.safe_head = self.pool.lowest_head() - self.confirmations
        return self.safe_head

    def day_range(self, day: int) -> tuple[int, int] | None:
        """The day's block range, or None while the day is not final yet."""
        if day in self.ranges:
            return self.ranges[day]
        t0 = day_start_ts(self.start_date, day)
        t1 = t0 + 86_400
        if self.safe_head < 0 or self.clock.ts(self.safe_head) < t1:
            self.refresh_safe_head()
        if self.safe_head < 0 or self.clock.ts(self.safe_head) < t1:
            return None
        lo = 0
        known = [r[1] + 1 for d, r in self.ranges.items() if d < day]
        if known:
            lo = max(known)
        first, last = self.clock.day_range(t0, t1, lo, self.safe_head)
        self.ranges[day] = (first, last)
        self.send(Range(day=day, first=first, last=last))
        return first, last

    def queries(self) -> list[tuple[list[str], list]]:
        """(addresses, topics) filters that together return every captured log of a range."""
        return queries_for(self.filter)

    def timestamps_for(self, blocks: set[int]) -> dict[int, int]:
        """Timestamps of these blocks (whose logs lack ``blockTimestamp``).

        Each block is asked at most once per day (the day search's blocks are reused): the
        blocks not known yet go out in JSON-RPC batches of at most ``ts_batch`` calls (every
        call of a batch takes a budget token, so a batch stays within a second's budget).
        """
        known = self.clock.cache
        todo = sorted(b for b in blocks if b not in self.log_ts and b not in known)
        for i in range(0, len(todo), self.ts_batch):
            chunk = todo[i : i + self.ts_batch]
            if len(chunk) == 1:
                got = [self.pool.block_timestamp(chunk[0])]
            else:
                got = self.pool.block_timestamps(chunk)
            self.log_ts.update(zip(chunk, got, strict=True))
        return {b: known[b] if b in known else self.log_ts[b] for b in blocks}

    def day_figures(self) -> dict[str, Any]:
        """The day's seconds, seconds waiting for a budget token and provider calls (the ETA)."""
        t0, calls0, wait0 = self.day_started
        calls, wait = self.pool.budget_totals()
        return {
            "seconds": round(time.monotonic() - t0, 3),
            "wait_s": round(wait - wait0, 3),
            "calls": calls - calls0,
        }

    def next_chunk(self) -> int:
        self.chunk_seq += 1
        return (self.nonce << 32) | (self.chunk_seq & 0xFFFFFFFF)

    def _stamps(self, logs: list[dict]) -> dict[int, int] | None:
        missing = {int(x["blockNumber"], 16) for x in logs if x.get("blockTimestamp") is None}
        return self.timestamps_for(missing) if missing else None

    def _run_day_decoded(self, day: int) -> bool:
        """run_day with the logs decoded here and sent as Rows (plan.raw_logs off)."""
        self.alive(day=day, phase=Phase.RANGE, rows=0, first=0, last=0)
        rng = self.day_range(day)
        if rng is None:
            return False
        first, last = rng
        counts: Counter = Counter()
        skipped: Counter = Counter()
        seen: set[tuple[str, int]] = set()  # a CP -> CP transfer comes back from both filters
        for address, topics in self.queries() if first <= last else []:
            self.alive(phase=Phase.FETCH, first=first, last=last)
            # Sub-ranges adapt to the provider; rows go out after each successful request.
            for lo, hi, logs in self.pool.iter_logs(first, last, address, topics):
                decoded = decode_logs(logs, day, self.filter, self._stamps(logs))
                decoded.erc20 = [r for r in decoded.erc20 if (r[0], r[1]) not in seen]
                seen.update((r[0], r[1]) for r in decoded.erc20)
                parts = []
                for table, rows in decoded.by_table().items():
                    if rows:
                        counts[table] += len(rows)
                        parts.append(encode_rows(day, table, rows))
                skipped.update(decoded.skipped)
                self.alive(rows=sum(counts.values()), first=lo, last=hi)
                # Progress rides along with the rows, at most every CHUNK_HEARTBEAT_S (each
                # message wakes a console thread; the heartbeat thread covers quiet times).
                now = time.monotonic()
                if now - self.last_chunk_hb >= CHUNK_HEARTBEAT_S:
                    self.last_chunk_hb = now
                    parts.append(encode(self._heartbeat()))
                if parts:
                    self._write(b"".join(parts))
                self.wait_if_paused()
                if self.stop.is_set():
                    return False
        for reason in ("erc721_shaped", "malformed"):
            if skipped[reason]:
                self.error("decode_skip", f"{reason}: {skipped[reason]} log(s) skipped", day)
        self.send(
            DayDone(
                day=day,
                first=first,
                last=last,
                erc20=counts["erc20"],
                erc1155=counts["erc1155"],
                resolutions=counts["resolutions"],
                registrations=counts["registrations"],
                **self.day_figures(),
            )
        )
        log.info(
            "day %d COMPLETE %s rows %s timestamp_calls %d",
            day,
            blocks_text(first, last),
            dict(counts),
            len(self.log_ts),
        )
        self.log_ts.clear()  # the day's blocks are never asked again
        return True

    def run_day(self, day: int) -> bool:
        """Fetch one day. True when COMPLETE was reported; False when stopped or not final.

        With plan.raw_logs off the logs are decoded here (_run_day_decoded). Else they are not
        parsed here: each answer's JSON array goes to the console as it came (in pieces of at
        most PIECE_BYTES), the store decodes it and counts the day's rows."""
        self.day_started = (time.monotonic(), *self.pool.budget_totals())
        if not self.plan.raw_logs:
            return self._run_day_decoded(day)
        self.alive(day=day, phase=Phase.RANGE, rows=0, first=0, last=0)
        rng = self.day_range(day)
        if rng is None:
            return False
        first, last = rng
        first_chunk = self.chunk_seq + 1
        n_logs = 0
        cps_both = bool(self.filter.erc20_counterparties)
        for qi, (address, topics) in enumerate(self.queries() if first <= last else []):
            self.alive(phase=Phase.FETCH, first=first, last=last)
            # The "to a counterparty" filter (second of three) also returns transfers from one,
            # which the first filter returned already: the store drops those (skip_cp_from).
            skip = cps_both and qi == 1
            # Sub-ranges adapt to the provider; logs go out after each successful request.
            for lo, hi, raw in self.pool.iter_logs(first, last, address, topics, raw=True):
                ts: list[list[int]] = []
                if raw.n and raw.lacks_timestamps():
                    ts = [list(x) for x in sorted(self.timestamps_for(raw.block_numbers()).items())]
                for piece, n in split_pieces(raw.data, raw.n, PIECE_BYTES):
                    n_logs += n
                    msg = Logs(day=day, chunk=self.next_chunk(), n=n, skip_cp_from=skip, ts=ts)
                    msg.data = piece
                    self.alive(rows=n_logs, first=lo, last=hi)
                    parts = [encode_header(msg), piece]
                    # Progress rides along, at most every CHUNK_HEARTBEAT_S (each message wakes
                    # a console thread; the heartbeat thread covers quiet times).
                    now = time.monotonic()
                    if now - self.last_chunk_hb >= CHUNK_HEARTBEAT_S:
                        self.last_chunk_hb = now
                        parts.append(encode(self._heartbeat()))
                    self._write(*parts)
                    if self.stop.is_set():
                        return False
                if not raw.n:
                    self.alive(first=lo, last=hi)
                self.wait_if_paused()
                if self.stop.is_set():
                    return False
        chunks = [first_chunk, self.chunk_seq] if self.chunk_seq >= first_chunk else None
        if chunks is not None:
            chunks = [(self.nonce << 32) | c for c in chunks]
        self.send(
            DayDone(
                day=day, first=first, last=last, chunks=chunks, logs=n_logs, **self.day_figures()
            )
        )
        log.info(
            "day %d COMPLETE blocks %d-%d logs %d chunks %s timestamp_calls %d",
            day,
            first,
            last,
            n_logs,
            chunks,
            len(self.log_ts),
        )
        self.log_ts.clear()  # the day's blocks are never asked again
        return True

    def day_failed(self, day: int, exc: RpcError) -> None:
        """Report a day that stays not COMPLETE: the range (or call) that failed, and why."""
        if isinstance(exc, RangeFailed):
            what = f"blocks [{exc.from_block}, {exc.to_block}]"
            self.error("range_failed", f"{what} could not be fetched ({exc.kind}): {exc}", day)
        else:
            what = f"an RPC call ({exc.kind})"
            self.error(exc.kind or "rpc_error", str(exc), day)
        self.alive(phase=Phase.DAY_FAILED)
        self.error(
            "day_failed",
            f"day {day} not complete: {what} failed after all retries; "
            f"retrying in {self.failed_day_retry_s:g}s",
            day,
        )

    def run(self) -> int:
        # topic0 values were checked against keccak by the console at its start-up.
        todo = list(self.plan.days)
        log.info("shard %d/%d: %d day(s) to do", self.shard, self.shards, len(todo))
        self.send(Hello(shard=self.shard, pid=os.getpid(), days=len(todo)))
        retry_at: dict[int, float] = {}
        while todo and not self.stop.is_set():
            day = todo[0]
            if retry_at.get(day, 0) > time.monotonic():
                self.alive(phase=Phase.RETRY_WAIT)
                self.stop.wait(1.0)
                continue
            try:
                done = self.run_day(day)
            except RpcError as exc:
                self.day_failed(day, exc)
                todo.append(todo.pop(0))
                retry_at[day] = time.monotonic() + self.failed_day_retry_s
                continue
            if done:
                todo.pop(0)
                retry_at.pop(day, None)
            elif not self.stop.is_set():
                self.alive(phase=Phase.WAIT_FINAL)
                self.heartbeat(f"day {day} not final yet")
                self.stop.wait(FINALITY_POLL_S)
        if self.stop.is_set() and todo:
            log.info("stopping with %d day(s) left", len(todo))
            return 0
        self.send(Done())
        return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m engine.worker",
        description="Backfill worker: fetch this shard's days; reads its plan from stdin.",
    )
    p.add_argument("--shard-id", type=int, default=os.environ.get("SHARD_ID"))
    p.add_argument("--shards", type=int, default=os.environ.get("SHARDS"))
    args = p.parse_args(argv)
    if args.shard_id is None or args.shards is None:
        p.error("--shard-id and --shards (or env SHARD_ID and SHARDS) are required")
    if not (args.shards >= 1 and 0 <= args.shard_id < args.shards):
        p.error(f"--shard-id {args.shard_id} must be in 0..{args.shards - 1}")
    return args


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the console dies; exit now if it already has.

    Stdin EOF ends the worker too; this also covers a console whose pipes outlive it.
    """
    die_with(PARENT_PID_ENV)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    die_with_parent()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s shard={args.shard_id} pid={os.getpid()} %(levelname)s %(message)s",
    )
    line = sys.stdin.readline()
    if not line:
        log.error("no plan on stdin")
        return 2
    try:
        plan = decode_line(line)
    except ProtocolError as exc:
        log.error("bad plan on stdin: %s", exc)
        return 2
    if not isinstance(plan, Plan):
        log.error("first stdin line is a %r message, not a plan", plan.T)
        return 2
    worker = Worker(args.shard_id, args.shards, plan)
    signal.signal(signal.SIGTERM, lambda *_: worker.request_stop())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the console handles Ctrl-C and stops us
    threading.Thread(target=worker.command_loop, args=(sys.stdin,), daemon=True).start()
    threading.Thread(target=worker.heartbeat_loop, daemon=True).start()
    try:
        return worker.run()
    except Exception as exc:  # report, then die non-zero so the supervisor restarts us
        worker.error("crash", f"{type(exc).__name__}: {exc}")
        log.exception("worker crashed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
