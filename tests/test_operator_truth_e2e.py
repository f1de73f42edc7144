"""What the operator sees is true, on real runs (real anvil devchain, real workers, real chdb).

- worker_heartbeats: the playbook's query (docs/OPERATIONS.md, "Is a worker stalled?") after a
  scale down and a SIGKILLed worker (the console then killed too, as a crash would), and after a
  finished run: updated_at is each worker's last real heartbeat, states are real, shards scaled
  away are GONE.
- Rows: after a restart mid-run the headline rows (staged) equal the ground truth exactly, and
  the rows fetched twice are reported apart as re-fetched; per-shard counts survive the restart.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import ground_truth_for
from tests.support.cli import ConsoleRun, store_query, worker_processes
from tests.support.config import write_config

DAYS = 12
PLAYBOOK = (
    "SELECT worker_id, state, toUnixTimestamp(updated_at), "
    "dateDiff('second', updated_at, now()) AS silent_s "
    "FROM {db}.worker_heartbeats FINAL ORDER BY worker_id"
)


def workers(run: ConsoleRun) -> list[dict]:
    """The workers of `ctl status`, [] while the console is not answering yet."""
    out = run.ctl("status", "--json")
    return json.loads(out.stdout)["workers"] if out.returncode == 0 else []


def heartbeats(config: Path) -> dict[str, tuple[str, int]]:
    """worker_id -> (state, updated_at as unix seconds)."""
    return {r[0]: (r[1], int(r[2])) for r in store_query(config, PLAYBOOK)}


@pytest.mark.slow
def test_heartbeats_after_a_scale_down_a_sigkilled_worker_and_a_finished_run(
    tmp_path: Path, devchain_cache: Path
) -> None:
    config = write_config(
        tmp_path,
        days=DAYS,
        devchain_state=devchain_cache,
        rps=4.0,
        shards=3,
        # A killed worker stays down a while: what the table says meanwhile is what we check.
        monitor={"backoff_initial_s": 60, "backoff_max_s": 60},
    )
    run = ConsoleRun(config)
    try:
        run.wait_for(lambda: len(run.worker_states()) == 3, 90, "three workers")
        out = run.ctl("scale", "2")
        assert out.returncode == 0, out.stderr
        run.wait_for(lambda: "scale" not in run.status()["busy"], 90, "scale to 2 done")
        run.wait_for(lambda: len(worker_processes(run.proc.pid)) == 2, 60, "two workers")
        time.sleep(6)  # both new workers heartbeat and their rows are flushed
        victim = worker_processes(run.proc.pid)[0][0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        run.wait_for(
            lambda: run.status()["workers"][0]["state"] in ("BACKOFF", "STARTING"),
            30,
            "shard 0 noticed dead",
        )
        time.sleep(7)  # a heartbeat flush (every 5 s) after the state change
        status = run.status()
        assert status["shards"] == 2 and status["config_shards"] == 3
        os.kill(run.proc.pid, signal.SIGKILL)  # the console dies too: the table is all we have
        run.proc.wait(30)
        crashed_at = time.time()
    finally:
        run.kill()
    rows = heartbeats(config)
    assert set(rows) == {"shard-0", "shard-1", "shard-2"}
    # Scaled away: GONE, not a phantom RUNNING/STOPPING row.
    assert rows["shard-2"][0] == "GONE"
    # The killed worker: its real state, and updated_at = its last heartbeat (before the kill).
    assert rows["shard-0"][0] in ("BACKOFF", "STARTING")
    assert rows["shard-0"][1] <= killed_at
    # The live one kept heartbeating after the kill; nobody's time is the console's flush time.
    assert rows["shard-1"][0] == "RUNNING"
    assert int(killed_at) <= rows["shard-1"][1] <= crashed_at
    assert rows["shard-1"][1] > rows["shard-0"][1]
    # The operator's conclusion, 5 s after the crash with a 4 s threshold: shard 0 is silent
    # longest; every live-looking worker is reported (the console is gone, so are they).
    time.sleep(max(0.0, crashed_at + 5 - time.time()))
    silent = {
        r[0]: int(r[3])
        for r in store_query(config, PLAYBOOK)
        if r[1] not in ("DONE", "STOPPED", "GONE") and int(r[3]) > 4
    }
    assert set(silent) == {"shard-0", "shard-1"}
    assert silent["shard-0"] > silent["shard-1"]

    # Rerun to the end (the config's SHARDS = 3 again): every worker DONE, nothing looks live.
    finish = ConsoleRun(config)
    try:
        code = finish.finish(300)
    finally:
        finish.kill()
    assert code == 0, finish.output[-3000:]
    rows = heartbeats(config)
    assert {w: s for w, (s, _) in rows.items()} == {
        "shard-0": "DONE",
        "shard-1": "DONE",
        "shard-2": "DONE",
    }


@pytest.mark.slow
def test_staged_rows_are_exact_after_a_restart_and_refetched_rows_are_apart(
    tmp_path: Path, devchain_cache: Path
) -> None:
    config = write_config(tmp_path, days=DAYS, devchain_state=devchain_cache, rps=5.0, shards=2)
    run = ConsoleRun(config)
    try:
        run.wait_for(
            lambda: any(w["days_done"] >= 1 and w["rows"] > 0 for w in workers(run)),
            120,
            "a day done",
        )
        before = next(w for w in run.status()["workers"] if w["shard"] == 1)
        out = run.ctl("restart", "1")
        assert out.returncode == 0, out.stderr
        run.wait_for(
            lambda: next(w for w in run.status()["workers"] if w["shard"] == 1)["restarts"] == 1,
            60,
            "restart counted",
        )
        after = next(w for w in run.status()["workers"] if w["shard"] == 1)
        # Workers send raw logs (the store decodes them): their count is called logs, not rows.
        assert run.status()["fetched_unit"] == "logs"
        # Run totals: the restart does not reset the shard's figures.
        assert after["days_done"] >= before["days_done"]
        assert after["rows"] >= before["rows"]
        assert after["days_planned"] == before["days_planned"]
        code = run.finish(300)
    finally:
        run.kill()
    assert code == 0, run.output[-3000:]
    truth = ground_truth_for(config)
    e20 = sum(d["erc20_count"] for d in truth["per_day"].values())
    e1155 = sum(d["erc1155_count"] for d in truth["per_day"].values())
    last = [ln for ln in run.lines if " rows staged " in ln][-1]
    m = re.search(r"rows staged erc1155=([\d,]+) erc20=([\d,]+)( \(re-fetched ([\d,]+))?", last)
    assert m, last
    assert (int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))) == (e1155, e20)
    in_store = store_query(config, "SELECT count() FROM {db}.erc20_transfers_staging FINAL")[0][0]
    assert int(in_store) == e20  # what the operator's SQL says, the headline says
