"""One JSON-RPC exchange as pure code: the request body, and what the answer means.

``encode`` builds a single request or a batch; ``interpret`` turns the HTTP status and body into
a ``Classified`` (engine.rpc.errors) plus the result, checking ids (a batch's ids must all come
back; a single answer must echo its id). The pool does the I/O and the retries.
``raw_logs_result`` takes a plain eth_getLogs answer's result array as bytes without parsing the
logs (the store decodes them: engine/store/raw_logs.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from engine.rpc import errors as rpc_errors
from engine.rpc.errors import Classified, classify


def encode(method: str, params: list, req_id: int, ids: Sequence[int] | None = None) -> bytes:
    """The body of one request, or (``ids`` given) of a batch: one call per element of params."""
    if ids is not None:
        return orjson.dumps(
            [
                {"jsonrpc": "2.0", "id": i, "method": method, "params": p}
                for i, p in zip(ids, params, strict=True)
            ]
        )
    return orjson.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})


def interpret(
    status: int | None,
    content: bytes,
    req_id: int,
    ids: Sequence[int] | None,
    mask: Callable[[str], str],
) -> tuple[Classified, Any]:
    """Classify an answer; the result (the list of results of a batch) when it is OK.

    ``mask`` hides secrets in provider text that is not JSON (masked before it is cut: a key cut
    in half would no longer be recognised)."""
    try:
        parsed = orjson.loads(content)
    except ValueError:
        parsed = None
    if ids is not None and isinstance(parsed, list):
        by_id = {x.get("id"): x for x in parsed if isinstance(x, dict)}
        bad = next((x for x in parsed if isinstance(x, dict) and "error" in x), None)
        if bad is not None:
            return classify(status, bad), None
        if set(by_id) != set(ids):
            return Classified(rpc_errors.BAD_JSON, message="batch response ids mismatch"), None
        parsed = {"result": [by_id[i].get("result") for i in ids]}
        return _with_result(classify(status, parsed), parsed)
    if isinstance(parsed, dict):
        c = classify(status, parsed)
        if (
            c.kind == rpc_errors.OK
            and ids is None
            and parsed.get("id") not in (req_id, str(req_id))
        ):
            return Classified(rpc_errors.BAD_JSON, message="response id mismatch"), None
        return _with_result(c, parsed)
    text = mask(content[:2000].decode("utf-8", "replace"))[:300]
    c = classify(status, text)
    if c.kind == rpc_errors.OK:  # JSON but not an object
        c = Classified(rpc_errors.BAD_JSON, message=text[:200])
    return c, None


def _with_result(c: Classified, parsed: dict) -> tuple[Classified, Any]:
    return c, (parsed.get("result") if c.kind == rpc_errors.OK else None)


@dataclass(slots=True)
class RawLogs:
    """An eth_getLogs result kept as the node's bytes: a JSON array of log objects.

    ``n`` is the number of logs (occurrences of the "logIndex" key, which every log has).
    ``len()`` and iteration (only the block numbers, for log_density under a result cap) make it
    stand in for the list of dicts the range control reads.
    """

    data: bytes
    n: int

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[dict[str, str]]:
        for m in _BLOCK_NUMBER.finditer(self.data):
            yield {"blockNumber": m.group(1).decode()}

    def block_numbers(self) -> set[int]:
        return {int(m.group(1), 16) for m in _BLOCK_NUMBER.finditer(self.data)}

    def lacks_timestamps(self) -> bool:
        return self.data.count(b'"blockTimestamp"') < self.n

    @classmethod
    def of(cls, logs: list) -> RawLogs:
        return cls(orjson.dumps(logs), len(logs))


_BLOCK_NUMBER = re.compile(rb'"blockNumber"\s*:\s*"(0x[0-9a-fA-F]+)"')
_RESULT = re.compile(rb'"result"\s*:\s*\[')


def raw_logs_result(status: int | None, content: bytes, req_id: int) -> RawLogs | None:
    """The result array of a plain successful eth_getLogs answer, without parsing its logs.

    Only the common shape is taken this way: HTTP 200, an object whose "result" array is its last
    member, no "error" before it, the id (before it) echoed. Anything else returns None and goes
    through ``interpret`` (which parses it all and classifies errors)."""
    if status != 200:
        return None
    m = _RESULT.search(content, 0, 4096)
    if m is None:
        return None
    head = content[: m.start()].rstrip()
    if not head.startswith(b"{") or b'"error"' in head:
        return None
    try:
        meta = orjson.loads(head.rstrip(b",") + b"}")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(meta, dict) or meta.get("id") not in (req_id, str(req_id)):
        return None
    # The answer may be large: find its last two tokens without copying it.
    end = _skip_space_back(content, len(content))
    if end < 2 or content[end - 1] != 0x7D:  # "}"
        return None
    close = _skip_space_back(content, end - 1)
    if close <= m.end() - 1 or content[close - 1] != 0x5D:  # "]"
        return None
    data = content[m.end() - 1 : close]
    return RawLogs(data, data.count(b'"logIndex"'))


def _skip_space_back(content: bytes, end: int) -> int:
    while end > 0 and content[end - 1] in b" \t\r\n":
        end -= 1
    return end
