"""Unit tests for engine.days: UTC days and the day -> block range search."""

import bisect
import datetime as dt
import random

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


def irregular_chain(days: int, seed: int) -> list[int]:
    """~144 blocks a day at random intervals, a quiet day now and then, an empty day or two."""
    rng = random.Random(seed)
    ts, t = [T0 - 86_400], T0 - 3_600
    while t < T0 + days * 86_400:
        day = (t - T0) // 86_400
        if day % 11 == 5:
            t += 86_400  # an empty day
        elif day % 7 == 3:
            t += rng.randint(1_200, 7_200)  # a quiet day
        else:
            t += rng.randint(1, 1_200)
        ts.append(t)
    return ts


def walk_shard(clock: BlockClock, ts: list[int], days: range) -> float:
    """Find each day's range as a shard does (each search starts after its previous day), check
    it against bisect over the whole chain; return the calls per day."""
    head, lo = len(ts) - 1, 0
    for d in days:
        t0 = T0 + d * 86_400
        first, last = clock.day_range(t0, t0 + 86_400, lo, head)
        want = bisect.bisect_left(ts, t0), bisect.bisect_left(ts, t0 + 86_400) - 1
        assert (first, last) == want, d
        lo = last + 1
    return clock.calls / len(days)


def test_shard_walk_is_exact_and_cheap_one_call_at_a_time():
    """Exact ranges, and stepping at the block rate of the days found costs fewer calls a day
    than interpolating inside the bracket did (16-17.5 on these chains; bisection over them
    takes ~22)."""
    for seed in (1, 2, 3):
        ts = irregular_chain(200, seed)
        per_day = walk_shard(BlockClock(lambda b, ts=ts: ts[b]), ts, range(3, 190, 8))
        assert per_day <= 13, (seed, per_day)


def test_shard_walk_on_a_chain_with_a_steady_block_time_takes_a_few_calls_a_day():
    rng = random.Random(5)
    ts, t = [], T0 - 86_400
    while t < T0 + 60 * 86_400:
        ts.append(t)
        t += 2 if rng.random() < 0.99 else 4  # Polygon-like: 2 s, a slow block now and then
    per_day = walk_shard(BlockClock(lambda b: ts[b]), ts, range(1, 58, 8))
    assert per_day <= 8, per_day


def test_shard_walk_is_exact_batched():
    ts = irregular_chain(200, 4)
    walk_shard(BlockClock(lambda b: ts[b], lambda bs: [ts[b] for b in bs]), ts, range(3, 190, 8))
