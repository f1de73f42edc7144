"""Tiny EVM runtime code that makes real-looking logs appear at real contract addresses.

Two contracts, both installed with `anvil_setCode`:

* the **emitter** (at every configured contract address: tokens, ConditionalTokens, exchanges).
  Calldata = 1 byte `k` (number of topics, 0..4) ++ `k` 32-byte topics ++ data bytes. It copies the
  data to memory and runs `LOGk`, so the log's address is the contract's own address.
* the **router** (at a helper address). Calldata = records, each 20-byte target ++ 2-byte big-endian
  payload length ++ payload; it CALLs every target with its payload in order and reverts if one call
  fails. One transaction to the router therefore emits several logs from several addresses, in
  record order, e.g. a trade's USDC leg (token contract) and token leg (ConditionalTokens).

The bytecode is assembled here from mnemonics so it stays readable and testable.
"""

from __future__ import annotations

from collections.abc import Sequence

ROUTER_ADDRESS = "0x00000000000000000000000000000000000de7c0"

_OPS: dict[str, int] = {
    "STOP": 0x00,
    "ADD": 0x01,
    "SUB": 0x03,
    "GT": 0x11,
    "EQ": 0x14,
    "ISZERO": 0x15,
    "SHL": 0x1B,
    "SHR": 0x1C,
    "CALLDATALOAD": 0x35,
    "CALLDATASIZE": 0x36,
    "CALLDATACOPY": 0x37,
    "POP": 0x50,
    "JUMP": 0x56,
    "JUMPI": 0x57,
    "GAS": 0x5A,
    "JUMPDEST": 0x5B,
    "PUSH0": 0x5F,
    "DUP1": 0x80,
    "DUP2": 0x81,
    "DUP3": 0x82,
    "DUP4": 0x83,
    "DUP5": 0x84,
    "DUP6": 0x85,
    "DUP7": 0x86,
    "SWAP1": 0x90,
    "LOG0": 0xA0,
    "LOG1": 0xA1,
    "LOG2": 0xA2,
    "LOG3": 0xA3,
    "LOG4": 0xA4,
    "CALL": 0xF1,
    "REVERT": 0xFD,
}


def assemble(program: Sequence[str | int | tuple[str, str]]) -> bytes:
    """Assemble a list of mnemonics.

    Items: an opcode name; an int (pushed with the smallest PUSHn, PUSH0 for 0); `("label", name)`
    defines a JUMPDEST; `("ref", name)` pushes a label's offset with PUSH2.
    """

    def size(item: str | int | tuple[str, str]) -> int:
        if isinstance(item, tuple):
            return 1 if item[0] == "label" else 3
        if isinstance(item, int):
            return 1 if item == 0 else 1 + max(1, (item.bit_length() + 7) // 8)
        return 1

    labels: dict[str, int] = {}
    pc = 0
    for item in program:
        if isinstance(item, tuple) and item[0] == "label":
            labels[item[1]] = pc
        pc += size(item)
    out = bytearray()
    for item in program:
        if isinstance(item, tuple):
            kind, name = item
            if kind == "label":
                out.append(_OPS["JUMPDEST"])
            else:
                out.append(0x61)  # PUSH2
                out += labels[name].to_bytes(2, "big")
        elif isinstance(item, int):
            if item == 0:
                out.append(_OPS["PUSH0"])
            else:
                n = max(1, (item.bit_length() + 7) // 8)
                out.append(0x5F + n)
                out += item.to_bytes(n, "big")
        else:
            out.append(_OPS[item])
    return bytes(out)


def _emitter_program() -> list[str | int | tuple[str, str]]:
    prog: list[str | int | tuple[str, str]] = [
        # k = calldata[0]
        0, "CALLDATALOAD", 0xF8, "SHR",                        # [k]
        # off = 1 + 32k ; len = size - off
        "DUP1", 5, "SHL", 1, "ADD",                            # [k off]
        "DUP1", "CALLDATASIZE", "SUB",                         # [k off len]
        # memory[0:len] = calldata[off:off+len]
        "DUP1", "DUP3", 0, "CALLDATACOPY",                     # [k off len]
        "SWAP1", "POP", "SWAP1",                               # [len k]
    ]  # fmt: skip
    for k in range(5):
        prog += ["DUP1", k, "EQ", ("ref", f"log{k}"), "JUMPI"]
    prog += [0, 0, "REVERT"]
    for k in range(5):
        prog += [("label", f"log{k}"), "POP"]  # [len]
        for i in reversed(range(k)):
            prog += [1 + 32 * i, "CALLDATALOAD"]  # [len t_{k-1} .. t_0]
        prog += [f"DUP{k + 1}", 0, f"LOG{k}", "STOP"]
    return prog


def _router_program() -> list[str | int | tuple[str, str]]:
    return [
        0,                                                     # [p]
        ("label", "loop"),
        "DUP1", "CALLDATASIZE", "GT", "ISZERO", ("ref", "end"), "JUMPI",
        "DUP1", "CALLDATALOAD", 0x60, "SHR",                   # [p target]
        "DUP2", 20, "ADD", "CALLDATALOAD", 0xF0, "SHR",        # [p target len]
        "DUP1", "DUP4", 22, "ADD", 0, "CALLDATACOPY",          # mem[0:len] = payload
        0, 0, "DUP3", 0, 0, "DUP7", "GAS", "CALL",             # [p target len ok]
        "ISZERO", ("ref", "fail"), "JUMPI",                    # [p target len]
        "SWAP1", "POP", 22, "ADD", "ADD",                      # [p + 22 + len]
        ("ref", "loop"), "JUMP",
        ("label", "end"), "STOP",
        ("label", "fail"), 0, 0, "REVERT",
    ]  # fmt: skip


EMITTER_CODE: bytes = assemble(_emitter_program())
ROUTER_CODE: bytes = assemble(_router_program())


def _word(x: int | str | bytes) -> bytes:
    """A 32-byte topic from an int, a 0x hex string (address or hash) or bytes (left-padded)."""
    if isinstance(x, int):
        return x.to_bytes(32, "big")
    if isinstance(x, str):
        x = bytes.fromhex(x.removeprefix("0x"))
    if len(x) > 32:
        raise ValueError("topic longer than 32 bytes")
    return x.rjust(32, b"\0")


def emit_payload(topics: Sequence[int | str | bytes], data: bytes) -> bytes:
    """Calldata for the emitter: emit one log with these topics and data."""
    if len(topics) > 4:
        raise ValueError("at most 4 topics")
    return bytes([len(topics)]) + b"".join(_word(t) for t in topics) + data


def router_calldata(calls: Sequence[tuple[str, bytes]]) -> bytes:
    """Calldata for the router: CALL each (target address, emitter payload) in order."""
    out = bytearray()
    for target, payload in calls:
        if len(payload) > 0xFFFF:
            raise ValueError("payload too long")
        out += bytes.fromhex(target.removeprefix("0x")).rjust(20, b"\0")
        out += len(payload).to_bytes(2, "big")
        out += payload
    return bytes(out)
