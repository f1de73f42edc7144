"""Data-quality gates over the staging tables and the rebuilt analytics, and the hard gate.

Each gate turns one query of `analytics/sql/gates.sql` into a value, compares it with a relaxed
(periodic, during the backfill) or strict (after the rebuild, before any swap) threshold from
`[gates]` in the config, writes a row to `gate_results` and a line to `<data_dir>/gates.log`.
Formulas, sign conventions and thresholds are written down in docs/ANALYTICS.md.

`run_gates` and `hard_gate` build the analytics into scratch `*_check` tables first (the same SQL as
the rebuild), so they judge the data as it is now without touching the live tables;
`engine.analytics.rebuild.rebuild` evaluates its `*_new` tables with `evaluate` directly. SQL
templating lives in engine/analytics/templating.py, the build in engine/analytics/build.py.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.analytics.budget import query_settings, with_settings
from engine.analytics.build import (
    BUILD_LOCK,
    CHECK_SUFFIX,
    StepTimes,
    build_analytics,
    drop_analytics,
    over_budget,
    run_statement,
)
from engine.analytics.templating import named_queries, render, sql_params, sql_text
from engine.status import GateResult
from engine.store.client import StoreError, open_store, split_sql

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.client import Store

RELAXED = "relaxed"
STRICT = "strict"
MODES = (RELAXED, STRICT)

# In evaluation order; the snapshot and the console show them in this order too.
GATE_NAMES = (
    "completeness",
    "duplicates",
    "resolution_sanity",
    "token_mapping",
    "high_confidence_share",
    "conservation",
    "cash_neutrality",
    "unattributed_cash",
    "win_rate",
)

GATE_RESULT_COLUMNS = [
    "run_id",
    "name",
    "mode",
    "value",
    "threshold",
    "passed",
    "detail",
    "target",
    "checked_at",
]


@dataclass
class GateCheck:
    """A gate's result plus the human detail that goes to gates.log and gate_results.detail."""

    result: GateResult
    detail: str


# --------------------------------------------------------------------------------------------
# Individual gates: rows in, (value, threshold text, passed, detail) out


def _ratio(num: int | float, den: int | float) -> float | None:
    return None if not den else float(num) / float(den)


def fmt_value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def gate_completeness(rows: list[dict], mode: str) -> tuple[float | None, str, bool, str]:
    pairs = (
        ("erc20", "erc20_checkpoint", "erc20_staged"),
        ("erc1155", "erc1155_checkpoint", "erc1155_staged"),
        ("resolutions", "resolution_checkpoint", "resolution_staged"),
        ("registrations", "registration_checkpoint", "registration_staged"),
    )
    days = len(rows)
    complete, ok, not_complete, mismatched = 0, 0, [], []
    for r in rows:
        if r["status"] != "COMPLETE":
            not_complete.append(int(r["day_idx"]))
            continue
        complete += 1
        diffs = [
            f"{label} checkpoint {int(r[cp] or 0)} staged {int(r[st] or 0)}"
            for label, cp, st in pairs
            if int(r[cp] or 0) != int(r[st] or 0)
        ]
        if diffs:
            mismatched.append(f"day {int(r['day_idx'])}: " + ", ".join(diffs))
        else:
            ok += 1
    if mode == STRICT:
        value = _ratio(ok, days)
        passed = ok == days
        threshold = "= 1.0 of configured days COMPLETE with checkpoint counts = staged rows"
    else:
        value = _ratio(ok, complete) if complete else None
        passed = ok == complete
        threshold = "= 1.0 of COMPLETE days with checkpoint counts = staged rows"
    detail = f"days={days} complete={complete} ok={ok}"
    if not_complete and mode == STRICT:
        detail += f"; not COMPLETE: {_short(not_complete)}"
    if mismatched:
        detail += "; " + "; ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else "")
    return value, threshold, passed, detail


def _short(items: list[int], n: int = 12) -> str:
    text = ",".join(str(i) for i in items[:n])
    return text + (f",... ({len(items)} in all)" if len(items) > n else "")


