"""Worker -> console message framing: rows travel as raw lines behind a sized header."""

from __future__ import annotations

import io

import orjson
import pytest

from engine.protocol import (
    DayDone,
    Done,
    Error,
    Heartbeat,
    Hello,
    Message,
    Pause,
    Phase,
    Plan,
    PlanBackfill,
    PlanContracts,
    PlanRpc,
    ProtocolError,
    Range,
    Resume,
    Rows,
    RpcReport,
    Stop,
    decode_line,
    encode,
    encode_rows,
    read_message,
)


def test_rows_round_trip_keeps_raw_lines() -> None:
    rows = [
        [
            "0xab",
            1,
            "115792089237316195423570985008687907853269984665640564039457584007913129639935",
        ],
        ["0xcd", 2, "0"],
    ]
    done = DayDone(day=7, first=100, last=199)
    stream = io.BytesIO(encode_rows(7, "erc20", rows) + encode(done))
    msg = read_message(stream)
    assert isinstance(msg, Rows) and msg.n == 2 and msg.day == 7
    assert [orjson.loads(line) for line in msg.data.splitlines()] == rows
    assert read_message(stream) == done
    assert read_message(stream) is None


def test_empty_rows_message() -> None:
    msg = read_message(io.BytesIO(encode_rows(1, "erc1155", [])))
    assert isinstance(msg, Rows) and msg.n == 0 and msg.data == b""


def test_truncated_rows_message_is_dropped() -> None:
    data = encode_rows(3, "erc20", [["0xab", 1], ["0xcd", 2]])
    assert read_message(io.BytesIO(data[:-5])) is None


def test_garbage_and_miscounted_rows_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        read_message(io.BytesIO(b"Traceback (most recent call last):\n"))
    header = b'{"t":"rows","day":1,"table":"erc20","n":3,"bytes":6}\n'
    with pytest.raises(ProtocolError):
        read_message(io.BytesIO(header + b"[1]\n[2]"))


PLAN = Plan(
    shard=1,
    shards=4,
    days=[1, 5],
    ranges={1: (100, 199), 5: (500, 499)},
    rpc=PlanRpc(
        urls=["http://127.0.0.1:1/k"], requests_per_second=6.0, timeout_s=5.0, max_block_range=2000
    ),
    backfill=PlanBackfill(start_date="2022-12-18", confirmations=64, failed_day_retry_s=30.0),
    contracts=PlanContracts(
        erc20_tokens=["0xa"], erc20_counterparties=[], erc1155=["0xb"], exchanges=[]
    ),
)

EVERY_MESSAGE = [
    PLAN,
    Pause(),
    Resume(),
    Stop(),
    Hello(shard=2, pid=123, days=7),
    Range(day=3, first=300, last=299),
    Heartbeat(day=3, first=300, last=350, rows=12, phase=Phase.WAIT_FINAL, note="x"),
    DayDone(day=3, first=300, last=399, erc20=5, erc1155=1, resolutions=2, registrations=0),
    Error(kind="day_failed", msg="day 3 not complete", day=3, count=1),
    RpcReport(health=[{"url": "http://127.0.0.1:1/***", "index": 0, "calls": 3}]),
    Done(),
]


@pytest.mark.parametrize("msg", EVERY_MESSAGE, ids=lambda m: m.T)
def test_every_message_round_trips_through_one_line(msg: Message) -> None:
    line = encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_line(line) == msg
    assert read_message(io.BytesIO(line)) == msg


@pytest.mark.parametrize(
    "msg, wire",
    [
        (Range(day=3, first=300, last=299), {"t": "range", "day": 3, "from": 300, "to": 299}),
        (Stop(), {"t": "stop"}),
        (
            Error(kind="crash", msg="boom"),
            {"t": "error", "kind": "crash", "msg": "boom", "day": None, "count": 1},
        ),
    ],
)
def test_wire_names_are_those_of_the_documented_format(msg: Message, wire: dict) -> None:
    assert orjson.loads(encode(msg)) == wire


@pytest.mark.parametrize(
    "line",
    [
        b'{"t":"nonsense"}\n',  # unknown type
        b'{"day":1}\n',  # no type
        b"[1, 2]\n",  # not an object
        b'{"t":"range","day":1,"from":2}\n',  # a field missing
        b'{"t":"hb","phase":"dancing"}\n',  # not a phase
        b'{"t":"done","extra":1}\n',  # a field no message has
    ],
)
def test_lines_that_are_no_message_are_protocol_errors(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_line(line)
