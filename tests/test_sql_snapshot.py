"""A running process keeps the SQL of the code it loaded, even when the checkout changes under it.

The issue-17 rehearsal's hard gate failed with "Unknown table ... gate_multi_block_new": its
console had loaded the old gates.py (duplicates gate in one query) and, after the checkout was
rebased during the run, read the new gates.sql, whose duplicates query reads a scratch table only
the new gates.py creates. These tests import the engine from a copy, rewrite the copy's .sql files
and check that the process still renders the SQL it started with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys
from pathlib import Path
from engine.analytics import templating
from engine.analytics.build import rebuild_sections
from engine.decode import DecodeFilter
from engine.store import client, raw_logs

def seen():
    filt = DecodeFilter(erc20_tokens=frozenset(), erc20_counterparties=frozenset(),
                        erc1155=frozenset(), exchanges=frozenset())
    return {
        "gates": sorted(templating.named_queries("gates.sql")),
        "rebuild": {k: len(v) for k, v in rebuild_sections().items()},
        "analytics": templating.sql_text("analytics.sql"),
        "schema": client.schema_statements("db"),
        "decode": raw_logs.decode_statements("db", filt),
    }

before = seen()
for name in ("analytics/sql/gates.sql", "analytics/sql/rebuild.sql",
             "analytics/sql/analytics.sql", "store/sql/schema.sql", "store/sql/decode.sql"):
    p = Path(sys.argv[1]) / "engine" / name
    p.write_text("-- query: changed\n-- section: setup\nSELECT 1;\n")
after = seen()
print(json.dumps({"same": before == after, "gates": after["gates"]}))
"""


def test_sql_files_changed_after_import_are_not_read(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "engine", tmp_path / "engine", ignore=shutil.ignore_patterns("*.pyc"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "duplicates" in got["gates"] and "multi_block_txs" in got["gates"]
    assert got["same"] is True


def test_unknown_sql_file_is_named() -> None:
    from engine.analytics.templating import sql_text

    try:
        sql_text("nope.sql")
    except ValueError as exc:
        assert "nope.sql" in str(exc) and "gates.sql" in str(exc)
    else:
        raise AssertionError("expected a ValueError")
