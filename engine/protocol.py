"""JSON-lines messages between worker processes and the console (see docs/INTERNALS.md).

A `rows` message is a header line followed by exactly `n` raw JSONCompactEachRow lines, so the
console can pass row bytes to the store without parsing them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO, Any


def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def encode_rows(day: int, table: str, rows: Sequence[Sequence[Any]]) -> bytes:
    """Header + one line per row."""
    parts = [encode({"t": "rows", "day": day, "table": table, "n": len(rows)})]
    parts.extend(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in rows)
    return b"".join(parts)


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
        msg = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not a protocol line: {line[:200]!r}") from exc
    if not isinstance(msg, dict) or "t" not in msg:
        raise ProtocolError(f"not a protocol message: {line[:200]!r}")
    if msg["t"] == "rows":
        n = int(msg["n"])
        lines = []
        for _ in range(n):
            row = stream.readline()
            if not row.endswith(b"\n"):
                return None
            lines.append(row)
        msg["data"] = b"".join(lines)
    return msg
