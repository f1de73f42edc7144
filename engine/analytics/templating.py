"""SQL templating for the analytics: the .sql files, their {placeholders} and shared fragments.

`render` first expands the fragments (`{complete_days_cte}`: the COMPLETE days of the configured
window, written once here), then the values of `sql_params` ({db}, {sfx}, {start_date}, {days},
{cash_tokens}, {issuers}, {exchanges}, {system}). `named_queries` splits a file into its
`-- query: NAME` sections (gates.sql).

The .sql files are read once, when this module is imported, so a running process always runs the
SQL of the code it loaded: a checkout updated under a long-running console (a rebase, a pull) must
not pair the old Python with new SQL (seen: the old duplicates gate reading the new SQL's scratch
table `gate_multi_block_new`, which only the new Python creates: "Unknown table").
"""

from __future__ import annotations

import re
from importlib import resources
from typing import TYPE_CHECKING

from engine.constants import ZERO_ADDRESS

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.client import Store

_HEX_ADDRESS = re.compile(r"0x[0-9a-f]{40}")

# The days whose checkpoint is COMPLETE for this start_date within the configured days: every
# analytics query reads staging rows of these days only. Used as `WITH {complete_days_cte}, ...`.
COMPLETE_DAYS_CTE = """complete_days AS (
        SELECT day_idx
        FROM {db}.backfill_checkpoint FINAL
        WHERE status = 'COMPLETE' AND start_date = toDate('{start_date}') AND day_idx < {days}
    )"""

FRAGMENTS = {"complete_days_cte": COMPLETE_DAYS_CTE}


def _load_sql(package: str) -> dict[str, str]:
    """Every `<package>/sql/*.sql` file's text by file name, read now."""
    folder = resources.files(package).joinpath("sql")
    return {f.name: f.read_text() for f in folder.iterdir() if f.name.endswith(".sql")}


# Read at import (see the module docstring): the SQL of the version this process loaded.
_SQL = _load_sql("engine.analytics")


def sql_text(filename: str) -> str:
    """The text of `engine/analytics/sql/<filename>` as it was when this process imported it."""
    try:
        return _SQL[filename]
    except KeyError:
        raise ValueError(
            f"analytics SQL file {filename!r}: not in engine/analytics/sql "
            f"(expected one of {', '.join(sorted(_SQL))})"
        ) from None


def sql_list(addresses: tuple[str, ...] | list[str]) -> str:
    """A ClickHouse array literal of lowercase addresses (validated hex, so no quoting issues).

    An empty list becomes ['-'], which matches no address and no empty string.
    """
    items = sorted({a.lower() for a in addresses})
    for a in items:
        if not _HEX_ADDRESS.fullmatch(a):
            raise ValueError(f"not an address: {a!r}")
    return "[" + ", ".join(f"'{a}'" for a in items) + "]" if items else "['-']"


def system_addresses(cfg: Config) -> list[str]:
    """Every configured contract: never a wallet in the analytics."""
    c = cfg.contracts
    return sorted(
        {*c.erc20_tokens, *c.erc20_counterparties, *c.erc1155, *c.exchanges, c.collateral}
        - {ZERO_ADDRESS}
    )


def sql_params(store: Store, cfg: Config, sfx: str) -> dict[str, str]:
    """Values for the {placeholders} of rebuild.sql, analytics.sql, gates.sql and the snapshot."""
    return {
        "db": store.database,
        "sfx": sfx,
        "start_date": cfg.backfill.start_date.isoformat(),
        "days": str(int(cfg.backfill.days)),
        "cash_tokens": sql_list([cfg.contracts.collateral]),
        "issuers": sql_list(cfg.contracts.erc1155),
        "exchanges": sql_list(cfg.contracts.exchanges),
        "system": sql_list(system_addresses(cfg)),
    }


def render(text: str, params: dict[str, str]) -> str:
    """Expand the shared fragments, then replace each {key} of `params` by its value."""
    for key, fragment in FRAGMENTS.items():
        text = text.replace("{" + key + "}", fragment)
    for key, value in params.items():
        text = text.replace("{" + key + "}", value)
    return text


def named_queries(filename: str) -> dict[str, str]:
    """Sections of a .sql file introduced by `-- query: NAME` lines (comment lines dropped)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in sql_text(filename).splitlines():
        stripped = line.strip()
        if stripped.startswith("-- query:"):
            current = out.setdefault(stripped.split(":", 1)[1].strip(), [])
            continue
        if current is None or stripped.startswith("--"):
            continue
        current.append(line)
    return {k: "\n".join(v).strip().rstrip(";").strip() for k, v in out.items()}
