"""JSON-lines messages between worker processes and the console (see docs/INTERNALS.md).

A `rows` message is a header line followed by exactly `n` raw JSONCompactEachRow lines (`bytes`
bytes in all), so the console reads them in one call and passes them to the store unparsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any

import orjson

#: Environment variable carrying the console's pid to its workers (they die with it).
PARENT_PID_ENV = "BACKFILL_CONSOLE_PID"


def encode(msg: dict[str, Any]) -> bytes:
    return orjson.dumps(msg) + b"\n"


def encode_rows(day: int, table: str, rows: Sequence[Sequence[Any]]) -> bytes:
    """Header + one line per row."""
    data = b"\n".join(map(orjson.dumps, rows)) + b"\n" if rows else b""
    header = {"t": "rows", "day": day, "table": table, "n": len(rows), "bytes": len(data)}
    return encode(header) + data


class ProtocolError(Exception):
    """A worker wrote something that is not a protocol message."""


def read_message(stream: IO[bytes]) -> dict[str, Any] | None:
    """Next message from a worker's stdout; rows messages carry `data` (bytes) and `n`.

    Returns None at EOF. A truncated rows message (worker killed mid-write) returns None too:
    those rows were never acknowledged by a day_done, so dropping them is safe.
    """
    line = stream.readline()
    if not line:
        return None
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not a protocol line: {line[:200]!r}") from exc
    if not isinstance(msg, dict) or "t" not in msg:
        raise ProtocolError(f"not a protocol message: {line[:200]!r}")
    if msg["t"] == "rows":
        size = int(msg["bytes"])
        data = stream.read(size) if size else b""
        if len(data) != size:
            return None
        if data.count(b"\n") != int(msg["n"]):
            raise ProtocolError(f"rows message: {msg['n']} rows announced, data has other count")
        msg["data"] = data
    return msg
