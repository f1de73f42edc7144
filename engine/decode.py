"""Raw JSON-RPC log dicts -> staging rows (pure functions, no I/O).

Rows are lists in the column order of the *_COLUMNS constants, ready for JSONCompactEachRow.
uint256 values travel as decimal strings so nothing loses precision.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from engine.constants import (
    CONDITION_RESOLUTION_TOPIC,
    TOKEN_REGISTERED_TOPIC,
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
)

ERC20_COLUMNS = [
    "tx_hash",
    "log_index",
    "block_number",
    "block_timestamp",
    "day_idx",
    "token",
    "from_address",
    "to_address",
    "value",
]
ERC1155_COLUMNS = [
    "tx_hash",
    "log_index",
    "batch_index",
    "block_number",
    "block_timestamp",
    "day_idx",
    "contract",
    "operator",
    "from_address",
    "to_address",
    "token_id",
    "value",
]
RESOLUTION_COLUMNS = [
    "tx_hash",
    "log_index",
    "block_number",
    "block_timestamp",
    "day_idx",
    "contract",
    "condition_id",
    "oracle",
    "question_id",
    "outcome_slot_count",
    "payout_numerators",
    "payout_denominator",
    "winning_index",
]
REGISTRATION_COLUMNS = [
    "tx_hash",
    "log_index",
    "block_number",
    "block_timestamp",
    "day_idx",
    "exchange",
    "token0",
    "token1",
    "condition_id",
]

# Staging table per row kind (the worker protocol's "table" field).
TABLES: dict[str, tuple[str, list[str]]] = {
    "erc20": ("erc20_transfers_staging", ERC20_COLUMNS),
    "erc1155": ("erc1155_transfers_staging", ERC1155_COLUMNS),
    "resolutions": ("condition_resolutions", RESOLUTION_COLUMNS),
    "registrations": ("token_registrations", REGISTRATION_COLUMNS),
}


@dataclass(frozen=True)
class DecodeFilter:
    """Which contracts and counterparties are captured (addresses lowercase)."""

    erc20_tokens: frozenset[str]
    erc20_counterparties: frozenset[str]
    erc1155: frozenset[str]
    exchanges: frozenset[str] = frozenset()


@dataclass
class Decoded:
    erc20: list[list] = field(default_factory=list)
    erc1155: list[list] = field(default_factory=list)
    resolutions: list[list] = field(default_factory=list)
    registrations: list[list] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    samples: dict[str, str] = field(default_factory=dict)  # reason -> one example message

    def by_table(self) -> dict[str, list[list]]:
        return {
            "erc20": self.erc20,
            "erc1155": self.erc1155,
            "resolutions": self.resolutions,
            "registrations": self.registrations,
        }


class MalformedLog(ValueError):
    """A log whose data does not match its event's ABI."""


def topic_address(topic: str) -> str:
    return "0x" + topic[-40:].lower()


def _words(data: str) -> list[str]:
    hexdata = data[2:] if data.startswith("0x") else data
    if len(hexdata) % 64:
        raise MalformedLog(f"data length {len(hexdata) // 2} is not a multiple of 32")
    return [hexdata[i : i + 64] for i in range(0, len(hexdata), 64)]


def _uint_array(words: list[str], offset_word: int) -> list[int]:
    """A dynamic uint256[] whose head offset (in bytes) is in words[offset_word]."""
    off = int(words[offset_word], 16)
    if off % 32:
        raise MalformedLog(f"array offset {off} is not word aligned")
    start = off // 32
    if start >= len(words):
        raise MalformedLog(f"array offset {off} past the end of data")
    n = int(words[start], 16)
    if start + 1 + n > len(words):
        raise MalformedLog(f"array of {n} items overruns data")
    return [int(w, 16) for w in words[start + 1 : start + 1 + n]]


def _hexint(value: str | int) -> int:
    return value if isinstance(value, int) else int(value, 16)