def gate_duplicates(rows: list[dict]) -> tuple[float | None, str, bool, str]:
    """Rows after FINAL beyond distinct keys + rows of a tx staged under two blocks."""
    bad, pending, total = [], [], 0
    for r in rows:
        extra = max(0, int(r["final_rows"]) - int(r["unique_keys"]))
        multi = int(r["multi_block_rows"])
        total += extra + multi
        if extra:
            bad.append(f"{r['tbl']}: {extra} keys not collapsed by FINAL")
        if multi:
            bad.append(f"{r['tbl']}: {multi} rows of txs staged under two blocks")
        waiting = int(r["raw_rows"]) - int(r["unique_keys"])
        if waiting > 0:
            pending.append(f"{r['tbl']} {waiting}")
    detail = "; ".join(bad) if bad else "none after FINAL"
    if pending:
        detail += "; rows waiting for a merge (harmless): " + ", ".join(pending)
    return float(total), "= 0 duplicate rows after FINAL", total == 0, detail


def gate_resolution_sanity(rows: list[dict]) -> tuple[float | None, str, bool, str]:
    bad = [r for r in rows if r["problem"]]
    value = _ratio(len(rows) - len(bad), len(rows))
    detail = f"resolved conditions={len(rows)} bad={len(bad)}"
    if bad:
        detail += "; " + "; ".join(
            f"{r['condition_id'][:12]}..: {r['problem']} (payouts {list(map(int, r['payouts']))}, "
            f"winning_index {r['winning_index']}, slots {r['slots']})"
            for r in bad[:5]
        )
    threshold = "= 1.0 of resolutions sane (payouts sum > 0, outcome count matches, index 0-based)"
    return value, threshold, not bad, detail


def gate_token_mapping(rows: list[dict]) -> tuple[float | None, str, bool, str]:
    total = int(rows[0]["registrations"]) if rows else 0
    matching = int(rows[0]["matching"]) if rows else 0
    detail = f"TokenRegistered pairs={total} matching computed position ids={matching}"
    return (
        _ratio(matching, total),
        "= 1.0 of TokenRegistered pairs = computed position ids",
        matching == total,
        detail,
    )


def gate_high_confidence(
    rows: list[dict], mode: str, cfg: Config
) -> tuple[float | None, str, bool, str]:
    counts = {r["confidence"]: int(r["trades"]) for r in rows}
    volume = {r["confidence"]: int(r["usdc_volume"]) for r in rows}
    total = sum(volume.values())
    value = _ratio(volume.get("HIGH", 0), total)
    need = cfg.gates.high_conf_share_strict if mode == STRICT else cfg.gates.high_conf_share_relaxed
    passed = value is None or value >= need
    detail = "trades " + " ".join(f"{k}={counts.get(k, 0)}" for k in ("HIGH", "MEDIUM", "LOW"))
    detail += f"; usdc volume HIGH={volume.get('HIGH', 0)} total={total}"
    return value, f">= {need:g} of USDC trade volume", passed, detail


def conservation_errors(
    supply_rows: list[dict], locked_rows: list[dict], outcome_counts: dict[str, int]
) -> tuple[dict[str, float], int]:
    """Per-market error max_i |supply_i - locked| / max(max_i minted_i, |locked|, 1)."""
    supply: dict[tuple[str, int], int] = {}
    minted: dict[str, int] = {}
    for r in supply_rows:
        c = r["condition_id"]
        supply[(c, int(r["outcome_index"]))] = int(r["supply"])
        minted[c] = max(minted.get(c, 0), int(r["minted"]))
    locked: dict[str, int] = {}
    ambiguous = 0
    for r in locked_rows:
        ambiguous += int(r["ambiguous_txs"])
        if r["condition_id"]:
            locked[r["condition_id"]] = int(r["locked"] or 0)
    errors: dict[str, float] = {}
    for c in sorted(set(minted) | set(locked)):
        n = outcome_counts.get(c, 0)
        if n <= 0:
            continue
        lk = locked.get(c, 0)
        worst = max(abs(supply.get((c, i), 0) - lk) for i in range(n))
        errors[c] = worst / max(minted.get(c, 0), abs(lk), 1)
    return errors, ambiguous


