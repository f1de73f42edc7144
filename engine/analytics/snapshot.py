"""The post-rebuild snapshot: `data/post_rebuild_snapshot_<UTC timestamp>.json`.

Scripts read these keys (issue 6): generated_at, days_complete, erc20_transfers, erc1155_transfers,
markets_resolved, binary_share, trades {HIGH, MEDIUM, LOW}, high_confidence_volume_share, wallets,
total_pnl_units (an integer in collateral base units), win_rate, gates {name: {value, threshold,
passed}}. A few extra keys (run_id, database, start_date, days) say what was measured.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.analytics.budget import query_settings, with_settings
from engine.analytics.gates import GateCheck, checks_as_dict
from engine.analytics.templating import render, sql_params
from engine.status import GateResult

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.client import Store

SNAPSHOT_PREFIX = "post_rebuild_snapshot_"

# Figures of the live tables. Placeholders as in engine/analytics/templating.py; {sfx} is the
# analytics table suffix ('' for the live tables).
SNAPSHOT_SQL = """
WITH
    {complete_days_cte},
    resolved AS (
        SELECT condition_id, any(outcome_slot_count) AS slots
        FROM {db}.condition_resolutions FINAL
        WHERE day_idx IN (SELECT day_idx FROM complete_days)
        GROUP BY condition_id
    )
SELECT
    (SELECT count() FROM complete_days) AS days_complete,
    (SELECT count() FROM {db}.erc20_transfers_staging FINAL
     WHERE day_idx IN (SELECT day_idx FROM complete_days)) AS erc20_transfers,
    (SELECT count() FROM {db}.erc1155_transfers_staging FINAL
     WHERE day_idx IN (SELECT day_idx FROM complete_days)) AS erc1155_transfers,
    (SELECT count() FROM resolved) AS markets_resolved,
    (SELECT countIf(slots = 2) FROM resolved) AS markets_binary,
    (SELECT countIf(confidence = 'HIGH') FROM {db}.trades_with_direction{sfx}) AS trades_high,
    (SELECT countIf(confidence = 'MEDIUM') FROM {db}.trades_with_direction{sfx}) AS trades_medium,
    (SELECT countIf(confidence = 'LOW') FROM {db}.trades_with_direction{sfx}) AS trades_low,
    (SELECT sumIf(usdc_amount, confidence = 'HIGH') FROM {db}.trades_with_direction{sfx})
        AS volume_high,
    (SELECT sum(usdc_amount) FROM {db}.trades_with_direction{sfx}) AS volume_total,
    (SELECT uniqExact(wallet) FROM {db}.net_flows{sfx} WHERE is_system = 0) AS wallets,
    (SELECT sumIf(pnl_units, resolved = 1) FROM {db}.wallet_market_pnl{sfx}) AS total_pnl_units,
    (SELECT countIf(resolved = 1 AND pnl_units > 0) FROM {db}.wallet_market_pnl{sfx}) AS winners,
    (SELECT countIf(resolved = 1) FROM {db}.wallet_market_pnl{sfx}) AS resolved_positions
"""


def collect(
    store: Store,
    cfg: Config,
    gates: list[GateCheck] | list[GateResult],
    sfx: str = "",
    run_id: str = "",
) -> dict[str, Any]:
    """The snapshot document of the analytics tables `*{sfx}` (live tables by default)."""
    sql = render(SNAPSHOT_SQL, sql_params(store, cfg, sfx))
    r = store.query_dicts(with_settings(sql, query_settings(cfg)))[0]
    resolved = int(r["markets_resolved"])
    volume_total = int(r["volume_total"] or 0)
    positions = int(r["resolved_positions"])
    return {
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "days_complete": int(r["days_complete"]),
        "erc20_transfers": int(r["erc20_transfers"]),
        "erc1155_transfers": int(r["erc1155_transfers"]),
        "markets_resolved": resolved,
        "binary_share": int(r["markets_binary"]) / resolved if resolved else None,
        "trades": {
            "HIGH": int(r["trades_high"]),
            "MEDIUM": int(r["trades_medium"]),
            "LOW": int(r["trades_low"]),
        },
        "high_confidence_volume_share": (
            int(r["volume_high"] or 0) / volume_total if volume_total else None
        ),
        "wallets": int(r["wallets"]),
        "total_pnl_units": int(r["total_pnl_units"] or 0),
        "win_rate": int(r["winners"]) / positions if positions else None,
        "gates": checks_as_dict(gates),
        "run_id": run_id,
        "database": store.database,
        "start_date": cfg.backfill.start_date.isoformat(),
        "days": int(cfg.backfill.days),
    }


def snapshot_dir(cfg: Config) -> Path:
    """`data/` (the parent of backfill.data_dir, which is `data/backfill` by default)."""
    return cfg.backfill.data_dir.parent


def write_snapshot(
    store: Store,
    cfg: Config,
    gates: list[GateCheck] | list[GateResult],
    run_id: str = "",
) -> Path:
    """Write the live tables' snapshot next to the backfill data dir; return its path."""
    doc = collect(store, cfg, gates, "", run_id)
    folder = snapshot_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{SNAPSHOT_PREFIX}{stamp}.json"
    n = 1
    while path.exists():
        path = folder / f"{SNAPSHOT_PREFIX}{stamp}-{n}.json"
        n += 1
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path