def decode_logs(
    logs: Iterable[Mapping],
    day_idx: int,
    filt: DecodeFilter,
    timestamps: Mapping[int, int] | None = None,
) -> Decoded:
    """Decode one chunk's logs. Unknown or malformed logs are counted in `skipped`, never raised.

    `timestamps` maps block number -> unix time for nodes whose logs lack `blockTimestamp`.
    A (tx_hash, log_index) pair returned by two filtered queries is kept once.
    """
    out = Decoded()
    seen: set[tuple[str, int]] = set()
    for log in logs:
        topics = log.get("topics") or []
        if not topics:
            out.skipped["no_topic"] += 1
            continue
        tx = str(log["transactionHash"]).lower()
        li = _hexint(log["logIndex"])
        if (tx, li) in seen:
            continue
        seen.add((tx, li))
        block = _hexint(log["blockNumber"])
        ts_raw = log.get("blockTimestamp")
        if ts_raw is not None:
            ts = _hexint(ts_raw)
        elif timestamps is not None and block in timestamps:
            ts = timestamps[block]
        else:
            raise KeyError(f"no timestamp for block {block}")
        address = str(log["address"]).lower()
        t0 = str(topics[0]).lower()
        data = log.get("data") or "0x"
        head = [tx, li, block, ts, day_idx]
        try:
            if t0 == TRANSFER_TOPIC and address in filt.erc20_tokens:
                _erc20(out, filt, head, address, topics, data)
            elif t0 == TRANSFER_SINGLE_TOPIC and address in filt.erc1155:
                _transfer_single(out, head, address, topics, data)
            elif t0 == TRANSFER_BATCH_TOPIC and address in filt.erc1155:
                _transfer_batch(out, head, address, topics, data)
            elif t0 == CONDITION_RESOLUTION_TOPIC and address in filt.erc1155:
                _resolution(out, head, address, topics, data)
            elif t0 == TOKEN_REGISTERED_TOPIC and address in filt.exchanges:
                _registration(out, head, address, topics)
            else:
                out.skipped["not_captured"] += 1
        except (MalformedLog, ValueError, IndexError) as exc:
            out.skipped["malformed"] += 1
            out.samples.setdefault("malformed", f"{tx}:{li}: {exc}")
    return out


def _erc20(out: Decoded, filt: DecodeFilter, head: list, token: str, topics, data: str) -> None:
    if len(topics) != 3 or len(data) != 66:
        # ERC721 Transfer shares topic0 but has 4 topics (tokenId indexed) and no data.
        out.skipped["erc721_shaped" if len(topics) == 4 else "malformed"] += 1
        return
    frm, to = topic_address(topics[1]), topic_address(topics[2])
    cps = filt.erc20_counterparties
    if cps and frm not in cps and to not in cps:
        out.skipped["not_counterparty"] += 1
        return
    out.erc20.append([*head, token, frm, to, str(int(data[2:], 16))])


def _transfer_single(out: Decoded, head: list, contract: str, topics, data: str) -> None:
    if len(topics) != 4:
        raise MalformedLog(f"TransferSingle with {len(topics)} topics")
    words = _words(data)
    if len(words) != 2:
        raise MalformedLog(f"TransferSingle data has {len(words)} words")
    tx, li, block, ts, day = head
    out.erc1155.append(
        [
            tx,
            li,
            0,
            block,
            ts,
            day,
            contract,
            topic_address(topics[1]),
            topic_address(topics[2]),
            topic_address(topics[3]),
            str(int(words[0], 16)),
            str(int(words[1], 16)),
        ]
    )


def _transfer_batch(out: Decoded, head: list, contract: str, topics, data: str) -> None:
    if len(topics) != 4:
        raise MalformedLog(f"TransferBatch with {len(topics)} topics")
    words = _words(data)
    if len(words) < 4:
        raise MalformedLog("TransferBatch data too short")
    ids = _uint_array(words, 0)
    values = _uint_array(words, 1)
    if len(ids) != len(values):
        raise MalformedLog(f"TransferBatch has {len(ids)} ids but {len(values)} values")
    tx, li, block, ts, day = head
    op, frm, to = (topic_address(t) for t in topics[1:4])
    for i, (tid, val) in enumerate(zip(ids, values, strict=True)):
        out.erc1155.append([tx, li, i, block, ts, day, contract, op, frm, to, str(tid), str(val)])


def winning_index(payouts: list[int]) -> int:
    """0-based index of the only non-zero payout, -1 when not one-hot."""
    nonzero = [i for i, p in enumerate(payouts) if p]
    return nonzero[0] if len(nonzero) == 1 else -1


def _resolution(out: Decoded, head: list, contract: str, topics, data: str) -> None:
    if len(topics) != 4:
        raise MalformedLog(f"ConditionResolution with {len(topics)} topics")
    words = _words(data)
    if len(words) < 3:
        raise MalformedLog("ConditionResolution data too short")
    slots = int(words[0], 16)
    payouts = _uint_array(words, 1)
    out.resolutions.append(
        [
            *head,
            contract,
            str(topics[1]).lower(),
            topic_address(topics[2]),
            str(topics[3]).lower(),
            slots,
            [str(p) for p in payouts],
            str(sum(payouts)),
            winning_index(payouts),
        ]
    )


def _registration(out: Decoded, head: list, exchange: str, topics) -> None:
    if len(topics) != 4:
        raise MalformedLog(f"TokenRegistered with {len(topics)} topics")
    out.registrations.append(
        [*head, exchange, str(int(topics[1], 16)), str(int(topics[2], 16)), str(topics[3]).lower()]
    )
