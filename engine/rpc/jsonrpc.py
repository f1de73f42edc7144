"""One JSON-RPC exchange as pure code: the request body, and what the answer means.

``encode`` builds a single request or a batch; ``interpret`` turns the HTTP status and body into
a ``Classified`` (engine.rpc.errors) plus the result, checking ids (a batch's ids must all come
back; a single answer must echo its id). The pool does the I/O and the retries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
