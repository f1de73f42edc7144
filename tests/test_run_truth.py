"""Pure bookkeeping behind what the operator sees: run totals (engine.run_book) and
worker_heartbeats rows (engine.heartbeats); the ETA is tests/test_eta.py. Plain table-driven
tests."""

from __future__ import annotations

import pytest

from engine.heartbeats import GONE, Beat, HeartbeatBook, stamp
from engine.run_book import RunBook
from engine.status import refetched_words

E20 = "erc20_transfers_staging"
E1155 = "erc1155_transfers_staging"


# ---- RunBook -------------------------------------------------------------------------------------


def test_a_restart_mid_day_counts_the_redone_rows_as_refetched_not_staged() -> None:
    book = RunBook({E20: 1000, E1155: 10})
    book.rows(0, 111, day=4, table=E20, n=30)  # process 111 fetches 30 rows of day 4, then dies
    book.rows(1, 222, day=5, table="logs", n=7)  # raw logs count at their checkpoint
    assert book.staged()[E20] == 1030  # in progress counts: its current attempt's rows
    book.rows(0, 333, day=4, table=E20, n=30)  # the restarted worker fetches day 4 again
    book.rows(0, 333, day=4, table=E20, n=20)
    book.day_done(0, 333, day=4)
    book.checkpointed(0, 4, {E20: 50, E1155: 0})
    book.day_done(1, 222, day=5)
    book.checkpointed(1, 5, {E20: 7})
    assert book.staged() == {E20: 1057, E1155: 10}
    assert book.refetched() == {E20: 30}
    assert book.shard_totals(0) == (80, 1, 1)  # rows received, days done, restarts
    assert book.shard_totals(1) == (7, 1, 0)


def test_a_scale_abandons_the_attempts_of_the_shards_it_removes() -> None:
    book = RunBook()
    book.rows(2, 10, day=2, table="logs", n=5)
    book.forget_shards({0, 1})
    assert book.staged() == {}
    assert book.refetched() == {"logs": 5}


def test_messages_from_the_same_process_are_not_restarts() -> None:
    book = RunBook()
    for _ in range(3):
        book.process(0, 42)
    book.process(0, None)
    assert book.shard_totals(0) == (0, 0, 0)
    book.process(0, 43)
    assert book.shard_totals(0)[2] == 1


# ---- HeartbeatBook ------------------------------------------------------------------------------


def beat(shard: int, at: float, state: str = "RUNNING") -> Beat:
    return Beat(shard, 3, 100 + shard, state, 4, 10, 20, 5, "day 4", "", at)


def test_rows_keep_the_last_real_heartbeat_time_and_are_written_once() -> None:
    book = HeartbeatBook()
    book.beat(beat(0, 1000.0))
    book.beat(beat(1, 1001.0))
    first = book.take()
    assert [(r[0], r[4], r[-1]) for r in first] == [
        ("shard-0", "RUNNING", stamp(1000.0)),
        ("shard-1", "RUNNING", stamp(1001.0)),
    ]
    assert book.take() == []  # nothing changed: nothing re-stamped
    book.state(0, 3, "DONE", None, now=5000.0)
    (row,) = book.take()
    assert (row[0], row[3], row[4], row[-1]) == ("shard-0", 0, "DONE", stamp(1000.0))


def test_scaled_away_shards_are_gone() -> None:
    book = HeartbeatBook()
    for k in range(3):
        book.beat(beat(k, 1000.0 + k))
    book.take()
    book.gone({0, 1}, "scaled away: SHARDS 3 -> 2")
    (row,) = book.take()
    assert (row[0], row[4], row[10], row[-1]) == (
        "shard-2",
        GONE,
        "scaled away: SHARDS 3 -> 2",
        stamp(1002.0),
    )


def test_a_failed_write_is_written_again() -> None:
    book = HeartbeatBook()
    book.beat(beat(0, 1000.0))
    rows = book.take()
    book.put_back(rows)
    assert book.take() == rows


@pytest.mark.parametrize(
    ("refetched", "words"),
    [
        ({}, ""),
        ({E20: 17}, "17 rows"),
        ({E20: 2_000, E1155: 423_325}, "425,325 rows"),
        ({"logs": 81_200}, "81,200 raw logs"),
        ({"logs": 5, E20: 3}, "3 rows + 5 raw logs"),
    ],
)
def test_refetched_words_name_their_unit(refetched: dict[str, int], words: str) -> None:
    """Re-fetched raw logs are never called rows (one TransferBatch log is many rows)."""
    assert refetched_words(refetched) == words
