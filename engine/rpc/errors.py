"""Classify JSON-RPC / HTTP failures from Ethereum providers into a few actionable kinds.

Pure functions, no I/O. `classify(status, body_or_error)` looks at the HTTP status and at the
JSON-RPC error (code, message and data) and answers what the caller should do:

- ``ok``            a usable JSON-RPC result
- ``range_too_big`` eth_getLogs range or result set too big: split (use ``suggested_range`` when the
                    provider gave one, else ``max_range`` when it named a block limit, else halve)
- ``rpc_429``       rate limited (HTTP 429, or a JSON-RPC error that says so, e.g. -32005
                    "limit exceeded"); back off, honour Retry-After, rotate
- ``http_5xx``      server error; back off and rotate
- ``timeout``       the request timed out (client side, or a gateway 408/504-like text)
- ``conn``          connection refused / reset / dropped
- ``bad_json``      the body is not a JSON-RPC response (truncated, HTML, missing result)
- ``rpc_error``     any other JSON-RPC error; never treated as a range problem. ``retryable`` says
                    whether another attempt (on another URL) can help.

Messages are matched case-insensitively, and range shapes are checked before rate-limit shapes,
because some providers use -32005 for both ("query returned more than 10000 results" vs
"limit exceeded"). Shapes covered (see tests/test_rpc_errors.py):

    query returned more than 10000 results. Try with this block range [0x.., 0x..]
    Log response size exceeded. ... this block range should work: [0x.., 0x..]
    block range is too wide
    exceed maximum block range: 50000
    eth_getLogs block range too large, range: 99991, max: 3500
    query exceeds max results 20000, retry with the range 100-200
    query exceeds max block range 100000
    eth_getLogs is limited to a 10,000 range
    range 20000 exceeds limit of 10000
    range 9009594 is bigger than range limit 2000
    eth_getLogs and eth_newFilter are limited to a 10,000 blocks range
    max block range exceeded / exceeded max allowed range / block range should not exceed 5000
    Please specify a smaller block range
    query timeout exceeded / response is too big / too many blocks
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

OK = "ok"
RANGE_TOO_BIG = "range_too_big"
RATE_LIMIT = "rpc_429"
HTTP_5XX = "http_5xx"
TIMEOUT = "timeout"
CONN = "conn"
BAD_JSON = "bad_json"
RPC_ERROR = "rpc_error"

#: Kinds a retry (after backoff, on the next URL) can fix.
TRANSIENT_KINDS = frozenset({RATE_LIMIT, HTTP_5XX, TIMEOUT, CONN, BAD_JSON})

# JSON-RPC codes that mean "your request is wrong" when no range/rate text explains them.
_PERMANENT_CODES = frozenset({-32600, -32601, -32602, 3})
#: Permanent codes that, on an eth_getLogs over several blocks, may be a range limit worded in a
#: way no pattern here knows: the caller retries a smaller range before giving up.
MAYBE_RANGE_CODES = frozenset({-32600, -32602})
# HTTP statuses that say "this URL cannot serve you" (bad key, plan, path): another URL may.
_URL_STATUSES = frozenset({401, 402, 403, 404})


@dataclass(frozen=True)
class Classified:
    """What a response or failure means for the caller."""

    kind: str
    suggested_range: tuple[int, int] | None = None
    max_range: int | None = None
    max_results: int | None = None
    retry_after_s: float | None = None
    code: int | None = None
    message: str = ""
    #: For range_too_big: "results" when the result set (count/size/work) is the limit,
    #: "blocks" when the block span is, None when the message does not say.
    cause: str | None = None

    @property
    def retryable(self) -> bool:
        """True when another attempt (after backoff / on another URL) can succeed."""
        if self.kind in TRANSIENT_KINDS:
            return True
        if self.kind == RPC_ERROR:
            return self.code not in _PERMANENT_CODES
        return False


_NUM = r"(0x[0-9a-f]+|\d[\d,_]*)"

# Suggested ranges, [start, end] as hex or decimal.
_SUGGEST_PATTERNS = [
    # Infura / geth-like: "Try with this block range [0x1, 0x2]"
    # Alchemy: "this block range should work: [0x1, 0x2]"
    re.compile(r"block range[^\[\]]*\[\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*\]"),
    # "retry with the range 100-200"
    re.compile(r"retry with (?:the )?range\s*\[?\s*" + _NUM + r"\s*(?:-|,|to|\.\.)\s*" + _NUM),
]

# Block-range caps, the number is the largest allowed span in blocks.
_MAX_RANGE_PATTERNS = [
    re.compile(r"exceed(?:s|ed)? (?:the )?max(?:imum)? block range:?\s*" + _NUM),
    re.compile(r"range too large,.*?\bmax:?\s*" + _NUM),
    re.compile(r"limited to (?:a )?" + _NUM + r"(k?)\s*(?:blocks? )?range"),
    re.compile(r"range\s+\d[\d,_]*\s+exceeds (?:the )?limit of\s*" + _NUM),
    re.compile(r"range\s+\d[\d,_]*\s+is bigger than range limit\s*" + _NUM),
    re.compile(r"up to an? " + _NUM + r"(k?)\s*block range"),
    re.compile(r"max(?:imum)? (?:block )?range (?:is|of)\s*" + _NUM + r"(k?)"),
    re.compile(r"maximum allowed number of requested blocks is\s*" + _NUM),
    re.compile(r"range should not exceed\s*" + _NUM + r"(k?)"),
]

# Result-count caps.
_MAX_RESULTS_PATTERNS = [
    re.compile(r"more than\s*" + _NUM + r"\s*(?:results|logs)"),
    re.compile(r"max(?:imum)? results:?\s*" + _NUM),
    re.compile(r"cap of\s*" + _NUM + r"(k?)\s*logs"),
]

# Anything that says "range / result too big" without numbers.
_RANGE_WORDS = re.compile(
    r"block range is too (?:wide|large|big)"
    r"|block range too (?:wide|large|big)"
    r"|range (?:is )?too (?:wide|large|big)"
    r"|range exceeds|exceeds? (?:the )?(?:maximum |max )?(?:block )?range"
    r"|exceed maximum block range"
    r"|is limited to .*range"
    r"|bigger than range limit|range limit"
    r"|log response size exceeded|response size (?:exceeded|too (?:large|big))"
    r"|response (?:is )?too (?:large|big)|result set too large"
    r"|query returned more than|more than \d[\d,]* (?:results|logs)"
    r"|exceeds max results|max results|too many (?:results|logs|blocks)"
    r"|query timeout exceeded|query timed out|reduce (?:your |the )?(?:query )?block range"
    r"|requested too many blocks|number of requested blocks"
    r"|range exceeded|exceed(?:s|ed)? (?:the )?max(?:imum)? allowed (?:block )?range"
    r"|smaller (?:block )?range|less number of blocks|blocks? range (?:is )?too"
    r"|too (?:large|wide|big) (?:a )?block range|range should not exceed"
)

_RESULT_WORDS = re.compile(
    r"results|\blogs\b|response size|response (?:is )?too|result set|query timeout|timed out"
)

_RATE_WORDS = re.compile(
    r"rate limit|rate-limit|ratelimit|limit exceeded|too many requests|request limit"
    r"|capacity exceeded|compute units|throughput|exceeded .*(?:quota|credits)|quota"
    r"|daily request count|requests per second|backoff_seconds|slow down|\b429\b"
)

_TIMEOUT_WORDS = re.compile(r"timed? ?out|timeout|deadline exceeded")
_CONN_WORDS = re.compile(
    r"connection (?:refused|reset|aborted|closed)|remote ?disconnected|broken pipe"
    r"|connection ?error|max retries exceeded|name or service not known|eof occurred"
    r"|incomplete ?read|chunked ?encoding"
)


def _to_int(text: str, kilo: str = "") -> int:
    text = text.strip().lower().replace(",", "").replace("_", "")
    value = int(text, 16) if text.startswith("0x") else int(text)
    return value * 1000 if kilo == "k" else value


def _error_text(error: Any) -> tuple[int | None, str]:
    """(code, lower-cased text of message + data) for a JSON-RPC error object."""
    if not isinstance(error, dict):
        return None, str(error).lower()
    code = error.get("code")
    try:
        code = int(code) if code is not None else None
    except (TypeError, ValueError):
        code = None
    parts = [str(error.get("message", ""))]
    data = error.get("data")
    if data is not None:
        parts.append(data if isinstance(data, str) else json.dumps(data, sort_keys=True))
    return code, " | ".join(parts).lower()


def _data_range(error: Any) -> tuple[int, int] | None:
    """Structured suggestion in error.data ({"from": "0x..", "to": "0x.."}), as some nodes send."""
    data = error.get("data") if isinstance(error, dict) else None
    if isinstance(data, dict) and "from" in data and "to" in data:
        try:
            return _to_int(str(data["from"])), _to_int(str(data["to"]))
        except ValueError:
            return None
    return None


_RETRY_IN = re.compile(r"(?:retry|try again) (?:in|after)\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|second)")


def _data_retry_after(error: Any, text: str) -> float | None:
    """A wait the provider asks for inside the JSON-RPC error (Infura data.rate.backoff_seconds,
    "retry in 10s" texts)."""
    data = error.get("data") if isinstance(error, dict) else None
    if isinstance(data, dict):
        rate = data.get("rate")
        if isinstance(rate, dict) and isinstance(rate.get("backoff_seconds"), int | float):
            return float(rate["backoff_seconds"])
    m = _RETRY_IN.search(text)
    if m:
        value = float(m.group(1))
        return value / 1000.0 if m.group(2) == "ms" else value
    return None


def classify_range_text(text: str) -> Classified | None:
    """Classify an error text as range_too_big (with any numbers it carries), or None."""
    low = text.lower()
    suggested: tuple[int, int] | None = None
    for pat in _SUGGEST_PATTERNS:
        m = pat.search(low)
        if m:
            a, b = _to_int(m.group(1)), _to_int(m.group(2))
            suggested = (min(a, b), max(a, b))
            break
    max_range: int | None = None
    for pat in _MAX_RANGE_PATTERNS:
        m = pat.search(low)
        if m:
            kilo = m.group(2) if m.lastindex and m.lastindex >= 2 else ""
            max_range = _to_int(m.group(1), kilo or "")
            break
    max_results: int | None = None
    for pat in _MAX_RESULTS_PATTERNS:
        m = pat.search(low)
        if m:
            kilo = m.group(2) if m.lastindex and m.lastindex >= 2 else ""
            max_results = _to_int(m.group(1), kilo or "")
            break
    if suggested is None and max_range is None and max_results is None:
        if not _RANGE_WORDS.search(low):
            return None
    if max_range is not None and max_range <= 0:
        max_range = None
    if max_results is not None or _RESULT_WORDS.search(low):
        cause: str | None = "results"
    elif max_range is not None or "range" in low or "blocks" in low:
        cause = "blocks"
    else:
        cause = None
    return Classified(
        RANGE_TOO_BIG,
        suggested_range=suggested,
        max_range=max_range,
        max_results=max_results,
        message=text,
        cause=cause,
    )


def _classify_error_object(error: Any, status: int | None) -> Classified:
    code, text = _error_text(error)
    # The message keeps the provider's case (text is lower-cased for matching only): a key that
    # a gateway quotes back must stay identical to the configured one for masking to find it.
    message = str(error) if not isinstance(error, dict) else str(error.get("message", ""))
    ranged = classify_range_text(text)
    if ranged is not None:
        suggestion = ranged.suggested_range or _data_range(error)
        return Classified(
            RANGE_TOO_BIG,
            suggested_range=suggestion,
            max_range=ranged.max_range,
            max_results=ranged.max_results,
            code=code,
            message=message,
            cause=ranged.cause,
        )
    if status == 429 or code == 429 or _RATE_WORDS.search(text) or code == -32005:
        # -32005 without range words: "limit exceeded" / "request rate limited" (Infura and others).
        return Classified(
            RATE_LIMIT, retry_after_s=_data_retry_after(error, text), code=code, message=message
        )
    if status is not None and status >= 500:
        return Classified(HTTP_5XX, code=code, message=message)
    if _TIMEOUT_WORDS.search(text) and code not in _PERMANENT_CODES:
        return Classified(TIMEOUT, code=code, message=message)
    if status in _URL_STATUSES:
        # A JSON-RPC error body on 401/403 (e.g. -32600 "invalid api key"): this URL's problem.
        return Classified(RPC_ERROR, code=None, message=f"HTTP {status}: {message}")
    return Classified(RPC_ERROR, code=code, message=message)


def classify(status: int | None, body_or_error: dict | str | None) -> Classified:
    """Classify one HTTP/JSON-RPC outcome.

    ``status`` is the HTTP status code, or None when no HTTP response arrived (then
    ``body_or_error`` is the transport error text). ``body_or_error`` is the parsed JSON-RPC
    response (``{"result": ...}`` / ``{"error": {...}}``), a bare JSON-RPC error object
    (``{"code": .., "message": ..}``), the raw body text, or an exception message.
    """
    if status is None:
        text = "" if body_or_error is None else str(body_or_error)
        if isinstance(body_or_error, dict):
            return _classify_dict(None, body_or_error)
        low = text.lower()
        if _TIMEOUT_WORDS.search(low):
            return Classified(TIMEOUT, message=text)
        if _CONN_WORDS.search(low) or not low:
            return Classified(CONN, message=text)
        ranged = classify_range_text(text)
        if ranged is not None:
            return ranged
        if _RATE_WORDS.search(low):
            return Classified(RATE_LIMIT, message=text)
        return Classified(CONN, message=text)

    if isinstance(body_or_error, str):
        stripped = body_or_error.strip()
        parsed: Any = None
        if stripped.startswith("{"):
            try:
                parsed = json.loads(stripped)
            except ValueError:
                parsed = None
        if isinstance(parsed, dict):
            return _classify_dict(status, parsed)
        return _classify_http_text(status, body_or_error)
    if isinstance(body_or_error, dict):
        return _classify_dict(status, body_or_error)
    return _classify_http_text(status, "")


def _classify_http_text(status: int, text: str) -> Classified:
    """A non-JSON (or empty) body with an HTTP status."""
    low = text.lower()
    if status == 429:
        return Classified(RATE_LIMIT, message=text[:200])
    if status in (408, 504) or (status >= 500 and _TIMEOUT_WORDS.search(low)):
        return Classified(TIMEOUT if status == 408 else HTTP_5XX, message=text[:200])
    if status >= 500:
        return Classified(HTTP_5XX, message=text[:200])
    if 200 <= status < 300:
        return Classified(BAD_JSON, message=text[:200])
    ranged = classify_range_text(low)
    if ranged is not None:
        return ranged
    if _RATE_WORDS.search(low):
        return Classified(RATE_LIMIT, message=text[:200])
    # 401/403/404 and friends: this URL cannot serve us now; another URL may.
    return Classified(RPC_ERROR, code=None, message=f"HTTP {status}: {text[:200]}")


def _classify_dict(status: int | None, body: dict) -> Classified:
    if "error" in body and body["error"] is not None:
        return _classify_error_object(body["error"], status)
    if "result" in body:
        if status is not None and status == 429:
            return Classified(RATE_LIMIT)
        if status is not None and status >= 500:
            return Classified(HTTP_5XX)
        return Classified(OK)
    if "code" in body or "message" in body:
        return _classify_error_object(body, status)
    if status is not None and status == 429:
        return Classified(RATE_LIMIT)
    if status is not None and status >= 500:
        return Classified(HTTP_5XX)
    return Classified(BAD_JSON, message="JSON without result or error")
