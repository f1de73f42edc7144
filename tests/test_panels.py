"""engine/store/panels.py against a real ClickHouse server (the session's local store server)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.config import ClickhouseConfig
from engine.decode import ERC20_COLUMNS as ERC20_COLS
from engine.decode import ERC1155_COLUMNS as ERC1155_COLS
from engine.status import DAY_DONE, DAY_FAILED, DAY_PENDING, DAY_RUNNING
from engine.store import panels
from engine.store.client import open_store
from engine.store.loader import CHECKPOINT_COLUMNS as CHECKPOINT_COLS

pytestmark = pytest.mark.slow  # end to end: real store

TS = "2022-12-18 00:00:01"


def erc20(tx: str, log_index: int, day: int = 0) -> list:
    return [tx, log_index, 100 + day, TS, day, "0xtoken", "0xa", "0xb", str(2**255)]


def erc1155(tx: str, log_index: int, batch: int, day: int = 0) -> list:
    return [tx, log_index, batch, 100, TS, day, "0xctf", "0xop", "0xa", "0xb", "7", "1"]


@pytest.fixture(scope="module")
def store(store_server):
    # open_store reads only cfg.clickhouse: here the session's server, as a remote one.
    s = store_server
    cfg = SimpleNamespace(
        clickhouse=ClickhouseConfig(
            url=s.url, path=Path("unused"), database="bf_panels", user=s.user, password=s.password
        )
    )
    st = open_store(cfg)
    st.command(f"DROP DATABASE IF EXISTS {st.database} SYNC")
    st.ensure_schema()
    yield st
    st.close()


@pytest.fixture
def clean(store):
    for t in (*panels.STAGED_TABLES, "backfill_checkpoint"):
        store.command(f"TRUNCATE TABLE {store.database}.{t}")
    return store


def test_empty_store(clean):
    assert panels.staged_rows(clean) == {t: 0 for t in panels.STAGED_TABLES}
    checks = panels.duplicates(clean)
    assert [c.table for c in checks] == list(panels.DUPLICATE_KEYS)
    assert all(c.raw_rows == c.unique_keys == c.final_duplicates == 0 for c in checks)
    rep = panels.disk(clean)
    names = {u.table for u in rep.tables}
    assert set(panels.DUPLICATE_KEYS) <= names
    assert rep.free_bytes is not None and rep.free_bytes > 0
    assert rep.total_bytes is not None and rep.total_bytes >= rep.free_bytes


def test_duplicates_waiting_for_merge_then_merged(clean):
    t20 = f"{clean.database}.erc20_transfers_staging"
    t1155 = f"{clean.database}.erc1155_transfers_staging"
    # Separate inserts = separate parts: duplicates survive until a merge.
    clean.insert_json_rows(t20, ERC20_COLS, [erc20("0x1", 0), erc20("0x1", 1)])
    clean.insert_json_rows(t20, ERC20_COLS, [erc20("0x1", 0), erc20("0x2", 0)])
    clean.insert_json_rows(t1155, ERC1155_COLS, [erc1155("0x9", 3, 0), erc1155("0x9", 3, 1)])
    clean.insert_json_rows(t1155, ERC1155_COLS, [erc1155("0x9", 3, 1)])
    by = {c.table: c for c in panels.duplicates(clean)}
    e20, e1155 = by["erc20_transfers_staging"], by["erc1155_transfers_staging"]
    assert (e20.raw_rows, e20.unique_keys, e20.final_duplicates) == (4, 3, 0)
    # batch_index is part of the key: (0x9, 3, 0) and (0x9, 3, 1) are different rows.
    assert (e1155.raw_rows, e1155.unique_keys, e1155.final_duplicates) == (3, 2, 0)
    assert panels.staged_rows(clean)["erc20_transfers_staging"] == 4

    clean.command(f"OPTIMIZE TABLE {t20} FINAL")
    by = {c.table: c for c in panels.duplicates(clean)}
    assert by["erc20_transfers_staging"].raw_rows == 3

    rep = panels.disk(clean)
    usage = {u.table: u for u in rep.tables}
    assert usage["erc20_transfers_staging"].rows == 3
    assert usage["erc20_transfers_staging"].parts >= 1
    assert usage["erc1155_transfers_staging"].bytes_on_disk > 0
    # Largest table first.
    assert rep.tables == sorted(rep.tables, key=lambda u: (-u.bytes_on_disk, u.table))


def test_final_check_can_fail(store):
    """A table whose FINAL does not collapse the natural key must show final_duplicates > 0."""
    db = "bf_panels_broken"
    store.command(f"DROP DATABASE IF EXISTS {db}")
    store.command(f"CREATE DATABASE {db}")
    # Wrong sorting key: ReplacingMergeTree replaces by (tx_hash, log_index, block_number).
    store.command(
        f"CREATE TABLE {db}.erc20_transfers_staging (tx_hash String, log_index UInt32, "
        "block_number UInt64) ENGINE = ReplacingMergeTree "
        "ORDER BY (tx_hash, log_index, block_number)"
    )
    store.command(
        f"CREATE TABLE {db}.erc1155_transfers_staging (tx_hash String, log_index UInt32, "
        "batch_index UInt32) ENGINE = ReplacingMergeTree ORDER BY (tx_hash, log_index, batch_index)"
    )
    store.command(f"INSERT INTO {db}.erc20_transfers_staging VALUES ('0x1', 0, 10), ('0x2', 0, 10)")
    store.command(f"INSERT INTO {db}.erc20_transfers_staging VALUES ('0x1', 0, 11)")
    broken = SimpleNamespace(database=db, query=store.query)
    by = {c.table: c for c in panels.duplicates(broken)}
    assert by["erc20_transfers_staging"].unique_keys == 2
    assert by["erc20_transfers_staging"].final_duplicates == 1
    assert by["erc1155_transfers_staging"].final_duplicates == 0
    store.command(f"DROP DATABASE {db}")


def test_final_check_catches_a_key_in_two_partitions(clean):
    """Merges never cross partitions: the same log staged under two day_idx values stays twice."""
    t20 = f"{clean.database}.erc20_transfers_staging"
    clean.insert_json_rows(t20, ERC20_COLS, [erc20("0x5", 0, day=3)])
    clean.insert_json_rows(t20, ERC20_COLS, [erc20("0x5", 0, day=40)])  # partition 0 vs 1
    clean.command(f"OPTIMIZE TABLE {t20} FINAL")
    by = {c.table: c for c in panels.duplicates(clean)}
    e20 = by["erc20_transfers_staging"]
    assert (e20.raw_rows, e20.unique_keys, e20.final_duplicates) == (2, 1, 1)


def test_day_grid(clean):
    start = dt.date(2022, 12, 18)
    t = f"{clean.database}.backfill_checkpoint"

    def cp(day: int, status: str, chain: int = 1, sd: str = "2022-12-18", at: str = TS) -> list:
        return [day, status, 0, 1, 2, 3, 4, 0, 0, chain, sd, "", at]

    clean.insert_json_rows(
        t,
        CHECKPOINT_COLS,
        [
            cp(0, "COMPLETE"),
            cp(1, "COMPLETE"),
            cp(2, "COMPLETE", chain=2),  # another chain: invisible
            cp(3, "COMPLETE", sd="2023-01-01"),  # another calendar: invisible
            cp(6, "COMPLETE", at="2022-12-18 00:00:01"),
            cp(7, "FAILED"),
            cp(99, "COMPLETE"),  # beyond days_total
        ],
    )
    # The latest version of a checkpoint row wins (ReplacingMergeTree(updated_at) + FINAL).
    clean.insert_json_rows(t, CHECKPOINT_COLS, [cp(6, "FAILED", at="2022-12-18 00:00:09")])
    grid = panels.day_grid(clean, 8, start, 1, in_progress={0, 5}, failed={4})
    assert grid == [
        DAY_DONE,  # COMPLETE beats in progress
        DAY_DONE,
        DAY_PENDING,
        DAY_PENDING,
        DAY_FAILED,
        DAY_RUNNING,
        DAY_PENDING,
        DAY_PENDING,
    ]
    assert panels.day_grid(clean, 2, "2022-12-18", 1, set(), set()) == [DAY_DONE, DAY_DONE]
    assert panels.complete_days(clean, 100, start, 1) == {0, 1, 99}


def test_day_grid_rejects_a_bad_date(clean):
    with pytest.raises(ValueError):
        panels.day_grid(clean, 3, "2022-12-18' OR 1=1 --", 1, set(), set())
