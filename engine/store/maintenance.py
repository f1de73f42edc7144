"""OPTIMIZE ... FINAL on the staging tables: per finished partition, then the small tables."""

from __future__ import annotations

from engine.store.client import Store

# Partition key of the staging tables is intDiv(day_idx, PARTITION_DAYS) (store/sql/schema.sql).
PARTITION_DAYS = 32
PARTITIONED = ("erc20_transfers_staging", "erc1155_transfers_staging")
UNPARTITIONED = ("condition_resolutions", "token_registrations", "backfill_checkpoint")


def finished_partitions(complete: set[int], days_total: int) -> list[int]:
    """Partitions whose every configured day is COMPLETE (no more inserts expected)."""
    out = []
    for p in range((days_total + PARTITION_DAYS - 1) // PARTITION_DAYS):
        days = range(p * PARTITION_DAYS, min(days_total, (p + 1) * PARTITION_DAYS))
        if all(d in complete for d in days):
            out.append(p)
    return out


def optimize(store: Store, complete: set[int], days_total: int) -> str:
    """Merge away duplicates where data is final; returns a one-line summary."""
    db = store.database
    finished = finished_partitions(complete, days_total)
    n = 0
    for table in PARTITIONED:
        present = {
            int(r[0])
            for r in store.query(
                f"SELECT DISTINCT partition FROM system.parts WHERE active "
                f"AND database = '{db}' AND table = '{table}'"
            )
        }
        for p in finished:
            if p in present:
                store.command(f"OPTIMIZE TABLE {db}.{table} PARTITION {p} FINAL")
                n += 1
    for table in UNPARTITIONED:
        store.command(f"OPTIMIZE TABLE {db}.{table} FINAL")
    return (
        f"{n} finished partition(s) of {len(PARTITIONED)} staging tables"
        f" + {len(UNPARTITIONED)} small tables"
    )
