"""Building the analytics tables `*{sfx}` from the staged data (no gate, no swap).

1. token_outcomes{sfx} from ConditionalTokens position ids (analytics/positions.py) of each
   condition seen in condition_resolutions or token_registrations (of the COMPLETE days);
2. net_flows{sfx}, trades_with_direction{sfx}, wallet_market_pnl{sfx} by analytics/sql/rebuild.sql.

Used by the gates (scratch `*_check` tables) and the rebuild (`*_new`). Dependencies point one way:
templating <- build <- gates <- snapshot <- rebuild.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.analytics.positions import outcome_token_ids as _ids_of
from engine.analytics.templating import render, sql_params, sql_text
from engine.store.client import split_sql

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
    for t in (*ANALYTICS_TABLES, "rebuild_legs", "rebuild_cash"):
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


def build_analytics(
    store: Store, cfg: Config, sfx: str, log: Callable[[str], None] | None = None
) -> dict[str, int]:
    """(Re)create the analytics tables `*{sfx}` from the staged data; returns their row counts."""
    if not sfx:
        raise ValueError("the analytics are built into suffixed tables, never in place")
    say = log or (lambda _m: None)
    with BUILD_LOCK:
        drop_analytics(store, sfx)
        create_analytics(store, sfx)
        n_tokens = fill_token_outcomes(store, cfg, sfx)
        say(f"token_outcomes{sfx}: {n_tokens} token ids")
        for stmt in split_sql(render(sql_text("rebuild.sql"), sql_params(store, cfg, sfx))):
            store.command(stmt)
        counts = {t: table_count(store, f"{t}{sfx}") for t in ANALYTICS_TABLES}
        say("built " + ", ".join(f"{t}{sfx}={n}" for t, n in counts.items()))
        return counts
