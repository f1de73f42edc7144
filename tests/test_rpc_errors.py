"""Unit tests for engine.rpc.errors.classify: every provider message shape we know of."""

from __future__ import annotations

import pytest

from engine.rpc.errors import (
    BAD_JSON,
    CONN,
    HTTP_5XX,
    OK,
    RANGE_TOO_BIG,
    RATE_LIMIT,
    RPC_ERROR,
    TIMEOUT,
    classify,
)
from engine.rpc.pool import parse_retry_after


def err(code: int, message: str, data: object = None) -> dict:
    e: dict = {"code": code, "message": message}
    if data is not None:
        e["data"] = data
    return {"jsonrpc": "2.0", "id": 1, "error": e}


# (message, code, suggested_range, max_range, max_results)
RANGE_SHAPES = [
    (
        "query returned more than 10000 results. Try with this block range [0x1A2B, 0x1C3D].",
        -32005,
        (0x1A2B, 0x1C3D),
        None,
        10000,
    ),
    (
        "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
        "range and no limit on the response size, or you can request any block range with a cap "
        "of 10K logs in the response. Based on your parameters, this block range should work: "
        "[0x10, 0x2f]",
        -32602,
        (0x10, 0x2F),
        2000,
        10000,
    ),
    ("Log response size exceeded.", -32602, None, None, None),
    ("block range is too wide", -32000, None, None, None),
    ("exceed maximum block range: 50000", -32000, None, 50000, None),
    ("eth_getLogs block range too large, range: 99991, max: 3500", -32000, None, 3500, None),
    (
        "query exceeds max results 20000, retry with the range 100-200",
        -32602,
        (100, 200),
        None,
        20000,
    ),
    ("query exceeds max block range 100000", -32602, None, 100000, None),
    ("eth_getLogs is limited to a 10,000 range", -32602, None, 10000, None),
    ("range 20000 exceeds limit of 10000", -32602, None, 10000, None),
    ("range 9009594 is bigger than range limit 2000", -32602, None, 2000, None),
    ("query returned more than 10000 results", -32005, None, None, 10000),
    ("query timeout exceeded", -32005, None, None, None),
    (
        "eth_getLogs and eth_newFilter are limited to a 10,000 blocks range",
        -32602,
        None,
        10000,
        None,
    ),
    ("max block range exceeded", -32000, None, None, None),
    ("exceeded max allowed range", -32000, None, None, None),
    ("Block range limit exceeded.", -32000, None, None, None),
    ("Please specify a smaller block range", -32602, None, None, None),
    ("block range should not exceed 5000", -32000, None, 5000, None),
]


@pytest.mark.parametrize(("message", "code", "suggested", "max_range", "max_results"), RANGE_SHAPES)
def test_range_shapes(message, code, suggested, max_range, max_results):
    c = classify(200, err(code, message))
    assert c.kind == RANGE_TOO_BIG, message
    assert c.suggested_range == suggested
    assert c.max_range == max_range
    assert c.max_results == max_results
    assert c.cause == (
        "results" if max_results or "size" in message or "timeout" in message else "blocks"
    )
    assert not c.retryable
    # The same error as a raw body string, and with an HTTP 400 status, classifies the same.
    import json

    assert classify(400, json.dumps(err(code, message))).kind == RANGE_TOO_BIG
    # And a bare error object.
    assert classify(200, {"code": code, "message": message}).suggested_range == suggested


def test_range_text_inside_error_data():
    body = err(
        -32602, "invalid params", {"payload": "range 9009594 is bigger than range limit 2000"}
    )
    c = classify(200, body)
    assert c.kind == RANGE_TOO_BIG and c.max_range == 2000


def test_structured_suggestion_in_data():
    body = err(-32005, "query returned more than 10000 results", {"from": "0x10", "to": "0x20"})
    c = classify(200, body)
    assert c.kind == RANGE_TOO_BIG and c.suggested_range == (16, 32)


@pytest.mark.parametrize(
    "message",
    [
        "limit exceeded",
        "rate limit exceeded",
        "daily request count exceeded, request rate limited",
        "Your app has exceeded its compute units per second capacity.",
        "100/second request limit reached - reduce calls per second",
        "Too many requests, reason: call rate limit exhausted, retry in 10s",
    ],
)
def test_rate_limit_messages(message):
    c = classify(200, err(-32005, message))
    assert c.kind == RATE_LIMIT and c.retryable
    # Classified by text even with another code.
    assert classify(200, err(-32000, message)).kind == RATE_LIMIT


