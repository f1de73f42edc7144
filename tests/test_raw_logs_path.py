"""Pure parts of the raw-log path: finding an answer's result array, cutting it in pieces."""

from __future__ import annotations

import io

import orjson
import pytest

from engine.protocol import Heartbeat, Logs, encode, encode_header, read_message
from engine.rpc.jsonrpc import RawLogs, raw_logs_result
from engine.worker import split_pieces

LOG = {"address": "0xa", "topics": ["0x1"], "data": "0x", "blockNumber": "0x10", "logIndex": "0x0"}


def _logs(n: int) -> list[dict]:
    return [{**LOG, "logIndex": hex(i), "blockNumber": hex(16 + i // 3)} for i in range(n)]


@pytest.mark.parametrize(
    ("body", "want"),
    [
        (b'{"jsonrpc":"2.0","id":7,"result":[]}', 0),
        (b'{"jsonrpc":"2.0","id":7,"result":' + orjson.dumps(_logs(5)) + b"}", 5),
        (b'{ "jsonrpc": "2.0", "id": "7", "result" : ' + orjson.dumps(_logs(2)) + b" }\n", 2),
        (b'{"jsonrpc":"2.0","id":8,"result":[]}', None),  # another id
        (b'{"jsonrpc":"2.0","result":[],"id":7}', None),  # id after the result: full parse
        (b'{"jsonrpc":"2.0","id":7,"error":{"code":-32005,"message":"too many"}}', None),
        (b"<html>busy</html>", None),
        (b'{"jsonrpc":"2.0","id":7,"result":[{"logIndex":"0x0"}', None),  # cut short
    ],
)
def test_result_array_found_only_in_the_plain_shape(body: bytes, want: int | None) -> None:
    got = raw_logs_result(200, body, 7)
    if want is None:
        assert got is None
    else:
        assert got is not None and got.n == want
        assert orjson.loads(got.data) == orjson.loads(body)["result"]


def test_not_200_is_never_taken_raw() -> None:
    assert raw_logs_result(429, b'{"jsonrpc":"2.0","id":7,"result":[]}', 7) is None


def test_raw_logs_give_block_numbers_and_timestamp_presence() -> None:
    raw = RawLogs.of(_logs(7))
    assert len(raw) == 7 and raw.block_numbers() == {16, 17, 18}
    assert [x["blockNumber"] for x in raw][:4] == ["0x10", "0x10", "0x10", "0x11"]
    assert raw.lacks_timestamps()
    assert not RawLogs.of([{**LOG, "blockTimestamp": "0x5"}]).lacks_timestamps()


@pytest.mark.parametrize("n", [0, 1, 2, 50, 1000])
@pytest.mark.parametrize("limit", [1, 300, 10_000, 1 << 30])
@pytest.mark.parametrize("indent", [False, True])
def test_pieces_are_arrays_that_together_hold_every_log_once(
    n: int, limit: int, indent: bool
) -> None:
    logs = _logs(n)
    data = orjson.dumps(logs, option=orjson.OPT_INDENT_2 if indent else 0)
    pieces = list(split_pieces(data, n, limit))
    got = [lg for piece, _ in pieces for lg in orjson.loads(piece)]
    assert got == logs
    assert [c for _, c in pieces] == [len(orjson.loads(p)) for p, _ in pieces]
    if limit < len(data) and n > 1:
        assert len(pieces) > 1
        assert all(len(p) <= limit + 400 for p, _ in pieces)


def test_logs_message_round_trip_and_a_cut_one_is_dropped() -> None:
    data = orjson.dumps(_logs(3))
    msg = Logs(day=4, chunk=(5 << 32) | 9, n=3, skip_cp_from=True, ts=[[16, 100]], data=data)
    wire = encode_header(msg) + data + encode(Heartbeat(day=4))
    stream = io.BytesIO(wire)
    got = read_message(stream)
    assert got == msg
    assert isinstance(read_message(stream), Heartbeat)
    assert read_message(io.BytesIO(wire[: len(encode_header(msg)) + 10])) is None
