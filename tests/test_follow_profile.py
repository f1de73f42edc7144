"""engine.rpc.follow_profile (pure) and its use by RangeController: a follower filter sizes its
spans from the leader's per-block counts over the same blocks, bursts included."""

from __future__ import annotations

import pytest

from engine.rpc import errors as rpc_errors
from engine.rpc import follow_profile
from engine.rpc.errors import Classified
from engine.rpc.range_control import RangeController


@pytest.mark.parametrize(
    "own, leader, want",
    [
        ([100] * 3, [200] * 3, 0.5),  # 300 of ours per 600 of theirs
        ([1] * 3, [2] * 3, None),  # too few of our own logs to tell
        ([400], [0], None),  # the leader saw nothing
    ],
)
def test_ratio(own, leader, want):
    assert follow_profile.ratio(own, leader) == want


@pytest.mark.parametrize(
    "ahead, scale, cap, unit, max_span, want",
    [
        # 10 logs a block at scale 1; aim = 950 - 2.5 * sqrt(950) = 872.9 -> 87 blocks
        ([10] * 500, 1.0, 1000, 1.0, 10_000, 87),
        # the same at scale 0.5: twice the blocks
        ([10] * 500, 0.5, 1000, 1.0, 10_000, 174),
        # a burst ahead (x4 from block 50): the span stops inside it, not at the flat forecast
        ([10] * 50 + [40] * 450, 1.0, 1000, 1.0, 10_000, 50 + 9),
        # bigger events, wider margin: aim = 950 - 2.5 * sqrt(950 * 9) = 718.8 -> 71 blocks
        ([10] * 500, 1.0, 1000, 9.0, 10_000, 71),
        # the leader's stretch ends first, or max_span binds
        ([1] * 30, 1.0, 1000, 1.0, 10_000, 30),
        ([10] * 500, 1.0, 1000, 1.0, 20, 20),
        # one block over the aim alone: still one block
        ([5000], 1.0, 1000, 1.0, 10, 1),
    ],
)
def test_span(ahead, scale, cap, unit, max_span, want):
    assert follow_profile.span(ahead, scale, cap, unit, max_span) == want


def logs(counts: list[int], start: int) -> list[dict]:
    return [{"blockNumber": hex(start + i)} for i, n in enumerate(counts) for _ in range(n)]


def test_a_follower_stops_before_a_burst_the_leader_saw_and_never_repeats_a_refused_span():
    rc = RangeController(1, 20_000)
    rc.urls[0].results_cap = 1000
    lead, follow = "lead", "follow"
    # The leader fetched 0..1999: 2 logs a block, a burst of 20 a block at 1000..1099.
    counts = [2] * 1000 + [20] * 100 + [2] * 900
    rc.on_success(0, lead, 0, 1999, logs(counts, 0), cut=False)
    # The follower (half the leader's logs) fetched 0..799 itself: its ratio is measured there.
    rc.on_success(0, follow, 0, 799, logs([1] * 800, 0), cut=False)
    end = rc.end_for(0, follow, 800, 1999, 20_000)
    # Expected: 1 a block to 999, then 10 a block: aim 950 - 2.5*sqrt(950) = 872.9 logs from 800:
    # 200 (800..999) + 67 burst blocks (670) = 870 -> last block 1066.
    assert end == 1066
    # Refused anyway: the follower does not ask the same span again from that start.
    rc.on_too_big(0, follow, 800, end, Classified(rpc_errors.RANGE_TOO_BIG, cause="results"))
    assert rc.end_for(0, follow, 800, 1999, 20_000) < end
