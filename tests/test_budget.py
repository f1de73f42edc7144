"""The analytics memory budget: day-range chunks, query settings, the config key, a clear overrun.

Pure functions are checked table-driven; the overrun runs a real query on the session store server
under the smallest budget and expects ClickHouse's refusal, reworded to name the config key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.analytics.budget import (
    GIB,
    max_chunk_rows,
    plan_chunks,
    query_settings,
    with_settings,
)
from engine.analytics.build import StepTimes, run_statement
from engine.config import ConfigError, default_max_memory_gib, load_config
from engine.status import RebuildProgress
from engine.store.client import StoreError


@pytest.mark.parametrize(
    ("days", "max_rows", "expected"),
    [
        ([], 100, []),
        ([(0, 10), (1, 10), (2, 10)], 100, [(0, 2, 30)]),
        # whole partitions are packed together while they fit
        ([(30, 1), (31, 1), (32, 1), (33, 1)], 100, [(30, 33, 4)]),
        ([(0, 40), (32, 40), (64, 40)], 100, [(0, 32, 80), (64, 64, 40)]),
        # a partition over the limit is split between days, in ranges of its own
        ([(0, 40), (1, 40), (2, 40)], 100, [(0, 1, 80), (2, 2, 40)]),
        (
            [(0, 10), (32, 60), (33, 60), (64, 5)],
            100,
            [(0, 0, 10), (32, 32, 60), (33, 33, 60), (64, 64, 5)],
        ),
        # a single day over the limit is a range of its own
        ([(0, 10), (1, 500), (2, 10)], 100, [(0, 0, 10), (1, 1, 500), (2, 2, 10)]),
        # days missing (not COMPLETE) stay inside a range; order of input does not matter
        ([(5, 1), (2, 1), (9, 1)], 100, [(2, 9, 3)]),
        # a day exactly at the limit fills the range
        ([(0, 60), (1, 40), (2, 1)], 100, [(0, 1, 100), (2, 2, 1)]),
        # empty days count 0 rows
        ([(0, 0), (1, 0)], 1, [(0, 1, 0)]),
    ],
)
def test_plan_chunks(days: list, max_rows: int, expected: list) -> None:
    assert plan_chunks(days, max_rows) == expected


def test_every_complete_day_is_in_exactly_one_chunk() -> None:
    days = [(d, (d * 7919) % 1000) for d in range(0, 1048) if d % 97 != 13]
    chunks = plan_chunks(days, 2500)
    covered = [d for d, _ in days if any(a <= d <= b for a, b, _ in chunks)]
    assert covered == [d for d, _ in days]
    assert all(b < c for (_, b, _), (c, _, _) in zip(chunks, chunks[1:], strict=False))
    # a range is whole partitions, or lies inside one partition
    for a, b, _ in chunks:
        whole = a % 32 == 0 or not any(d // 32 == a // 32 and d < a for d, _ in days)
        assert a // 32 == b // 32 or whole
    assert sum(r for _, _, r in chunks) == sum(n for _, n in days)
    assert all(r <= 2500 or a == b for a, b, r in chunks)


@pytest.mark.parametrize(
    ("sql", "expected_suffix"),
    [
        ("SELECT 1", True),
        ("  insert into t SELECT 1", True),
        ("WITH a AS (SELECT 1) SELECT * FROM a", True),
        ("CREATE TABLE t (a UInt8) ENGINE = Memory", False),
        ("DROP TABLE IF EXISTS t SYNC", False),
        ("TRUNCATE TABLE t", False),
        ("", False),
    ],
)
def test_with_settings_only_on_queries(sql: str, expected_suffix: bool) -> None:
    out = with_settings(sql, {"max_memory_usage": 5, "join_algorithm": "auto"})
    if expected_suffix:
        assert out == f"{sql}\nSETTINGS max_memory_usage = 5, join_algorithm = 'auto'"
    else:
        assert out == sql


def _cfg(tmp_path: Path, line: str = ""):
    path = tmp_path / "config.toml"
    path.write_text(f"[gates]\n{line}\n")
    return load_config(path, env={})


def test_query_settings_follow_the_budget(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "max_memory_gib = 1.5")
    s = query_settings(cfg)
    b = int(1.5 * GIB)
    assert s["max_memory_usage"] == b
    assert s["max_bytes_before_external_group_by"] == b // 4
    assert s["max_bytes_before_external_sort"] == b // 4
    assert s["max_bytes_in_join"] == b // 4
    assert max_chunk_rows(cfg) == 375_000
    assert s["optimize_aggregation_in_order"] == 1
    chunk = query_settings(cfg, in_order=False)
    assert chunk["optimize_aggregation_in_order"] == 0
    # a chunk is sized to fit: it spills only past 3/4 of the budget, under the same limit
    assert chunk["max_bytes_before_external_group_by"] == b * 3 // 4
    assert chunk["max_bytes_before_external_sort"] == b * 3 // 4
    assert chunk["max_memory_usage"] == b


@pytest.mark.parametrize(
    ("total_gib", "expected"), [(24, 3.0), (8, 2.0), (2, 0.5), (1, 0.5), (64, 3.0), (5, 1.2)]
)
def test_default_budget_is_a_safe_share_of_the_machine(total_gib: float, expected: float) -> None:
    assert default_max_memory_gib(int(total_gib * GIB)) == expected


def test_memory_key_auto_number_and_errors(tmp_path: Path) -> None:
    assert _cfg(tmp_path).gates.max_memory_gib == default_max_memory_gib()
    assert _cfg(tmp_path, 'max_memory_gib = "auto"').gates.max_memory_gib == (
        default_max_memory_gib()
    )
    assert _cfg(tmp_path, "max_memory_gib = 6").gates.max_memory_gib == 6.0
    for bad in ("0", "0.1", "-2", '"lots"', "true", "5000"):
        with pytest.raises(ConfigError) as info:
            _cfg(tmp_path, f"max_memory_gib = {bad}")
        msg = str(info.value)
        assert "gates.max_memory_gib" in msg and 'expected "auto" or a number of GiB' in msg


def test_an_overrun_is_a_clear_error_naming_the_key(tmp_path: Path, store_server) -> None:
    from tests.conftest import server_store

    cfg = _cfg(tmp_path, "max_memory_gib = 0.25")
    store = server_store(store_server, "budget_test")
    times = StepTimes()
    try:
        # A 40M-key exact distinct count needs ~1 GiB of hash set: over a 0.25 GiB budget.
        with pytest.raises(StoreError) as info:
            run_statement(
                store, cfg, "SELECT uniqExact(number) FROM numbers(40000000)", "step x", times
            )
        msg = str(info.value)
        assert msg.startswith(
            "step x: over the analytics memory budget gates.max_memory_gib = 0.25"
        )
        assert "MEMORY_LIMIT_EXCEEDED" in msg
        # Under the same budget a query that groups by many keys spills instead of failing.
        run_statement(
            store,
            cfg,
            "SELECT count() FROM (SELECT number % 20000000 AS k, count() FROM numbers(20000000) "
            "GROUP BY k)",
            "step y",
            times,
        )
        assert set(times.total) == {"step x", "step y"}
    finally:
        store.close()


@pytest.mark.parametrize(
    ("progress", "text"),
    [
        (
            RebuildProgress("chunks", 0, 33, 0, 1000, 100.0, None),
            "chunks 0/33 (0% of rows) ETA calculating, 20s in",
        ),
        (
            RebuildProgress("chunks", 11, 33, 250, 1000, 100.0, 250.0),
            "chunks 11/33 (25% of rows) ETA 4m10s, 20s in",
        ),
        (
            RebuildProgress("hard_gate", 33, 33, 1000, 1000, 100.0, None),
            "chunks 33/33 done; hard gate, 20s in",
        ),
        (RebuildProgress("token_outcomes", 0, 0, 0, 0, 100.0, None), "token ids, 20s in"),
    ],
)
def test_progress_summary(progress: RebuildProgress, text: str) -> None:
    assert progress.summary(120.0) == text
    d = progress.as_dict(120.0)
    assert d["summary"] == text and d["chunks_total"] == progress.chunks_total
    assert d["elapsed_s"] == 20


def test_ctl_status_text_shows_the_rebuild_progress() -> None:
    from engine.control import format_status_text

    p = RebuildProgress("chunks", 11, 33, 250, 1000, 100.0, 250.0)
    base = {"state": "rebuilding", "shards": 2, "days_complete": 4, "days_total": 4}
    text = format_status_text({**base, "rebuild": p.as_dict(120.0)}, now=120.0)
    assert text.splitlines()[1] == "rebuild chunks 11/33 (25% of rows) ETA 4m10s, 20s in"
    assert "\nrebuild " not in format_status_text({**base, "rebuild": None}, now=120.0)
