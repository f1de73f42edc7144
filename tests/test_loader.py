"""The loader never writes a day's checkpoint before that day's rows (real chdb, real failures)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from engine.config import load_config
from engine.store.client import open_store
from engine.store.loader import Loader

pytestmark = pytest.mark.slow  # end to end: real store


def _rows(day: int, n: int) -> bytes:
    return b"".join(
        json.dumps(
            [
                f"0x{day:02x}{i:062x}",
                i,
                100 + day,
                1_671_321_600 + day * 86_400,
                day,
                "0xtok",
                "0xa",
                "0xb",
                str(2**200 + i),
            ]
        ).encode()
        + b"\n"
        for i in range(n)
    )


def _wait(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_checkpoint_waits_for_rows_even_when_inserts_fail(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[clickhouse]\npath = "ch"\n')
    cfg = load_config(tmp_path / "config.toml", env={})
    store = open_store(cfg)
    db = store.database
    try:
        done: list[int] = []
        loader = Loader(
            store, 1, dt.date(2022, 12, 18), on_checkpoint=done.append, flush_interval_s=0.1
        )
        loader.start()
        # Break the row table: the row insert fails, so the checkpoint must not be written.
        store.command(f"RENAME TABLE {db}.erc20_transfers_staging TO {db}.erc20_hidden")
        loader.add_rows("erc20", _rows(3, 5), 5)
        loader.add_checkpoint(0, 3, 10, 20, {"erc20": 5, "erc1155": 0})
        assert _wait(lambda: loader.last_error != "")
        time.sleep(0.5)
        assert store.scalar(f"SELECT count() FROM {db}.backfill_checkpoint") == 0
        assert done == []
        # Repair: the same batch goes through, rows first, then the checkpoint.
        store.command(f"RENAME TABLE {db}.erc20_hidden TO {db}.erc20_transfers_staging")
        assert _wait(lambda: done == [3])
        assert store.scalar(f"SELECT count() FROM {db}.erc20_transfers_staging") == 5
        row = store.query(
            f"SELECT day_idx, status, erc20_count, from_block, to_block "
            f"FROM {db}.backfill_checkpoint FINAL"
        )
        assert row == [(3, "COMPLETE", 5, 10, 20)]
        assert loader.rows_written["erc20"] == 5
        # Values keep full uint256 precision.
        assert store.scalar(f"SELECT max(value) FROM {db}.erc20_transfers_staging") == 2**200 + 4
        loader.close()
    finally:
        store.close()
