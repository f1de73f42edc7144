"""Building the analytics tables `*{sfx}` from the staged data (no gate, no swap).

1. token_outcomes{sfx} from ConditionalTokens position ids (analytics/positions.py) of each
   condition seen in condition_resolutions or token_registrations (of the COMPLETE days);
2. net_flows{sfx}, trades_with_direction{sfx}, wallet_market_pnl{sfx} by analytics/sql/rebuild.sql.

Used by the gates (scratch `*_check` tables) and the rebuild (`*_new`). Dependencies point one way:
templating <- build <- gates <- snapshot <- rebuild.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.analytics.budget import max_chunk_rows, plan_chunks, query_settings, with_settings
from engine.analytics.positions import outcome_token_ids as _ids_of
from engine.analytics.templating import render, sql_params, sql_text
from engine.status import RebuildProgress
from engine.store.client import StoreError, split_sql

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.client import Store

# One analytics build at a time per process (periodic gates, hard gate, rebuild share the store).
BUILD_LOCK = threading.RLock()

ANALYTICS_TABLES = ("token_outcomes", "net_flows", "trades_with_direction", "wallet_market_pnl")
NEW_SUFFIX = "_new"
CHECK_SUFFIX = "_check"
PREV_SUFFIX = "_prev"
SWAP_SUFFIX = "_swap"
TOKEN_OUTCOME_COLUMNS = [
    "token_id",
    "condition_id",
    "outcome_index",
    "outcome_count",
    "collateral",
    "registered",
]
INSERT_CHUNK = 50_000
MAX_OUTCOMES = 256  # ConditionalTokens allows at most 256 outcome slots

# Conditions to map: every resolved or registered condition of the COMPLETE days.
CONDITIONS_SQL = """
WITH
    {complete_days_cte}
