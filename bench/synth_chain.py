"""A procedural chain for benchmarks: JSON-RPC answers computed from block numbers, no node.

The throughput benchmark needs a chain of several hundred thousand logs with dense days
(hundreds of logs per block) and sparse ones; mining that on anvil takes longer than the
benchmark. `SynthChain.handle(request)` answers the calls the product, cryo and a raw client
make (eth_chainId, eth_blockNumber, eth_getBlockByNumber, eth_getLogs with address and topic
filters) for a deterministic chain: block b has timestamp genesis + b * interval, its logs come
from a seeded RNG of (seed, b). It is meant to sit behind bench/replay_node.py, which records each
answer once and serves it from memory afterwards, so its Python cost is paid on the first pass.

The logs use the default (Polymarket) contract addresses: ERC20 transfers of USDC.e with a
counterparty on one side (some on both), some without one (ours filters them out at the node,
cryo does not), ERC721-shaped transfers (skipped and counted by ours), ConditionalTokens
TransferSingle / TransferBatch / ConditionResolution and exchange TokenRegistered events.
`expected()` gives the rows the product must stage.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

from engine.config import ContractsConfig
from engine.constants import (
    CONDITION_RESOLUTION_TOPIC,
    TOKEN_REGISTERED_TOPIC,
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
)

CHAIN_ID = 31337
TAIL_BLOCKS = 200  # blocks after the last day, so it is final under the confirmations


def _word(n: int) -> str:
    return f"{n:064x}"


def _addr_topic(addr: str) -> str:
    return "0x" + "0" * 24 + addr[2:]


@dataclass
class SynthChain:
    """Days alternate sparse and dense: `dense_days` of them (spread out) at `dense_per_block`."""

    contracts: ContractsConfig
    start_date: dt.date = dt.date(2022, 12, 18)
    days: int = 8
    dense_days: tuple[int, ...] = (1, 4)
    interval_s: int = 72  # 1,200 blocks a day
    dense_per_block: int = 170
    sparse_per_block: float = 2.0
    seed: int = 1

    def __post_init__(self) -> None:
        c = self.contracts
        self.tokens = [a.lower() for a in c.erc20_tokens]
        self.cps = [a.lower() for a in c.erc20_counterparties]
        self.ctf = c.erc1155[0].lower()
        self.exchanges = [a.lower() for a in c.exchanges]
        start_ts = int(dt.datetime.combine(self.start_date, dt.time(), dt.UTC).timestamp())
        self.genesis_ts = start_ts - 10 * self.interval_s
        self.blocks_per_day = 86_400 // self.interval_s
        self.last_day_block = self.block_at(start_ts + 86_400 * self.days)
        self.head = self.last_day_block + TAIL_BLOCKS
        self._cache: dict[int, list[dict[str, Any]]] = {}
        self.wallets = [f"0x{random.Random(i).getrandbits(160):040x}" for i in range(64)]

    # ---- the chain ----------------------------------------------------------------------------
    def block_at(self, ts: int) -> int:
        """First block with timestamp >= ts."""
        return max(0, -(-(ts - self.genesis_ts) // self.interval_s))

    def ts(self, block: int) -> int:
        return self.genesis_ts + block * self.interval_s

    def day_of(self, block: int) -> int:
        start_ts = self.genesis_ts + 10 * self.interval_s
        return (self.ts(block) - start_ts) // 86_400

    def logs_of(self, block: int) -> list[dict[str, Any]]:
        """The block's logs (deterministic; generated once, then kept)."""
        logs = self._cache.get(block)
        if logs is None:
            logs = self._cache[block] = self._generate(block)
        return logs

    def _generate(self, block: int) -> list[dict[str, Any]]:
        day = self.day_of(block)
        if not 0 <= day < self.days or block > self.head:
            return []
        rng = random.Random(self.seed * 1_000_003 + block)
        dense = day in self.dense_days
        mean = self.dense_per_block if dense else self.sparse_per_block
        n = int(mean) + (1 if rng.random() < mean - int(mean) else 0)
        if not dense:
            n = rng.randint(0, int(2 * mean))
        out: list[dict[str, Any]] = []
        ts = hex(self.ts(block))
        bn = hex(block)
        bh = f"0x{rng.getrandbits(256):064x}"
        tx_i = 0
        while len(out) < n:
            tx = f"0x{rng.getrandbits(256):064x}"
            for address, topics, data in self._tx_logs(rng):
                out.append(
                    {
                        "address": address,
                        "topics": topics,
                        "data": data,
                        "blockHash": bh,
                        "blockNumber": bn,
                        "blockTimestamp": ts,
                        "transactionHash": tx,
                        "transactionIndex": hex(tx_i),
                        "logIndex": hex(len(out)),
                        "removed": False,
                    }
                )
            tx_i += 1
        return out

    def _tx_logs(self, rng: random.Random) -> list[tuple[str, list[str], str]]:
        w = self.wallets
        r = rng.random()
        usdc = self.tokens[0]
        value = "0x" + _word(rng.randrange(1, 10**12))
        if r < 0.55:  # a trade: USDC leg to or from an exchange, often a token leg too
            cp = rng.choice(self.cps)
            wallet = rng.choice(w)
            frm, to = (cp, wallet) if rng.random() < 0.5 else (wallet, cp)
            if rng.random() < 0.05:
                frm, to = cp, rng.choice(self.cps)  # counterparty on both sides
            logs = [(usdc, [TRANSFER_TOPIC, _addr_topic(frm), _addr_topic(to)], value)]
            if rng.random() < 0.6:
                tid = _word(rng.randrange(1, 2**256))
                amount = _word(rng.randrange(1, 10**12))
                topics = [
                    TRANSFER_SINGLE_TOPIC,
                    _addr_topic(cp),
                    _addr_topic(to),
                    _addr_topic(frm),
                ]
                logs.append((self.ctf, topics, "0x" + tid + amount))
            return logs
        if r < 0.90:  # a plain TransferSingle
            tid = _word(rng.randrange(1, 2**256))
            topics = [TRANSFER_SINGLE_TOPIC, *(_addr_topic(rng.choice(w)) for _ in range(3))]
            return [(self.ctf, topics, "0x" + tid + _word(rng.randrange(1, 10**12)))]
        if r < 0.95:  # TransferBatch of 2-4 ids
            k = rng.randint(2, 4)
            ids = [rng.randrange(1, 2**256) for _ in range(k)]
            vals = [rng.randrange(1, 10**12) for _ in range(k)]
            data = _word(64) + _word(64 + 32 * (k + 1)) + _word(k) + "".join(map(_word, ids))
            data += _word(k) + "".join(map(_word, vals))
            topics = [TRANSFER_BATCH_TOPIC, *(_addr_topic(rng.choice(w)) for _ in range(3))]
            return [(self.ctf, topics, "0x" + data)]
        if r < 0.985:  # no counterparty: not fetched by ours (topic filter), fetched by cryo
            topics = [TRANSFER_TOPIC, _addr_topic(rng.choice(w)), _addr_topic(rng.choice(w))]
            return [(usdc, topics, value)]
        if r < 0.99:  # ERC721-shaped Transfer from a counterparty: skipped and counted
            topics = [TRANSFER_TOPIC, _addr_topic(rng.choice(self.cps)), _addr_topic(w[0])]
            return [(usdc, [*topics, "0x" + _word(rng.randrange(10**6))], "0x")]
        if r < 0.995:  # a resolution
            cond = f"0x{rng.getrandbits(256):064x}"
            topics = [CONDITION_RESOLUTION_TOPIC, cond, _addr_topic(w[1]), cond]
            data = _word(2) + _word(64) + _word(2) + _word(1) + _word(0)
            return [(self.ctf, topics, "0x" + data)]
        cond = f"0x{rng.getrandbits(256):064x}"
        ex = rng.choice(self.exchanges)
        t0, t1 = rng.randrange(2**256), rng.randrange(2**256)
        return [(ex, [TOKEN_REGISTERED_TOPIC, "0x" + _word(t0), "0x" + _word(t1), cond], "0x")]

    # ---- expected rows --------------------------------------------------------------------------
    def expected(self) -> dict[str, int]:
        """Rows the product stages per table, and logs per fetch kind, over every day."""
        cps = set(self.cps)
        out = {"erc20": 0, "erc1155": 0, "resolutions": 0, "registrations": 0, "logs_all": 0}
        for b in range(self.head + 1):
            for lg in self.logs_of(b):
                out["logs_all"] += 1
                t = lg["topics"]
                if t[0] == TRANSFER_TOPIC:
                    frm, to = "0x" + t[1][-40:], "0x" + t[2][-40:]
                    if len(t) == 3 and (frm in cps or to in cps):
                        out["erc20"] += 1
                elif t[0] == TRANSFER_SINGLE_TOPIC:
                    out["erc1155"] += 1
                elif t[0] == TRANSFER_BATCH_TOPIC:
                    out["erc1155"] += int(lg["data"][2 + 128 : 2 + 192], 16)
                elif t[0] == CONDITION_RESOLUTION_TOPIC:
                    out["resolutions"] += 1
                else:
                    out["registrations"] += 1
        return out

    # ---- JSON-RPC -------------------------------------------------------------------------------
    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        """One JSON-RPC request object -> its response object (same id)."""
        method, params = req.get("method"), req.get("params") or []
        try:
            result = self._call(method, params)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            err = {"code": -32602, "message": f"invalid params: {exc}"}
            return {"jsonrpc": "2.0", "id": req.get("id"), "error": err}
        return {"jsonrpc": "2.0", "id": req.get("id"), "result": result}

    def _call(self, method: str, params: list) -> Any:
        if method == "eth_chainId":
            return hex(CHAIN_ID)
        if method == "eth_blockNumber":
            return hex(self.head)
        if method == "eth_getBlockByNumber":
            tag = params[0]
            n = self.head if tag in ("latest", "safe", "finalized") else int(tag, 16)
            if n > self.head:
                return None
            return {"number": hex(n), "timestamp": hex(self.ts(n)), "hash": "0x" + _word(n)}
        if method == "eth_getLogs":
            return self._get_logs(params[0])
        raise ValueError(f"method {method} not supported")

    def _get_logs(self, flt: dict[str, Any]) -> list[dict[str, Any]]:
        lo = int(flt.get("fromBlock", "0x0"), 16)
        to = flt.get("toBlock", "latest")
        hi = self.head if to == "latest" else min(self.head, int(to, 16))
        addr = flt.get("address")
        if isinstance(addr, str):
            addr = [addr]
        addrs = None if addr is None else {a.lower() for a in addr}
        topics = [
            None if t is None else {x.lower() for x in ([t] if isinstance(t, str) else t)}
            for t in flt.get("topics") or []
        ]
        out = []
        for b in range(lo, hi + 1):
            for lg in self.logs_of(b):
                if addrs is not None and lg["address"] not in addrs:
                    continue
                t = lg["topics"]
                if any(
                    want is not None and (i >= len(t) or t[i] not in want)
                    for i, want in enumerate(topics)
                ):
                    continue
                out.append(lg)
        return out