def gate_conservation(
    errors: dict[str, float], ambiguous: int, mode: str, cfg: Config
) -> tuple[float | None, str, bool, str]:
    g = cfg.gates
    tol = g.conservation_tolerance
    within = sum(1 for e in errors.values() if e <= tol)
    value = _ratio(within, len(errors))
    worst = max(errors.values(), default=0.0)
    if mode == STRICT:
        need = g.conservation_share_strict
        passed = value is None or (value >= need and worst < g.conservation_worst_strict)
        threshold = (
            f">= {need:g} of markets with error <= {tol:g}, worst < {g.conservation_worst_strict:g}"
        )
    else:
        need = g.conservation_share_relaxed
        passed = value is None or value >= need
        threshold = f">= {need:g} of markets with error <= {tol:g}"
    detail = f"markets={len(errors)} within={within} worst={worst:.6g}"
    if ambiguous:
        detail += f"; mint/burn txs touching several conditions (left out)={ambiguous}"
    bad = sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    if bad and bad[0][1] > tol:
        detail += "; worst markets " + ", ".join(f"{c[:12]}..={e:.4g}" for c, e in bad if e > tol)
    return value, threshold, passed, detail


def gate_cash_neutrality(
    rows: list[dict], mode: str, cfg: Config
) -> tuple[float | None, str, bool, str]:
    r = rows[0] if rows else {}
    cash = int(r.get("cash") or 0)
    gross = int(r.get("cash_gross") or 0)
    resolved_value = int(r.get("resolved_value") or 0)
    open_value = float(r.get("open_value") or 0.0)
    unmapped = int(r.get("unmapped_token_rows") or 0)
    residual = cash + resolved_value + open_value
    value = None if gross == 0 else abs(residual) / (gross / 2)
    limit = cfg.gates.cash_neutrality_strict
    if mode == STRICT:
        passed = value is None or value < limit
        threshold = f"< {limit:g} of USDC volume"
    else:
        passed = True
        threshold = f"report only while backfilling (strict < {limit:g})"
    detail = (
        f"holders' cash={cash} + resolved token value={resolved_value} + open token value="
        f"{open_value:.0f} = {residual:.0f}; volume={gross // 2}"
    )
    if unmapped:
        detail += f"; net_flows rows of unmapped tokens (left out)={unmapped}"
    return value, threshold, passed, detail


def gate_unattributed_cash(
    rows: list[dict], mode: str, cfg: Config
) -> tuple[float | None, str, bool, str]:
    """Share of wallets' cash in market txs that no token leg could be paired with."""
    r = rows[0] if rows else {}
    unattributed = int(r.get("unattributed") or 0)
    volume = int(r.get("volume") or 0)
    value = _ratio(unattributed, volume)
    g = cfg.gates
    limit = g.unattributed_cash_strict if mode == STRICT else g.unattributed_cash_relaxed
    passed = value is None or value <= limit
    detail = (
        f"wallet cash in market txs={volume}, under condition ''={unattributed} "
        f"in {int(r.get('txs') or 0)} (tx, wallet)"
    )
    unmapped = int(r.get("unmapped_volume") or 0)
    if unmapped:
        detail += f"; cash of txs with only unmapped tokens (left out)={unmapped}"
    return value, f"<= {limit:g} of wallet cash in market txs", passed, detail


def gate_win_rate(rows: list[dict], cfg: Config) -> tuple[float | None, str, bool, str]:
    winners = int(rows[0]["winners"]) if rows else 0
    positions = int(rows[0]["positions"]) if rows else 0
    value = _ratio(winners, positions)
    lo, hi = cfg.gates.win_rate_min, cfg.gates.win_rate_max
    passed = value is None or lo <= value <= hi
    detail = f"resolved wallet positions={positions} with pnl > 0={winners}"
    return value, f"between {lo:g} and {hi:g}", passed, detail


# --------------------------------------------------------------------------------------------
# Evaluation, logging, results table


