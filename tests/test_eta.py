"""The ETA (engine.eta), table-driven: simulated runs with a known end, and the estimator's rules.

A simulated run: each shard's worker takes its days (day % SHARDS) in order; a day costs `calls`
provider calls of `latency` seconds each, under the worker's budget share (rps / SHARDS), so it
takes max(calls x latency, calls / share) seconds, the first day of a worker `startup` more. A
scale stops every worker (their days in progress are lost) and starts the new SHARDS after 1 s.
The estimate is asked at every 0.5 s tick and compared with the simulated end.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import pytest

from engine.eta import MIN_WINDOW_S, DayCost, EtaEstimator, carried

LAG = 0.4  # DayDone -> checkpoint


@dataclass(frozen=True)
class Run:
    shards: int
    days: int
    calls: int
    latency: float
    rps: float  # 0: unlimited
    startup: float = 3.0
    scale_at: float | None = None  # share of the days COMPLETE
    scale_to: int = 0
    pause: tuple[float, float] | None = None  # (at, seconds)


def day_cost(run: Run, shards: int) -> DayCost:
    share = run.rps / shards if run.rps else 0.0
    busy = run.calls * run.latency
    seconds = max(busy, run.calls / share) if share else busy
    return DayCost(seconds, seconds - busy, run.calls, share)


def simulate(run: Run) -> tuple[list[tuple[float, int, str, tuple]], float]:
    """Events (time, order, kind, args) of a run and the time its last day is COMPLETE."""
    events: list[tuple[float, int, str, tuple]] = []
    n = run.shards
    todo = set(range(run.days))
    complete = 0
    scaled = run.scale_at is None
    t_start = 0.0
    while todo:
        cost = day_cost(run, n)
        queue: list[tuple[float, int, int]] = []  # (DayDone time, shard, day)
        mine = {k: sorted(d for d in todo if d % n == k) for k in range(n)}
        for k in range(n):
            events.append((t_start, 0, "start", (k, cost.share, n)))
            if mine[k]:
                first = t_start + run.startup + cost.seconds
                heapq.heappush(queue, (first, k, mine[k].pop(0)))
        stop_at = None
        while queue:
            t, k, d = heapq.heappop(queue)
            if stop_at is not None and t > stop_at:
                continue
            if run.pause and t > run.pause[0] and t - cost.seconds < run.pause[0]:
                t += run.pause[1]
            events.append((t, 1, "fetched", (k, d, cost)))
            events.append((t + LAG, 2, "done", (d,)))
            todo.discard(d)
            complete += 1
            if mine[k]:
                heapq.heappush(queue, (t + cost.seconds, k, mine[k].pop(0)))
            if not scaled and complete >= run.scale_at * run.days:  # type: ignore[operator]
                scaled, stop_at = True, t
        if stop_at is not None:
            t_start, n = stop_at + 1.0, run.scale_to
        end = max(e[0] for e in events if e[2] == "done")
    return sorted(events, key=lambda e: (e[0], e[1])), end


def replay(run: Run) -> tuple[list[tuple[float, int, float | None, str]], float]:
    """(time, days COMPLETE, estimate, note) at every tick of a simulated run; its end."""
    events, end = simulate(run)
    est = EtaEstimator()
    left = {d: d for d in range(run.days)}  # days without DayDone
    shards = run.shards
    out = []
    i, t = 0, 0.0
    complete = 0
    while t <= end:
        while i < len(events) and events[i][0] <= t:
            at, _, kind, args = events[i]
            if kind == "start":
                shards = args[2]
                est.started(at, args[0], args[1])
            elif kind == "fetched":
                est.fetched(at, args[0], args[1], args[2])
                left.pop(args[1], None)
            else:
                est.completed(at, args[0])
                complete += 1
            i += 1
        paused = run.pause is not None and run.pause[0] <= t < sum(run.pause)
        est.tick(t, not paused)
        by_shard: dict[int, int] = {}
        for d in left:
            by_shard[d % shards] = by_shard.get(d % shards, 0) + 1
        e = est.estimate(by_shard, "none while paused" if paused else "")
        out.append((t, complete, e.seconds, e.note))
        t += 0.5
    return out, end


def error_at(samples: list, end: float, share: float, days: int) -> float | None:
    t, _, eta, _ = next(s for s in samples if s[1] >= share * days)
    return None if eta is None else (eta - (end - t)) / (end - t)


RUNS = {
    # name: (run, worst |error| allowed from 10% on)
    "1 shard, no budget": (Run(1, 20, calls=8, latency=0.5, rps=0), 0.10),
    "4 shards, no budget": (Run(4, 48, calls=8, latency=0.5, rps=0), 0.10),
    "4 shards, tight budget": (Run(4, 48, calls=8, latency=0.1, rps=6), 0.10),
    "2 shards, 1 request/s each": (Run(2, 24, calls=6, latency=0.1, rps=2), 0.10),
    # A scale under a tight budget: the shares halve, the run ends when the budget says.
    "scale 2 -> 4, tight budget": (
        Run(2, 48, calls=8, latency=0.1, rps=6, scale_at=0.3, scale_to=4),
        0.15,
    ),
    # With room to spare the days left per shard halve.
    "scale 2 -> 4, no budget": (
        Run(2, 48, calls=8, latency=0.5, rps=0, scale_at=0.3, scale_to=4),
        0.15,
    ),
    "scale 4 -> 2, tight budget": (
        Run(4, 48, calls=8, latency=0.1, rps=6, scale_at=0.3, scale_to=2),
        0.15,
    ),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_the_estimate_is_within_its_bound_from_10_percent_on(name: str) -> None:
    run, bound = RUNS[name]
    samples, end = replay(run)
    # Before a scale that speeds the run up no estimate can know of it: those points are not
    # checked unless the budget binds (then the scale changes nothing and the estimate holds).
    bound_by_budget = run.rps and day_cost(run, run.shards).wait_s > 0
    after = 0.0 if run.scale_at is None or bound_by_budget else run.scale_at
    for share in [p for p in (0.10, 0.25, 0.50, 0.75) if p >= after]:
        err = error_at(samples, end, share, run.days)
        assert err is not None, f"{name}: no estimate at {share:.0%}"
        assert abs(err) <= bound, f"{name}: error {err:+.0%} at {share:.0%}"


@pytest.mark.parametrize(
    ("name", "after_scale_bound"),
    [("scale 2 -> 4, tight budget", 0.15), ("scale 2 -> 4, no budget", 0.20)],
)
def test_a_scale_changes_the_projection_at_once(name: str, after_scale_bound: float) -> None:
    """Right after the new workers start (before any of them finished a day) the estimate
    already follows the new layout."""
    run, _ = RUNS[name]
    samples, end = replay(run)
    events, _ = simulate(run)
    restart = max(e[0] for e in events if e[2] == "start")
    t, _, eta, note = next(s for s in samples if s[0] >= restart + 0.5)
    assert eta is not None, note
    assert abs(eta - (end - t)) / (end - t) <= after_scale_bound


@pytest.mark.parametrize(
    ("cost", "share", "factor"),
    [
        (DayCost(8.0, 7.2, 8, 1.0), 0.5, 2.0),  # bound by the budget: half the share, twice
        (DayCost(8.0, 7.2, 8, 1.0), 2.0, 0.5),  # and back (still bound: 4 s > 0.8 s busy)
        (DayCost(4.0, 0.0, 8, 4.0), 8.0, 1.0),  # not bound: more budget changes nothing
        (DayCost(4.0, 0.0, 8, 4.0), 1.0, 2.0),  # a quarter of the share binds: 8 s
        (DayCost(4.0, 0.0, 8, 0.0), 0.0, 1.0),  # unlimited
        (DayCost(0.0, 0.0, 0, 0.0), 1.0, 1.0),  # no figures from the worker: as measured
    ],
)
def test_a_day_interval_is_carried_to_another_share(
    cost: DayCost, share: float, factor: float
) -> None:
    assert carried(10.0, cost, share) == pytest.approx(10.0 * factor)


def test_calculating_until_a_day_interval_is_measured_then_no_eta_while_paused() -> None:
    est = EtaEstimator()
    est.started(0.0, 0, 1.0)
    est.tick(MIN_WINDOW_S + 1, True)
    est.fetched(MIN_WINDOW_S + 1, 0, 0, DayCost(5.0, 4.0, 5, 1.0))  # a first day: start-up
    assert est.estimate({0: 5}).note == "calculating"
    est.fetched(MIN_WINDOW_S + 6, 0, 1, DayCost(5.0, 4.0, 5, 1.0))
    e = est.estimate({0: 5})
    assert e.note == "" and e.seconds == pytest.approx(5 * 5.0)
    assert est.estimate({0: 5}, blocked="none while paused") == est.estimate({}, "x").__class__(
        None, "none while paused"
    )


def test_paused_time_is_not_a_slower_pace_and_the_day_in_progress_counts() -> None:
    est = EtaEstimator()
    est.started(0.0, 0, 0.0)
    for i, t in enumerate([2.0, 7.0, 12.0]):
        est.tick(t, True)
        est.fetched(t, 0, i, DayCost(5.0, 0.0, 5, 0.0))
    est.tick(12.0, False)  # paused for an hour
    est.tick(3612.0, True)
    est.tick(3614.0, True)  # 2 s into the next day
    assert est.estimate({0: 4}).seconds == pytest.approx(3 + 3 * 5.0)


def test_nothing_left_is_zero() -> None:
    assert EtaEstimator().estimate({0: 0}).seconds == 0.0
