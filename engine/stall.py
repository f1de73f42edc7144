"""When a run cannot make progress: the reason shown as "STALLED: <why>" (pure functions).

A run is STALLED when no remaining shard can make progress on its own:
- every shard with days left is FATAL (a crash loop: it needs the operator), or
- every RPC URL has failed for ``rpc.give_up_after_s`` (each live worker that called it got only
  errors since then; 429s do not count: a throttled URL answers).
A headless run exits 1 with the reason; the TUI shows it in its header and keeps running (the
workers keep retrying the URLs, and the operator can restart FATAL shards).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.status import FATAL, RpcHealth, WorkerState


def fatal_reason(left: Mapping[int, tuple[WorkerState, str]]) -> str:
    """``left``: shard -> (state, last error) of each shard with days left."""
    if not left or any(state != FATAL for state, _ in left.values()):
        return ""
    shards = sorted(left)
    _, error = left[shards[-1]]
    names = ", ".join(map(str, shards))
    what = "the only shard with days left is" if len(shards) == 1 else "every shard with days left"
    verb = "" if len(shards) == 1 else " is"
    text = f"{what}{verb} FATAL (shard {names}); restart it after reading its log"
    return f"{text}: {error}" if error else text


def rpc_reason(rows: Sequence[RpcHealth], now: float, give_up_after_s: float) -> str:
    """Every URL failing for give_up_after_s, named (masked) with its most frequent error."""
    if not rows or any(r.failing_since is None for r in rows):
        return ""
    since = max(r.failing_since for r in rows if r.failing_since is not None)
    if now - since < give_up_after_s:
        return ""
    urls = []
    for r in rows:
        top = max(r.errors.items(), key=lambda kv: kv[1])[0] if r.errors else "errors"
        urls.append(f"{r.url} ({top})")
    return (
        f"every RPC URL failing for {now - since:.0f}s (rpc.give_up_after_s "
        f"{give_up_after_s:g}): {', '.join(urls)}"
    )


def stall_reason(
    left: Mapping[int, tuple[WorkerState, str]],
    rows: Sequence[RpcHealth],
    now: float,
    give_up_after_s: float,
) -> str:
    """Why no remaining shard can make progress, or "" while one can."""
    return fatal_reason(left) or rpc_reason(rows, now, give_up_after_s)
