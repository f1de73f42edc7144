"""Raw eth_getLogs answers into the store, decoded there (engine/store/sql/decode.sql).

The worker forwards the JSON array bytes of each answer (in pieces when large) untouched; the
loader frames them as TabSeparated rows of the Null-engine entry table whose materialized views
decode them into the staging tables with the rules of engine/decode.py, and count logs and rows
per chunk and kind into `decode_counts`. A day's checkpoint counts come from there
(`day_counts`), so no log is touched in Python on the way.

A chunk is identified by a 64-bit id the worker gives it (its process nonce in the high 32 bits,
a sequence number in the low ones; a day's chunks are one contiguous range). Every insert carries
a fresh `insert_id`: when an insert fails halfway and is retried, the counts of the attempt that
holds all of a chunk's logs are used (`day_counts`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from engine.constants import (
    CONDITION_RESOLUTION_TOPIC,
    TOKEN_REGISTERED_TOPIC,
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
)
from engine.decode import DecodeFilter
from engine.store.client import split_sql

if TYPE_CHECKING:
    from engine.config import ContractsConfig
    from engine.store.client import Store

#: Row kinds of decode_counts that are staged rows, by the worker protocol's table names.
ROW_KINDS = {
    "erc20": ("erc20",),
    "erc1155": ("single", "batch"),
    "resolutions": ("resolution",),
    "registrations": ("registration",),
}
#: Skip reasons reported to the operator (decode_skip), as the Python decoder did.
REPORTED_SKIPS = ("erc721_shaped", "malformed")
CHUNK_COLUMNS = [
    "insert_id",
    "chunk_id",
    "day_idx",
    "skip_cp_from",
    "ts_blocks",
    "ts_values",
    "logs",
]


def filter_of(contracts: ContractsConfig) -> DecodeFilter:
    """The decode filter of a config's [contracts]."""
    return DecodeFilter(
        erc20_tokens=frozenset(a.lower() for a in contracts.erc20_tokens),
        erc20_counterparties=frozenset(a.lower() for a in contracts.erc20_counterparties),
        erc1155=frozenset(a.lower() for a in contracts.erc1155),
        exchanges=frozenset(a.lower() for a in contracts.exchanges),
    )


# Read at import (engine/analytics/templating.py says why): the SQL of the code this process loaded.
DECODE_SQL = resources.files("engine.store").joinpath("sql/decode.sql").read_text()


def _addresses(values: Iterable[str]) -> str:
    return "[" + ", ".join(f"'{a.lower()}'" for a in sorted(values)) + "]::Array(String)"


def filter_hash(filt: DecodeFilter) -> str:
    """Short stable name suffix for the decode views of one filter (and of this SQL)."""
    sql = DECODE_SQL
    body = "|".join(
        [
            ",".join(sorted(filt.erc20_tokens)),
            ",".join(sorted(filt.erc20_counterparties)),
            ",".join(sorted(filt.erc1155)),
            ",".join(sorted(filt.exchanges)),
            sql,
        ]
    )
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def decode_statements(database: str, filt: DecodeFilter) -> list[str]:
    """DDL of the entry table and decode views for this filter, one statement each."""
    text = DECODE_SQL
    values = {
        "{db}": database,
        "{h}": filter_hash(filt),
        "{tokens}": _addresses(filt.erc20_tokens),
        "{cps}": _addresses(filt.erc20_counterparties),
        "{erc1155}": _addresses(filt.erc1155),
        "{exchanges}": _addresses(filt.exchanges),
        "{transfer}": TRANSFER_TOPIC,
        "{single}": TRANSFER_SINGLE_TOPIC,
        "{batch}": TRANSFER_BATCH_TOPIC,
        "{resolution}": CONDITION_RESOLUTION_TOPIC,
        "{registered}": TOKEN_REGISTERED_TOPIC,
    }
    for k, v in values.items():
        text = text.replace(k, v)
    return split_sql(text)


def entry_table(database: str, filt: DecodeFilter) -> str:
    return f"{database}.raw_log_chunks_{filter_hash(filt)}"


@dataclass
class Chunk:
    """One piece of an eth_getLogs answer: the JSON array bytes and what the store needs."""

    chunk_id: int
    day: int
    data: bytes  # a JSON array of log objects, as the node sent it
    logs: int  # how many logs the worker counted in it
    skip_cp_from: bool = False  # the "to a counterparty" filter: "from" ones came already
    timestamps: dict[int, int] = field(default_factory=dict)  # block -> ts, when logs lack it


#: Settings of every insert into the entry table. Short-circuit evaluation of multiIf/if with
#: the word arrays costs ~30x (measured: 4 us -> 140 us per log); every branch is safe to run.
INSERT_SETTINGS = {"short_circuit_function_evaluation": "disable"}


