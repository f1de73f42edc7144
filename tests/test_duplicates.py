"""engine/store/duplicates.py against a real embedded store: the kept-per-partition check gives
exactly the figures of the whole-table check (panels.duplicates) on planted duplicates, and after
each step of a random history of inserts, merges and truncates; it recomputes only the partitions
that received rows; its key index shows in the Disk panel and leaves the disk on close."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.decode import ERC20_COLUMNS as ERC20_COLS
from engine.decode import ERC1155_COLUMNS as ERC1155_COLS
from engine.store import panels
from engine.store.duplicates import DuplicateChecker
from engine.store.panels import DUPLICATE_KEYS

pytestmark = pytest.mark.slow  # end to end: real store

TS = "2022-12-18 00:00:01"
E20 = "erc20_transfers_staging"
E1155 = "erc1155_transfers_staging"


def erc20(tx: str, log_index: int, day: int = 0, block: int = 100) -> list:
    return [tx, log_index, block, TS, day, "0xtoken", "0xa", "0xb", "5"]


def erc1155(tx: str, log_index: int, batch: int, day: int = 0) -> list:
    return [tx, log_index, batch, 100, TS, day, "0xctf", "0xop", "0xa", "0xb", "7", "1"]


@pytest.fixture(scope="module")
def store(store_server):
    from tests.conftest import server_store

    st = server_store(store_server, "bf_dups")  # a database of its own on the session server
    yield st
    st.close()


@pytest.fixture
def clean(store):
    for t in DUPLICATE_KEYS:
        store.command(f"TRUNCATE TABLE {store.database}.{t}")
    return store


@pytest.fixture
def checker(clean):
    c = DuplicateChecker(clean, tag="t")
    yield c
    c.close()


def figures(checks: list) -> dict[str, tuple[int, int, int]]:
    return {c.table: (c.raw_rows, c.unique_keys, c.final_duplicates) for c in checks}


def both(store, checker: DuplicateChecker) -> dict[str, tuple[int, int, int]]:
    """The kept check's figures, asserted equal to the whole-table check's."""
    kept = figures(checker.check())
    assert kept == figures(panels.duplicates(store))
    return kept


def insert(store, table: str, rows: list[list]) -> None:
    cols = ERC20_COLS if table == E20 else ERC1155_COLS
    store.insert_json_rows(f"{store.database}.{table}", cols, rows)


def test_waiting_for_merge_then_merged(clean, checker):
    insert(clean, E20, [erc20("0x1", 0), erc20("0x1", 1)])
    assert both(clean, checker)[E20] == (2, 2, 0)
    insert(clean, E20, [erc20("0x1", 0), erc20("0x2", 0)])  # another part: 0x1/0 waits for merge
    insert(clean, E1155, [erc1155("0x9", 3, 0), erc1155("0x9", 3, 1)])
    insert(clean, E1155, [erc1155("0x9", 3, 1)])
    assert both(clean, checker) == {E20: (4, 3, 0), E1155: (3, 2, 0)}
    assert checker.last.rows_read == 2 + 3  # the new erc20 part, then all of erc1155 (new)
    clean.command(f"OPTIMIZE TABLE {clean.database}.{E20} FINAL")
    assert both(clean, checker) == {E20: (3, 3, 0), E1155: (3, 2, 0)}
    # The merge kept the partition's signature: nothing was read again.
    assert checker.last.partitions_read == 0


def test_same_key_across_partitions(clean, checker):
    insert(clean, E20, [erc20("0x5", 0, day=3), erc20("0x6", 0, day=3)])
    assert both(clean, checker) == {E20: (2, 2, 0), E1155: (0, 0, 0)}
    insert(clean, E20, [erc20("0x5", 0, day=40)])  # partition 0 vs 1: merges never join them
    clean.command(f"OPTIMIZE TABLE {clean.database}.{E20} FINAL")
    assert both(clean, checker) == {E20: (3, 2, 1), E1155: (0, 0, 0)}
    assert checker.last.partitions_read == 1  # only partition 1 got rows
    insert(clean, E20, [erc20("0x5", 0, day=70)])  # a third partition holds it too
    assert both(clean, checker)[E20] == (4, 2, 2)
    clean.command(f"ALTER TABLE {clean.database}.{E20} DROP PARTITION 1")
    assert both(clean, checker)[E20] == (3, 2, 1)
    clean.command(f"TRUNCATE TABLE {clean.database}.{E20}")
    assert both(clean, checker)[E20] == (0, 0, 0)


@pytest.mark.parametrize(
    "delete",
    [
        "ALTER TABLE {t} DELETE WHERE day_idx IN (1, 2) SETTINGS mutations_sync = 2",
        "DELETE FROM {t} WHERE day_idx IN (1, 2)",  # lightweight: rows masked, parts kept
    ],
)
def test_rows_deleted_by_a_mutation_are_seen(clean, checker, delete):
    """An operator purging days by hand: a mutation keeps the parts' block numbers but raises
    their mutation version, so the partition is read again; deleting all its rows leaves
    empty active parts, and the partition counts as gone (REPLACE from it would be refused)."""
    table = f"{clean.database}.{E20}"
    insert(clean, E20, [erc20(f"0x{i}", 0, day=i) for i in range(4)] + [erc20("0x1", 0, day=40)])
    assert both(clean, checker)[E20] == (5, 4, 1)  # 0x1/0 in partitions 0 and 1
    clean.command(delete.format(t=table))
    assert both(clean, checker)[E20] == (3, 3, 0)
    clean.command(f"ALTER TABLE {table} DELETE WHERE day_idx < 32 SETTINGS mutations_sync = 2")
    assert both(clean, checker)[E20] == (1, 1, 0)
    insert(clean, E20, [erc20("0x1", 0, day=5), erc20("0x7", 0, day=6)])
    assert both(clean, checker)[E20] == (3, 2, 1)  # 0x1/0 is in partitions 0 and 1 again


def test_same_log_under_a_new_key(store):
    """A table whose sorting key is not the natural key: the same log with another block number
    is a new ReplacingMergeTree key, so FINAL keeps both rows and the check must say so."""
    db = "bf_dups_broken"
    store.command(f"DROP DATABASE IF EXISTS {db} SYNC")
    store.command(f"CREATE DATABASE {db}")
    store.command(
        f"CREATE TABLE {db}.{E20} (tx_hash String, log_index UInt32, block_number UInt64, "
        "day_idx UInt32) ENGINE = ReplacingMergeTree PARTITION BY intDiv(day_idx, 32) "
        "ORDER BY (tx_hash, log_index, block_number)"
    )
    store.command(
        f"CREATE TABLE {db}.{E1155} (tx_hash String, log_index UInt32, batch_index UInt32, "
        "day_idx UInt32) ENGINE = ReplacingMergeTree PARTITION BY intDiv(day_idx, 32) "
        "ORDER BY (tx_hash, log_index, batch_index)"
    )
    broken = SimpleNamespace(database=db, query=store.query, command=store.command)
    checker = DuplicateChecker(broken)
    try:
        store.command(f"INSERT INTO {db}.{E20} VALUES ('0x1', 0, 10, 1), ('0x2', 0, 10, 1)")
        assert both(broken, checker)[E20] == (2, 2, 0)
        store.command(f"INSERT INTO {db}.{E20} VALUES ('0x1', 0, 11, 1)")
        store.command(f"OPTIMIZE TABLE {db}.{E20} FINAL")
        assert both(broken, checker) == {E20: (3, 2, 1), E1155: (0, 0, 0)}
    finally:
        checker.close()
        store.command(f"DROP DATABASE {db} SYNC")


def test_random_history_matches_the_whole_table_check(clean, checker):
    """Inserts (new keys, re-inserted keys, keys moved to another day), merges, a dropped
    partition: after every step both checks agree."""
    rng = random.Random(5)
    keys: list[tuple[str, int]] = []
    for step in range(14):
        rows = []
        for _ in range(rng.randint(1, 40)):
            if keys and rng.random() < 0.3:
                tx, li = rng.choice(keys)  # the same log again, maybe under another day
            else:
                tx, li = f"0x{rng.getrandbits(40):x}", rng.randint(0, 3)
                keys.append((tx, li))
            rows.append(erc20(tx, li, day=rng.choice([0, 5, 31, 32, 64, 65, 200])))
        insert(clean, E20, rows)
        insert(clean, E1155, [erc1155(r[0], r[1], rng.randint(0, 1), r[4]) for r in rows[:5]])
        if step % 4 == 3:
            clean.command(f"OPTIMIZE TABLE {clean.database}.{E20} FINAL")
        if step == 9:
            clean.command(f"ALTER TABLE {clean.database}.{E20} DROP PARTITION 2")
        both(clean, checker)
    assert figures(checker.check())[E20][2] > 0  # the history did plant duplicates FINAL keeps


def test_the_key_index_is_counted_by_the_disk_panel_and_leaves_on_close(clean, store):
    insert(clean, E20, [erc20(f"0x{i}", 0, day=i) for i in range(40)])
    checker = DuplicateChecker(clean, tag="disk")
    checker.check()
    usage = {u.table: u for u in panels.disk(clean).tables}
    assert usage["duplicate_check_keys_disk"].rows == 40
    assert usage["duplicate_check_keys_disk"].bytes_on_disk > 0
    folders = [
        Path(p)
        for (paths,) in store.query(
            "SELECT data_paths FROM system.tables "
            f"WHERE database = '{clean.database}' AND name LIKE 'duplicate_check_keys_disk%'"
        )
        for p in paths
    ]
    assert len(folders) == 2 and all(f.exists() for f in folders)
    checker.close()
    assert "duplicate_check_keys_disk" not in {u.table for u in panels.disk(clean).tables}
    # Dropped with SYNC: the tables' folders are gone now, not minutes later.
    assert [f for f in folders if f.exists()] == []


def test_a_bad_tag_is_refused(store):
    with pytest.raises(ValueError, match="duplicate check tag 'a-b'"):
        DuplicateChecker(store, tag="a-b")
