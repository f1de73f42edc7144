"""Expected analytics of a devchain, in plain Python from the ground truth's market events.

This is the independent reference the rebuild's SQL is tested against: it never reads the store or
the SQL, only `ground_truth["markets"]` (conditions and semantic events written by the generator,
`engine/devchain/history.py`), and applies the rules of docs/ANALYTICS.md:

* net flows per (tx, holder, condition, outcome): + = into the holder. The cash of a holder in a
  condition is what its events in that condition paid or received (a transaction may hold events
  of several markets and wallets: two fills, a batched redemption, a split and a sale, a match);
  it sits on the token row when the tx moved one token of that condition for the holder, else on
  an outcome -1 row of the condition. kind per (tx, holder, condition): redeem > merge > split >
  trade > transfer over the holder's events of that condition;
* trades with direction: the wallets' token rows of kind trade, BUY = tokens in and USDC out, SELL
  the reverse; both legs are always there and of opposite sign, so every one is HIGH;
* positions per (wallet, condition) and pnl_units = cash + sum_i trunc(pos_i * payout_i / D) for
  resolved conditions; win rate = positions with pnl > 0 / resolved positions.

Holders are wallets and exchanges (`is_system` marks the exchanges); ConditionalTokens and the zero
address are not holders. Everything is an exact integer in base units.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

KIND_ORDER = ("redeem", "merge", "split", "trade", "transfer")  # first match wins
KIND_OF_EVENT = {
    "trade": "trade",
    "split": "split",
    "merge": "merge",
    "redeem": "redeem",
    "gift": "transfer",
}


def tdiv(a: int, b: int) -> int:
    """Integer division truncating toward zero (ClickHouse intDiv, Solidity on signed values)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


@dataclass
class Expected:
    """Everything the tests compare; keys are plain tuples of str/int."""

    # (tx, holder, condition_id, outcome_index) -> (token_delta, usdc_delta, kind, is_system)
    net_flows: dict[tuple[str, str, str, int], tuple[int, int, str, int]]
    # (tx, wallet, condition_id, outcome_index) -> (direction, confidence, token_amt, usdc_amt)
    trades: dict[tuple[str, str, str, int], tuple[str, str, int, int]]
    # (wallet, condition_id) -> {"positions", "cash_units", "pnl_units" (None if open), "resolved"}
    positions: dict[tuple[str, str], dict[str, Any]]
    conditions: dict[str, dict[str, Any]]
    mapped: set[str] = field(default_factory=set)  # conditions resolved or registered

    @property
    def resolved_positions(self) -> list[dict[str, Any]]:
        return [p for p in self.positions.values() if p["resolved"]]

    @property
    def total_pnl_units(self) -> int:
        return sum(p["pnl_units"] for p in self.resolved_positions)

    @property
    def win_rate(self) -> float | None:
        rp = self.resolved_positions
        return sum(p["pnl_units"] > 0 for p in rp) / len(rp) if rp else None

    def restricted_to(self, conditions: set[str]) -> Expected:
        """The same figures for a subset of conditions."""
        return Expected(
            {k: v for k, v in self.net_flows.items() if k[2] in conditions},
            {k: v for k, v in self.trades.items() if k[2] in conditions},
            {k: v for k, v in self.positions.items() if k[1] in conditions},
            {c: v for c, v in self.conditions.items() if c in conditions},
            self.mapped & conditions,
        )


