"""Sizing a filter's eth_getLogs span from another filter's per-block log counts (pure).

The worker fetches a day's filters one after the other over the same blocks, and on a real chain
their logs come from the same activity: a burst of trades emits ERC20 transfers and ERC1155
transfers together. So once one filter (the leader) has fetched a stretch, the per-block counts
it saw, scaled by the ratio of the follower's logs to the leader's, forecast the follower's logs
block by block, bursts included, far better than the follower's own past can. The margin left
below the cap only has to cover the follower's own counting noise (~1/sqrt(events)).
"""

from __future__ import annotations

from collections.abc import Sequence

#: Share of the result cap a follower aims at, before the noise margin.
FOLLOW_TARGET = 0.95
#: Noise margin in standard deviations of the follower's event count.
FOLLOW_Z = 2.5
#: Fewest of the follower's own logs over the shared stretch for its ratio to the leader to be
#: measured there (else the ratio measured before, e.g. on the previous day, is used).
RATIO_MIN_LOGS = 300


def ratio(own: Sequence[int], leader: Sequence[int]) -> float | None:
    """Follower logs per leader log over the same blocks; None when too few to tell."""
    mine, theirs = sum(own), sum(leader)
    if mine < RATIO_MIN_LOGS or theirs <= 0:
        return None
    return mine / theirs


def event_size(counts: Sequence[int]) -> float:
    """Logs per event, sum(n^2) / sum(n) (1.0 when there are no logs)."""
    total = sum(counts)
    return sum(x * x for x in counts) / total if total > 0 else 1.0


def span(ahead: Sequence[int], scale: float, cap: int, unit: float, max_span: int) -> int:
    """Blocks the follower may ask from the start of ``ahead`` (the leader's counts from there).

    The expected logs, ``scale`` x the leader's counts summed block by block, stay within
    FOLLOW_TARGET of ``cap`` less FOLLOW_Z standard deviations of the follower's count (events of
    ``unit`` logs each). At least 1 block; at most ``max_span`` and the blocks ``ahead``.
    """
    goal = FOLLOW_TARGET * cap
    # Poisson in events: sd of the logs = sqrt(goal * unit); aim so that aim + z*sd <= goal.
    sd = (max(goal, 1.0) * max(unit, 1.0)) ** 0.5
    aim = max(1.0, goal - FOLLOW_Z * sd)
    limit = min(max_span, len(ahead))
    acc = 0.0
    for i in range(limit):
        acc += scale * ahead[i]
        if acc > aim:
            return max(1, i)
    return max(1, limit)


__all__ = ["event_size", "ratio", "span"]
