"""The Duplicates panel's check, kept per partition: work proportional to what changed.

`panels.duplicates` reads every key of both staging tables on every run (29 s and 4.3 GiB at 94M
rows). `DuplicateChecker.check` returns the same figures while reading only rows that arrived
since its last run. What it keeps, per staging table and partition (PARTITION BY
intDiv(day_idx, 32)):

* the (min, max) insert block numbers of the partition's active parts in system.parts. An insert
  adds a part with a higher block number; a background merge or OPTIMIZE only joins parts (same
  min and max, same unique keys, same FINAL result), so it costs the check nothing;
* its unique keys `uniq_P`, and the distinct 128-bit key hashes themselves (sipHash128: what
  uniqExact compares too) in the key index `duplicate_check_keys{tag}` (ORDER BY hash, small
  granules, so a few keys are looked up by reading a few granules);
* `cross` = sum over keys of (partitions holding the key - 1): merges never join partitions, so
  these copies stay (e.g. the same log staged under two day_idx values).

When a partition got rows, only the parts above its last seen block number are read: their keys
not yet in the partition's index raise `uniq_P` and are added to it; those also held by another
partition raise `cross`. A partition that lost rows (dropped, truncated, its lowest block changed,
a mutation such as an operator's ALTER ... DELETE rewrote its parts under a higher mutation
version, or every row deleted) is read again in full or forgotten. A cold start indexes every
partition, then counts `cross` in one streaming pass in hash order (bounded memory).

FINAL keeps one row per sorting-key value in each partition (do_not_merge_across_partitions_select
_final, as merges work), so where a table's sorting key is its natural key and its engine is a plain
ReplacingMergeTree (as in schema.sql), a partition's FINAL count is `uniq_P`. Any other table
(e.g. a sorting key that holds block_number, so the same log in another block is a new key) has
`count() FINAL` read for each changed partition, so the check still fails where FINAL leaves
duplicates.

Whole-table figures, as `panels.duplicates` computes them with one whole-table uniqExact:
raw = rows of the active parts (read after the keys, so rows arriving meanwhile only make the
waiting figure larger, never invent a FINAL duplicate), unique = sum uniq_P - cross, final
duplicates = sum final_P - unique.

The key index and its scratch table belong to one checker (`tag`: one per console, so two
consoles on one store stay apart); they show in the Disk panel; `close` drops them with SYNC and
a new checker starts by dropping what a crashed one left. Not thread-safe: the engine calls
`check` under a lock.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Protocol

from engine.status import DuplicateCheck
from engine.store.panels import DUPLICATE_KEYS, QueryStore

KEYS_TABLE = "duplicate_check_keys"
#: Rows per granule of the key index: a lookup of k keys reads at most k granules of this many.
INDEX_GRANULARITY = 256
FINAL_SETTINGS = "SETTINGS do_not_merge_across_partitions_select_final = 1"
CANDIDATES = "~new"  # scratch partition of the hashes read from new parts
# ReplacingMergeTree with no argument or a version column only (no is_deleted column).
_PLAIN_REPLACING = re.compile(r"^ReplacingMergeTree(\(\s*[A-Za-z_][A-Za-z0-9_]*\s*\))?(\s|$)")


class CommandStore(QueryStore, Protocol):
    """The part of engine.store.Store the checker needs: queries and commands."""

    def command(self, sql: str) -> None: ...


@dataclass
class PartitionFigures:
    """One partition's kept figures."""

    min_block: int  # lowest insert block number of its active parts when last read
    max_block: int  # highest one: parts above it hold the rows that arrived since
    unique_keys: int
    final_rows: int
    mutation: int = 0  # highest mutation version of its parts (an ALTER ... DELETE raises it)


@dataclass
class TableState:
    """What the checker keeps per staging table between runs."""

    partitions: dict[str, PartitionFigures] = field(default_factory=dict)
    cross: int = 0  # sum over keys of (partitions holding the key - 1)
    indexed: bool = False  # the key index holds every partition in `partitions`


