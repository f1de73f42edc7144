"""A real anvil node populated with logs quickly (tests and bench/rpc_calls.py).

The node is started by the devchain's launcher (`engine.devchain.anvil.start_anvil`: a free
loopback port, under the watchdog that stops it with its owner, waited for until it answers), with
automine on and the cancun hardfork; `AnvilNode.populate` mines a synthetic history of emitter
contracts.
"""

from __future__ import annotations

import random
from typing import Any

from engine.devchain.anvil import ANVIL_REL, REPO_ROOT, AnvilProcess, free_port, start_anvil
from tests.support.fault_proxy import HttpPoster

__all__ = ["ANVIL_BIN", "EMITTER_A", "EMITTER_B", "AnvilNode", "emitter_code", "free_port"]

ANVIL_BIN = REPO_ROOT / ANVIL_REL

EMITTER_A = "0x00000000000000000000000000000000000a11ce"
EMITTER_B = "0x00000000000000000000000000000000000b0b00"

#: Mining thousands of blocks slows down with chain length under Prague (EIP-2935 history
#: contract) and with full state history: 5,000 empty blocks took ~18 s; with cancun and
#: --prune-history (which the launcher always passes) ~0.1 s.
FAST_MINING_HARDFORK = "cancun"


def emitter_code(logs_per_call: int) -> str:
    """Runtime code that copies its calldata to memory and emits it as LOG0 ``n`` times."""
    # CALLDATASIZE PUSH1 0 PUSH1 0 CALLDATACOPY, then n x (CALLDATASIZE PUSH1 0 LOG0), STOP
    return "0x366000600037" + "366000a0" * logs_per_call + "00"


class AnvilNode:
    """An anvil process on a free loopback port, automining; context manager."""

    def __init__(self, timestamp: int = 1_700_000_000, hardfork: str = FAST_MINING_HARDFORK):
        self.timestamp = timestamp
        self.hardfork = hardfork
        self.proc: AnvilProcess | None = None
        self.port = 0
        self.url = ""
        self._session: HttpPoster | None = None
        self._ids = 0

    def __enter__(self) -> AnvilNode:
        self.proc = start_anvil(
            genesis_timestamp=self.timestamp,
            automine=True,
            hardfork=self.hardfork,
            ready_timeout=20.0,
        )
        self.port, self.url = self.proc.port, self.proc.url
        self._session = HttpPoster(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        if self.proc is not None:
            self.proc.stop(timeout=5)
            self.proc = None

    def _post(self, payload: Any, timeout: float) -> Any:
        if self._session is None:
            raise RuntimeError("AnvilNode is not started (use it as a context manager)")
        return self._session.post_json(payload, timeout=timeout)

    def rpc(self, method: str, params: list[Any]) -> Any:
        self._ids += 1
        body = self._post(
            {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}, timeout=60
        )
        if "error" in body:
            raise RuntimeError(f"{method}: {body['error']}")
        return body["result"]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        payload = []
        for method, params in calls:
            self._ids += 1
            payload.append({"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params})
        out = self._post(payload, timeout=120)
        for item in out:
            if "error" in item:
                raise RuntimeError(f"batch: {item['error']}")
        return [item["result"] for item in sorted(out, key=lambda x: x["id"])]

    def populate(self, blocks: list[tuple[int, int, int]], seed: int = 1) -> int:
        """Mine a history: ``blocks`` is [(empty_blocks_before, txs_to_A, txs_to_B), ...].

        Each tx to EMITTER_A emits 50 logs, each tx to EMITTER_B one log. Returns the head.
        """
        rng = random.Random(seed)
        self.rpc("anvil_setCode", [EMITTER_A, emitter_code(50)])
        self.rpc("anvil_setCode", [EMITTER_B, emitter_code(1)])
        sender = self.rpc("eth_accounts", [])[0]
        self.rpc("evm_setAutomine", [False])
        try:
            for gap, n_a, n_b in blocks:
                if gap > 0:
                    self.rpc("anvil_mine", [hex(gap), "0xc"])
                sends = []
                for target, n in ((EMITTER_A, n_a), (EMITTER_B, n_b)):
                    for _ in range(n):
                        data = "0x" + rng.randbytes(32).hex()
                        tx = {"from": sender, "to": target, "data": data, "gas": hex(200_000)}
                        sends.append(("eth_sendTransaction", [tx]))
                if sends:
                    self.batch(sends)
                self.rpc("evm_mine", [])
        finally:
            self.rpc("evm_setAutomine", [True])
        return int(self.rpc("eth_blockNumber", []), 16)
