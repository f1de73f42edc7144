"""Messages between worker processes and the console: one dataclass each, encoded in one place.

Every line on a worker's stdin or stdout is a JSON object whose "t" names the message (the wire
format is in docs/INTERNALS.md). `encode(msg)` writes a message, `decode(obj)` reads one back,
`read_message(stream)` reads the next from a worker's stdout. Fields named `first` / `last` (block
numbers) travel as "from" / "to". Nothing else in the engine reads or builds these JSON objects.

A `Rows` message is a header line followed by exactly `n` raw JSONCompactEachRow lines (`bytes`
bytes in all), so the console reads them in one call and passes them to the store unparsed. A
`Logs` message is a header line followed by `bytes` bytes of a node's JSON log array, likewise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

import orjson

from engine.status import Phase

#: Environment variable carrying the console's pid to its workers (they die with it).
PARENT_PID_ENV = "BACKFILL_CONSOLE_PID"

#: Field names that differ on the wire ("from" is a Python keyword).
_WIRE_NAMES = {"first": "from", "last": "to"}
_FIELD_NAMES = {v: k for k, v in _WIRE_NAMES.items()}


class ProtocolError(Exception):
    """A line that is not a protocol message (or not one this side understands)."""


@dataclass(slots=True)
class Message:
    """Base of every message; `T` is its "t" on the wire."""

    T: ClassVar[str] = ""


# ---- console -> worker ----------------------------------------------------------------------
@dataclass(slots=True)
class PlanRpc:
    urls: list[str]  # unmasked: they only travel over the pipe
    requests_per_second: float  # this worker's share of the per-URL budget
    timeout_s: float
    max_block_range: int


@dataclass(slots=True)
class PlanBackfill:
    start_date: str  # ISO date
    confirmations: int
    failed_day_retry_s: float


@dataclass(slots=True)
class PlanContracts:
    erc20_tokens: list[str]
    erc20_counterparties: list[str]
    erc1155: list[str]
    exchanges: list[str]


@dataclass(slots=True)
class Plan(Message):
    """First line on a worker's stdin: its days and everything it needs to fetch them."""

    T: ClassVar[str] = "plan"
    shard: int
    shards: int
    days: list[int]  # the shard's days not yet COMPLETE
    ranges: dict[int, tuple[int, int]]  # known day -> (first block, last block)
    rpc: PlanRpc
    backfill: PlanBackfill
    contracts: PlanContracts
    #: Send eth_getLogs answers unparsed (Logs) for the store to decode; else decoded Rows.
    raw_logs: bool = False


@dataclass(slots=True)
class Pause(Message):
    T: ClassVar[str] = "pause"


@dataclass(slots=True)
class Resume(Message):
    T: ClassVar[str] = "resume"


@dataclass(slots=True)
class Stop(Message):
    T: ClassVar[str] = "stop"


# ---- worker -> console ----------------------------------------------------------------------
@dataclass(slots=True)
class Hello(Message):
    T: ClassVar[str] = "hello"
    shard: int
    pid: int
    days: int = 0


@dataclass(slots=True)
class Range(Message):
    """A day's block range was found (last = first - 1 for a day without blocks)."""

    T: ClassVar[str] = "range"
    day: int
    first: int
    last: int


@dataclass(slots=True)
class Rows(Message):
    """Staging rows of one table; `data` is n raw JSONCompactEachRow lines."""

    T: ClassVar[str] = "rows"
    day: int
    table: str
    n: int
    data: bytes = b""


@dataclass(slots=True)
class Logs(Message):
    """A piece of an eth_getLogs answer: `data` is a JSON array of `n` log objects, the node's
    bytes untouched, decoded by the store (engine/store/raw_logs.py).

    `chunk` ids of one day are consecutive (the worker's nonce in the high 32 bits); the DayDone
    names the first and last. `skip_cp_from` marks the "to a counterparty" filter (its transfers
    from a counterparty came with the "from" filter already). `ts` holds [block, timestamp] pairs
    when the node's logs lack blockTimestamp."""

    T: ClassVar[str] = "logs"
    day: int
    chunk: int
    n: int
    skip_cp_from: bool = False
    ts: list[list[int]] = field(default_factory=list)
    data: bytes = b""


@dataclass(slots=True)
class Heartbeat(Message):
    T: ClassVar[str] = "hb"
    day: int | None = None
    first: int | None = None
    last: int | None = None
    rows: int = 0
    phase: Phase = Phase.START
    note: str = ""

    def __post_init__(self) -> None:
        self.phase = Phase(self.phase)  # ValueError (-> ProtocolError) for an unknown phase


@dataclass(slots=True)
class DayDone(Message):
    """Every filter covered the day's whole range; sent after all of the day's Rows."""

    T: ClassVar[str] = "day_done"
    day: int
    first: int
    last: int
    erc20: int = 0
    erc1155: int = 0
    resolutions: int = 0
    registrations: int = 0
    #: [first, last] chunk id of the day's Logs (None: no Logs, the counts above are the rows);
    #: the console takes the counts from the store then, checking it parsed `logs` logs.
    chunks: list[int] | None = None
    logs: int = 0
    #: The worker's figures of the day, for the ETA (engine.eta.DayCost): seconds from the day's
    #: start, of which waiting for a budget token, and provider calls.
    seconds: float = 0.0
    wait_s: float = 0.0
    calls: int = 0