@dataclass
class CheckCost:
    """What the last run did."""

    partitions_total: int = 0
    partitions_read: int = 0  # partitions with rows read (new parts or in full)
    rows_read: int = 0  # rows of the parts read
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of this process (an embedded store's threads included)
    cold: bool = False


def _lit(s: str) -> str:
    """A quoted SQL string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _max_block_of_part() -> str:
    """SQL: the highest insert block number of the part a row is in (from its name
    `partition_min_max_level[_mutation]`; only used for partition ids without '_')."""
    return "toUInt64(splitByChar('_', _part)[3])"


def _mutation_of_part() -> str:
    """SQL over system.parts: the mutation version in a part's name (0 if none). A merge keeps
    the highest of its parts'; a mutation (ALTER ... DELETE / UPDATE, lightweight DELETE) rewrites
    rows under a higher one, keeping the block numbers."""
    after_id = "substring(name, length(partition_id) + 2)"  # min_max_level[_mutation]
    return f"toUInt64OrZero(arrayElement(splitByChar('_', {after_id}), 4))"


#: A partition's signature in system.parts: (min block, max block, rows, mutation).
Signature = tuple[int, int, int, int]


class DuplicateChecker:
    """Same figures as `panels.duplicates`, reading only what arrived (see the module doc)."""

    def __init__(self, store: CommandStore, tag: str = "") -> None:
        if tag and not tag.replace("_", "").isalnum():
            raise ValueError(f"duplicate check tag {tag!r}: expected letters, digits and '_'")
        self.store = store
        self.keys_table = f"{KEYS_TABLE}{'_' + tag if tag else ''}"
        self.scratch_table = f"{self.keys_table}_scratch"
        self.tables = {t: TableState() for t in DUPLICATE_KEYS}
        self.last = CheckCost()
        self._created = False

    # ---- SQL helpers --------------------------------------------------------------------------
    def _q(self, sql: str) -> list[tuple]:
        return self.store.query(sql.replace("{db}", self.store.database))

    def _c(self, sql: str) -> None:
        self.store.command(sql.replace("{db}", self.store.database))

    def _one(self, sql: str) -> int:
        return int(self._q(sql)[0][0] or 0)

    def _hashes(self, which: str, table: str, pid: str) -> str:
        """SELECT of the hashes of partition `pid` in the index ("keys") or the scratch table."""
        name = self.keys_table if which == "keys" else self.scratch_table
        return f"SELECT h FROM {{db}}.{name} WHERE t = {_lit(table)} AND pid = {_lit(pid)}"

    def _held_elsewhere(self, table: str, pid: str, hashes_sql: str) -> int:
        """How many distinct hashes of `hashes_sql` another partition's index holds."""
        return self._one(
            f"SELECT uniqExact(h) FROM {{db}}.{self.keys_table} "
            f"WHERE t = {_lit(table)} AND pid != {_lit(pid)} AND h IN ({hashes_sql})"
        )

    def _drop(self, name: str, table: str, pid: str) -> None:
        self._c(f"ALTER TABLE {{db}}.{name} DROP PARTITION ({_lit(table)}, {_lit(pid)})")

    # ---- the key index ------------------------------------------------------------------------
    def _create(self) -> None:
        """Start from an empty key index (one left by an earlier run of this console is stale)."""
        self._drop_tables()
        for name in (self.keys_table, self.scratch_table):  # same structure: REPLACE PARTITION
            self._c(
                f"CREATE TABLE {{db}}.{name} (t LowCardinality(String), pid String, "
                "h FixedString(16)) ENGINE = MergeTree PARTITION BY (t, pid) ORDER BY h "
                f"SETTINGS index_granularity = {INDEX_GRANULARITY}"
            )
        self._created = True

    def _drop_tables(self) -> None:
        for name in (self.keys_table, self.scratch_table):
            self._c(f"DROP TABLE IF EXISTS {{db}}.{name} SYNC")

    def close(self) -> None:
        """Drop the key index and its scratch table (SYNC: their data leaves the disk now)."""
        self._drop_tables()
        self._created = False
        self.tables = {t: TableState() for t in DUPLICATE_KEYS}

    def _count_cross(self, table: str) -> int:
        """`cross` of a table from the whole index, in hash order (streaming, bounded memory)."""
        return self._one(
            f"SELECT sum(c - 1) FROM (SELECT h, count() AS c FROM {{db}}.{self.keys_table} "
            f"WHERE t = {_lit(table)} GROUP BY h HAVING c > 1) "
            "SETTINGS optimize_aggregation_in_order = 1"
        )

    # ---- store metadata -----------------------------------------------------------------------
    def _parts(self) -> dict[str, dict[str, Signature]]:
        """table -> partition id -> (min block, max block, rows, mutation) of its active parts.

        A partition whose active parts hold no rows (what a DELETE of all its rows leaves) is
        left out: it counts as dropped. Where a lightweight DELETE masked rows, system.parts
        still counts them: that partition's rows are counted (rare: the product never deletes)."""
        names = ", ".join(_lit(t) for t in DUPLICATE_KEYS)
        rows = self.store.query(
            "SELECT table, partition_id, min(min_block_number), max(max_block_number), sum(rows), "
            f"max({_mutation_of_part()}), max(has_lightweight_delete) "
            f"FROM system.parts WHERE active AND database = {_lit(self.store.database)} "
            f"AND table IN ({names}) GROUP BY table, partition_id HAVING sum(rows) > 0"
        )
        out: dict[str, dict[str, Signature]] = {t: {} for t in DUPLICATE_KEYS}
        for t, p, a, b, n, m, masked in rows:
            if masked:
                n = self._one(f"SELECT count() FROM {{db}}.{t} WHERE _partition_id = {_lit(p)}")
                if not n:
                    continue
            out[str(t)][str(p)] = (int(a), int(b), int(n), int(m))
        return out

    def _final_is_unique(self) -> dict[str, bool]:
        """Per table: is a partition's FINAL count its unique keys (see the module doc)?"""
        names = ", ".join(_lit(t) for t in DUPLICATE_KEYS)
        rows = self.store.query(
            "SELECT name, engine_full, sorting_key FROM system.tables "
            f"WHERE database = {_lit(self.store.database)} AND name IN ({names})"
        )
        out = dict.fromkeys(DUPLICATE_KEYS, False)
        for name, engine_full, sorting_key in rows:
            key = [c.strip() for c in str(sorting_key).split(",")]
            plain = _PLAIN_REPLACING.match(str(engine_full)) is not None
            out[str(name)] = plain and key == list(DUPLICATE_KEYS[str(name)])
        return out

    # ---- one partition ------------------------------------------------------------------------
    def _read_in_full(self, table: str, pid: str, final_is_unique: bool, delta: bool) -> tuple:
        """Index partition `pid` anew from all its rows: (unique keys, final rows, cross change)."""
        cols = ", ".join(DUPLICATE_KEYS[table])
        where = f"WHERE _partition_id = {_lit(pid)}"
        final_rows = -1
        if not final_is_unique:  # read first: rows arriving later can only lower the difference
            final_rows = self._one(
                f"SELECT count() FROM {{db}}.{table} FINAL {where} {FINAL_SETTINGS}"
            )
        self._drop(self.scratch_table, table, pid)
        self._c(
            f"INSERT INTO {{db}}.{self.scratch_table} (t, pid, h) SELECT {_lit(table)}, "
            f"{_lit(pid)}, h FROM (SELECT DISTINCT sipHash128({cols}) AS h FROM {{db}}.{table} "
            f"{where})"
        )
        unique = self._one(f"SELECT count() FROM ({self._hashes('scratch', table, pid)})")
        change = 0
        if (
            delta
        ):  # keys that entered minus keys that left, counted where another partition has them
            old, new = self._hashes("keys", table, pid), self._hashes("scratch", table, pid)
            change = self._held_elsewhere(
                table, pid, f"{new} AND h NOT IN ({old})"
            ) - self._held_elsewhere(table, pid, f"{old} AND h NOT IN ({new})")
        part = f"PARTITION ({_lit(table)}, {_lit(pid)})"
        if unique:
            self._c(
                f"ALTER TABLE {{db}}.{self.keys_table} REPLACE {part} "
                f"FROM {{db}}.{self.scratch_table}"
            )
        else:  # its rows left since it was listed: REPLACE from an empty source is refused
            self._drop(self.keys_table, table, pid)
        self._drop(self.scratch_table, table, pid)
        return unique, (unique if final_is_unique else final_rows), change

    def _read_new_parts(self, table: str, pid: str, above: int) -> tuple[int, int]:
        """Index the keys of partition `pid`'s parts above block `above`: (keys that entered the
        partition, of those held by another partition)."""
        cols = ", ".join(DUPLICATE_KEYS[table])
        scratch, t = f"{{db}}.{self.scratch_table}", _lit(table)
        for p in (CANDIDATES, pid):
            self._drop(self.scratch_table, table, p)
        self._c(
            f"INSERT INTO {scratch} (t, pid, h) SELECT {t}, {_lit(CANDIDATES)}, h FROM "
            f"(SELECT DISTINCT sipHash128({cols}) AS h FROM {{db}}.{table} "
            f"WHERE _partition_id = {_lit(pid)} AND {_max_block_of_part()} > {int(above)})"
        )
        candidates = self._hashes("scratch", table, CANDIDATES)
        known = f"{self._hashes('keys', table, pid)} AND h IN ({candidates})"  # through the index
        self._c(
            f"INSERT INTO {scratch} (t, pid, h) SELECT {t}, {_lit(pid)}, h FROM ({candidates}) "
            f"WHERE h NOT IN ({known})"
        )
        entered_sql = self._hashes("scratch", table, pid)
        entered = self._one(f"SELECT count() FROM ({entered_sql})")
        elsewhere = self._held_elsewhere(table, pid, entered_sql) if entered else 0
        if entered:
            self._c(
                f"INSERT INTO {{db}}.{self.keys_table} (t, pid, h) SELECT {t}, {_lit(pid)}, h "
                f"FROM ({entered_sql})"
            )
        for p in (CANDIDATES, pid):
            self._drop(self.scratch_table, table, p)
        return entered, elsewhere

    # ---- the check ----------------------------------------------------------------------------
    def check(self) -> list[DuplicateCheck]:
        """Per staging table: raw rows, unique keys, duplicates that survive FINAL."""
        t0, c0 = time.monotonic(), time.process_time()
        cost = CheckCost(cold=not self._created)
        try:
            if not self._created:
                self._create()
            before = self._parts()
            fast = self._final_is_unique()
            for table in DUPLICATE_KEYS:
                self._update(table, before[table], fast[table], cost)
            after = self._parts()  # raw rows: read after the keys
            out = [self._figures(table, after[table]) for table in DUPLICATE_KEYS]
        except Exception:
            # A run cut short leaves the index half updated: start cold next time.
            self._created = False
            self.tables = {t: TableState() for t in DUPLICATE_KEYS}
            raise
        cost.seconds = time.monotonic() - t0
        cost.cpu_seconds = time.process_time() - c0
        self.last = cost
        return out

    def _update(
        self,
        table: str,
        parts: dict[str, Signature],
        final_is_unique: bool,
        cost: CheckCost,
    ) -> None:
        st = self.tables[table]
        for pid in [p for p in st.partitions if p not in parts]:  # dropped or truncated
            if st.indexed:
                st.cross -= self._held_elsewhere(table, pid, self._hashes("keys", table, pid))
            self._drop(self.keys_table, table, pid)
            del st.partitions[pid]
        cold = not st.indexed
        for pid, (lo, hi, rows, mutation) in sorted(parts.items()):
            cost.partitions_total += 1
            known = st.partitions.get(pid)
            if known is not None and (known.min_block, known.max_block, known.mutation) == (
                lo,
                hi,
                mutation,
            ):
                continue  # nothing arrived (merges keep min, max and the mutation version)
            cost.partitions_read += 1
            if (
                known is not None
                and known.min_block == lo
                and known.mutation == mutation
                and "_" not in pid
                and final_is_unique
                and not cold
            ):
                new_rows = self._one(
                    f"SELECT count() FROM {{db}}.{table} WHERE _partition_id = {_lit(pid)} "
                    f"AND {_max_block_of_part()} > {known.max_block}"
                )
                entered, elsewhere = self._read_new_parts(table, pid, known.max_block)
                cost.rows_read += new_rows
                known.unique_keys += entered
                known.final_rows = known.unique_keys
                known.max_block = hi
                st.cross += elsewhere
                continue
            unique, final_rows, change = self._read_in_full(
                table, pid, final_is_unique, delta=not cold
            )
            cost.rows_read += rows
            st.cross += change
            st.partitions[pid] = PartitionFigures(lo, hi, unique, final_rows, mutation)
        if cold:
            st.cross = self._count_cross(table)
            st.indexed = True

    def _figures(self, table: str, parts: dict[str, Signature]) -> DuplicateCheck:
        st = self.tables[table]
        unique = sum(p.unique_keys for p in st.partitions.values()) - st.cross
        final_rows = sum(p.final_rows for p in st.partitions.values())
        return DuplicateCheck(
            table=table,
            raw_rows=sum(rows for _, _, rows, _ in parts.values()),
            unique_keys=unique,
            final_duplicates=max(0, final_rows - unique),
        )
