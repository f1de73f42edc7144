"""The analytics' memory budget and day-range chunks (pure functions, no store access).

Every rebuild and gate statement runs with `query_settings(cfg)`: ClickHouse's own per-query limit
(`max_memory_usage` = `[gates] max_memory_gib`), so an overrun is a MEMORY_LIMIT_EXCEEDED error
naming the budget, never the OOM killer. GROUP BY and ORDER BY spill to disk past a quarter of it
(past 3/4 in a chunk's statements, which are sized to fit),
hash joins split into buckets (grace hash) past a quarter, groupings by a prefix of a table's
sort key stream in that order, and FINAL merges within a staging partition (partition-wise
reads). The per-transaction part of the rebuild runs in the day ranges of `plan_chunks`, sized
so one range stays well inside the budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import Config

GIB = 2**30
# Staging tables are partitioned by intDiv(day_idx, 32) (engine/store/sql/schema.sql): a chunk
# holds whole partitions or a part of one, so its partition-wise FINAL reads only those.
PARTITION_DAYS = 32
# Staged rows per GiB of budget in one chunk. Measured with bench/analytics_scale.py: a chunk's
# heaviest statement (the net flows of its legs) needs ~1.6-2 KiB of query memory per staged row
# when nothing spills (244k rows: over 381 MiB, under 477 MiB); 250k rows per GiB keeps it near
# half the budget, below the chunk statements' spill threshold (3/4, query_settings).
ROWS_PER_GIB = 250_000

STATEMENT_KINDS = ("INSERT", "SELECT", "WITH")


def budget_bytes(cfg: Config) -> int:
    return int(cfg.gates.max_memory_gib * GIB)


def query_settings(cfg: Config, in_order: bool = True) -> dict[str, int | str]:
    """ClickHouse settings of every analytics statement under the configured memory budget.

    `in_order` False is for a chunk's statements (section `chunk` of rebuild.sql): they group a
    bounded scratch table, where the ordered (less parallel) grouping measured about 2x slower;
    and the chunk is sized (ROWS_PER_GIB) to fit in about half the budget, so GROUP BY / ORDER BY
    spill to disk only past 3/4 of it, as a safety net. Spilling past a quarter, as the statements
    over whole tables do, made a chunk's net flows 3.7x and its cash attribution 2.8x slower
    (bench/analytics_scale.py, 244k staged rows: 11.7 -> 3.1 s and 5.0 -> 1.8 s): ClickHouse
    compares the threshold with the whole query's memory, and a chunk's several groupings and
    joins passed a quarter of 1 GiB at ~200k rows, spilling every chunk.
    """
    b = budget_bytes(cfg)
    spill = b // 4 if in_order else b * 3 // 4
    return {
        "max_memory_usage": b,
        "max_bytes_before_external_group_by": spill,
        "max_bytes_before_external_sort": spill,
        "join_algorithm": "grace_hash",
        "max_bytes_in_join": b // 4,
        "optimize_aggregation_in_order": int(in_order),
        # FINAL collapses keys within each partition only: a chunk's FINAL then reads its own
        # partition instead of merging the whole table (measured: 0.1 s instead of 6 s for one
        # partition of 2.6M rows). A key staged in two partitions (two day_idx) is no longer
        # collapsed; the duplicates gate counts it (final_rows > unique_keys) and fails.
        "do_not_merge_across_partitions_select_final": 1,
    }


def with_settings(sql: str, settings: dict[str, int | str]) -> str:
    """`sql` with a SETTINGS clause when it is a query (INSERT / SELECT / WITH); DDL unchanged."""
    head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    if head not in STATEMENT_KINDS or not settings:
        return sql
    items = ", ".join(
        f"{k} = {v}" if isinstance(v, int) else f"{k} = '{v}'" for k, v in settings.items()
    )
    return f"{sql}\nSETTINGS {items}"


def max_chunk_rows(cfg: Config) -> int:
    return max(10_000, int(cfg.gates.max_memory_gib * ROWS_PER_GIB))


def plan_chunks(
    day_rows: Iterable[tuple[int, int]], max_rows: int, partition_days: int = PARTITION_DAYS
) -> list[tuple[int, int, int]]:
    """Contiguous day ranges (first, last, rows) over the given (day, staged rows) pairs.

    Whole staging partitions are packed into a range while it stays within `max_rows`; a
    partition over `max_rows` gets ranges of its own, split between days (a single day over the
    limit is a range by itself). So a range never holds part of a partition together with another
    partition, and the partition-wise FINAL of a range reads only the partitions it covers. Days
    not listed (not COMPLETE) may fall inside a range: the chunk's queries read COMPLETE days only.
    """
    partitions: dict[int, list[tuple[int, int]]] = {}
    for day, n in sorted(day_rows):
        partitions.setdefault(day // partition_days, []).append((day, max(0, int(n))))
    out: list[tuple[int, int, int]] = []
    current: list[int] = []  # [first, last, rows] of the range being packed

    def close() -> None:
        if current:
            out.append((current[0], current[1], current[2]))
            current.clear()

    for _, days in sorted(partitions.items()):
        rows = sum(n for _, n in days)
        if rows <= max_rows:
            if current and current[2] + rows > max_rows:
                close()
            if not current:
                current.extend([days[0][0], days[-1][0], 0])
            current[1] = days[-1][0]
            current[2] += rows
            continue
        close()
        for day, n in days:
            if current and current[2] + n > max_rows:
                close()
            if not current:
                current.extend([day, day, 0])
            current[1] = day
            current[2] += n
        close()
    close()
    return out
