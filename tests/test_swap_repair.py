"""The repair of an analytics swap cut short (engine/analytics/swap.py plan_repair), table-driven.

A model of the store's tables (name -> version) runs the swap's own sequence of moves (EXCHANGE,
or the three-way RENAME of an Ordinary database, then keeping the replaced tables as X_prev) and
is cut after every move in turn; the repair planned for that state, applied to the model, must
leave every live table new (with its built rows) and the replaced one as X_prev, or, when a new
table is not whole, every live table old.
"""

from __future__ import annotations

import pytest

from engine.analytics.build import ANALYTICS_TABLES
from engine.analytics.swap import Step, SwapRepairError, plan_repair

Tables = dict[str, str]  # name -> version: "new:T", "old:T" (live before), "older:T" (its _prev)
ROWS = {t: 10 + i for i, t in enumerate(ANALYTICS_TABLES)}


def start() -> Tables:
    out: Tables = {}
    for t in ANALYTICS_TABLES:
        out.update({t: f"old:{t}", f"{t}_new": f"new:{t}", f"{t}_prev": f"older:{t}"})
    return out


def apply(tables: Tables, step: Step) -> None:
    a, b = step.a, step.b
    if step.op == "exchange":
        assert a in tables and b in tables, step
        tables[a], tables[b] = tables[b], tables[a]
    elif step.op == "rename":
        assert a in tables and b not in tables, (step, tables)
        tables[b] = tables.pop(a)
    else:
        tables.pop(a, None)


def swap_moves(rename: bool) -> list[Step]:
    """The moves swap_in makes, in order (a multi-table RENAME runs one rename after another)."""
    moves: list[Step] = []
    for t in ANALYTICS_TABLES:
        if rename:
            s = f"{t}_swap"
            moves += [Step("drop", s), Step("rename", t, s), Step("rename", f"{t}_new", t)]
            moves += [Step("rename", s, f"{t}_new")]
        else:
            moves.append(Step("exchange", t, f"{t}_new"))
    for t in ANALYTICS_TABLES:
        moves += [Step("drop", f"{t}_prev"), Step("rename", f"{t}_new", f"{t}_prev")]
    return moves


def present(tables: Tables, rows: dict[str, int] | None = None) -> dict[str, tuple[bool, int]]:
    rows = rows or ROWS
    out = {}
    for name, version in tables.items():
        kind, t = version.split(":")
        out[name] = (kind == "new", rows[t] if kind == "new" else 99)
    return out


CUTS = [(rename, k) for rename in (False, True) for k in range(len(swap_moves(rename)) + 1)]


@pytest.mark.parametrize(
    "rename, cut", CUTS, ids=[f"{'rename' if r else 'exchange'}-{k}" for r, k in CUTS]
)
def test_a_swap_cut_after_any_move_is_completed(rename: bool, cut: int) -> None:
    tables = start()
    for step in swap_moves(rename)[:cut]:
        apply(tables, step)
    how, steps = plan_repair(present(tables), ROWS)
    assert how == "completed"
    for step in steps:
        apply(tables, step)
    assert tables == {
        **{t: f"new:{t}" for t in ANALYTICS_TABLES},
        **{f"{t}_prev": f"old:{t}" for t in ANALYTICS_TABLES},
    }, (cut, steps)
    # Repairing the repaired state changes nothing.
    assert plan_repair(present(tables), ROWS) == ("completed", [])


@pytest.mark.parametrize(
    "rename, cut", CUTS, ids=[f"{'rename' if r else 'exchange'}-{k}" for r, k in CUTS]
)
def test_a_swap_whose_new_table_is_not_whole_is_undone(rename: bool, cut: int) -> None:
    tables = start()
    for step in swap_moves(rename)[:cut]:
        apply(tables, step)
    short = {**ROWS, "net_flows": ROWS["net_flows"] + 1}  # the marker's count: not what is there
    how, steps = plan_repair(present(tables), short)
    assert how == "undone"
    for step in steps:
        apply(tables, step)
    assert {t: tables[t] for t in ANALYTICS_TABLES} == {t: f"old:{t}" for t in ANALYTICS_TABLES}
    assert not any(n.endswith("_swap") for n in tables), tables
    # The new versions are only ever moved, never dropped (left as X_new for inspection).
    assert sorted(v for v in tables.values() if v.startswith("new:")) == sorted(
        f"new:{t}" for t in ANALYTICS_TABLES
    )


def test_a_missing_new_table_undoes_the_swap() -> None:
    tables = start()
    apply(tables, Step("exchange", "token_outcomes", "token_outcomes_new"))
    tables.pop("net_flows_new")  # a new table gone before its swap: the others go back
    how, steps = plan_repair(present(tables), ROWS)
    assert how == "undone"
    for step in steps:
        apply(tables, step)
    assert {t: tables[t] for t in ANALYTICS_TABLES} == {t: f"old:{t}" for t in ANALYTICS_TABLES}


def test_neither_version_whole_is_an_error_naming_the_table() -> None:
    tables = start()
    apply(tables, Step("exchange", "token_outcomes", "token_outcomes_new"))
    tables.pop("token_outcomes_new")  # the old token_outcomes, swapped out, is gone
    tables.pop("token_outcomes_prev")
    tables.pop("net_flows_new")  # and completing is impossible too
    with pytest.raises(SwapRepairError, match="neither version of token_outcomes is whole"):
        plan_repair(present(tables), ROWS)


def test_nothing_to_do_when_the_swap_never_started() -> None:
    """A marker written just before the first EXCHANGE: the swap is completed from the start."""
    tables = start()
    how, steps = plan_repair(present(tables), ROWS)
    assert how == "completed"
    assert steps[0] == Step("exchange", ANALYTICS_TABLES[0], f"{ANALYTICS_TABLES[0]}_new")
