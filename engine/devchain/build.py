"""Mine a generated history into a fresh anvil node, verify it, and dump its state.

* Emitter code goes to every configured contract address and the router to ROUTER_ADDRESS
  (`anvil_setCode`); automine is off.
* Every transaction comes from one sender with explicit nonces, so the order inside a block is the
  nonce order the generator chose; a block's transactions are sent as one JSON-RPC batch, then
  `evm_mine({"timestamp": t, "blocks": 1})` seals them at the exact timestamp. Runs of empty grid
  blocks are one `evm_mine({"timestamp": t, "blocks": n})` with the block timestamp interval set,
  so each gets t, t + interval, ... exactly (no wall-clock drift).
* A single-log transaction calls the emitter at the log's address directly; a multi-log one calls
  the router, which calls each emitter in order.
* Verification: every log returned by `eth_getLogs` over the whole chain equals the expected
  (block, tx hash, log index, address, topics, data) computed from the in-block order; day edges and
  boundary blocks have the expected timestamps; the head is the expected block.

The node runs with `--hardfork shanghai` (no per-block history/beacon-root system contracts, whose
growing storage made each mined block cost milliseconds) and `--prune-history` (no historical
states kept), which together mine an empty block in tens of microseconds.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.devchain.anvil import AnvilError, AnvilProcess, Rpc, start_anvil
from engine.devchain.emitter import (
    EMITTER_CODE,
    ROUTER_ADDRESS,
    ROUTER_CODE,
    emit_payload,
    router_calldata,
)
from engine.devchain.history import History, Tx, day_start, iter_logs

TX_GAS = 1_000_000
GAS_PRICE = 10**9
LOGS_CHUNK_BLOCKS = 4000


class BuildError(RuntimeError):
    """The mined chain does not match the generated history."""


def tx_request(sender: str, nonce: int, tx: Tx) -> dict[str, str]:
    """The eth_sendTransaction object for one generated transaction."""
    if len(tx.logs) == 1:
        lg = tx.logs[0]
        to, data = lg.address, emit_payload(lg.topics, lg.data)
    else:
        to = ROUTER_ADDRESS
        data = router_calldata([(lg.address, emit_payload(lg.topics, lg.data)) for lg in tx.logs])
    return {
        "from": sender,
        "to": to,
        "data": "0x" + data.hex(),
        "gas": hex(TX_GAS),
        "gasPrice": hex(GAS_PRICE),
        "nonce": hex(nonce),
    }


def mine_history(
    node: AnvilProcess, history: History, log: Callable[[str], None] = print
) -> list[str]:
    """Mine every block of `history` into a fresh node; returns the tx hashes in chain order."""
    rpc = Rpc(node.url)
    try:
        sender = rpc.call("eth_accounts")[0]
        setup: list[tuple[str, list[Any]]] = [
            ("anvil_setCode", [a, "0x" + EMITTER_CODE.hex()])
            for a in history.spec.contract_addresses()
        ]
        setup += [
            ("anvil_setCode", [ROUTER_ADDRESS, "0x" + ROUTER_CODE.hex()]),
            ("anvil_setBalance", [sender, hex(10**30)]),
            ("anvil_setBlockTimestampInterval", [history.interval]),
            ("evm_setAutomine", [False]),
        ]
        rpc.batch(setup)
        genesis = rpc.call("eth_getBlockByNumber", ["0x0", False])
        if int(genesis["timestamp"], 16) != history.genesis_ts:
            raise BuildError(f"genesis timestamp {genesis['timestamp']} != {history.genesis_ts}")
        hashes: list[str] = []
        blocks = history.blocks
        days = history.spec.days
        t_start = last_print = time.monotonic()
        i = 0
        while i < len(blocks):
            b = blocks[i]
            if b.txs:
                reqs = [
                    ("eth_sendTransaction", [tx_request(sender, len(hashes) + k, tx)])
                    for k, tx in enumerate(b.txs)
                ]
                hashes += rpc.batch(reqs)
                rpc.call("evm_mine", [{"timestamp": b.ts, "blocks": 1}])
                i += 1
            else:
                j = i + 1
                while (
                    j < len(blocks)
                    and not blocks[j].txs
                    and blocks[j].ts == blocks[j - 1].ts + history.interval
                ):
                    j += 1
                rpc.call("evm_mine", [{"timestamp": b.ts, "blocks": j - i}])
                i = j
            now = time.monotonic()
            if now - last_print >= 5.0 or i == len(blocks):
                last_print = now
                day = min(blocks[i - 1].day + 1, days)
                log(
                    f"devchain: mined day {day}/{days} ({i} blocks, {len(hashes)} txs, "
                    f"{now - t_start:.1f} s)"
                )
        return hashes
    finally:
        rpc.close()


def verify_chain(node: AnvilProcess, history: History, tx_hashes: list[str]) -> int:
    """Check logs, timestamps and head against the history; returns the number of logs checked."""
    rpc = Rpc(node.url)
    try:
        head = int(rpc.call("eth_blockNumber"), 16)
        if head != history.head_block:
            raise BuildError(f"head block {head} != expected {history.head_block}")
        expected = [
            (n, h, li, lg.address, list(lg.topics), "0x" + lg.data.hex())
            for n, _b, h, li, lg, _tx in iter_logs(history, tx_hashes)
        ]
        got: list[tuple[int, str, int, str, list[str], str]] = []
        ranges = [
            (lo, min(lo + LOGS_CHUNK_BLOCKS - 1, head))
            for lo in range(1, head + 1, LOGS_CHUNK_BLOCKS)
        ]
        for k in range(0, len(ranges), 8):
            calls = [
                ("eth_getLogs", [{"fromBlock": hex(lo), "toBlock": hex(hi)}])
                for lo, hi in ranges[k : k + 8]
            ]
            for logs in rpc.batch(calls):
                for x in logs:
                    got.append(
                        (
                            int(x["blockNumber"], 16),
                            x["transactionHash"],
                            int(x["logIndex"], 16),
                            x["address"].lower(),
                            x["topics"],
                            x["data"],
                        )
                    )
        if got != expected:
            bad = (
                next(
                    (k, e, g) for k, (e, g) in enumerate(zip(expected, got, strict=False)) if e != g
                )
                if any(e != g for e, g in zip(expected, got, strict=False))
                else None
            )
            raise BuildError(
                f"chain logs differ from the history: {len(got)} logs vs {len(expected)} "
                f"expected; first difference {bad}"
            )
        # Timestamps: boundary blocks, every day's first and last block and their neighbours.
        want: dict[int, int] = {}
        prev_day = None
        for n, b in enumerate(history.blocks, start=1):
            if b.boundary or b.day != prev_day:
                want[n] = b.ts
                if n > 1:
                    want[n - 1] = history.blocks[n - 2].ts
            prev_day = b.day
        want[head] = history.blocks[-1].ts
        nums = sorted(want)
        for k in range(0, len(nums), 500):
            part = nums[k : k + 500]
            res = rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in part])
            for n, blk in zip(part, res, strict=True):
                if int(blk["timestamp"], 16) != want[n]:
                    raise BuildError(f"block {n} timestamp {blk['timestamp']} != {want[n]}")
        start = history.spec.start_date
        for n, b in enumerate(history.blocks, start=1):
            if b.boundary == "midnight" and b.ts != day_start(start, b.day):
                raise BuildError(f"midnight block {n} not at 00:00:00")
            if b.boundary == "last_second" and b.ts != day_start(start, b.day + 1) - 1:
                raise BuildError(f"last-second block {n} not at 23:59:59")
        return len(expected)
    finally:
        rpc.close()


def head_info(url: str) -> dict[str, Any]:
    """Head block number and hash of a node (recorded in the ground truth, checked on load)."""
    rpc = Rpc(url)
    try:
        blk = rpc.call("eth_getBlockByNumber", ["latest", False])
        return {"head_block": int(blk["number"], 16), "head_block_hash": blk["hash"]}
    finally:
        rpc.close()


def dump_state(url: str, path: Path) -> int:
    """Write the node's state (blocks, transactions, receipts, accounts) as anvil's JSON."""
    rpc = Rpc(url, timeout=1800.0)
    try:
        raw = rpc.call("anvil_dumpState", [False])
    finally:
        rpc.close()
    data = gzip.decompress(bytes.fromhex(raw.removeprefix("0x")))
    path.write_bytes(data)
    return len(data)


def start_build_node(history: History, log_path: Path | None, port: int | None) -> AnvilProcess:
    """A fresh node whose genesis is the history's genesis timestamp."""
    try:
        return start_anvil(port=port, genesis_timestamp=history.genesis_ts, log_path=log_path)
    except AnvilError as exc:
        raise AnvilError(f"cannot start anvil to build the devchain: {exc}") from exc
