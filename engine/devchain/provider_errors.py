"""Provider wordings of eth_getLogs limits, for the fault proxy and the procedural Polygon node.

``cap_message(style, ctx)`` answers a capped request the way one provider family does; the styles
are the shapes ``engine.rpc.errors`` classifies (its docstring lists them).
"""

from __future__ import annotations

from typing import Any

#: Message styles for the eth_getLogs cap (see cap_message). "infura" and "max_results_retry"
#: word a block-range violation differently from a result-count one, as those providers do; the
#: other styles answer both with their one message (an ambiguous provider).
CAP_STYLES = (
    "infura",  # query returned more than N results. Try with this block range [0x.., 0x..]
    "alchemy",  # Log response size exceeded. ... this block range should work: [0x.., 0x..]
    "too_wide",  # block range is too wide
    "max_block_range",  # exceed maximum block range: 50000
    "range_too_large",  # eth_getLogs block range too large, range: 99991, max: 3500
    "max_results_retry",  # query exceeds max results 20000, retry with the range 100-200
    "limited_to",  # eth_getLogs is limited to a 10,000 range
    "exceeds_limit",  # range 20000 exceeds limit of 10000
    "opaque",  # -32602 invalid params (a limit in words no classifier knows)
)


def cap_message(style: str, ctx: dict[str, Any]) -> tuple[int, str]:
    """(JSON-RPC code, message) for a capped eth_getLogs request in the given style."""
    mr, mres, span = ctx["max_range"], ctx["max_results"], ctx["span"]
    sug = ctx["sug_from"] is not None and ctx["suggest"]
    blocks = ctx.get("violation") == "blocks"
    # Providers with both caps word a block-range violation differently (and suggest nothing).
    if style == "infura" and blocks:
        return -32602, f"range {span} exceeds limit of {mr}"
    if style == "max_results_retry" and blocks:
        return -32602, f"query exceeds max block range {mr}"
    if style == "infura":
        msg = f"query returned more than {mres or 10000} results"
        if sug:
            msg += f". Try with this block range [{ctx['sug_from']:#x}, {ctx['sug_to']:#x}]."
        return -32005, msg
    if style == "alchemy":
        msg = "Log response size exceeded."
        if sug:
            msg += (
                f" You can make eth_getLogs requests with up to a {(mr or 2000) // 1000}K block"
                f" range and no limit on the response size, or you can request any block range"
                f" with a cap of {(mres or 10000) // 1000}K logs in the response. Based on your"
                f" parameters, this block range should work: [{ctx['sug_from']:#x},"
                f" {ctx['sug_to']:#x}]"
            )
        return -32602, msg
    if style == "too_wide":
        return -32000, "block range is too wide"
    if style == "max_block_range":
        return -32000, f"exceed maximum block range: {mr or 50000}"
    if style == "range_too_large":
        return -32000, f"eth_getLogs block range too large, range: {span}, max: {mr or 3500}"
    if style == "max_results_retry":
        msg = f"query exceeds max results {mres or 20000}"
        if sug:
            msg += f", retry with the range {ctx['sug_from']}-{ctx['sug_to']}"
        return -32602, msg
    if style == "limited_to":
        return -32602, f"eth_getLogs is limited to a {mr or 10000:,} range"
    if style == "exceeds_limit":
        return -32602, f"range {span} exceeds limit of {mr or 10000}"
    if style == "opaque":
        return -32602, "invalid params"
    raise ValueError(f"unknown cap style {style!r}")
