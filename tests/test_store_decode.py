"""Decoding in the store (engine/store/sql/decode.sql) gives the rows engine/decode.py gives.

Table-driven: each case's logs go through both, as the worker ships them (one JSON array per
chunk) into a real store; staged rows, counts and skip reasons must match exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from engine.config import load_config
from engine.constants import (
    CONDITION_RESOLUTION_TOPIC,
    TOKEN_REGISTERED_TOPIC,
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
)
from engine.decode import TABLES, DecodeFilter, decode_logs
from engine.store import raw_logs
from engine.store.client import Store, open_store
from tests.test_decode import ALICE, BOB, CTF, EXCHANGE, FILT, TOKEN, log, t, w

pytestmark = pytest.mark.slow  # end to end: real store

NO_CPS = DecodeFilter(frozenset({TOKEN}), frozenset(), frozenset({CTF}), frozenset({EXCHANGE}))
BATCH = "0x" + w(64) + w(64 + 32 * 4) + w(3) + w(11) + w(12) + w(13) + w(3) + w(1) + w(2) + w(3)
BIG = 2**256 - 1
COND = "0x" + "c0" * 32


def _no_ts(lg: dict) -> dict:
    lg = dict(lg)
    del lg["blockTimestamp"]
    return lg


CASES: dict[str, tuple[DecodeFilter, list[dict], dict[int, int] | None]] = {
    "erc20 exact uint256, upper case": (
        FILT,
        [
            log(TOKEN.upper().replace("X", "x"), [TRANSFER_TOPIC, t(ALICE), t(CTF)], "0x" + w(BIG)),
            log(TOKEN, [TRANSFER_TOPIC, t(CTF).upper(), t(BOB)], "0x" + w(7).upper(), li=1),
        ],
        None,
    ),
    "erc721-shaped, not counterparty, malformed erc20": (
        FILT,
        [
            log(TOKEN, [TRANSFER_TOPIC, t(ALICE), t(CTF), w(7)], "0x", li=1),
            log(TOKEN, [TRANSFER_TOPIC, t(ALICE), t(BOB)], "0x" + w(5), li=2),
            log(TOKEN, [TRANSFER_TOPIC, t(ALICE), t(CTF)], "0x" + w(5)[:-2] + "zz", li=3),
            log(TOKEN, [TRANSFER_TOPIC, t(ALICE), t(CTF)], "0x" + w(5) + "00", li=4),
            log(TOKEN, [TRANSFER_TOPIC, t(ALICE)], "0x" + w(5), li=5),
        ],
        None,
    ),
    "no counterparties configured": (
        NO_CPS,
        [log(TOKEN, [TRANSFER_TOPIC, t(ALICE), t(BOB)], "0x" + w(5))],
        None,
    ),
    "single and batch": (
        FILT,
        [
            log(CTF, [TRANSFER_SINGLE_TOPIC, t(EXCHANGE), t(ALICE), t(BOB)], "0x" + w(99) + w(3)),
            log(CTF, [TRANSFER_BATCH_TOPIC, t(ALICE), t(ALICE), "0x" + "0" * 64], BATCH, li=5),
            log(
                CTF,
                [TRANSFER_BATCH_TOPIC, t(ALICE), t(BOB), t(BOB)],
                "0x" + w(64) + w(96) + w(0) + w(0),
                li=6,
            ),
        ],
        None,
    ),
    "malformed 1155": (
        FILT,
        [
            log(
                CTF,
                [TRANSFER_BATCH_TOPIC, t(ALICE), t(ALICE), t(BOB)],
                "0x" + w(64) + w(999 * 32) + w(1) + w(1),
            ),
            log(
                CTF,
                [TRANSFER_BATCH_TOPIC, t(ALICE), t(ALICE), t(BOB)],
                "0x" + w(64) + w(160) + w(2) + w(1) + w(2) + w(1) + w(1),
                li=1,
            ),
            log(
                CTF,
                [TRANSFER_BATCH_TOPIC, t(ALICE), t(ALICE), t(BOB)],
                "0x" + w(65) + w(64) + w(0) + w(0),
                li=2,
            ),
            log(CTF, [TRANSFER_SINGLE_TOPIC, t(ALICE), t(ALICE), t(BOB)], "0x" + w(1), li=3),
            log(CTF, [TRANSFER_SINGLE_TOPIC, t(ALICE), t(ALICE)], "0x" + w(1) + w(2), li=4),
            log(CTF, [TRANSFER_SINGLE_TOPIC, t(ALICE), t(ALICE), t(BOB)], "0x" + w(1) + "ab", li=5),
        ],
        None,
    ),
    "resolutions": (
        FILT,
        [
            log(
                CTF,
                [CONDITION_RESOLUTION_TOPIC, COND, t(ALICE), COND],
                "0x" + w(2) + w(64) + w(2) + w(0) + w(1),
            ),
            log(
                CTF,
                [CONDITION_RESOLUTION_TOPIC, COND, t(ALICE), COND],
                "0x" + w(2) + w(64) + w(2) + w(1) + w(1),
                li=1,
            ),
            log(CTF, [CONDITION_RESOLUTION_TOPIC, COND, t(ALICE), COND], "0x" + w(2) + w(64), li=2),
        ],
        None,
    ),
    "registrations and events of other contracts": (
        FILT,
        [
            log(EXCHANGE, [TOKEN_REGISTERED_TOPIC, w(5), "0x" + w(BIG), COND]),
            log(CTF, [TOKEN_REGISTERED_TOPIC, w(5), w(6), COND], li=1),
            log(
                EXCHANGE,
                [TRANSFER_SINGLE_TOPIC, t(ALICE), t(ALICE), t(BOB)],
                "0x" + w(1) + w(2),
                li=2,
            ),
            log(TOKEN, [], "0x", li=3),
        ],
        None,
    ),
    "timestamps from blocks when logs lack them": (
        FILT,
        [
            _no_ts(log(TOKEN, [TRANSFER_TOPIC, t(CTF), t(ALICE)], "0x" + w(1))),
            _no_ts(
                log(
                    CTF,
                    [TRANSFER_SINGLE_TOPIC, t(ALICE), t(ALICE), t(BOB)],
                    "0x" + w(1) + w(2),
                    li=1,
                    block=11,
                )
            ),
        ],
        {10: 1_671_400_000, 11: 1_671_400_002},
    ),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    folder = tmp_path_factory.mktemp("store-decode")
    (folder / "config.toml").write_text('[clickhouse]\npath = "clickhouse"\n')
    s = open_store(load_config(folder / "config.toml"))
    yield s
    s.close()


def _norm(row: list | tuple) -> tuple:
    return tuple(tuple(map(str, v)) if isinstance(v, list | tuple) else str(v) for v in row)


def _staged(store: Store, day: int) -> dict[str, list[tuple]]:
    out = {}
    for kind, (table, columns) in TABLES.items():
        cols = [
            "toUnixTimestamp(block_timestamp)" if c == "block_timestamp" else c for c in columns
        ]
        rows = store.query(
            f"SELECT {', '.join(cols)} FROM {store.table(table)} WHERE day_idx = {day}"
        )
        out[kind] = sorted(map(_norm, rows))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_store_decodes_like_python(store: Store, name: str) -> None:
    filt, logs, stamps = CASES[name]
    day = 100 + list(CASES).index(name)
    want = decode_logs(logs, day, filt, stamps)
    table = raw_logs.ensure_views(store, filt)
    chunk = raw_logs.Chunk(
        (7 << 32) + day, day, orjson.dumps(logs), len(logs), timestamps=stamps or {}
    )
    raw_logs.insert_chunks(store, table, 1, [chunk])
    assert _staged(store, day) == {k: sorted(map(_norm, v)) for k, v in want.by_table().items()}
    counts = raw_logs.day_counts(store, [(day, chunk.chunk_id, chunk.chunk_id)])[day]
    assert counts.rows == {k: len(v) for k, v in want.by_table().items()}
    assert counts.logs == len(logs)
    assert counts.skipped == dict(want.skipped)


def test_to_counterparty_filter_drops_what_the_from_filter_returned(store: Store) -> None:
    """A counterparty -> counterparty transfer comes back from both filters; kept once."""
    both = log(TOKEN, [TRANSFER_TOPIC, t(CTF), t(EXCHANGE)], "0x" + w(5))
    to_cp = log(TOKEN, [TRANSFER_TOPIC, t(ALICE), t(EXCHANGE)], "0x" + w(6), li=1)
    day = 90
    table = raw_logs.ensure_views(store, FILT)
    first = raw_logs.Chunk((8 << 32) + 1, day, orjson.dumps([both]), 1)
    second = raw_logs.Chunk((8 << 32) + 2, day, orjson.dumps([both, to_cp]), 2, skip_cp_from=True)
    raw_logs.insert_chunks(store, table, 1, [first, second])
    staged = _staged(store, day)["erc20"]
    assert [r[1] for r in staged] == ["0", "1"]
    counts = raw_logs.day_counts(store, [(day, first.chunk_id, second.chunk_id)])[day]
    assert counts.rows["erc20"] == 2 and counts.logs == 3


def test_a_retried_insert_counts_once(store: Store) -> None:
    """Chunks inserted twice (a retry after a failed insert) are counted from one attempt."""
    day = 91
    table = raw_logs.ensure_views(store, FILT)
    lg = log(CTF, [TRANSFER_BATCH_TOPIC, t(ALICE), t(ALICE), t(BOB)], BATCH)
    chunk = raw_logs.Chunk((9 << 32) + 1, day, orjson.dumps([lg]), 1)
    raw_logs.insert_chunks(store, table, 1, [chunk])
    raw_logs.insert_chunks(store, table, 2, [chunk])
    counts = raw_logs.day_counts(store, [(day, chunk.chunk_id, chunk.chunk_id)])[day]
    assert counts.rows["erc1155"] == 3 and counts.logs == 1


def test_huge_values_and_escapes_survive_tsv(store: Store) -> None:
    """JSON with escapes, tabs and newlines between tokens reaches the store intact."""
    day = 92
    table = raw_logs.ensure_views(store, FILT)
    lg = log(TOKEN, [TRANSFER_TOPIC, t(CTF), t(ALICE)], "0x" + w(BIG))
    data = orjson.dumps([lg], option=orjson.OPT_INDENT_2).replace(b"  ", b"\t")
    data = data.replace(b'"address"', b'"note": "a\\\\b\\"c\\n",\n\t"address"', 1)
    assert b"\\" in data and b"\t" in data and b"\n" in data
    chunk = raw_logs.Chunk((10 << 32) + 1, day, data, 1)
    raw_logs.insert_chunks(store, table, 1, [chunk])
    assert [r[-1] for r in _staged(store, day)["erc20"]] == [str(BIG)]