def new_run_id(mode: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{mode}-{stamp}-{secrets.token_hex(3)}"


def evaluate(
    store: Store,
    cfg: Config,
    mode: str,
    sfx: str,
    run_id: str | None = None,
    log: Callable[[str], None] | None = None,
    times: StepTimes | None = None,
) -> list[GateCheck]:
    """Run every gate against the analytics tables `*{sfx}`; record and log each result.

    Every query runs under the memory budget (analytics/budget.py); `times` collects their wall
    time by `gate NAME`.
    """
    if mode not in MODES:
        raise ValueError(f"gate mode {mode!r}: expected one of {', '.join(MODES)}")
    run_id = run_id or new_run_id(mode)
    params = sql_params(store, cfg, sfx)
    queries = {k: render(v, params) for k, v in named_queries("gates.sql").items()}
    settings = query_settings(cfg)

    def q(name: str) -> list[dict]:
        t0 = time.perf_counter()
        try:
            return store.query_dicts(with_settings(queries[name], settings))
        except StoreError as exc:
            raise over_budget(cfg, f"gate {name}", exc) from exc
        finally:
            if times is not None:
                times.add(f"gate {name}", time.perf_counter() - t0)

    computed: dict[str, tuple[float | None, str, bool, str]] = {}
    computed["completeness"] = gate_completeness(q("completeness"), mode)
    computed["duplicates"] = gate_duplicates(duplicate_rows(store, cfg, sfx, queries, q, times))
    computed["resolution_sanity"] = gate_resolution_sanity(q("resolution_sanity"))
    computed["token_mapping"] = gate_token_mapping(q("token_mapping"))
    computed["high_confidence_share"] = gate_high_confidence(q("high_confidence_share"), mode, cfg)
    counts = {
        c: int(n)
        for c, n in store.query(
            f"SELECT condition_id, max(outcome_count) FROM {store.database}.token_outcomes{sfx} "
            "GROUP BY condition_id"
        )
    }
    errors, ambiguous = conservation_errors(
        q("conservation_supply"), q("conservation_locked"), counts
    )
    computed["conservation"] = gate_conservation(errors, ambiguous, mode, cfg)
    computed["cash_neutrality"] = gate_cash_neutrality(q("cash_neutrality"), mode, cfg)
    computed["unattributed_cash"] = gate_unattributed_cash(q("unattributed_cash"), mode, cfg)
    computed["win_rate"] = gate_win_rate(q("win_rate"), cfg)

    now = time.time()
    checks = [
        GateCheck(
            GateResult(
                name=name,
                value=computed[name][0],
                threshold=computed[name][1],
                passed=bool(computed[name][2]),
                mode=mode,
                checked_at=now,
            ),
            computed[name][3],
        )
        for name in GATE_NAMES
    ]
    record(store, cfg, checks, run_id, target=f"*{sfx}" if sfx else "live tables", log=log)
    return checks


MULTI_BLOCK_DDL = "CREATE TABLE {t} (tx_hash String) ENGINE = MergeTree ORDER BY tx_hash"


def duplicate_rows(
    store: Store,
    cfg: Config,
    sfx: str,
    queries: dict[str, str],
    q: Callable[[str], list[dict]],
    times: StepTimes | None,
) -> list[dict]:
    """The duplicates query, after its multi-block transactions went into a scratch table."""
    table = f"{store.database}.gate_multi_block{sfx}"
    store.command(f"DROP TABLE IF EXISTS {table} SYNC")
    store.command(MULTI_BLOCK_DDL.format(t=table))
    try:
        run_statement(store, cfg, queries["multi_block_txs"], "gate multi_block_txs", times)
        return q("duplicates")
    finally:
        store.command(f"DROP TABLE IF EXISTS {table} SYNC")


def record(
    store: Store,
    cfg: Config,
    checks: list[GateCheck],
    run_id: str,
    target: str,
    log: Callable[[str], None] | None = None,
) -> None:
    """Insert the checks into gate_results and append them to gates.log (one line each)."""
    ensure_gate_table(store)
    rows = []
    lines = []
    for c in checks:
        r = c.result
        stamp = dt.datetime.fromtimestamp(r.checked_at, dt.UTC)
        rows.append(
            [
                run_id,
                r.name,
                r.mode,
                r.value,
                r.threshold,
                int(r.passed),
                c.detail,
                target,
                stamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            ]
        )
        lines.append(
            f"{stamp.strftime('%Y-%m-%dT%H:%M:%SZ')} {r.mode} run={run_id} "
            f"{r.name} {'PASS' if r.passed else 'FAIL'} value={fmt_value(r.value)} "
            f"threshold={json.dumps(r.threshold)} target={target} | {c.detail}"
        )
    failed = [c.result.name for c in checks if not c.result.passed]
    summary = (
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')} {checks[0].result.mode} "
        f"run={run_id} {'ALL PASS' if not failed else 'FAILED: ' + ', '.join(failed)} "
        f"({len(checks) - len(failed)}/{len(checks)} passed)"
    )
    lines.append(summary)
    store.insert_json_rows(f"{store.database}.gate_results", GATE_RESULT_COLUMNS, rows)
    append_log(cfg.backfill.data_dir / "gates.log", lines)
    if log is not None:
        for line in lines:
            log(line)


def append_log(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line.rstrip("\n") + "\n")


def ensure_gate_table(store: Store) -> None:
    for stmt in split_sql(render(sql_text("analytics.sql"), {"db": store.database, "sfx": ""})):
        if ".gate_results" in stmt:
            store.command(stmt)


# --------------------------------------------------------------------------------------------
# Public API


def run_gates(
    store: Store,
    cfg: Config,
    mode: str = RELAXED,
    log: Callable[[str], None] | None = None,
) -> list[GateResult]:
    """Build the analytics into `*_check` tables from the staged data, run every gate, clean up."""
    return [c.result for c in run_gate_checks(store, cfg, mode, log)]


def run_gate_checks(
    store: Store,
    cfg: Config,
    mode: str = RELAXED,
    log: Callable[[str], None] | None = None,
    times: StepTimes | None = None,
) -> list[GateCheck]:
    with BUILD_LOCK:
        try:
            build_analytics(store, cfg, CHECK_SUFFIX, times=times)
            return evaluate(store, cfg, mode, CHECK_SUFFIX, log=log, times=times)
        finally:
            drop_analytics(store, CHECK_SUFFIX)


def hard_gate(store: Store, cfg: Config, log: Callable[[str], None] | None = None) -> bool:
    """The strict gates on a fresh build of the staged data; True only if every gate passes."""
    return all(r.passed for r in run_gates(store, cfg, STRICT, log))


def format_check(c: GateCheck) -> str:
    r = c.result
    return (
        f"{'PASS' if r.passed else 'FAIL'}  {r.name:<22} value={fmt_value(r.value):<10} "
        f"threshold: {r.threshold}\n      {c.detail}"
    )


def cli_hard_gate(cfg: Config) -> int:
    """`backfill-console hard-gate`: print each strict gate; exit 0 only if all pass."""
    try:
        store = open_store(cfg)
    except StoreError as exc:
        print(f"hard-gate: cannot open the store: {exc}")
        return 1
    times = StepTimes()
    try:
        checks = run_gate_checks(store, cfg, STRICT, times=times)
    except Exception as exc:  # a broken query must not look like a pass
        print(f"hard-gate: FAILED to evaluate: {exc}")
        return 1
    finally:
        store.close()
    for label, secs, runs in times.slowest():
        print(f"step {label} took {secs:.1f} s ({runs} run(s))")
    for c in checks:
        print(format_check(c))
    failed = [c.result.name for c in checks if not c.result.passed]
    print("hard gate: " + ("PASSED" if not failed else "FAILED (" + ", ".join(failed) + ")"))
    return 0 if not failed else 1


def checks_as_dict(checks: list[GateCheck] | list[GateResult]) -> dict[str, dict[str, Any]]:
    """{name: {value, threshold, passed}} as the snapshot stores it."""
    out: dict[str, dict[str, Any]] = {}
    for c in checks:
        r = c.result if isinstance(c, GateCheck) else c
        out[r.name] = {"value": r.value, "threshold": r.threshold, "passed": r.passed}
    return out