def test_minus_32005_without_text_is_rate_limit():
    assert classify(200, err(-32005, "something odd")).kind == RATE_LIMIT


def test_rate_limit_backoff_hints():
    c = classify(200, err(-32005, "request rate limited", {"rate": {"backoff_seconds": 30}}))
    assert c.kind == RATE_LIMIT and c.retry_after_s == 30
    c = classify(200, err(-32090, "Too many requests, retry in 10s"))
    assert c.retry_after_s == 10


@pytest.mark.parametrize(
    "body",
    [None, "", "Too Many Requests", '{"error":"Too Many Requests"}', err(429, "slow down")],
)
def test_http_429(body):
    assert classify(429, body).kind == RATE_LIMIT


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx(status):
    assert classify(status, "<html><body>Bad Gateway</body></html>").kind == HTTP_5XX
    assert classify(status, None).kind == HTTP_5XX
    assert classify(status, {"jsonrpc": "2.0", "id": 1, "result": "0x1"}).kind == HTTP_5XX
    assert classify(status, err(-32603, "internal error")).kind == HTTP_5XX


def test_5xx_with_range_body_is_range():
    # Some gateways answer range errors with a 5xx status; the message decides.
    assert classify(500, err(-32000, "block range is too wide")).kind == RANGE_TOO_BIG


def test_transport_failures():
    assert classify(None, "Read timed out. (read timeout=30)").kind == TIMEOUT
    assert classify(None, "Connection refused").kind == CONN
    assert classify(None, "RemoteDisconnected('Remote end closed connection')").kind == CONN
    assert classify(None, None).kind == CONN
    assert classify(408, "Request Timeout").kind == TIMEOUT


def test_bad_json():
    assert classify(200, '{"jsonrpc":"2.0","id":1,"result":[{"addr').kind == BAD_JSON
    assert classify(200, "<html>hello</html>").kind == BAD_JSON
    assert classify(200, {"jsonrpc": "2.0", "id": 1}).kind == BAD_JSON
    assert classify(200, "").kind == BAD_JSON


def test_ok():
    assert classify(200, {"jsonrpc": "2.0", "id": 1, "result": []}).kind == OK
    assert classify(200, {"jsonrpc": "2.0", "id": 1, "result": None}).kind == OK


@pytest.mark.parametrize(
    ("code", "message", "retryable"),
    [
        (-32000, "header not found", True),
        (-32603, "internal error", True),
        (-32601, "the method eth_foo does not exist/is not available", False),
        (-32602, "invalid argument 0: hex string without 0x prefix", False),
        (3, "execution reverted", False),
    ],
)
def test_other_rpc_errors_are_not_range(code, message, retryable):
    c = classify(200, err(code, message))
    assert c.kind == RPC_ERROR
    assert c.suggested_range is None and c.max_range is None
    assert c.retryable is retryable


def test_http_auth_errors_are_rpc_errors():
    c = classify(401, "invalid project id")
    assert c.kind == RPC_ERROR and c.retryable


@pytest.mark.parametrize("status", [401, 403])
def test_auth_status_with_a_permanent_json_rpc_code_is_retryable_elsewhere(status):
    # A bad key on one URL answers -32600 with 401/403: another URL may serve the request.
    c = classify(status, err(-32600, "invalid api key"))
    assert c.kind == RPC_ERROR and c.retryable
    assert "invalid api key" in c.message and str(status) in c.message
    # Without the status, -32600 stays permanent.
    assert not classify(200, err(-32600, "invalid request")).retryable


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 5.0), ("0", 0.0), ("1.5", 1.5), ("-3", 0.0), ("junk", None), (None, None)],
)
def test_parse_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    import email.utils

    now = 1_700_000_000.0
    value = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after(value, now=now) == pytest.approx(7.0)
    assert parse_retry_after(email.utils.formatdate(now - 7, usegmt=True), now=now) == 0.0
    assert parse_retry_after("99999") == 600.0  # capped
