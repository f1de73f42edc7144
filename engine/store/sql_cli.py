"""`backfill-console sql "SELECT ..." [--format F]`: one statement against the configured store.

Works while a console runs (it finds the local store server through the data dir, or uses
clickhouse.url); with no server running it starts one for the statement and stops it after.
The configured database is the current one (unqualified table names work) and `{db}` in the
statement is replaced by its name. `--format table` (the default) prints an aligned table with a
header; any ClickHouse output format name (TSV, CSV, JSONEachRow, Vertical, PrettyCompact, ...)
prints the server's bytes as they are. Errors name the statement's problem, never the password.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from engine.store.client import StoreError, open_store

if TYPE_CHECKING:
    from engine.config import Config

TABLE = "table"
MAX_CELL = 60
#: First words of statements that answer with rows; anything else runs as a command.
QUERY_WORDS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "(")


def returns_rows(sql: str) -> bool:
    head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return head.startswith(QUERY_WORDS[-1]) or head in QUERY_WORDS


def _cell(v: Any) -> str:
    if v is None:
        return "NULL"
    text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def render_table(names: list[str], rows: list[tuple]) -> str:
    """Aligned columns (numbers right, text left), a header and a row count."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [len(n) for n in names]
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        for i in range(len(names))
    ]

    def line(vals: list[str]) -> str:
        cols = zip(vals, widths, numeric, strict=True)
        out = [v.rjust(w) if num else v.ljust(w) for v, w, num in cols]
        return "  ".join(out).rstrip()

    out = [line(names), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def run_sql(cfg: Config, sql: str, fmt: str = TABLE) -> int:
    """Run one statement and print its result; 0 on success, 1 on a store error."""
    try:
        store = open_store(cfg)
    except StoreError as exc:
        print(f"sql: cannot open the store: {exc}", file=sys.stderr)
        return 1
    text = sql.strip().rstrip(";").replace("{db}", cfg.clickhouse.database)
    try:
        if not returns_rows(text):
            store.command_in_database(text)
            print("ok")
        elif fmt == TABLE:
            names, rows = store.query_in_database(text)
            if names:
                sys.stdout.write(render_table(names, rows))
            else:
                print("ok")
        else:
            sys.stdout.buffer.write(store.raw_in_database(text, fmt))
            sys.stdout.flush()
    except StoreError as exc:
        print(f"sql: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0
