"""End to end through unreliable RPC providers: the real CLI, a real anvil devchain, real chdb.

Every URL the console gets is a ``FaultProxy`` (tests/support/fault_proxy.py) in front of the
devchain:

- ``test_backfill_exact_through_faults_and_caps``: three providers, two of them failing ~30% of
  requests (429 with and without Retry-After, answers slower than the client timeout, 5xx), all
  three capping eth_getLogs at 2,000 blocks and a dozen results. The store ends exact against the
  ground truth, the faults and caps really happened, and no COMPLETE day has a block that no
  successful eth_getLogs request (per filter) covered.
- ``test_failing_block_leaves_day_incomplete_then_retried_to_complete``: one block whose ranges
  always answer HTTP 500. Its day is reported failed, naming the block, and stays not COMPLETE
  while every other day completes; once the provider heals, the worker retries the day
  (``backfill.failed_day_retry_s``) and the run ends exact.
- ``test_rpc_url_key_never_in_logs_or_status``: provider keys in the URL path and query, with
  error answers that quote them back, never reach the CLI output, any file in the data dir, the
  store, or ``ctl status``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.constants import TRANSFER_TOPIC
from engine.control import socket_path_for
from tests.conftest import E2E_DAYS, ground_truth_for
from tests.support.cli import ConsoleRun, cli, store_query
from tests.support.config import write_config
from tests.support.fault_proxy import FaultConfig, FaultProxy, HttpPoster, Record
from tests.test_backfill_e2e import assert_store_matches_truth

pytestmark = pytest.mark.slow  # end to end: real CLI, anvil devchain, fault proxies, store

#: Client timeout for these runs, and how long a "slow" fault holds its answer (past the timeout).
TIMEOUT_S = 1.0
SLOW_S = 1.6
#: Provider caps on eth_getLogs. Per worker filter the devchain (seed 7, generator v6) has 20-37
#: logs a day on each ERC20 filter, 8-27 on the other contracts', and at most 13 in one block: a
#: day needs several requests per ERC20 filter, and every block fits in one.
CAP_MAX_RANGE = 2000
CAP_MAX_RESULTS = 14


@contextlib.contextmanager
def devchain(tmp_path: Path, cache: Path) -> Iterator:
    """The E2E_DAYS devchain (built once per session in ``cache``), running."""
    from engine.config import load_config
    from engine.devchain import DevchainSpec, start_devchain

    base = write_config(tmp_path / "spec", days=E2E_DAYS, devchain_state=cache)
    spec = DevchainSpec.from_config(load_config(base))
    with start_devchain(spec, cache, log=lambda m: None) as chain:
        yield chain


def config_for(
    tmp_path: Path,
    cache: Path,
    urls: list[str],
    rps: float = 1000.0,
    backfill: dict[str, Any] | None = None,
) -> Path:
    """A config over ``urls`` with a short client timeout (and extra [backfill] keys)."""
    return write_config(
        tmp_path,
        days=E2E_DAYS,
        devchain_state=cache,
        shards=2,
        rpc_urls=urls,
        rps=rps,
        timeout_s=TIMEOUT_S,
        backfill=backfill,
    )


def filter_key(flt: dict) -> str:
    return json.dumps([flt.get("address"), flt.get("topics")], sort_keys=True)


def block_span(flt: dict) -> tuple[int, int]:
    return int(flt["fromBlock"], 16), int(flt["toBlock"], 16)


def complete_days(config: Path) -> list[tuple[int, int, int]]:
    rows = store_query(
        config,
        "SELECT day_idx, from_block, to_block FROM {db}.backfill_checkpoint FINAL "
        "WHERE status = 'COMPLETE' ORDER BY day_idx",
    )
    return [(int(d), int(a), int(b)) for d, a, b in rows]


def worker_logs(config: Path) -> str:
    return "\n".join(
        p.read_text() for p in sorted((config.parent / "backfill").glob("worker-*.log"))
    )


# ---------------------------------------------------------------------------------------------


def test_backfill_exact_through_faults_and_caps(tmp_path: Path, devchain_cache: Path) -> None:
    caps = {"cap_max_range": CAP_MAX_RANGE, "cap_max_results": CAP_MAX_RESULTS}
    # 30% of each faulty provider's requests fail: 10% 429, 6% slow, 14% 5xx.
    faults = {"p_429": 0.10, "p_slow": 0.06, "slow_s": SLOW_S, "p_5xx": 0.14}
    configs = [
        FaultConfig(**faults, **caps, retry_after="1", cap_style="infura", seed=4),
        FaultConfig(**faults, **caps, cap_style="alchemy", seed=8),  # 429 without Retry-After
        FaultConfig(**caps, cap_style="max_results_retry"),  # clean, but capped too
    ]
    with contextlib.ExitStack() as stack:
        chain = stack.enter_context(devchain(tmp_path, devchain_cache))
        proxies = [stack.enter_context(FaultProxy(chain.url, c)) for c in configs]
        # 10 requests/s per URL and worker: the clean URL cannot take all the traffic at once.
        config = config_for(tmp_path, devchain_cache, [p.url for p in proxies], rps=10.0)
        out = cli("--no-ui", "--config", str(config), timeout=240)
        records = [p.records for p in proxies]
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    gt = ground_truth_for(config)
    assert_store_matches_truth(config, gt)

    # The faults and the caps really happened (and only where configured). The engine backs off
    # from a failing URL, so the faulty ones see fewer requests; their seeds fault early.
    statuses = [Counter(r.status for r in recs) for recs in records]
    for st in statuses[:2]:
        assert st[429] > 0 and st["slow"] > 0 and st[503] > 0, statuses
        assert 0.15 < (st[429] + st["slow"] + st[503]) / st.total() < 0.6, statuses
    assert set(statuses[2]) <= {200, "cap"}, statuses
    assert statuses[2]["cap"] > 0 and statuses[0]["cap"] + statuses[1]["cap"] > 0, statuses
    # Every COMPLETE day has the ground truth's blocks (an empty day: an empty range) ...
    days = complete_days(config)
    assert [d for d, _, _ in days] == list(range(E2E_DAYS))
    for d, lo, hi in days:
        want = gt["per_day"][str(d)]
        if want["blocks"]:
            assert (lo, hi) == (want["from_block"], want["to_block"]), (d, lo, hi, want)
        else:
            assert lo > hi, (d, lo, hi)
    # ... and no COMPLETE day has a missing range: per filter the worker uses, the eth_getLogs
    # requests that got a result (200, no fault, no cap) cover every block of the day.
    get_logs = [r for recs in records for r in recs if r.method == "eth_getLogs"]
    filters = {filter_key(r.params[0]) for r in get_logs}
    assert len(filters) == 3, filters  # ERC20 from / to a counterparty, the other contracts
    served: dict[str, set[int]] = defaultdict(set)
    for r in get_logs:
        if r.ok:
            lo, hi = block_span(r.params[0])
            served[filter_key(r.params[0])].update(range(lo, hi + 1))
    nonempty = 0
    for day, lo, hi in days:
        nonempty += lo <= hi
        for key in filters:
            missing = sorted(set(range(lo, hi + 1)) - served[key])
            assert not missing, f"COMPLETE day {day} [{lo}, {hi}] filter {key}: {missing}"
    assert nonempty >= E2E_DAYS - 1
    # The result cap forced several successful requests per day on the ERC20 filters (every day
    # has more logs than the cap there), and more than one a day on the sparser third filter.
    ok_per_filter = Counter(filter_key(r.params[0]) for r in get_logs if r.ok)
    dense = [n for key, n in ok_per_filter.items() if TRANSFER_TOPIC in key]
    assert len(dense) == 2 and all(n >= 2 * nonempty for n in dense), ok_per_filter
    assert all(n > nonempty for n in ok_per_filter.values()), ok_per_filter


# ---------------------------------------------------------------------------------------------


def busiest_block(url: str, lo: int, hi: int) -> int:
    """The block of [lo, hi] with the most logs (any contract), straight from the node."""
    flt = {"fromBlock": hex(lo), "toBlock": hex(hi)}
    req = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [flt]}
    logs = HttpPoster(url).post_json(req)["result"]
    counts = Counter(int(lg["blockNumber"], 16) for lg in logs)
    return counts.most_common(1)[0][0]


def covers(r: Record, block: int) -> bool:
    lo, hi = block_span(r.params[0])
    return lo <= block <= hi


#: How soon a day with one failing block must be reported failed (bisecting a 48-block day to
#: that block takes ~20 requests).
REPORT_FAILED_WITHIN_S = 60


def test_failing_block_leaves_day_incomplete_then_retried_to_complete(
    tmp_path: Path, devchain_cache: Path
) -> None:
    day = 3
    with contextlib.ExitStack() as stack:
        chain = stack.enter_context(devchain(tmp_path, devchain_cache))
        want = chain.ground_truth["per_day"][str(day)]
        block = busiest_block(chain.url, want["from_block"], want["to_block"])
        # Both providers fail every eth_getLogs range that holds this block (a bad block).
        failing = FaultConfig(fail_blocks=frozenset({block}))
        proxies = [stack.enter_context(FaultProxy(chain.url, failing)) for _ in range(2)]
        config = config_for(
            tmp_path,
            devchain_cache,
            [p.url for p in proxies],
            backfill={"failed_day_retry_s": 2},
        )
        named = f"[{block}, {block}]"
        run = ConsoleRun(config)
        try:
            # The day is reported failed, naming the block, with the configured retry delay.
            t0 = time.monotonic()
            with contextlib.suppress(AssertionError):
                run.wait_for(
                    lambda: "day_failed" in worker_logs(config),
                    REPORT_FAILED_WITHIN_S,
                    "day_failed",
                )
            logs = worker_logs(config)
            assert "day_failed" in logs, (
                f"day {day} (block {block} failing) not reported failed within "
                f"{time.monotonic() - t0:.0f}s; worker log so far:\n"
                + "\n".join(ln[:200] for ln in logs.splitlines() if "WARNING" in ln)[-4000:]
            )
            failed = [ln for ln in logs.splitlines() if "range_failed" in ln]
            assert failed and all(named in ln for ln in failed), failed
            day_failed = [ln for ln in logs.splitlines() if "day_failed" in ln]
            assert all(f"day {day} not complete" in ln for ln in day_failed), day_failed
            assert all(named in ln and "retrying in 2s" in ln for ln in day_failed), day_failed
            # Every other day completes; this one stays failed, not COMPLETE, the run going on.
            run.wait_for(lambda: run.status()["days_complete"] == E2E_DAYS - 1, 60, "other days")
            st = run.status()
            got = (st["days_complete"], st["days_failed"], st["state"])
            assert got == (E2E_DAYS - 1, 1, "running"), st
            assert any(named in e["last"] for e in st["errors"]), st["errors"]
            assert any(named in (w["last_error"] or "") for w in st["workers"]), st["workers"]
            assert run.proc.poll() is None
            # The providers heal: the worker retries the day, and the run ends.
            healed_at = time.time()
            for p in proxies:
                p.set_config(FaultConfig())
            code = run.finish(120)
        finally:
            run.kill()
        records = [r for p in proxies for r in p.records]
    assert code == 0, run.output[-3000:]
    assert_store_matches_truth(config, ground_truth_for(config))
    # The day's COMPLETE checkpoint was written only after the providers healed ...
    rows = store_query(
        config,
        f"SELECT toUnixTimestamp64Milli(updated_at) FROM {{db}}.backfill_checkpoint "
        f"WHERE day_idx = {day} AND status = 'COMPLETE'",
    )
    assert rows and all(int(ms) / 1000 > healed_at for (ms,) in rows), (rows, healed_at)
    # ... and the block was never served before that (always a 500), then served afterwards.
    hits = [r for r in records if r.method == "eth_getLogs" and covers(r, block)]
    assert {(r.status, r.ok) for r in hits if r.wall < healed_at} == {(500, False)}, hits
    assert any(r.ok for r in hits if r.wall >= healed_at), hits


# ---------------------------------------------------------------------------------------------

PATH_KEY = "abcdEF0123456789abcdEF0123456789"
QUERY_KEY = "SeCrEtKeY123456789"


def secrets_in(text: str) -> list[str]:
    """The lines of ``text`` that hold a key (case-insensitive)."""
    keys = (PATH_KEY.lower(), QUERY_KEY.lower())
    return [ln.strip()[:300] for ln in text.splitlines() if any(k in ln.lower() for k in keys)]


def test_rpc_url_key_never_in_logs_or_status(tmp_path: Path, devchain_cache: Path) -> None:
    # Error answers quote the request path (query included) back, as some gateways do.
    faults = {"p_429": 0.15, "p_5xx": 0.15, "echo_path": True}
    with contextlib.ExitStack() as stack:
        chain = stack.enter_context(devchain(tmp_path, devchain_cache))
        p1 = stack.enter_context(FaultProxy(chain.url, FaultConfig(**faults, retry_after="1")))
        p2 = stack.enter_context(FaultProxy(chain.url, FaultConfig(**faults, seed=3)))
        urls = [f"{p1.url}/v3/{PATH_KEY}", f"{p2.url}/rpc?apikey={QUERY_KEY}"]
        # A small request budget keeps the run going while `ctl status` is read.
        config = config_for(tmp_path, devchain_cache, urls, rps=8.0)
        run = ConsoleRun(config)
        captured: list[str] = []
        try:
            sock = socket_path_for(config.parent / "backfill")
            run.wait_for(sock.exists, 60, "the control socket")
            while run.proc.poll() is None:
                for args in (("status", "--json"), ("status",)):
                    out = run.ctl(*args)
                    if out.returncode == 0:
                        captured.append(out.stdout + out.stderr)
                time.sleep(0.3)
            code = run.finish(180)
        finally:
            run.kill()
        statuses = Counter(r.status for p in (p1, p2) for r in p.records)
    assert code == 0, run.output[-3000:]
    assert_store_matches_truth(config, ground_truth_for(config))
    # Errors happened on both URLs, their answers quoting the keys back; status showed them.
    assert statuses[429] and statuses[503], statuses
    errors = [e for s in captured if s.startswith("{") for e in json.loads(s)["errors"]]
    kinds = {e["kind"] for e in errors}
    assert {"rpc_429", "http_5xx"} <= kinds, kinds
    echoed = [e["last"] for e in errors if " for /" in e["last"]]
    assert echoed and all("***" in m for m in echoed), echoed
    assert len(captured) >= 4, captured
    leaks = {f"ctl status #{i}": secrets_in(s) for i, s in enumerate(captured)}
    leaks["cli output"] = secrets_in(run.output)
    data_dir = config.parent / "backfill"
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("worker-") for p in files), files
    for path in files:
        leaks[str(path.relative_to(data_dir))] = secrets_in(path.read_bytes().decode("latin-1"))
    leaked = {where: lines for where, lines in leaks.items() if lines}
    assert not leaked, leaked
    # Nor in any string column of the store (heartbeats, checkpoints, ...).
    cols = store_query(
        config,
        "SELECT table, name FROM system.columns WHERE database = '{db}' AND type LIKE '%String%'",
    )
    assert cols
    checks = " UNION ALL ".join(
        f"SELECT '{t}.{c}', countIf(positionCaseInsensitive(toString(`{c}`), '{s}') > 0) "
        f"FROM {{db}}.`{t}`"
        for t, c in cols
        for s in (PATH_KEY, QUERY_KEY)
    )
    hits = [row for row in store_query(config, checks) if int(row[1])]
    assert not hits, hits
