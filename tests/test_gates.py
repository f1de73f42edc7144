"""Gates and analytics edge cases on small hand-written histories on a real local store server.

Each test stages a few transactions written out by hand (real ConditionalTokens position ids) and
checks one rule of docs/ANALYTICS.md: confidence levels, payout rounding for [1,1] and multi-outcome
payouts, relaxed vs strict completeness, which duplicates the gate sees, resolution sanity, the
token mapping, the records in gate_results / gates.log, and the two CLI commands.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.analytics.build import build_analytics
from engine.analytics.gates import (
    GATE_NAMES,
    conservation_errors,
    hard_gate,
    run_gate_checks,
    run_gates,
)
from engine.analytics.positions import outcome_token_ids
from engine.analytics.rebuild import rebuild
from engine.config import Config, load_config
from engine.decode import (
    ERC20_COLUMNS,
    ERC1155_COLUMNS,
    REGISTRATION_COLUMNS,
    RESOLUTION_COLUMNS,
    winning_index,
)
from engine.status import GateResult
from engine.store.client import Store, open_store
from engine.store.loader import CHECKPOINT_COLUMNS
from tests.support.config import write_config

pytestmark = pytest.mark.slow  # end to end: real store and CLI

ROOT = Path(__file__).resolve().parent.parent
USDC = "0x2791bca1f2de4661ed88a30c99a7a9449aa84174"
CTF = "0x4d97dcd97ec945f40cf65f87097ace5ea0476045"
EXCHANGE = "0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e"
ZERO = "0x" + "0" * 40
ORACLE = "0x6a9d222616c90fca5754cd1333cfd9b7fb6a4f74"
DAY0 = 1671321600  # 2022-12-18 00:00:00 UTC
W = ["0x" + f"{0xAA00 + i:040x}" for i in range(8)]


def cond(tag: int) -> str:
    return "0x" + f"{tag:064x}"


class History:
    """Staging rows written by hand: each method is one transaction, in chain order."""

    def __init__(self) -> None:
        self.e20: list[list] = []
        self.e1155: list[list] = []
        self.res: list[list] = []
        self.reg: list[list] = []
        self.block = 1000
        self.n = 0
        self.ids: dict[str, list[int]] = {}

    def market(self, c: str, outcomes: int) -> list[int]:
        self.ids[c] = outcome_token_ids(USDC, c, outcomes)
        return self.ids[c]

    def _tx(self, day: int) -> tuple[str, list]:
        self.n += 1
        self.block += 1
        return "0x" + f"{self.n:064x}", [self.block, DAY0 + day * 86400 + self.block, day]

    def _cash(self, tx: str, li: int, head: list, frm: str, to: str, value: int) -> None:
        self.e20.append([tx, li, *head, USDC, frm, to, str(value)])

    def _tok(self, tx, li, bi, head, op, frm, to, token_id, value) -> None:
        self.e1155.append([tx, li, bi, *head, CTF, op, frm, to, str(token_id), str(value)])

    def split(self, day: int, who: str, c: str, amount: int) -> str:
        tx, head = self._tx(day)
        self._cash(tx, 0, head, who, CTF, amount)
        for i, tid in enumerate(self.ids[c]):
            self._tok(tx, 1, i, head, who, ZERO, who, tid, amount)
        return tx

    def trade(
        self,
        day: int,
        wallet: str,
        c: str,
        outcome: int,
        tokens: int,
        usdc: int,
        cash_leg: bool = True,
        token_leg: bool = True,
        flip_cash: bool = False,
    ) -> str:
        """tokens > 0: the wallet buys from the exchange; < 0: it sells to it."""
        tx, head = self._tx(day)
        buy = tokens > 0
        pay_from, pay_to = (wallet, EXCHANGE) if buy else (EXCHANGE, wallet)
        if flip_cash:
            pay_from, pay_to = pay_to, pay_from
        if cash_leg:
            self._cash(tx, 0, head, pay_from, pay_to, usdc)
        if token_leg:
            frm, to = (EXCHANGE, wallet) if buy else (wallet, EXCHANGE)
            self._tok(tx, 1, 0, head, EXCHANGE, frm, to, self.ids[c][outcome], abs(tokens))
        return tx

    def gift(self, day: int, frm: str, to: str, c: str, outcome: int, amount: int) -> str:
        tx, head = self._tx(day)
        self._tok(tx, 0, 0, head, frm, frm, to, self.ids[c][outcome], amount)
        return tx

    def register(self, day: int, c: str, ids: list[int] | None = None) -> None:
        tx, head = self._tx(day)
        t0, t1 = ids or self.ids[c][:2]
        self.reg.append([tx, 0, *head, EXCHANGE, str(t0), str(t1), c])
        self.reg.append([tx, 1, *head, EXCHANGE, str(t1), str(t0), c])

    def resolve(self, day: int, c: str, payouts: list[int], win: int | None = None) -> None:
        tx, head = self._tx(day)
        wi = winning_index(payouts) if win is None else win
        self.res.append(
            [tx, 0, *head, CTF, c, ORACLE, "0x" + "ab" * 32, len(payouts)]
            + [[str(p) for p in payouts], str(sum(payouts)), wi]
        )

    def redeem(self, day: int, who: str, c: str, holdings: list[int], payouts: list[int]) -> int:
        tx, head = self._tx(day)
        den = sum(payouts)
        pay = sum(h * p // den for h, p in zip(holdings, payouts, strict=True))
        held = [i for i, h in enumerate(holdings) if h]
        for bi, i in enumerate(held):
            self._tok(tx, 0, bi, head, who, who, ZERO, self.ids[c][i], holdings[i])
        if pay:
            self._cash(tx, 1, head, CTF, who, pay)
        return pay

    def legs(self, day: int, *legs: tuple) -> str:
        """One transaction of several legs in log order: ("cash", from, to, value) or
        ("tok", from, to, condition, outcome, value[, operator]) (operator by default: the
        exchange when it is a side, else the sender); a list of "tok" legs is one TransferBatch."""
        tx, head = self._tx(day)
        for li, leg in enumerate(legs):
            if leg[0] == "cash":
                self._cash(tx, li, head, leg[1], leg[2], leg[3])
                continue
            items = leg[1] if isinstance(leg[1], list) else [leg]
            for bi, (_k, frm, to, c, i, v, *operator) in enumerate(items):
                op = EXCHANGE if EXCHANGE in (frm, to) else (to if frm == ZERO else frm)
                op = operator[0] if operator else op
                self._tok(tx, li, bi, head, op, frm, to, self.ids[c][i], v)
        return tx

    def stage(self, store: Store, days: int, complete: set[int] | None = None) -> None:
        db = store.database
        store.insert_json_rows(f"{db}.erc20_transfers_staging", ERC20_COLUMNS, self.e20)
        store.insert_json_rows(f"{db}.erc1155_transfers_staging", ERC1155_COLUMNS, self.e1155)
        store.insert_json_rows(f"{db}.condition_resolutions", RESOLUTION_COLUMNS, self.res)
        store.insert_json_rows(f"{db}.token_registrations", REGISTRATION_COLUMNS, self.reg)
        complete = set(range(days)) if complete is None else complete
        rows = []
        for d in sorted(complete):
            rows.append(
                [d, "COMPLETE", 0, 0, 0]
                + [sum(r[4] == d for r in self.e20), sum(r[5] == d for r in self.e1155)]
                + [sum(r[4] == d for r in self.res), sum(r[4] == d for r in self.reg)]
                + [1, "2022-12-18", "", "2024-01-01 00:00:00.000"]
            )
        store.insert_json_rows(f"{db}.backfill_checkpoint", CHECKPOINT_COLUMNS, rows)


class Ctx:
    def __init__(self, folder: Path, cfg: Config, store: Store) -> None:
        self.folder = folder
        self.cfg = cfg
        self.store = store

    def reset(self) -> None:
        """An empty database (staging, analytics and gate results) and empty logs."""
        self.store.command(f"DROP DATABASE IF EXISTS {self.store.database} SYNC")
        self.store.ensure_schema()
        for name in ("gates.log", "on-complete.log"):
            (self.cfg.backfill.data_dir / name).unlink(missing_ok=True)

    def q(self, sql: str) -> list[tuple]:
        return self.store.query(sql.replace("{db}", self.store.database))

    def gates(self, mode: str = "strict") -> dict[str, GateResult]:
        return {c.result.name: c.result for c in run_gate_checks(self.store, self.cfg, mode)}


def gates_config(folder: Path, days: int, band: tuple[float, float] = (0.0, 1.0)) -> Path:
    return write_config(
        folder,
        days=days,
        data_dir="data/backfill",
        gates={"win_rate_min": band[0], "win_rate_max": band[1]},
    )


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    folder = tmp_path_factory.mktemp("gates")
    cfg = load_config(gates_config(folder, days=3), env={})
    store = open_store(cfg)
    yield Ctx(folder, cfg, store)
    store.close()


C1, C2, C3 = cond(0xC1), cond(0xC2), cond(0xC3)


def basic_history() -> History:
    """Binary C1 (one-hot), binary C2 ([1,1]), 3-outcome C3; splits, trades, gift, redeems."""
    h = History()
    h.market(C1, 2)
    h.market(C2, 2)
    h.market(C3, 3)
    h.register(0, C1)
    h.register(0, C2)
    h.split(0, EXCHANGE, C1, 10_000)
    h.split(0, EXCHANGE, C2, 10_000)
    h.split(0, EXCHANGE, C3, 9_000)
    h.split(0, W[5], C3, 900)
    h.trade(0, W[1], C1, 0, 1_000, 600)  # buys YES at 0.60
    h.trade(0, W[2], C1, 1, 1_000, 400)  # buys NO at 0.40
    h.trade(0, W[3], C2, 0, 501, 250)  # an odd amount: [1,1] pays 250.5, truncated to 250
    h.trade(0, W[3], C3, 2, 300, 100)
    h.trade(1, W[1], C1, 0, -400, 300)  # sells 400 YES at 0.75
    h.gift(1, W[2], W[4], C1, 1, 100)
    h.resolve(1, C1, [0, 1])
    h.resolve(1, C2, [1, 1])
    h.resolve(2, C3, [0, 1, 2])  # not one-hot: outcome 1 pays 1/3, outcome 2 pays 2/3
    h.redeem(2, W[2], C1, [0, 900], [0, 1])
    return h


def pnl_of(ctx: Ctx) -> dict[tuple[str, str], tuple[list[int], int, int, int]]:
    return {
        (w, c): ([int(x) for x in pos], int(cash), int(pnl), int(res))
        for w, c, pos, cash, pnl, res in ctx.q(
            "SELECT wallet, condition_id, positions, cash_units, pnl_units, resolved "
            "FROM {db}.wallet_market_pnl"
        )
    }


def test_pnl_one_hot_half_half_and_multi_outcome_payouts(ctx: Ctx) -> None:
    ctx.reset()
    basic_history().stage(ctx.store, 3)
    out = rebuild(ctx.store, ctx.cfg)
    assert out.swapped, out.reason
    assert pnl_of(ctx) == {
        # bought 1000 YES for 600, sold 400 for 300, YES lost: -300
        (W[1], C1): ([600, 0], -300, -300, 1),
        # bought 1000 NO for 400, gave 100 away, redeemed 900 for 900: +500
        (W[2], C1): ([0, 0], 500, 500, 1),
        # the gift: 100 NO, never paid for, worth 100
        (W[4], C1): ([0, 100], 0, 100, 1),
        # [1,1]: 501 tokens pay intDiv(501 * 1, 2) = 250; paid 250: 0 (not a win)
        (W[3], C2): ([501, 0], -250, 0, 1),
        # [0,1,2]: 300 of outcome 2 pay intDiv(300 * 2, 3) = 200; paid 100: +100
        (W[3], C3): ([0, 0, 300], -100, 100, 1),
        # split 900 into 900 of each: pays 0 + 300 + 600 = 900; paid 900: 0
        (W[5], C3): ([900, 900, 900], -900, 0, 1),
    }
    snap = out.snapshot_path.read_text()
    assert '"total_pnl_units": 400,' in snap  # -300 + 500 + 100 + 0 + 100 + 0
    assert '"win_rate": 0.5,' in snap  # 3 of 6 positions
    g = {r.name: r for r in out.gates}
    # Truncated payouts leave a few units unclaimed ([1,1] on odd holdings, thirds).
    assert 0 < g["cash_neutrality"].value < 1e-3 and g["conservation"].value == 1.0


def test_cash_is_attributed_leg_by_leg_when_a_tx_touches_several_markets(ctx: Ctx) -> None:
    """The worked example of docs/ANALYTICS.md, a two-market fill and a batched redemption.

    W0 splits 341,954,480 of M, sells 254,342,408 of M's outcome 0 for 70,513,889 and buys
    200,000,000 of N's outcome 0 for 108,737,907, all in one tx; later it redeems M (outcome 1
    wins: 341,954,480) and N (outcome 0 wins: 200,000,000) in one tx. Per market: M made
    -341,954,480 + 70,513,889 + 341,954,480 = +70,513,889; N made -108,737,907 + 200,000,000 =
    +91,262,093. (Netting the first tx per (tx, holder) booked its -38,224,018 under ''.)
    """
    ctx.reset()
    h = History()
    m, n = C1, C2
    h.market(m, 2)
    h.market(n, 2)
    h.register(0, m)
    h.register(0, n)
    h.split(0, EXCHANGE, n, 500_000_000)
    h.split(0, EXCHANGE, m, 10_000)
    h.trade(0, W[3], n, 1, 2_000, 1_000)  # W3 holds 2,000 of N's outcome 1
    split_sell_buy = h.legs(
        0,
        ("cash", W[0], CTF, 341_954_480),
        ("tok", [("tok", ZERO, W[0], m, i, 341_954_480) for i in (0, 1)]),
        ("cash", EXCHANGE, W[0], 70_513_889),
        ("tok", W[0], EXCHANGE, m, 0, 254_342_408),
        ("cash", W[0], EXCHANGE, 108_737_907),
        ("tok", EXCHANGE, W[0], n, 0, 200_000_000),
    )
    # W3 buys 1,000 of M's outcome 1 for 600 and sells its 2,000 N for 1,500 in one tx: the tx's
    # net cash (+900) has the sign of a sale, yet both fills are HIGH on their own pair.
    two_fills = h.legs(
        0,
        ("cash", W[3], EXCHANGE, 600),
        ("tok", EXCHANGE, W[3], m, 1, 1_000),
        ("tok", W[3], EXCHANGE, n, 1, 2_000),
        ("cash", EXCHANGE, W[3], 1_500),
    )
    # A fillOrder-shaped pair of fills (the maker receives before it gives; the operator, here W7,
    # is the counterparty of both legs and the exchange only the ERC1155 operator): W6 sells its
    # 5,000 of M's outcome 0 for 3,000 and buys 1,000 of N's outcome 1 for 400.
    h.trade(0, W[6], m, 0, 5_000, 2_500)
    h.trade(0, W[7], n, 1, 1_000, 300)
    fills = h.legs(
        0,
        ("cash", W[7], W[6], 3_000),
        ("tok", W[6], W[7], m, 0, 5_000, EXCHANGE),
        ("cash", W[6], W[7], 400),
        ("tok", W[7], W[6], n, 1, 1_000, EXCHANGE),
    )
    h.resolve(1, m, [0, 1])
    h.resolve(1, n, [1, 0])
    batched = h.legs(
        2,
        ("tok", W[0], ZERO, m, 0, 87_612_072),
        ("tok", W[0], ZERO, m, 1, 341_954_480),
        ("cash", CTF, W[0], 341_954_480),
        ("tok", W[0], ZERO, n, 0, 200_000_000),
        ("cash", CTF, W[0], 200_000_000),
    )
    h.stage(ctx.store, 3)
    out = rebuild(ctx.store, ctx.cfg)
    assert out.swapped, out.reason
    got = pnl_of(ctx)
    assert got[(W[0], m)] == ([0, 0], 70_513_889, 70_513_889, 1)
    assert got[(W[0], n)] == ([0, 0], 91_262_093, 91_262_093, 1)
    assert got[(W[3], m)] == ([0, 1_000], -600, 400, 1)
    assert got[(W[3], n)] == ([0, 0], 500, 500, 1)
    assert got[(W[6], m)] == ([0, 0], 500, 500, 1)  # -2,500 + 3,000
    assert got[(W[6], n)] == ([0, 1_000], -400, -400, 1)  # outcome 1 of N lost
    assert got[(W[7], m)] == ([5_000, 0], -3_000, -3_000, 1)
    assert got[(W[7], n)] == ([0, 0], 100, 100, 1)  # -300 + 400
    flows = {
        (tx, w, c, int(i)): (int(d), int(u), k)
        for tx, w, c, i, d, u, k in ctx.q(
            "SELECT tx_hash, wallet, condition_id, outcome_index, token_delta, usdc_delta, kind "
            "FROM {db}.net_flows WHERE is_system = 0"
        )
    }
    assert flows[(split_sell_buy, W[0], m, 0)] == (87_612_072, 0, "split")
    assert flows[(split_sell_buy, W[0], m, 1)] == (341_954_480, 0, "split")
    assert flows[(split_sell_buy, W[0], m, -1)] == (0, 70_513_889 - 341_954_480, "split")
    assert flows[(split_sell_buy, W[0], n, 0)] == (200_000_000, -108_737_907, "trade")
    assert flows[(batched, W[0], m, -1)] == (0, 341_954_480, "redeem")
    assert flows[(batched, W[0], n, 0)] == (-200_000_000, 200_000_000, "redeem")
    assert not [k for k in flows if k[2] == ""]
    trades = {
        (tx, w, c): (d, conf, int(u))
        for tx, w, c, d, conf, u in ctx.q(
            "SELECT tx_hash, wallet, condition_id, direction, confidence, usdc_amount "
            "FROM {db}.trades_with_direction"
        )
    }
    assert trades[(split_sell_buy, W[0], n)] == ("BUY", "HIGH", 108_737_907)
    assert (split_sell_buy, W[0], m) not in trades  # M's side of that tx is a split (and a sale)
    assert trades[(two_fills, W[3], m)] == ("BUY", "HIGH", 600)
    assert trades[(two_fills, W[3], n)] == ("SELL", "HIGH", 1_500)
    assert trades[(fills, W[6], m)] == ("SELL", "HIGH", 3_000)
    assert trades[(fills, W[6], n)] == ("BUY", "HIGH", 400)
    assert trades[(fills, W[7], m)] == ("BUY", "HIGH", 3_000)
    assert trades[(fills, W[7], n)] == ("SELL", "HIGH", 400)
    g = {r.name: r for r in out.gates}
    assert g["unattributed_cash"].value == 0.0 and g["unattributed_cash"].passed
    assert g["high_confidence_share"].value == 1.0


def test_unattributed_cash_gate_counts_cash_no_token_leg_pairs_with(ctx: Ctx) -> None:
    ctx.reset()
    h = History()
    h.market(C1, 2)
    h.market(C2, 2)
    h.register(0, C1)
    h.register(0, C2)
    h.split(0, EXCHANGE, C1, 100_000)
    h.split(0, EXCHANGE, C2, 100_000)
    h.trade(0, W[1], C1, 0, 10_000, 6_000)
    h.trade(0, W[2], C2, 0, 10_000, 3_000)
    # W4 gets tokens of two markets from the exchange but pays a third party: nothing to pair.
    h.legs(
        0,
        ("tok", EXCHANGE, W[4], C1, 1, 100),
        ("tok", EXCHANGE, W[4], C2, 1, 100),
        ("cash", W[4], W[7], 50),
    )
    h.legs(1, ("cash", W[5], W[6], 1_000_000))  # no token in the tx: not market cash, left out
    h.stage(ctx.store, 3)
    relaxed, strict = ctx.gates("relaxed"), ctx.gates("strict")
    share = 50 / (6_000 + 3_000 + 50)
    assert relaxed["unattributed_cash"].value == pytest.approx(share)  # 0.0055
    assert relaxed["unattributed_cash"].passed and not strict["unattributed_cash"].passed
    assert "<= 0.01" in relaxed["unattributed_cash"].threshold
    assert "<= 0.001" in strict["unattributed_cash"].threshold
    build_analytics(ctx.store, ctx.cfg, "_t")
    assert ctx.q(
        "SELECT usdc_delta, kind FROM {db}.net_flows_t WHERE wallet = '" + W[4] + "' "
        "AND condition_id = ''"
    ) == [(-50, "trade")]


def test_direction_and_confidence_from_the_legs_alone(ctx: Ctx) -> None:
    ctx.reset()
    h = History()
    h.market(C1, 2)
    h.register(0, C1)
    h.split(0, EXCHANGE, C1, 100_000)
    buy = h.trade(0, W[1], C1, 0, 1_000, 600)
    sell = h.trade(0, W[1], C1, 0, -500, 350)
    no_cash = h.trade(0, W[2], C1, 1, 1_000, 400, cash_leg=False)
    no_tokens = h.trade(0, W[3], C1, 1, 1_000, 300, token_leg=False)
    contradict = h.trade(0, W[4], C1, 0, 1_000, 450, flip_cash=True)
    gift = h.gift(0, W[1], W[6], C1, 0, 100)
    h.stage(ctx.store, 3)
    gates = ctx.gates("relaxed")
    build_analytics(ctx.store, ctx.cfg, "_t")
    rows = {
        tx: (d, c, int(u))
        for tx, d, c, u in ctx.q(
            "SELECT tx_hash, direction, confidence, usdc_amount FROM {db}.trades_with_direction_t"
        )
    }
    assert rows[buy] == ("BUY", "HIGH", 600)
    assert rows[sell] == ("SELL", "HIGH", 350)
    assert rows[no_cash] == ("BUY", "MEDIUM", 0)  # token leg only
    assert rows[no_tokens] == ("BUY", "MEDIUM", 300)  # cash leg only (paid the exchange)
    assert rows[contradict] == ("BUY", "LOW", 450)  # tokens in and cash in: no usable pair
    assert gift not in rows  # wallet to wallet, no exchange: a transfer, not a trade
    kinds = dict(ctx.q("SELECT tx_hash, kind FROM {db}.net_flows_t"))
    assert kinds[gift] == "transfer"
    # HIGH share of USDC volume = (600 + 350) / (600 + 350 + 300 + 450) = 0.5588
    share = gates["high_confidence_share"]
    assert share.value == pytest.approx(950 / 1700)
    assert not share.passed  # relaxed needs >= 0.60


def test_high_share_relaxed_passes_where_strict_fails(ctx: Ctx) -> None:
    ctx.reset()
    h = History()
    h.market(C1, 2)
    h.register(0, C1)
    h.split(0, EXCHANGE, C1, 100_000)
    h.trade(0, W[1], C1, 0, 1_000, 800)
    h.trade(0, W[2], C1, 0, 1_000, 200, cash_leg=True, token_leg=False)
    h.stage(ctx.store, 3)
    relaxed, strict = ctx.gates("relaxed"), ctx.gates("strict")
    assert relaxed["high_confidence_share"].value == pytest.approx(0.8)
    assert relaxed["high_confidence_share"].passed and not strict["high_confidence_share"].passed
    assert ">= 0.6" in relaxed["high_confidence_share"].threshold
    assert ">= 0.95" in strict["high_confidence_share"].threshold


def test_completeness_relaxed_counts_complete_days_strict_counts_all(ctx: Ctx) -> None:
    ctx.reset()
    h = basic_history()
    h.stage(ctx.store, 3, complete={0, 1})  # day 2 still running
    relaxed, strict = ctx.gates("relaxed"), ctx.gates("strict")
    assert relaxed["completeness"].passed and relaxed["completeness"].value == 1.0
    assert not strict["completeness"].passed
    assert strict["completeness"].value == pytest.approx(2 / 3)
    # A COMPLETE day whose checkpoint disagrees with what is staged fails both.
    ctx.store.command(
        f"ALTER TABLE {ctx.store.database}.erc1155_transfers_staging DELETE "
        "WHERE day_idx = 1 AND batch_index = 0 SETTINGS mutations_sync = 2"
    )
    checks = {c.result.name: c for c in run_gate_checks(ctx.store, ctx.cfg, "relaxed")}
    assert not checks["completeness"].result.passed
    assert "day 1: erc1155 checkpoint" in checks["completeness"].detail


def test_duplicates_gate_sees_what_final_cannot_fix(ctx: Ctx) -> None:
    ctx.reset()
    h = basic_history()
    h.stage(ctx.store, 3)
    db = ctx.store.database
    # Same keys inserted again (a redo after a crash): FINAL collapses them, the gate passes and
    # only reports rows waiting for a merge.
    ctx.store.command(
        f"INSERT INTO {db}.erc20_transfers_staging SELECT * FROM {db}.erc20_transfers_staging"
    )
    checks = {c.result.name: c for c in run_gate_checks(ctx.store, ctx.cfg, "strict")}
    assert checks["duplicates"].result.passed
    assert "waiting for a merge" in checks["duplicates"].detail
    assert all(c.result.passed for c in checks.values())
    # The same tx staged under a second block (new keys): FINAL keeps both, the gate fails.
    ctx.store.command(
        f"INSERT INTO {db}.erc20_transfers_staging (tx_hash, log_index, block_number, "
        "block_timestamp, day_idx, token, from_address, to_address, value) "
        "SELECT tx_hash, log_index + 100, block_number + 1, block_timestamp, day_idx, token, "
        f"from_address, to_address, value FROM {db}.erc20_transfers_staging FINAL LIMIT 1"
    )
    dup = {c.result.name: c for c in run_gate_checks(ctx.store, ctx.cfg, "strict")}["duplicates"]
    assert not dup.result.passed and dup.result.value >= 2
    assert "erc20_transfers_staging: 2 rows of txs staged under two blocks" in dup.detail


@pytest.mark.parametrize(
    ("payouts", "win", "problem"),
    [
        ([0, 1], 1, ""),
        ([0, 1], 2, "one-hot but winning_index out of range"),
        ([1, 0], 1, "winning_index does not name the paid outcome"),
        ([0, 0], -1, "payouts sum to 0"),
        ([1, 1], 0, "not one-hot but winning_index != -1"),
        ([0, 1, 0], 1, "registered as a binary pair but outcome count != 2"),
    ],
)
def test_resolution_sanity(ctx: Ctx, payouts: list[int], win: int, problem: str) -> None:
    ctx.reset()
    h = History()
    h.market(C1, 2)
    h.register(0, C1)
    h.resolve(0, C1, payouts, win=win)
    h.stage(ctx.store, 3)
    checks = {c.result.name: c for c in run_gate_checks(ctx.store, ctx.cfg, "strict")}
    sanity = checks["resolution_sanity"]
    assert sanity.result.passed == (not problem)
    assert problem in sanity.detail


def test_resolved_twice_and_bad_registration(ctx: Ctx) -> None:
    ctx.reset()
    h = History()
    h.market(C1, 2)
    h.market(C2, 2)
    h.register(0, C1)
    h.register(0, C2, ids=[h.ids[C2][0], h.ids[C1][1]])  # a token of another market
    h.resolve(0, C1, [1, 0])
    h.resolve(1, C1, [0, 1])
    h.stage(ctx.store, 3)
    checks = {c.result.name: c for c in run_gate_checks(ctx.store, ctx.cfg, "strict")}
    assert "resolved more than once" in checks["resolution_sanity"].detail
    mapping = checks["token_mapping"]
    assert not mapping.result.passed and mapping.result.value == 0.5


def test_conservation_error_formula() -> None:
    supply = [
        {"condition_id": "a", "outcome_index": 0, "supply": 1000, "minted": 1000},
        {"condition_id": "a", "outcome_index": 1, "supply": 1000, "minted": 1000},
        {"condition_id": "b", "outcome_index": 0, "supply": 1000, "minted": 1000},
        {"condition_id": "b", "outcome_index": 1, "supply": 970, "minted": 970},
    ]
    locked = [
        {"condition_id": "a", "locked": 1000, "ambiguous_txs": 0},
        {"condition_id": "b", "locked": 1000, "ambiguous_txs": 0},
        {"condition_id": "c", "locked": 500, "ambiguous_txs": 0},  # cash in, outcome 2 missing
        {"condition_id": "", "locked": 7, "ambiguous_txs": 1},
    ]
    errors, ambiguous = conservation_errors(supply, locked, {"a": 2, "b": 2, "c": 3})
    assert errors == {"a": 0.0, "b": pytest.approx(0.03), "c": 1.0}
    assert ambiguous == 1


def test_results_are_recorded_and_cli_exit_codes(ctx: Ctx) -> None:
    ctx.reset()
    basic_history().stage(ctx.store, 3)
    assert hard_gate(ctx.store, ctx.cfg)
    results = run_gates(ctx.store, ctx.cfg, "relaxed")
    assert [r.name for r in results] == list(GATE_NAMES)
    rows = ctx.q("SELECT mode, count(), sum(passed) FROM {db}.gate_results GROUP BY mode")
    assert sorted((m, int(n), int(p)) for m, n, p in rows) == [
        ("relaxed", len(GATE_NAMES), len(GATE_NAMES)),
        ("strict", len(GATE_NAMES), len(GATE_NAMES)),
    ]
    log = (ctx.cfg.backfill.data_dir / "gates.log").read_text().splitlines()
    assert len(log) == 2 * (len(GATE_NAMES) + 1)
    assert any(" strict run=" in line and " completeness PASS value=1 " in line for line in log)
    assert log[-1].endswith(f"ALL PASS ({len(GATE_NAMES)}/{len(GATE_NAMES)} passed)")

    # The CLI finds the local store server this process runs on the data dir and uses it
    # while this process keeps its own connection open.
    try:
        cmd = [sys.executable, "-m", "engine.cli"]
        config = str(ctx.cfg.path)
        ok = subprocess.run(
            [*cmd, "hard-gate", "--config", config],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "hard gate: PASSED" in ok.stdout and "PASS  win_rate" in ok.stdout
        done = subprocess.run(
            [*cmd, "rebuild", "--config", config],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 and "SWAPPED" in done.stdout, done.stdout + done.stderr
        # Strict fails once the band excludes the history's win rate (0.5): exit 1, no swap.
        gates_config(ctx.folder, days=3, band=(0.1, 0.2))
        bad = subprocess.run(
            [*cmd, "hard-gate", "--config", config],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 1 and "FAIL  win_rate" in bad.stdout, bad.stdout + bad.stderr
        assert "hard gate: FAILED (win_rate)" in bad.stdout
        kept = subprocess.run(
            [*cmd, "rebuild", "--config", config],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert kept.returncode == 1 and "NOT SWAPPED: hard gate failed: win_rate" in kept.stdout
    finally:
        gates_config(ctx.folder, days=3)
    assert ctx.store.query("SELECT 1") == [(1,)]


def test_swap_falls_back_to_rename_on_an_ordinary_database(ctx: Ctx) -> None:
    """EXCHANGE TABLES needs Atomic; on Ordinary the swap uses RENAME and still swaps everything."""
    live_db = ctx.store.database
    ctx.store.command("SET allow_deprecated_database_ordinary = 1")
    ctx.store.command("DROP DATABASE IF EXISTS ordinary_db SYNC")
    ctx.store.command("CREATE DATABASE ordinary_db ENGINE = Ordinary")
    ctx.store.database = "ordinary_db"
    try:
        assert ctx.q("SELECT engine FROM system.databases WHERE name = '{db}'") == [("Ordinary",)]
        ctx.store.ensure_schema()
        basic_history().stage(ctx.store, 3)
        first = rebuild(ctx.store, ctx.cfg)
        second = rebuild(ctx.store, ctx.cfg)
        assert first.swapped and second.swapped, (first.reason, second.reason)
        assert "swapped with RENAME" in second.reason
        log = (ctx.cfg.backfill.data_dir / "on-complete.log").read_text()
        assert f"run={second.run_id}: EXCHANGE TABLES not supported by database ordinary_db" in log
        assert len(pnl_of(ctx)) == 6
        names = {r[0] for r in ctx.q("SELECT name FROM system.tables WHERE database = '{db}'")}
        assert "wallet_market_pnl_prev" in names and not any(n.endswith("_swap") for n in names)
    finally:
        ctx.store.database = live_db
        ctx.store.command("DROP DATABASE IF EXISTS ordinary_db SYNC")