def expected_analytics(ground_truth: dict[str, Any], exchanges: set[str] | None = None) -> Expected:
    """Net flows, trades, positions and PnL of a devchain, from its ground truth alone.

    `exchanges` are the system holders (default: the exchanges named by the conditions).
    """
    mk = ground_truth["markets"]
    conditions = {c["condition_id"]: c for c in mk["conditions"]}
    if exchanges is None:
        exchanges = {c["exchange"] for c in mk["conditions"] if c.get("exchange")}
    exchanges = {e.lower() for e in exchanges}
    non_holders = {mk["ctf"].lower(), "0x" + "0" * 40}
    mapped = {
        cid
        for cid, c in conditions.items()
        if c["registered"] or c["payout_numerators"] is not None
    }

    # 1. Per (tx, holder, condition): token deltas per outcome, cash delta, kinds of the events.
    tokens: dict[tuple[str, str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    cash: dict[tuple[str, str, str], int] = defaultdict(int)
    kinds: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for ev in mk["events"]:
        tx, cid = ev["tx_hash"], ev["condition_id"]
        wallet, cp = ev["wallet"].lower(), ev["counterparty"].lower()
        deltas = [int(x) for x in ev["token_deltas"]]
        usdc = int(ev["usdc_delta"])
        k = KIND_OF_EVENT[ev["kind"]]
        sides: list[tuple[str, int]] = [(wallet, 1)]
        if ev["kind"] in ("trade", "gift"):
            sides.append((cp, -1))  # the other side of the same legs
        for holder, sign in sides:
            if holder in non_holders:
                continue
            key = (tx, holder, cid)
            for i, d in enumerate(deltas):
                if d:
                    tokens[key][i] += sign * d
            if ev["kind"] != "gift":
                cash[key] += sign * usdc
            kinds[key].add(k)

    net_flows: dict[tuple[str, str, str, int], tuple[int, int, str, int]] = {}
    for key in kinds:
        tx, holder, cid = key
        toks = {i: d for i, d in tokens.get(key, {}).items() if d}
        usdc = cash.get(key, 0)
        system = int(holder in exchanges)
        k = next(x for x in KIND_ORDER if x in kinds[key])
        for i, d in toks.items():
            net_flows[(tx, holder, cid, i)] = (d, usdc if len(toks) == 1 else 0, k, system)
        if usdc and len(toks) != 1:
            net_flows[(tx, holder, cid, -1)] = (0, usdc, k, system)

    # 2. Trades of wallets: their token rows of kind trade; a (tx, wallet, condition) that is one
    # trade event must show that event's side (the side is only used here, as the truth).
    side_of: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for ev in mk["events"]:
        if ev["kind"] == "trade":
            side_of[(ev["tx_hash"], ev["wallet"].lower(), ev["condition_id"])].append(ev["side"])
    trades: dict[tuple[str, str, str, int], tuple[str, str, int, int]] = {}
    for (tx, holder, cid, i), (d, usdc, k, system) in net_flows.items():
        if k != "trade" or system:
            continue
        assert i >= 0 and d != 0 and usdc != 0 and (d > 0) != (usdc > 0), (tx, holder, cid, i)
        direction = "BUY" if d > 0 else "SELL"
        side = side_of.get((tx, holder, cid), [])
        assert len(side) != 1 or side[0] == direction, f"tx {tx}: side {side} vs deltas"
        trades[(tx, holder, cid, i)] = (direction, "HIGH", abs(d), abs(usdc))

    # 3. Positions and PnL per (wallet, condition), wallets only.
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for (_tx, holder, cid, i), (d, usdc, _k, system) in net_flows.items():
        if system or not cid:
            continue
        n = int(conditions[cid]["outcome_count"])
        p = acc.setdefault((holder, cid), {"positions": [0] * n, "cash_units": 0, "flows": 0})
        if i >= 0:
            p["positions"][i] += d
        p["cash_units"] += usdc
        p["flows"] += 1
    positions: dict[tuple[str, str], dict[str, Any]] = {}
    for (holder, cid), p in acc.items():
        payout = conditions[cid]["payout_numerators"]
        resolved = payout is not None
        pnl = None
        if resolved:
            den = sum(int(x) for x in payout)
            value = sum(tdiv(h * int(x), den) for h, x in zip(p["positions"], payout, strict=True))
            pnl = p["cash_units"] + value
        positions[(holder, cid)] = {**p, "resolved": resolved, "pnl_units": pnl}
    return Expected(net_flows, trades, positions, conditions, mapped)