@dataclass(slots=True)
class Error(Message):
    """Something went wrong (secrets masked); kind "day_failed" leaves `day` not COMPLETE."""

    T: ClassVar[str] = "error"
    kind: str
    msg: str = ""
    day: int | None = None
    count: int = 1


@dataclass(slots=True)
class RpcReport(Message):
    """The worker's RpcPool.health(): one dict per URL, cumulative for this process."""

    T: ClassVar[str] = "rpc"
    health: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Done(Message):
    """Every planned day is done; the worker exits 0 next."""

    T: ClassVar[str] = "done"


MESSAGES: dict[str, type[Message]] = {
    cls.T: cls
    for cls in (Plan, Pause, Resume, Stop, Hello, Range, Rows, Logs, Heartbeat, DayDone, Error)
    + (RpcReport, Done)
}


# ---- encoding -------------------------------------------------------------------------------
def to_wire(msg: Message) -> dict[str, Any]:
    """The JSON object of a message ("t" first; Rows without its data)."""
    out: dict[str, Any] = {"t": msg.T}
    for f in dataclasses.fields(msg):
        if isinstance(msg, Rows | Logs) and f.name == "data":
            continue
        value = getattr(msg, f.name)
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)  # type: ignore[arg-type]
        elif isinstance(msg, Plan) and f.name == "ranges":
            value = {str(d): list(r) for d, r in value.items()}
        out[_WIRE_NAMES.get(f.name, f.name)] = value
    return out


def encode(msg: Message) -> bytes:
    """One JSON line (a Rows or Logs header is followed by its data)."""
    if isinstance(msg, Rows | Logs):
        return encode_header(msg) + msg.data
    return orjson.dumps(to_wire(msg)) + b"\n"


def encode_header(msg: Rows | Logs) -> bytes:
    """The header line of a Rows or Logs message alone (write its data after it: a large
    answer is not copied into one joined buffer)."""
    header = to_wire(msg)
    header["bytes"] = len(msg.data)
    return orjson.dumps(header) + b"\n"


def encode_rows(day: int, table: str, rows: Sequence[Sequence[Any]]) -> bytes:
    """A Rows message: header + one line per row."""
    data = b"\n".join(map(orjson.dumps, rows)) + b"\n" if rows else b""
    return encode(Rows(day=day, table=table, n=len(rows), data=data))


def decode(obj: Any) -> Message:
    """A message from its JSON object; ProtocolError when it is not one (a Rows comes back
    without its data: read_message reads that)."""
    if not isinstance(obj, dict) or "t" not in obj:
        raise ProtocolError(f"not a protocol message: {str(obj)[:200]!r}")
    cls = MESSAGES.get(obj["t"])
    if cls is None:
        raise ProtocolError(f"unknown message type {obj['t']!r}")
    kwargs: dict[str, Any] = {
        (_FIELD_NAMES[k] if k in _FIELD_NAMES else k): v
        for k, v in obj.items()
        if k not in ("t", "bytes")
    }
    try:
        if cls is Plan:
            return _plan(kwargs)
        return cls(**kwargs)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"bad {obj['t']!r} message: {exc}") from exc


def _plan(kw: dict[str, Any]) -> Plan:
    return Plan(
        shard=int(kw["shard"]),
        shards=int(kw["shards"]),
        days=[int(d) for d in kw["days"]],
        ranges={int(d): (int(r[0]), int(r[1])) for d, r in kw.get("ranges", {}).items()},
        rpc=PlanRpc(**kw["rpc"]),
        backfill=PlanBackfill(**kw["backfill"]),
        contracts=PlanContracts(**kw["contracts"]),
        raw_logs=bool(kw.get("raw_logs", False)),
    )


def decode_line(line: bytes | str) -> Message:
    """One JSON line -> its message (ProtocolError when it is not one)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not a protocol line: {line[:200]!r}") from exc
    return decode(obj)


def read_message(stream: IO[bytes]) -> Message | None:
    """Next message from a worker's stdout; a Rows message carries its `data`.

    Returns None at EOF. A truncated Rows message (worker killed mid-write) returns None too:
    those rows were never acknowledged by a DayDone, so dropping them is safe.
    """
    line = stream.readline()
    if not line:
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not a protocol line: {line[:200]!r}") from exc
    msg = decode(obj)
    if isinstance(msg, Rows):
        size = int(obj.get("bytes", 0))
        data = stream.read(size) if size else b""
        if len(data) != size:
            return None
        if data.count(b"\n") != msg.n:
            raise ProtocolError(f"rows message: {msg.n} rows announced, data has other count")
        msg.data = data
    elif isinstance(msg, Logs):
        size = int(obj.get("bytes", 0))
        data = stream.read(size) if size else b""
        if len(data) != size:
            return None  # cut short: never acknowledged by a DayDone
        msg.data = data
    return msg
