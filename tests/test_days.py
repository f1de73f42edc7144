"""Unit tests for engine.days: UTC days and the day -> block range search."""

import datetime as dt

from engine.days import BlockClock, day_of_ts, day_start_ts, shard_days

START = dt.date(2022, 12, 18)
T0 = day_start_ts(START, 0)


def test_day_start_is_utc_midnight():
    assert T0 == 1_671_321_600  # 2022-12-18T00:00:00Z
    assert day_start_ts(START, 3) - T0 == 3 * 86_400
    assert day_of_ts(START, T0 + 86_399) == 0 and day_of_ts(START, T0 + 86_400) == 1


def test_shard_days_modulo():
    assert shard_days(10, 4, 1) == [1, 5, 9]


def chain():
    # block -> timestamp: genesis a day early, day 0 has blocks at 00:00:00 and 23:59:59,
    # day 1 has no block at all, day 2 starts exactly at midnight.
    ts = [T0 - 86_400, T0 - 10, T0, T0 + 600, T0 + 86_399, T0 + 2 * 86_400, T0 + 2 * 86_400 + 5]
    ts += [T0 + 3 * 86_400 + i * 60 for i in range(1000)]
    return ts


def test_boundary_blocks_land_on_the_right_day_and_empty_day_is_empty():
    ts = chain()
    clock = BlockClock(lambda b: ts[b])
    head = len(ts) - 1
    d0 = clock.day_range(T0, T0 + 86_400, 0, head)
    d1 = clock.day_range(T0 + 86_400, T0 + 2 * 86_400, 0, head)
    d2 = clock.day_range(T0 + 2 * 86_400, T0 + 3 * 86_400, 0, head)
    assert d0 == (2, 4)  # 00:00:00 included, 23:59:59 included
    assert d1[1] == d1[0] - 1  # empty
    assert d2 == (5, 6)


def test_search_is_cheap_on_a_steady_chain():
    ts = [i * 2 for i in range(5_000_000)]  # a block every 2 s
    clock = BlockClock(lambda b: ts[b])
    first = clock.first_at_or_after(7_777_777, 0, len(ts) - 1)
    assert ts[first] >= 7_777_777 > ts[first - 1]
    assert clock.calls <= 12


def test_no_block_after_target():
    clock = BlockClock(lambda b: b)
    assert clock.first_at_or_after(100, 0, 50) == 51