def _tsv_escape(data: bytes) -> bytes:
    return data.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")


def chunks_tsv(insert_id: int, chunks: Sequence[Chunk]) -> bytes:
    """TabSeparated rows of the entry table (CHUNK_COLUMNS order), one per chunk.

    The JSON bytes go in as they are but for TSV escaping (a C-speed replace; compact JSON has
    no tabs or newlines, so usually nothing changes)."""
    parts: list[bytes] = []
    for c in chunks:
        blocks = sorted(c.timestamps)
        ts_b = ",".join(map(str, blocks))
        ts_v = ",".join(str(c.timestamps[b]) for b in blocks)
        head = f"{insert_id}\t{c.chunk_id}\t{c.day}\t{int(c.skip_cp_from)}\t[{ts_b}]\t[{ts_v}]\t"
        parts.append(head.encode())
        parts.append(_tsv_escape(c.data))
        parts.append(b"\n")
    return b"".join(parts)


def ensure_views(store: Store, filt: DecodeFilter) -> str:
    """Create the entry table and decode views of `filt` (idempotent); return the entry table."""
    for stmt in decode_statements(store.database, filt):
        store.command(stmt)
    return entry_table(store.database, filt)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


_HEAD = struct.Struct("<QQIB")


def chunks_row_binary(insert_id: int, chunks: Sequence[Chunk]) -> bytes:
    """RowBinary rows of the entry table (CHUNK_COLUMNS order): the JSON bytes as they are."""
    parts: list[bytes] = []
    for c in chunks:
        parts.append(_HEAD.pack(insert_id, c.chunk_id, c.day, 1 if c.skip_cp_from else 0))
        blocks = sorted(c.timestamps)
        parts.append(_varint(len(blocks)))
        parts.append(struct.pack(f"<{len(blocks)}Q", *blocks))
        parts.append(_varint(len(blocks)))
        parts.append(struct.pack(f"<{len(blocks)}I", *(c.timestamps[b] for b in blocks)))
        parts.append(_varint(len(c.data)))
        parts.append(c.data)
    return b"".join(parts)


def insert_chunks(store: Store, table: str, insert_id: int, chunks: Sequence[Chunk]) -> None:
    """One insert of chunks: RowBinary where the store takes bytes (a server: ~1 us per log
    less to read than TSV), TabSeparated text otherwise (embedded chdb takes a query string)."""
    if getattr(store, "binary_inserts", True):
        data, fmt = chunks_row_binary(insert_id, chunks), "RowBinary"
    else:
        data, fmt = chunks_tsv(insert_id, chunks), "TabSeparated"
    store.insert_raw(table, CHUNK_COLUMNS, data, fmt, INSERT_SETTINGS)


@dataclass
class DayCounts:
    """What the store decoded of one day's chunks."""

    rows: dict[str, int]  # protocol table name -> staged rows
    logs: int  # every log the store parsed (any kind)
    skipped: dict[str, int]  # reason -> logs


def day_counts(store: Store, spans: Sequence[tuple[int, int, int]]) -> dict[int, DayCounts]:
    """DayCounts per day of (day, first chunk id, last chunk id) spans."""
    out = {d: DayCounts(dict.fromkeys(ROW_KINDS, 0), 0, {}) for d, _, _ in spans}
    if not spans:
        return out
    table_of = {k: t for t, kinds in ROW_KINDS.items() for k in kinds}
    for day, kind, logs, rows in store.query(day_counts_sql(store.database, spans)):
        dc = out[int(day)]
        dc.logs += int(logs)
        if kind in table_of:
            dc.rows[table_of[kind]] += int(rows)
        elif kind != "dup":
            dc.skipped[kind] = dc.skipped.get(kind, 0) + int(logs)
    return out


def day_counts_sql(database: str, spans: Sequence[tuple[int, int, int]]) -> str:
    """Per (day, kind): logs and rows of the chunks [lo, hi] of each (day, lo, hi).

    For each chunk the insert attempt with the most logs is used (a retried insert that failed
    halfway left a partial attempt behind).
    """
    where = " OR ".join(
        f"(day_idx = {d} AND chunk_id BETWEEN {lo} AND {hi})" for d, lo, hi in spans
    )
    t = f"{database}.decode_counts"
    return f"""
SELECT day_idx, kind, sum(logs), sum(rows)
FROM {t}
WHERE ({where}) AND (chunk_id, insert_id) IN (
    SELECT chunk_id, argMax(insert_id, n) FROM (
        SELECT chunk_id, insert_id, sum(logs) AS n FROM {t} WHERE {where}
        GROUP BY chunk_id, insert_id
    ) GROUP BY chunk_id
)
GROUP BY day_idx, kind
"""
