"""Unit tests for engine.decode: raw logs -> staging rows."""

from engine.constants import (
    CONDITION_RESOLUTION_TOPIC,
    TOKEN_REGISTERED_TOPIC,
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
)
from engine.decode import DecodeFilter, decode_logs, winning_index

TOKEN = "0x2791bca1f2de4661ed88a30c99a7a9449aa84174"
CTF = "0x4d97dcd97ec945f40cf65f87097ace5ea0476045"
EXCHANGE = "0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e"
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
FILT = DecodeFilter(
    frozenset({TOKEN}), frozenset({CTF, EXCHANGE}), frozenset({CTF}), frozenset({EXCHANGE})
)


def t(addr: str) -> str:
    return "0x" + "0" * 24 + addr[2:]


def w(n: int) -> str:
    return f"{n:064x}"


def log(address, topics, data="0x", li=0, tx="0xAB", block=10, ts=1_671_321_600):
    return {
        "address": address,
        "topics": topics,
        "data": data,
        "transactionHash": tx,
        "logIndex": hex(li),
        "blockNumber": hex(block),
        "blockTimestamp": hex(ts),
    }


def test_erc20_transfer_keeps_uint256_precision_and_lowercases():
    big = 2**255 + 12345
    d = decode_logs(
        [log(TOKEN.upper().replace("X", "x"), [TRANSFER_TOPIC, t(ALICE), t(CTF)], "0x" + w(big))],
        3,
        FILT,
    )
    assert d.erc20 == [["0xab", 0, 10, 1_671_321_600, 3, TOKEN, ALICE, CTF, str(big)]]


def test_erc721_shaped_and_non_counterparty_transfers_are_skipped_and_counted():
    logs = [
        log(TOKEN, [TRANSFER_TOPIC, t(ALICE), t(CTF), w(7)], "0x", li=1),
        log(TOKEN, [TRANSFER_TOPIC, t(ALICE), t(BOB)], "0x" + w(5), li=2),
    ]
    d = decode_logs(logs, 0, FILT)
    assert d.erc20 == []
    assert d.skipped["erc721_shaped"] == 1
    assert d.skipped["not_counterparty"] == 1


def test_all_transfers_captured_when_no_counterparties_configured():
    filt = DecodeFilter(frozenset({TOKEN}), frozenset(), frozenset({CTF}))
    d = decode_logs([log(TOKEN, [TRANSFER_TOPIC, t(ALICE), t(BOB)], "0x" + w(5))], 0, filt)
    assert len(d.erc20) == 1


def test_same_log_from_two_queries_is_kept_once():
    one = log(TOKEN, [TRANSFER_TOPIC, t(CTF), t(EXCHANGE)], "0x" + w(5))
    assert len(decode_logs([one, dict(one)], 0, FILT).erc20) == 1


def test_transfer_single_and_batch_explode_one_row_per_id():
    single = log(
        CTF, [TRANSFER_SINGLE_TOPIC, t(EXCHANGE), t(ALICE), t(BOB)], "0x" + w(99) + w(3), li=4
    )
    batch_data = (
        "0x" + w(64) + w(64 + 32 * 4) + w(3) + w(11) + w(12) + w(13) + w(3) + w(1) + w(2) + w(3)
    )
    batch = log(CTF, [TRANSFER_BATCH_TOPIC, t(ALICE), t(ALICE), "0x" + "0" * 64], batch_data, li=5)
    d = decode_logs([single, batch], 2, FILT)
    assert d.erc1155[0][:3] == ["0xab", 4, 0] and d.erc1155[0][-2:] == ["99", "3"]
    rows = d.erc1155[1:]
    assert [(r[2], r[-2], r[-1]) for r in rows] == [(0, "11", "1"), (1, "12", "2"), (2, "13", "3")]
    assert rows[0][9] == "0x" + "0" * 40  # burn: to = zero address


def test_malformed_batch_is_counted_not_raised():
    bad = log(
        CTF,
        [TRANSFER_BATCH_TOPIC, t(ALICE), t(ALICE), t(BOB)],
        "0x" + w(64) + w(999 * 32) + w(1) + w(1),
    )
    d = decode_logs([bad], 0, FILT)
    assert d.erc1155 == [] and d.skipped["malformed"] == 1 and "malformed" in d.samples


def test_condition_resolution_and_winning_index():
    cond = "0x" + "c0" * 32
    q = "0x" + "0e" * 32
    data = "0x" + w(2) + w(64) + w(2) + w(0) + w(1)
    r = log(CTF, [CONDITION_RESOLUTION_TOPIC, cond, t(ALICE), q], data)
    d = decode_logs([r], 5, FILT)
    row = d.resolutions[0]
    assert row[6:] == [cond, ALICE, q, 2, ["0", "1"], "1", 1]
    assert (
        winning_index([1, 1]) == -1
        and winning_index([0, 0, 5]) == 2
        and winning_index([0, 0]) == -1
    )


def test_token_registered():
    cond = "0x" + "c1" * 32
    d = decode_logs([log(EXCHANGE, [TOKEN_REGISTERED_TOPIC, w(5), w(6), cond])], 1, FILT)
    assert d.registrations == [["0xab", 0, 10, 1_671_321_600, 1, EXCHANGE, "5", "6", cond]]


def test_timestamp_fallback_when_node_omits_block_timestamp():
    one = log(TOKEN, [TRANSFER_TOPIC, t(CTF), t(ALICE)], "0x" + w(1))
    del one["blockTimestamp"]
    d = decode_logs([one], 0, FILT, timestamps={10: 42})
    assert d.erc20[0][3] == 42
