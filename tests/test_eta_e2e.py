"""The ETA on a real run (real anvil devchain, real workers, real store): the workers' day figures
reach the estimator, `ctl status` shows the estimate once two days of a worker are measured, and
none while paused. Its accuracy is measured in bench/eta.py, not here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.cli import ConsoleRun
from tests.support.config import write_config

DAYS = 12
RPS = 4.0
SHARDS = 2
QUERIES = 3  # eth_getLogs filters per day of the default contracts (engine.worker.queries_for)


def status(run: ConsoleRun) -> dict:
    """`ctl status --json`, {} while the console is not answering yet."""
    out = run.ctl("status", "--json")
    return json.loads(out.stdout) if out.returncode == 0 else {}


@pytest.mark.slow
def test_status_shows_the_eta_none_while_paused_and_the_day_figures_are_traced(
    tmp_path: Path, devchain_cache: Path
) -> None:
    config = write_config(tmp_path, days=DAYS, devchain_state=devchain_cache, rps=RPS)
    trace = tmp_path / "eta.jsonl"
    run = ConsoleRun(config, env={"BACKFILL_ETA_TRACE": str(trace)})
    try:
        assert status(run).get("eta_s") is None  # starting: calculating, not 0:00:00
        run.wait_for(
            lambda: status(run).get("state") == "running" and status(run)["eta_s"] is not None,
            180,
            "an ETA",
        )
        st = run.status()
        assert st["eta_note"] == "" and st["eta_s"] >= 0
        assert re.search(r"ETA \d", run.ctl("status").stdout)
        assert run.ctl("pause").returncode == 0
        run.wait_for(lambda: run.status()["state"] == "paused", 60, "paused")
        st = run.status()
        assert (st["eta_s"], st["eta_note"]) == (None, "none while paused")
        assert "none while paused" in run.ctl("status").stdout
        assert run.ctl("resume").returncode == 0
        assert run.finish(300) == 0
    finally:
        run.kill()
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    starts = [e for e in events if e[0] == "start"]
    assert {e[2] for e in starts} == set(range(SHARDS))
    assert all(e[3] == RPS / SHARDS for e in starts)  # each worker's budget share
    fetched = {e[3]: e for e in events if e[0] == "fetched"}
    assert sorted(fetched) == list(range(DAYS))
    for day, (_, _, shard, _, seconds, wait_s, calls) in fetched.items():
        assert shard == day % SHARDS
        assert calls >= 0 and 0 <= wait_s <= seconds + 0.01
    # Every day's eth_getLogs (a day search may cost nothing when its bounds are cached), and at
    # 2 requests/s per worker the budget binds: the workers report waiting for it.
    assert sum(e[6] for e in fetched.values()) >= QUERIES * DAYS
    assert sum(e[5] for e in fetched.values()) > 0
    assert sorted(e[2] for e in events if e[0] == "done") == list(range(DAYS))
    paused_ticks = [e for e in events if e[0] == "tick" and not e[2]]
    assert paused_ticks and all(e[3] == "none while paused" for e in paused_ticks)