SELECT condition_id, max(slots) AS slots, groupUniqArrayArray(tokens) AS registered_tokens
FROM
(
    SELECT condition_id, max(outcome_slot_count) AS slots, [] :: Array(UInt256) AS tokens
    FROM {db}.condition_resolutions FINAL
    WHERE day_idx IN (SELECT day_idx FROM complete_days)
    GROUP BY condition_id
    UNION ALL
    SELECT condition_id, 0, groupUniqArray(arrayJoin([token0, token1]))
    FROM {db}.token_registrations FINAL
    WHERE day_idx IN (SELECT day_idx FROM complete_days)
    GROUP BY condition_id
)
GROUP BY condition_id
ORDER BY condition_id
"""

# Already computed ids of the live table, reused when the condition and its outcome count match.
KNOWN_IDS_SQL = """
SELECT condition_id, outcome_count, arraySort(x -> x.1, groupArray((outcome_index, token_id)))
FROM {db}.token_outcomes
WHERE collateral = '{collateral}'
GROUP BY condition_id, outcome_count
"""


# --------------------------------------------------------------------------------------------
# Tables


def analytics_statements(store: Store, sfx: str) -> list[str]:
    """CREATE TABLE IF NOT EXISTS for the four analytics tables with suffix `sfx`."""
    stmts = split_sql(render(sql_text("analytics.sql"), {"db": store.database, "sfx": sfx}))
    return [s for s in stmts if ".gate_results" not in s]


def create_analytics(store: Store, sfx: str) -> None:
    for stmt in analytics_statements(store, sfx):
        store.command(stmt)


def drop_analytics(store: Store, sfx: str) -> None:
    if not sfx:
        raise ValueError("refusing to drop the live analytics tables")
    for t in (*ANALYTICS_TABLES, "rebuild_legs", "rebuild_cash", "rebuild_flows"):
        store.command(f"DROP TABLE IF EXISTS {store.database}.{t}{sfx} SYNC")


def table_exists(store: Store, name: str) -> bool:
    db = store.database
    return bool(
        store.query(f"SELECT 1 FROM system.tables WHERE database = '{db}' AND name = '{name}'")
    )


def table_count(store: Store, name: str) -> int:
    return int(store.query(f"SELECT count() FROM {store.database}.{name}")[0][0])


# --------------------------------------------------------------------------------------------
# token_outcomes


def outcome_token_ids(condition_id: str, outcome_count: int, collateral: str) -> list[int]:
    """Position ids of outcomes 0..n-1 (index set 1 << i) of a condition, as ConditionalTokens."""
    return _ids_of(collateral, condition_id, outcome_count)


def fill_token_outcomes(store: Store, cfg: Config, sfx: str) -> int:
    """Compute and insert token_outcomes{sfx}; returns the number of token rows."""
    params = sql_params(store, cfg, sfx)
    collateral = cfg.contracts.collateral.lower()
    known: dict[tuple[str, int], list[int]] = {}
    if table_exists(store, "token_outcomes"):
        for cond, n, pairs in store.query(
            render(KNOWN_IDS_SQL, {**params, "collateral": collateral})
        ):
            ids = [int(t) for _, t in pairs]
            if [int(i) for i, _ in pairs] == list(range(int(n))):
                known[(cond, int(n))] = ids
    table = f"{store.database}.token_outcomes{sfx}"
    rows: list[list] = []
    total = 0
    for cond, slots, registered_tokens in store.query(render(CONDITIONS_SQL, params)):
        n = int(slots) if int(slots) else 2  # a TokenRegistered pair means a binary market
        if n < 2 or n > MAX_OUTCOMES:
            continue  # resolution_sanity reports it
        ids = known.get((cond, n)) or outcome_token_ids(cond, n, collateral)
        registered = {int(t) for t in registered_tokens}
        for i, tid in enumerate(ids):
            rows.append([str(tid), cond, i, n, collateral, int(tid in registered)])
        if len(rows) >= INSERT_CHUNK:
            store.insert_json_rows(table, TOKEN_OUTCOME_COLUMNS, rows)
            total += len(rows)
            rows = []
    store.insert_json_rows(table, TOKEN_OUTCOME_COLUMNS, rows)
    return total + len(rows)


# --------------------------------------------------------------------------------------------
# Build


SECTIONS = ("setup", "chunk", "finish")


def rebuild_sections() -> dict[str, list[str]]:
    """rebuild.sql's statements per `-- section: NAME` (setup, chunk, finish), not rendered."""
    out: dict[str, list[str]] = {}
    name = ""
    body: list[str] = []
    for line in [*sql_text("rebuild.sql").splitlines(), "-- section: end"]:
        stripped = line.strip()
        if stripped.startswith("-- section:"):
            if name:
                out[name] = split_sql("\n".join(body) + "\n")
            name, body = stripped.split(":", 1)[1].strip(), []
            continue
        body.append(line)
    missing = [s for s in SECTIONS if s not in out]
    if missing:
        raise RuntimeError(f"rebuild.sql: missing section(s) {', '.join(missing)}")
    return out


# The COMPLETE days with their checkpointed staging rows, to plan the chunks.
CHUNK_DAYS_SQL = """
WITH
    {complete_days_cte}
SELECT day_idx, max(erc20_count + erc1155_count) AS rows
FROM {db}.backfill_checkpoint FINAL
WHERE start_date = toDate('{start_date}') AND day_idx IN (SELECT day_idx FROM complete_days)
GROUP BY day_idx
ORDER BY day_idx
"""


class StepTimes:
    """Wall time per statement label, summed over chunks (the slowest are logged at the end)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def add(self, label: str, seconds: float) -> None:
        self.total[label] = self.total.get(label, 0.0) + seconds
        self.count[label] = self.count.get(label, 0) + 1

    def slowest(self, n: int = 3) -> list[tuple[str, float, int]]:
        ranked = sorted(self.total.items(), key=lambda kv: -kv[1])[:n]
        return [(k, v, self.count[k]) for k, v in ranked]


def statement_label(section: str, index: int, stmt: str) -> str:
    """`chunk#3 INSERT INTO net_flows_new`: section, position and the statement's first words."""
    words = " ".join(stmt.split()[:4])
    return f"{section}#{index} {words}"


def run_statement(
    store: Store,
    cfg: Config,
    stmt: str,
    label: str,
    times: StepTimes | None = None,
    in_order: bool = True,
) -> None:
    """One analytics statement under the memory budget; an overrun names the budget and step."""
    t0 = time.perf_counter()
    try:
        store.command(with_settings(stmt, query_settings(cfg, in_order)))
    except StoreError as exc:
        raise over_budget(cfg, label, exc) from exc
    finally:
        if times is not None:
            times.add(label, time.perf_counter() - t0)


