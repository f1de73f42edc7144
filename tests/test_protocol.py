"""Worker -> console message framing: rows travel as raw lines behind a sized header."""

from __future__ import annotations

import io

import orjson
import pytest

from engine.protocol import ProtocolError, encode, encode_rows, read_message


def test_rows_round_trip_keeps_raw_lines() -> None:
    rows = [
        [
            "0xab",
            1,
            "115792089237316195423570985008687907853269984665640564039457584007913129639935",
        ],
        ["0xcd", 2, "0"],
    ]
    stream = io.BytesIO(encode_rows(7, "erc20", rows) + encode({"t": "day_done", "day": 7}))
    msg = read_message(stream)
    assert msg is not None and msg["t"] == "rows" and msg["n"] == 2 and msg["day"] == 7
    assert [orjson.loads(line) for line in msg["data"].splitlines()] == rows
    assert read_message(stream) == {"t": "day_done", "day": 7}
    assert read_message(stream) is None


def test_empty_rows_message() -> None:
    msg = read_message(io.BytesIO(encode_rows(1, "erc1155", [])))
    assert msg is not None and msg["n"] == 0 and msg["data"] == b""


def test_truncated_rows_message_is_dropped() -> None:
    data = encode_rows(3, "erc20", [["0xab", 1], ["0xcd", 2]])
    assert read_message(io.BytesIO(data[:-5])) is None


def test_garbage_and_miscounted_rows_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        read_message(io.BytesIO(b"Traceback (most recent call last):\n"))
    header = encode({"t": "rows", "day": 1, "table": "erc20", "n": 3, "bytes": 6})
    with pytest.raises(ProtocolError):
        read_message(io.BytesIO(header + b"[1]\n[2]"))
