"""SVG snapshots of the console (pytest-textual-snapshot), fully deterministic.

Fake engine with injected state and a fixed clock (tests/support/fake_engine.py), no periodic
refresh (refresh_s is an hour, so only the first poll renders), animations off, no blinking cursor.
Update after an intended UI change with `pytest tests/test_console_snapshots.py --snapshot-update`
and look at the report before committing.
"""

from __future__ import annotations

import os

import pytest

from engine.rpc_health import merge_rpc_health
from tests.support.app import make_app, settle
from tests.support.fake_engine import (
    NOW,
    FakeEngine,
    end_status,
    failing_gate_status,
    fatal_status,
    long_values_disk,
    long_values_status,
    sample_grid,
    sample_status,
)

os.environ["TEXTUAL_ANIMATIONS"] = "none"


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_main_screen(snap_compare, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=settle)


def test_help_screen(snap_compare):
    assert snap_compare(
        make_app(), terminal_size=(120, 40), run_before=settle, press=["question_mark"]
    )


def test_abort_confirm_dialog(snap_compare):
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=settle, press=["a"])


def test_fatal_worker(snap_compare):
    engine = FakeEngine(status=fatal_status())
    assert snap_compare(make_app(engine), terminal_size=(120, 40), run_before=settle)


def test_failing_gate(snap_compare):
    engine = FakeEngine(
        status=failing_gate_status(),
        gates_log=[
            "2026-01-01T00:00:00Z strict erc20_count_vs_rpc value=0 threshold=<=0.001 PASS",
            "2026-01-01T00:00:00Z strict final_duplicates value=0 threshold===0 PASS",
            "2026-01-01T00:00:00Z strict erc1155_nonempty value=0 threshold=>=1 FAIL",
        ],
    )
    assert snap_compare(make_app(engine), terminal_size=(120, 40), run_before=settle)


def test_rpc_two_keys_at_one_provider(snap_compare):
    """Two keys at one provider mask alike: two rows, tagged with their position in rpc.urls."""
    masked = "https://eth-mainnet.example/v2/***"
    reports = [
        {
            "index": 0,
            "url": masked,
            "calls": 5_000,
            "calls_per_s": 6.2,
            "http_429": 0,
            "p50_ms": 91.0,
            "p95_ms": 240.0,
            "current_range": 2000,
        },
        {
            "index": 1,
            "url": masked,
            "calls": 4_100,
            "calls_per_s": 0.0,
            "http_429": 57,
            "p50_ms": 130.0,
            "p95_ms": 2210.0,
            "current_range": 500,
            "cooling_until": NOW + 25,
        },
        {
            "index": 2,
            "url": "http://127.0.0.1:8545",
            "calls": 300,
            "calls_per_s": 1.0,
            "http_429": 0,
            "p50_ms": 3.0,
            "p95_ms": 9.0,
            "current_range": 2000,
        },
    ]
    st = sample_status(rpc=merge_rpc_health({0: reports}))
    engine = FakeEngine(status=st)
    assert snap_compare(make_app(engine), terminal_size=(120, 40), run_before=settle)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_ten_workers_with_long_values(snap_compare, size):
    """Every worker row, the notes, the header and the rows lines fit (nothing important cut)."""
    engine = FakeEngine(
        status=long_values_status(), grid=sample_grid(shards=10), disk=long_values_disk()
    )
    assert snap_compare(make_app(engine), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("phase", ["rebuilding", "swapped", "not_swapped"])
def test_end_screen(snap_compare, phase):
    """After the last day: the rebuild's progress, then swapped in (snapshot path) or NOT
    swapped (the gate), with the elapsed time frozen and split into backfill and rebuild."""
    grid = ["done"] * 1048
    engine = FakeEngine(status=end_status(phase), grid=grid)
    assert snap_compare(make_app(engine), terminal_size=(120, 40), run_before=settle)