def over_budget(cfg: Config, label: str, exc: StoreError) -> StoreError:
    """`exc`, or when ClickHouse refused for memory, an error naming the budget and the step."""
    if "MEMORY_LIMIT_EXCEEDED" not in str(exc):
        return exc
    return StoreError(
        f"{label}: over the analytics memory budget gates.max_memory_gib = "
        f"{cfg.gates.max_memory_gib:g} (ClickHouse max_memory_usage): {exc}"
    )


def _eta(started: float, done_rows: int, total_rows: int, done: int, total: int) -> float | None:
    """Seconds left, from the rate so far (by staged rows, or by chunks when rows are 0)."""
    elapsed = time.perf_counter() - started
    if done <= 0 or elapsed <= 0:
        return None
    if total_rows > 0 and done_rows > 0:
        return elapsed * (total_rows - done_rows) / done_rows
    return elapsed * (total - done) / done


def build_analytics(
    store: Store,
    cfg: Config,
    sfx: str,
    log: Callable[[str], None] | None = None,
    progress: Callable[[RebuildProgress], None] | None = None,
    times: StepTimes | None = None,
) -> dict[str, int]:
    """(Re)create the analytics tables `*{sfx}` from the staged data; returns their row counts.

    The per-transaction statements (rebuild.sql section `chunk`) run once per day range of
    `plan_chunks`; each range is logged with chunks done / total and an ETA, and `progress` is
    called after each step. Every statement runs under the memory budget (analytics/budget.py).
    """
    if not sfx:
        raise ValueError("the analytics are built into suffixed tables, never in place")
    say = log or (lambda _m: None)
    report = progress or (lambda _p: None)
    started_wall = time.time()
    times = times if times is not None else StepTimes()
    with BUILD_LOCK:
        drop_analytics(store, sfx)
        create_analytics(store, sfx)
        report(RebuildProgress("token_outcomes", 0, 0, 0, 0, started_wall, None))
        n_tokens = fill_token_outcomes(store, cfg, sfx)
        say(f"token_outcomes{sfx}: {n_tokens} token ids")
        params = sql_params(store, cfg, sfx)
        sections = rebuild_sections()
        day_rows = [(int(d), int(n)) for d, n in store.query(render(CHUNK_DAYS_SQL, params))]
        chunks = plan_chunks(day_rows, max_chunk_rows(cfg))
        rows_total = sum(r for _, _, r in chunks)
        say(
            f"{len(chunks)} chunk(s) of at most {max_chunk_rows(cfg):,} staged rows over "
            f"{len(day_rows)} COMPLETE days ({rows_total:,} rows); memory budget "
            f"{cfg.gates.max_memory_gib:g} GiB per query"
        )

        def run_section(name: str, values: dict[str, str]) -> None:
            for i, stmt in enumerate(sections[name]):
                sql = render(stmt, values)
                label = statement_label(name, i, sql)
                run_statement(store, cfg, sql, label, times, in_order=name != "chunk")

        run_section("setup", params)
        t0 = time.perf_counter()
        rows_done = 0
        report(RebuildProgress("chunks", 0, len(chunks), 0, rows_total, started_wall, None))
        for k, (first, last, rows) in enumerate(chunks, start=1):
            run_section("chunk", {**params, "day_from": str(first), "day_to": str(last)})
            rows_done += rows
            eta = _eta(t0, rows_done, rows_total, k, len(chunks))
            say(
                f"chunk {k}/{len(chunks)} days {first}-{last} ({rows:,} rows) done in "
                f"{time.perf_counter() - t0:.1f} s so far; ETA "
                + ("calculating" if eta is None else f"{eta:.0f} s")
            )
            report(
                RebuildProgress("chunks", k, len(chunks), rows_done, rows_total, started_wall, eta)
            )
        n = len(chunks)
        report(RebuildProgress("finish", n, n, rows_done, rows_total, started_wall, 0))
        run_section("finish", params)
        counts = {t: table_count(store, f"{t}{sfx}") for t in ANALYTICS_TABLES}
        say("built " + ", ".join(f"{t}{sfx}={n}" for t, n in counts.items()))
        for label, secs, runs in times.slowest():
            say(f"step {label} took {secs:.1f} s ({runs} run(s))")
        report(RebuildProgress("done", n, n, rows_done, rows_total, started_wall, 0))
        return counts
