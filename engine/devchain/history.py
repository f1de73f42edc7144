"""Deterministic synthetic chain history and its exact ground truth (pure Python, seed-driven).

`generate(spec)` lays out every block (timestamp, UTC day, transactions, logs) of a chain spanning
`spec.days` UTC days from `spec.start_date`; `ground_truth(history, tx_hashes)` turns it, once the
transaction hashes are known (build.py mines it into anvil), into the JSON ground truth.

Chain shape
* genesis at start_date - 1 day 00:00:00 UTC; then per day a grid of `blocks_per_day` blocks
  (interval 86400 // blocks_per_day, a random phase per day) plus, on some days, a block at exactly
  00:00:00 and one at 23:59:59 that carry captured logs; about 1 day in 15 has no block at all
  (never day 0). After the last day, one more day and 256 blocks of empty blocks, so every day is
  final under any confirmation depth up to 256.
* Transactions of a day are spread over a few of its blocks in chronological order.

Logs
* ERC20 `Transfer` at the token addresses: mostly with a counterparty on one side (captured), some
  between two plain wallets (not captured), and one ERC721-shaped `Transfer` (4 topics, no data)
  with a counterparty on day 0 (skipped by the product). Values up to 2^240 on day 0 (per-day sums
  stay below 2^256 so `sum(UInt256)` cannot wrap).
* Market activity on ConditionalTokens (`erc1155[0]`, "CTF") with USDC (`collateral`):
  conditions are created over time (mostly binary; binary ones registered at an exchange with two
  `TokenRegistered` logs); trades are one transaction with a USDC leg and a `TransferSingle` leg
  through the exchange (operator = exchange); the exchange gets its inventory by splitting;
  wallets split (USDC -> CTF + `TransferBatch` mint), merge (`TransferBatch` burn + USDC back),
  gift tokens (`TransferSingle` wallet -> wallet) and redeem after `ConditionResolution`
  (`TransferBatch` burn of held ids + USDC payout when > 0). No activity on a market after its
  resolution except redemptions. Balances never go negative; tokens are conserved.
* Transactions that touch several markets or wallets (about 12% of market slots, plus redemptions
  due together), each event tagged with its shape in `batch` (None for one-event txs):
  `two_markets` (a wallet's buy in M and sale in N, two fills in one tx), `split_sell_other` (split
  M, sell some of M's outcome 0, buy N), `multi_fill` (a taker's buy filled by 2-3 makers through
  the exchange, in the log order of CTF Exchange `matchOrders`), `batched_redeem` (one actor
  redeems several markets: per market a `TransferSingle` burn of each held id, then the payout when
  > 0, as `redeemPositions` emits). The events of one tx share its `tx_hash`.
* Amounts: token and USDC amounts use 6-decimal base units and are multiples of 10^4 (0.01), prices
  are whole cents, so USDC = cents * amount / 100 and every payout (denominator 1 or 2) is exact.
* Resolutions: mostly one-hot, some [1, 1]; the winner is chosen (mostly greedily) so that the share
  of resolved (wallet, market) positions with positive PnL tracks 45 %.

PnL convention (ground truth `markets.positions`): for an actor and a condition,
usdc_net = USDC received - USDC paid in the condition's transactions (trades, splits, merges,
redemptions); pnl_units = usdc_net + sum_i balance_i * payout_i / sum(payout) over the tokens still
held at the end, for resolved conditions (null when unresolved).
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from eth_abi import encode as abi_encode
from eth_hash.auto import keccak

from engine.analytics.positions import condition_id, outcome_token_ids
from engine.constants import (
    CONDITION_RESOLUTION_TOPIC,
    SECONDS_PER_DAY,
    TOKEN_REGISTERED_TOPIC,
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
    ZERO_ADDRESS,
)

# Bump when the generated history changes, so cached chains of older generators are not reused.
GENERATOR_VERSION = 6
# UMA CTF adapter on Polygon: the oracle of Polymarket's conditions.
ORACLE = "0x6a9d222616c90fca5754cd1333cfd9b7fb6a4f74"
UNIT = 10**4  # every token/USDC amount is a multiple of 0.01 (6-decimals base units)
TAIL_EXTRA_BLOCKS = 256
WIN_RATE_TARGET = 0.45


@dataclass(frozen=True)
class DevchainSpec:
    """Everything the synthetic chain depends on; `key()` names its cache folder."""

    start_date: dt.date
    days: int
    seed: int
    blocks_per_day: int
    wallets: int
    transfers_per_day: int
    markets_per_day: float
    erc20_tokens: tuple[str, ...]
    erc20_counterparties: tuple[str, ...]
    erc1155: tuple[str, ...]
    exchanges: tuple[str, ...]
    collateral: str

    def __post_init__(self) -> None:
        lower = {
            "erc20_tokens": tuple(a.lower() for a in self.erc20_tokens),
            "erc20_counterparties": tuple(a.lower() for a in self.erc20_counterparties),
            "erc1155": tuple(a.lower() for a in self.erc1155),
            "exchanges": tuple(a.lower() for a in self.exchanges),
            "collateral": self.collateral.lower(),
        }
        for k, v in lower.items():
            object.__setattr__(self, k, v)
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if not 1 <= self.blocks_per_day <= SECONDS_PER_DAY // 3:
            raise ValueError(f"blocks_per_day must be in 1..{SECONDS_PER_DAY // 3}")
        if self.wallets < 2:
            raise ValueError("wallets must be >= 2")
        if not self.erc20_tokens or not self.erc1155:
            raise ValueError("need at least one erc20 token and one erc1155 contract")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start_date"] = self.start_date.isoformat()
        for k in ("erc20_tokens", "erc20_counterparties", "erc1155", "exchanges"):
            d[k] = list(d[k])
        return d

    def key(self) -> str:
        """Short stable hash of the spec and the generator version: the cache folder name."""
        body = json.dumps({"v": GENERATOR_VERSION, **self.as_dict()}, sort_keys=True)
        h = hashlib.sha256(body.encode()).hexdigest()[:12]
        return f"d{self.days}-s{self.seed}-{h}"

    @classmethod
    def from_config(
        cls, cfg: Any, days: int | None = None, seed: int | None = None
    ) -> DevchainSpec:
        """The spec an `engine.config.Config` describes (optionally other days / seed)."""
        c, d = cfg.contracts, cfg.devchain
        return cls(
            start_date=cfg.backfill.start_date,
            days=int(days if days is not None else cfg.backfill.days),
            seed=int(seed if seed is not None else d.seed),
            blocks_per_day=int(d.blocks_per_day),
            wallets=int(d.wallets),
            transfers_per_day=int(d.transfers_per_day),
            markets_per_day=float(d.markets_per_day),
            erc20_tokens=tuple(c.erc20_tokens),
            erc20_counterparties=tuple(c.erc20_counterparties),
            erc1155=tuple(c.erc1155),
            exchanges=tuple(c.exchanges),
            collateral=c.collateral,
        )

    def contract_addresses(self) -> list[str]:
        """Every address that gets the emitter code (tokens, CTF, exchanges, counterparties)."""
        out: list[str] = []
        for a in (
            *self.erc20_tokens,
            self.collateral,
            *self.erc1155,
            *self.exchanges,
            *self.erc20_counterparties,
        ):
            if a not in out:
                out.append(a)
        return out


@dataclass
class Log:
    address: str
    topics: tuple[str, ...]
    data: bytes


@dataclass
class Tx:
    logs: list[Log]
    event: dict[str, Any] | None = None  # semantic market record (tx_hash filled in later)
    condition: int | None = None  # market index of a resolution / registration tx
    what: str = ""  # "resolution" | "registration" | "" (for ground truth bookkeeping)
    more: list[dict[str, Any]] = field(default_factory=list)  # further events of the same tx

    @property
    def events(self) -> list[dict[str, Any]]:
        return ([self.event] if self.event is not None else []) + self.more


@dataclass
class Block:
    ts: int
    day: int
    txs: list[Tx] = field(default_factory=list)
    boundary: str | None = None  # "midnight" | "last_second"


@dataclass
class Market:
    idx: int
    question_id: str
    outcome_count: int
    condition_id: str
    token_ids: list[int]
    exchange: str | None
    created_day: int
    resolve_day: int
    prices: list[int]  # cents per outcome
    forced_payout: list[int] | None = None
    payout: list[int] | None = None
    resolved_day: int | None = None
    resolution_tx: Tx | None = None
    registration_tx: Tx | None = None


@dataclass
class History:
    spec: DevchainSpec
    genesis_ts: int
    interval: int
    blocks: list[Block]
    markets: list[Market]
    wallets: list[str]
    empty_days: list[int]
    balances: dict[tuple[str, int], list[int]]
    usdc_net: dict[tuple[str, int], int]
    steer: dict[str, int]

    @property
    def tx_count(self) -> int:
        return sum(len(b.txs) for b in self.blocks)

    @property
    def head_block(self) -> int:
        return len(self.blocks)


def day_start(start: dt.date, day: int) -> int:
    return calendar.timegm(start.timetuple()) + day * SECONDS_PER_DAY


def _t(x: int | str) -> str:
    """A topic: int or address/bytes32 hex -> 0x + 64 lowercase hex digits."""
    if isinstance(x, str):
        return "0x" + x.removeprefix("0x").lower().rjust(64, "0")
    return "0x" + x.to_bytes(32, "big").hex()


def erc20_log(token: str, frm: str, to: str, value: int) -> Log:
    return Log(token, (TRANSFER_TOPIC, _t(frm), _t(to)), value.to_bytes(32, "big"))


def erc721_log(token: str, frm: str, to: str, token_id: int) -> Log:
    return Log(token, (TRANSFER_TOPIC, _t(frm), _t(to), _t(token_id)), b"")


def single_log(ctf: str, op: str, frm: str, to: str, token_id: int, value: int) -> Log:
    data = token_id.to_bytes(32, "big") + value.to_bytes(32, "big")
    return Log(ctf, (TRANSFER_SINGLE_TOPIC, _t(op), _t(frm), _t(to)), data)


def batch_log(ctf: str, op: str, frm: str, to: str, ids: list[int], values: list[int]) -> Log:
    data = abi_encode(["uint256[]", "uint256[]"], [ids, values])
    return Log(ctf, (TRANSFER_BATCH_TOPIC, _t(op), _t(frm), _t(to)), data)


def resolution_log(ctf: str, m: Market, payout: list[int]) -> Log:
    data = abi_encode(["uint256", "uint256[]"], [m.outcome_count, payout])
    topics = (CONDITION_RESOLUTION_TOPIC, m.condition_id, _t(ORACLE), m.question_id)
    return Log(ctf, topics, data)


def registered_log(exchange: str, t0: int, t1: int, cond: str) -> Log:
    return Log(exchange, (TOKEN_REGISTERED_TOPIC, _t(t0), _t(t1), cond), b"")


def _address(tag: bytes, seed: int, i: int) -> str:
    return "0x" + keccak(tag + seed.to_bytes(8, "big") + i.to_bytes(4, "big"))[12:].hex()


class _Generator:
    def __init__(self, spec: DevchainSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.wallets = [_address(b"devchain-wallet", spec.seed, i) for i in range(spec.wallets)]
        self.ctf = spec.erc1155[0]
        self.usdc = spec.collateral
        self.cps = spec.erc20_counterparties
        market_side = set(spec.erc1155) | set(spec.exchanges)
        self.neutral_cps = [c for c in self.cps if c not in market_side] or list(self.cps)
        others = [t for t in spec.erc20_tokens if t != self.usdc]
        self.big_token = others[0] if others else spec.erc20_tokens[0]
        self.markets: list[Market] = []
        self.open: list[Market] = []
        self.to_resolve: list[Market] = []
        self.redemptions: list[tuple[int, str, Market]] = []
        self.bal: dict[tuple[str, int], list[int]] = {}
        self.usdc_net: dict[tuple[str, int], int] = {}
        self.steer = {"positions": 0, "winning": 0}
        self.day = 0
        self.same_day_redeems: list[tuple[str, Market]] = []

    # ---- layout -------------------------------------------------------------------------
    def run(self) -> History:
        s, rng = self.spec, self.rng
        interval = SECONDS_PER_DAY // s.blocks_per_day
        empty = {d for d in range(1, s.days) if rng.random() < 1 / 15}
        if s.days >= 3 and not empty:
            empty.add(rng.randrange(1, s.days - 1))
        nonempty = [d for d in range(s.days) if d not in empty]
        midnight = {d for d in nonempty if rng.random() < 0.08} | {0}
        last_second = {d for d in nonempty if rng.random() < 0.08} | {0, nonempty[-1]}
        after0 = [d for d in nonempty if d > 0]
        if after0:
            midnight.add(after0[0])
        blocks: list[Block] = []
        first_active = True
        for d in range(s.days):
            self.day = d
            if d in empty:
                continue
            txs = self._day_txs(d, first_active, d in midnight, d in last_second)
            first_active = False
            blocks += self._day_blocks(d, txs, interval, d in midnight, d in last_second)
        # Tail: one more day and TAIL_EXTRA_BLOCKS of empty blocks after the last day.
        t0 = day_start(s.start_date, s.days) + rng.randrange(1, interval - 1 if interval > 2 else 2)
        for k in range(s.blocks_per_day + TAIL_EXTRA_BLOCKS):
            ts = t0 + k * interval
            blocks.append(Block(ts, (ts - day_start(s.start_date, 0)) // SECONDS_PER_DAY))
        return History(
            spec=s,
            genesis_ts=day_start(s.start_date, -1),
            interval=interval,
            blocks=blocks,
            markets=self.markets,
            wallets=self.wallets,
            empty_days=sorted(empty),
            balances=self.bal,
            usdc_net=self.usdc_net,
            steer=self.steer,
        )

    def _day_blocks(
        self, d: int, txs: list[Tx], interval: int, midnight: bool, last_second: bool
    ) -> list[Block]:
        s, rng = self.spec, self.rng
        ds = day_start(s.start_date, d)
        phase = rng.randrange(1, interval - 1) if interval > 2 else 1
        grid = [Block(ds + phase + k * interval, d) for k in range(s.blocks_per_day)]
        special: list[Block] = []
        if midnight and txs:
            special.append(Block(ds, d, boundary="midnight"))
        if last_second and len(txs) > len(special):
            special.append(Block(ds + SECONDS_PER_DAY - 1, d, boundary="last_second"))
        want = max(1, math.ceil(len(txs) / 4)) - len(special)
        n_grid = max(0, min(s.blocks_per_day, want, len(txs) - len(special)))
        active_idx = sorted(rng.sample(range(s.blocks_per_day), n_grid))
        blocks = sorted(grid + special, key=lambda b: b.ts)
        active = sorted(special + [grid[i] for i in active_idx], key=lambda b: b.ts)
        if active:
            cuts = sorted(rng.sample(range(1, len(txs)), len(active) - 1))
            bounds = [0, *cuts, len(txs)]
            for b, lo, hi in zip(active, bounds, bounds[1:], strict=False):
                b.txs = txs[lo:hi]
        return blocks

    # ---- one day's transactions -----------------------------------------------------------
    def _day_txs(self, d: int, first: bool, midnight: bool, last_second: bool) -> list[Tx]:
        s, rng = self.spec, self.rng
        txs: list[Tx] = []
        if midnight:
            txs.append(self._plain(captured=True))
        # New markets (the first active day always opens three: binary, binary [1,1], 3-way).
        n_new = int(s.markets_per_day) + (rng.random() < s.markets_per_day % 1)
        specs: list[tuple[int, list[int] | None, int | None]] = []
        if first and s.markets_per_day > 0:
            specs = [(2, None, 1), (2, [1, 1], 2), (3, None, 2)]
        for _ in range(n_new):
            n = 2 if rng.random() < 0.85 else rng.randint(3, 5)
            forced = [1, 1] if n == 2 and rng.random() < 0.08 else None
            specs.append((n, forced, None))
        for n, forced, life in specs:
            m = self._new_market(d, n, forced, life)
            if m.registration_tx is not None:
                txs.append(m.registration_tx)
        # Slots: plain transfers, market events, resolutions due, redemptions due.
        n_plain = round(s.transfers_per_day * rng.uniform(0.8, 1.2))
        n_mkt = round(s.transfers_per_day * 0.35 * rng.uniform(0.8, 1.2)) if self.open else 0
        slots: list[Any] = ["plain"] * n_plain + ["mkt"] * n_mkt
        due = [m for m in self.to_resolve if m.resolve_day <= d]
        slots += [("resolve", m) for m in due]
        self.to_resolve = [m for m in self.to_resolve if m.resolve_day > d]
        ready = [r for r in self.redemptions if r[0] <= d]
        self.redemptions = [r for r in self.redemptions if r[0] > d]
        slots += [("redeem", actor, ms) for actor, ms in _by_actor([(a, m) for _, a, m in ready])]
        if first:
            slots += ["erc721", "huge", "big64"]
        rng.shuffle(slots)
        self.same_day_redeems = []
        for slot in slots:
            if slot == "plain":
                txs.append(self._plain())
            elif slot == "mkt":
                txs += self._market_event()
            elif slot == "erc721":
                txs.append(self._erc721())
            elif slot == "huge":
                txs.append(self._plain(captured=True, value=rng.randint(2**200 + 1, 2**240)))
            elif slot == "big64":
                txs.append(self._plain(captured=True, value=rng.randint(2**64, 2**100)))
            elif slot[0] == "resolve":
                txs.append(self._resolve(slot[1]))
            else:
                tx = self._redeem_all(slot[1], slot[2])
                if tx is not None:
                    txs.append(tx)
        for actor, ms in _by_actor(self.same_day_redeems):  # after every resolution of the day
            tx = self._redeem_all(actor, ms)
            if tx is not None:
                txs.append(tx)
        if last_second:
            txs.append(self._plain(captured=True))
        for m in self.open:  # daily price drift
            self._drift(m)
        return txs

    # ---- plain ERC20 ---------------------------------------------------------------------
    def _value(self) -> int:
        rng = self.rng
        r = rng.random()
        if r < 0.01:
            return rng.randint(2**64, 2**100)
        if r < 0.03:
            return rng.randint(2**32, 2**64 - 1)
        return rng.randint(1, 10**6) * rng.choice((1, 10**2, 10**4))

    def _plain(self, captured: bool = False, value: int | None = None) -> Tx:
        rng, s = self.rng, self.spec
        token = self.usdc if rng.random() < 0.6 else rng.choice(s.erc20_tokens)
        if value is not None and value >= 2**64:
            token = self.big_token
        v = self._value() if value is None else value
        a, b = rng.sample(self.wallets, 2)
        if self.cps and not captured and rng.random() < 0.1:
            return Tx([erc20_log(token, a, b, v)])  # between two plain wallets: not captured
        if self.cps:
            cp = rng.choice(self.neutral_cps if token == self.usdc else list(self.cps))
            a, b = (cp, a) if rng.random() < 0.5 else (a, cp)
        return Tx([erc20_log(token, a, b, v)])

    def _erc721(self) -> Tx:
        cp = self.rng.choice(self.cps) if self.cps else self.wallets[1]
        return Tx([erc721_log(self.spec.erc20_tokens[0], cp, self.wallets[0], 7)])

    # ---- markets -------------------------------------------------------------------------
    def _new_market(self, d: int, n: int, forced: list[int] | None, life: int | None) -> Market:
        rng, s = self.rng, self.spec
        idx = len(self.markets)
        qid = (
            "0x"
            + keccak(
                b"devchain-question" + s.seed.to_bytes(8, "big") + idx.to_bytes(4, "big")
            ).hex()
        )
        cond = condition_id(ORACLE, qid, n)
        ids = outcome_token_ids(self.usdc, cond, n)
        max_life = max(1, min(45, s.days // 3))
        resolve_day = d + (life if life is not None else rng.randint(1, max_life))
        if n == 2:
            p0 = rng.randint(10, 90)
            prices = [p0, 100 - p0]
        else:
            w = [rng.random() + 0.1 for _ in range(n)]
            prices = [max(1, min(97, round(100 * x / sum(w)))) for x in w]
        exchange = None
        if s.exchanges:
            exchange = s.exchanges[0] if n == 2 else s.exchanges[1 % len(s.exchanges)]
        m = Market(idx, qid, n, cond, ids, exchange, d, resolve_day, prices, forced)
        if n == 2 and exchange is not None:
            m.registration_tx = Tx(
                [
                    registered_log(exchange, ids[0], ids[1], cond),
                    registered_log(exchange, ids[1], ids[0], cond),
                ],
                condition=idx,
                what="registration",
            )
        self.markets.append(m)
        self.open.append(m)
        if resolve_day < s.days:
            self.to_resolve.append(m)
        return m

    def _drift(self, m: Market) -> None:
        rng = self.rng
        if m.outcome_count == 2:
            p0 = min(98, max(2, m.prices[0] + rng.randint(-6, 6)))
            m.prices = [p0, 100 - p0]
        else:
            m.prices = [min(97, max(1, p + rng.randint(-3, 3))) for p in m.prices]

    def _balance(self, actor: str, m: Market) -> list[int]:
        key = (actor, m.idx)
        if key not in self.bal:
            self.bal[key] = [0] * m.outcome_count
            self.usdc_net[key] = 0
        return self.bal[key]

    def _record(
        self,
        kind: str,
        wallet: str,
        counterparty: str,
        m: Market,
        *,
        outcome: int | None = None,
        side: str | None = None,
        token_deltas: list[int],
        usdc_delta: int,
    ) -> dict[str, Any]:
        """A semantic market event; deltas are from `wallet`'s point of view."""
        bal = self._balance(wallet, m)
        for i, t in enumerate(token_deltas):
            bal[i] += t
            if bal[i] < 0:
                raise AssertionError(f"negative balance {wallet} market {m.idx}")
        self.usdc_net[(wallet, m.idx)] += usdc_delta
        if kind == "gift":
            rbal = self._balance(counterparty, m)
            for i, t in enumerate(token_deltas):
                rbal[i] -= t
        amounts = [abs(t) for t in token_deltas]
        return {
            "tx_hash": None,
            "day": self.day,
            "kind": kind,
            "wallet": wallet,
            "counterparty": counterparty,
            "condition_id": m.condition_id,
            "outcome_index": outcome,
            "side": side,
            "token_amount": (
                amounts[outcome]
                if outcome is not None
                else sum(amounts)
                if kind == "redeem"
                else max(amounts)
            ),
            "token_amounts": amounts,
            "usdc_amount": abs(usdc_delta),
            "token_deltas": token_deltas,
            "usdc_delta": usdc_delta,
            "batch": None,  # the shape of a transaction with several events (see _combine)
        }

    def _market_event(self) -> list[Tx]:
        rng = self.rng
        if not self.open:
            return []
        c = rng.random()  # now and then a transaction that touches several markets or wallets
        combo = (
            self._two_markets()
            if c < 0.04
            else self._split_sell_other()
            if c < 0.08
            else self._multi_fill()
            if c < 0.12
            else []
        )
        if combo:
            return combo
        m = rng.choice(self.open)
        k = rng.random()
        has_ex = m.exchange is not None
        if k < 0.35 and has_ex:
            return self._buy(m)
        if k < 0.62 and has_ex:
            return self._sell(m) or self._buy(m)
        if k < 0.74 or not has_ex:
            return [self._split(rng.choice(self.wallets), m, self._amount(100, 100_000))]
        if k < 0.84:
            return self._merge(m) or self._buy(m)
        if k < 0.92:
            return self._gift(m) or self._buy(m)
        return self._buy(m)

    def _amount(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi) * UNIT

    def _holders(self, m: Market, need_all: bool = False) -> list[str]:
        out = []
        for w in self.wallets:
            b = self.bal.get((w, m.idx))
            if b and (min(b) > 0 if need_all else max(b) > 0):
                out.append(w)
        return out

    def _part(self, have: int) -> int:
        """A random multiple of UNIT in [UNIT, have] (have is a multiple of UNIT)."""
        units = have // UNIT
        return max(1, round(units * self.rng.uniform(0.2, 1.0))) * UNIT

    def _split(self, actor: str, m: Market, amount: int) -> Tx:
        ev = self._record(
            "split",
            actor,
            self.ctf,
            m,
            token_deltas=[amount] * m.outcome_count,
            usdc_delta=-amount,
        )
        logs = [
            erc20_log(self.usdc, actor, self.ctf, amount),
            batch_log(
                self.ctf, actor, ZERO_ADDRESS, actor, m.token_ids, [amount] * m.outcome_count
            ),
        ]
        return Tx(logs, ev)

    def _price(self, m: Market, i: int) -> int:
        return min(99, max(1, m.prices[i] + self.rng.randint(-3, 3)))

    def _buy(self, m: Market, w: str | None = None) -> list[Tx]:
        rng = self.rng
        assert m.exchange is not None
        ex = m.exchange
        w = w or rng.choice(self.wallets)
        i = rng.randrange(m.outcome_count)
        amount = self._amount(100, 200_000)
        usdc = self._price(m, i) * amount // 100
        out: list[Tx] = []
        inv = self._balance(ex, m)[i]
        if inv < amount:
            out.append(self._split(ex, m, amount - inv + self._amount(0, 50_000)))
        deltas = [0] * m.outcome_count
        deltas[i] = amount
        ev = self._record(
            "trade", w, ex, m, outcome=i, side="BUY", token_deltas=deltas, usdc_delta=-usdc
        )
        self._balance(ex, m)[i] -= amount
        self.usdc_net[(ex, m.idx)] += usdc
        logs = [
            erc20_log(self.usdc, w, ex, usdc),
            single_log(self.ctf, ex, ex, w, m.token_ids[i], amount),
        ]
        out.append(Tx(logs, ev))
        return out

    def _sell(self, m: Market, w: str | None = None, i: int | None = None) -> list[Tx]:
        rng = self.rng
        assert m.exchange is not None
        ex = m.exchange
        holders = self._holders(m)
        if not holders:
            return []
        w = w or rng.choice(holders)
        b = self.bal[(w, m.idx)]
        if i is None:
            i = rng.choice([j for j in range(m.outcome_count) if b[j] > 0])
        amount = self._part(b[i])
        usdc = self._price(m, i) * amount // 100
        deltas = [0] * m.outcome_count
        deltas[i] = -amount
        ev = self._record(
            "trade", w, ex, m, outcome=i, side="SELL", token_deltas=deltas, usdc_delta=usdc
        )
        self._balance(ex, m)[i] += amount
        self.usdc_net[(ex, m.idx)] -= usdc
        logs = [
            erc20_log(self.usdc, ex, w, usdc),
            single_log(self.ctf, ex, w, ex, m.token_ids[i], amount),
        ]
        return [Tx(logs, ev)]

    # ---- transactions that touch several markets or several wallets -------------------------
    def _combine(self, parts: list[Tx], shape: str) -> Tx:
        """One transaction doing what `parts` do, in that order (logs and events concatenated)."""
        logs = [lg for p in parts for lg in p.logs]
        events = [{**ev, "batch": shape} for p in parts for ev in p.events]
        return Tx(logs, events[0], more=events[1:])

    def _exchange_markets(self) -> list[Market]:
        return [m for m in self.open if m.exchange is not None]

    def _two_markets(self) -> list[Tx]:
        """A wallet buys in one market and sells in another, in one transaction (two fills)."""
        rng = self.rng
        ms = self._exchange_markets()
        sellable = [m for m in ms if self._holders(m)]
        if len(ms) < 2 or not sellable:
            return []
        n = rng.choice(sellable)
        w = rng.choice(self._holders(n))
        m = rng.choice([x for x in ms if x is not n])
        buy = self._buy(m, w)
        fills = [buy[-1], *self._sell(n, w)]
        if rng.random() < 0.5:
            fills.reverse()
        return [*buy[:-1], self._combine(fills, "two_markets")]

    def _split_sell_other(self) -> list[Tx]:
        """A wallet splits market M, sells some of M's outcome 0 and buys market N, in one tx."""
        rng = self.rng
        ms = self._exchange_markets()
        if len(ms) < 2:
            return []
        m, n = rng.sample(ms, 2)
        w = rng.choice(self.wallets)
        split = self._split(w, m, self._amount(100, 100_000))
        sell = self._sell(m, w, 0)
        buy = self._buy(n, w)
        return [*buy[:-1], self._combine([split, *sell, buy[-1]], "split_sell_other")]

    def _multi_fill(self) -> list[Tx]:
        """A taker's buy filled by two or three makers' sells at once, through the exchange.

        The layout of CTF Exchange `matchOrders`: the taker pays the exchange, each maker gives
        the exchange its tokens and is paid, then the exchange hands the taker all the tokens.
        """
        rng = self.rng
        options = []
        for m in self._exchange_markets():
            for i in range(m.outcome_count):
                hs = [w for w in self._holders(m) if self.bal[(w, m.idx)][i] > 0]
                if len(hs) >= 2:
                    options.append((m, i, hs))
        if not options:
            return []
        m, i, hs = rng.choice(options)
        assert m.exchange is not None
        ex = m.exchange
        makers = rng.sample(hs, min(len(hs), rng.choice((2, 3))))
        taker = rng.choice([w for w in self.wallets if w not in makers])
        price = self._price(m, i)
        fills = [(mk, self._part(self.bal[(mk, m.idx)][i])) for mk in makers]
        total_tokens = sum(a for _, a in fills)
        total_usdc = sum(price * a // 100 for _, a in fills)
        logs = [erc20_log(self.usdc, taker, ex, total_usdc)]
        events = []
        for mk, a in fills:
            deltas = [0] * m.outcome_count
            deltas[i] = -a
            events.append(
                self._record(
                    "trade", mk, ex, m, outcome=i, side="SELL", token_deltas=deltas,
                    usdc_delta=price * a // 100,
                )
            )  # fmt: skip
            logs.append(single_log(self.ctf, ex, mk, ex, m.token_ids[i], a))
            logs.append(erc20_log(self.usdc, ex, mk, price * a // 100))
        deltas = [0] * m.outcome_count
        deltas[i] = total_tokens
        events.insert(
            0,
            self._record(
                "trade", taker, ex, m, outcome=i, side="BUY", token_deltas=deltas,
                usdc_delta=-total_usdc,
            ),
        )  # fmt: skip
        logs.append(single_log(self.ctf, ex, ex, taker, m.token_ids[i], total_tokens))
        events = [{**ev, "batch": "multi_fill"} for ev in events]
        return [Tx(logs, events[0], more=events[1:])]

    def _merge(self, m: Market) -> list[Tx]:
        holders = self._holders(m, need_all=True)
        if not holders:
            return []
        w = self.rng.choice(holders)
        k = self._part(min(self.bal[(w, m.idx)]))
        n = m.outcome_count
        ev = self._record("merge", w, self.ctf, m, token_deltas=[-k] * n, usdc_delta=k)
        logs = [
            batch_log(self.ctf, w, w, ZERO_ADDRESS, m.token_ids, [k] * n),
            erc20_log(self.usdc, self.ctf, w, k),
        ]
        return [Tx(logs, ev)]

    def _gift(self, m: Market) -> list[Tx]:
        rng = self.rng
        holders = self._holders(m)
        if not holders:
            return []
        w = rng.choice(holders)
        to = rng.choice([x for x in self.wallets if x != w])
        b = self.bal[(w, m.idx)]
        i = rng.choice([j for j in range(m.outcome_count) if b[j] > 0])
        amount = self._part(b[i])
        deltas = [0] * m.outcome_count
        deltas[i] = -amount
        ev = self._record("gift", w, to, m, outcome=i, token_deltas=deltas, usdc_delta=0)
        return [Tx([single_log(self.ctf, w, w, to, m.token_ids[i], amount)], ev)]

    # ---- resolution and redemption ----------------------------------------------------------
    def _pnl(self, actor: str, m: Market, payout: list[int]) -> int:
        b = self.bal[(actor, m.idx)]
        den = sum(payout)
        return self.usdc_net[(actor, m.idx)] + sum(
            x * p // den for x, p in zip(b, payout, strict=True)
        )

    def _resolve(self, m: Market) -> Tx:
        rng = self.rng
        positions = [w for w in self.wallets if (w, m.idx) in self.bal]
        if m.forced_payout is not None:
            payout = m.forced_payout
        elif m.outcome_count == 2 and rng.random() < 0.08:
            payout = [1, 1]
        else:
            cands = [[int(i == j) for j in range(m.outcome_count)] for i in range(m.outcome_count)]
            if rng.random() < 0.85 and positions:
                n0, w0 = self.steer["positions"], self.steer["winning"]

                def miss(p: list[int]) -> float:
                    wins = sum(self._pnl(w, m, p) > 0 for w in positions)
                    return abs((w0 + wins) / (n0 + len(positions)) - WIN_RATE_TARGET)

                payout = min(cands, key=miss)
            else:
                payout = rng.choice(cands)
        self.steer["positions"] += len(positions)
        self.steer["winning"] += sum(self._pnl(w, m, payout) > 0 for w in positions)
        m.payout = payout
        m.resolved_day = self.day
        self.open.remove(m)
        tx = Tx([resolution_log(self.ctf, m, payout)], condition=m.idx, what="resolution")
        m.resolution_tx = tx
        actors = [*self.wallets, *([m.exchange] if m.exchange else [])]
        for a in actors:
            b = self.bal.get((a, m.idx))
            if b and max(b) > 0 and (a == m.exchange or rng.random() < 0.97):
                pending = [day for day, actor, _ in self.redemptions if actor == a]
                if pending and rng.random() < 0.6:
                    delay = pending[0] - self.day  # redeem together with another market
                else:
                    delay = rng.randint(0, 4)
                if delay == 0:
                    self.same_day_redeems.append((a, m))
                else:
                    self.redemptions.append((self.day + delay, a, m))
        return tx

    def _redeem_all(self, actor: str, ms: list[Market]) -> Tx | None:
        """One redemption tx; several markets at once as a proxy wallet batches them: per market
        a TransferSingle burn of each held outcome, then the payout if > 0 (redeemPositions)."""
        ms = [m for m in ms if max(self.bal[(actor, m.idx)]) > 0]
        if len(ms) <= 1:
            return self._redeem(actor, ms[0]) if ms else None
        logs: list[Log] = []
        events = []
        for m in ms:
            assert m.payout is not None
            b = self.bal[(actor, m.idx)]
            held = [i for i in range(m.outcome_count) if b[i] > 0]
            den = sum(m.payout)
            payout = sum(b[i] * m.payout[i] // den for i in held)
            for i in held:
                logs.append(single_log(self.ctf, actor, actor, ZERO_ADDRESS, m.token_ids[i], b[i]))
            if payout > 0:
                logs.append(erc20_log(self.usdc, self.ctf, actor, payout))
            deltas = [-x for x in b]
            ev = self._record("redeem", actor, self.ctf, m, token_deltas=deltas, usdc_delta=payout)
            events.append({**ev, "batch": "batched_redeem"})
        return Tx(logs, events[0], more=events[1:])

    def _redeem(self, actor: str, m: Market) -> Tx | None:
        assert m.payout is not None
        b = self.bal[(actor, m.idx)]
        held = [i for i in range(m.outcome_count) if b[i] > 0]
        if not held:
            return None
        den = sum(m.payout)
        payout = sum(b[i] * m.payout[i] // den for i in held)
        deltas = [-b[i] for i in range(m.outcome_count)]
        ev = self._record("redeem", actor, self.ctf, m, token_deltas=deltas, usdc_delta=payout)
        logs = [
            batch_log(
                self.ctf,
                actor,
                actor,
                ZERO_ADDRESS,
                [m.token_ids[i] for i in held],
                [-deltas[i] for i in held],
            )
        ]
        if payout > 0:
            logs.append(erc20_log(self.usdc, self.ctf, actor, payout))
        return Tx(logs, ev)


def _by_actor(pairs: list[tuple[str, Market]]) -> list[tuple[str, list[Market]]]:
    """(actor, markets) in first-seen order: an actor's redemptions due together."""
    out: dict[str, list[Market]] = {}
    for actor, m in pairs:
        out.setdefault(actor, []).append(m)
    return list(out.items())


def generate(spec: DevchainSpec) -> History:
    """The full deterministic history for a spec (same spec -> identical history)."""
    return _Generator(spec).run()


# ---- ground truth ---------------------------------------------------------------------------


def _topic_addr(t: str) -> str:
    return "0x" + t[-40:]


def iter_logs(history: History, tx_hashes: list[str]):
    """(block_number, block, tx_hash, log_index, log, tx) for every log, in chain order."""
    k = 0
    for n, b in enumerate(history.blocks, start=1):
        li = 0
        for tx in b.txs:
            h = tx_hashes[k]
            k += 1
            for lg in tx.logs:
                yield n, b, h, li, lg, tx
                li += 1


def ground_truth(
    history: History, tx_hashes: list[str], extra: dict[str, Any] | None = None
) -> dict:
    """The ground-truth JSON document (see docs/INTERNALS.md) for a mined history."""
    from eth_abi import decode as abi_decode

    s = history.spec
    tokens, e1155, exch = set(s.erc20_tokens), set(s.erc1155), set(s.exchanges)
    cps = set(s.erc20_counterparties)
    per_day: dict[int, dict[str, Any]] = {
        d: {
            "erc20_count": 0,
            "erc20_value_sum": 0,
            "erc1155_count": 0,
            "erc1155_value_sum": 0,
            "blocks": 0,
            "from_block": None,
            "to_block": None,
            "resolutions": 0,
            "registrations": 0,
            "logs": 0,
        }
        for d in range(s.days)
    }
    for n, b in enumerate(history.blocks, start=1):
        if b.day < s.days:
            pd = per_day[b.day]
            pd["blocks"] += 1
            pd["from_block"] = pd["from_block"] or n
            pd["to_block"] = n
    erc20_keys: list[list[Any]] = []
    erc1155_keys: list[list[Any]] = []
    erc721 = non_cp = 0
    for _n, b, h, li, lg, _tx in iter_logs(history, tx_hashes):
        pd = per_day[b.day]
        pd["logs"] += 1
        t0 = lg.topics[0]
        if lg.address in tokens and t0 == TRANSFER_TOPIC:
            if len(lg.topics) == 4:
                erc721 += 1
            elif len(lg.topics) == 3 and len(lg.data) == 32:
                frm, to = _topic_addr(lg.topics[1]), _topic_addr(lg.topics[2])
                if not cps or frm in cps or to in cps:
                    pd["erc20_count"] += 1
                    pd["erc20_value_sum"] += int.from_bytes(lg.data, "big")
                    erc20_keys.append([h, li])
                else:
                    non_cp += 1
        elif lg.address in e1155 and t0 == TRANSFER_SINGLE_TOPIC:
            pd["erc1155_count"] += 1
            pd["erc1155_value_sum"] += int.from_bytes(lg.data[32:64], "big")
            erc1155_keys.append([h, li, 0])
        elif lg.address in e1155 and t0 == TRANSFER_BATCH_TOPIC:
            ids, values = abi_decode(["uint256[]", "uint256[]"], lg.data)
            for j, v in enumerate(values):
                pd["erc1155_count"] += 1
                pd["erc1155_value_sum"] += v
                erc1155_keys.append([h, li, j])
            assert len(ids) == len(values)
        elif lg.address in e1155 and t0 == CONDITION_RESOLUTION_TOPIC:
            pd["resolutions"] += 1
        elif lg.address in exch and t0 == TOKEN_REGISTERED_TOPIC:
            pd["registrations"] += 1
    nxt = history.head_block + 1
    for d in range(s.days - 1, -1, -1):
        pd = per_day[d]
        assert pd["erc20_value_sum"] < 2**256 and pd["erc1155_value_sum"] < 2**256
        pd["erc20_value_sum"] = str(pd["erc20_value_sum"])
        pd["erc1155_value_sum"] = str(pd["erc1155_value_sum"])
        if pd["from_block"] is None:  # empty day: to = from - 1, as the worker reports it
            pd["from_block"], pd["to_block"] = nxt, nxt - 1
        nxt = pd["from_block"]
    boundary: dict[str, list[list[int]]] = {"midnight": [], "last_second": []}
    for n, b in enumerate(history.blocks, start=1):
        if b.boundary:
            boundary[b.boundary].append([n, b.day])
    totals = {
        "erc20_rows": len(erc20_keys),
        "erc1155_rows": len(erc1155_keys),
        "rows": len(erc20_keys) + len(erc1155_keys),
        "txs": history.tx_count,
        "blocks": history.head_block,
    }
    doc: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "start_date": s.start_date.isoformat(),
        "days": s.days,
        "seed": s.seed,
        "spec": s.as_dict(),
        "key": s.key(),
        "genesis_timestamp": history.genesis_ts,
        "block_interval_s": history.interval,
        "head_block": history.head_block,
        "totals": totals,
        "per_day": {str(d): pd for d, pd in per_day.items()},
        "empty_days": history.empty_days,
        "boundary_blocks": boundary,
        "erc721_shaped": erc721,
        "non_counterparty_erc20": non_cp,
        "erc20_keys": erc20_keys,
        "erc1155_keys": erc1155_keys,
        "markets": _markets_truth(history, tx_hashes),
    }
    doc.update(extra or {})
    return doc


def _markets_truth(history: History, tx_hashes: list[str]) -> dict[str, Any]:
    s = history.spec
    hash_of: dict[int, str] = {}
    events: list[dict[str, Any]] = []
    k = 0
    for b in history.blocks:
        for tx in b.txs:
            hash_of[id(tx)] = tx_hashes[k]
            for e in tx.events:
                ev = dict(e)
                ev["tx_hash"] = tx_hashes[k]
                events.append(ev)
            k += 1
    conditions = []
    for m in history.markets:
        conditions.append(
            {
                "condition_id": m.condition_id,
                "question_id": m.question_id,
                "oracle": ORACLE,
                "outcome_count": m.outcome_count,
                "token_ids": [str(t) for t in m.token_ids],
                "exchange": m.exchange,
                "created_day": m.created_day,
                "registered": m.registration_tx is not None,
                "registration_tx": hash_of.get(id(m.registration_tx))
                if m.registration_tx
                else None,
                "payout_numerators": m.payout,
                "resolved_day": m.resolved_day,
                "resolution_tx": hash_of.get(id(m.resolution_tx)) if m.resolution_tx else None,
            }
        )
    exchanges = set(s.exchanges)
    positions = []
    won = resolved = 0
    total_pnl = 0
    for (actor, idx), bal in sorted(history.balances.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        m = history.markets[idx]
        usdc = history.usdc_net[(actor, idx)]
        pnl = None
        if m.payout is not None:
            den = sum(m.payout)
            pnl = usdc + sum(b * p // den for b, p in zip(bal, m.payout, strict=True))
            if actor not in exchanges:
                resolved += 1
                won += pnl > 0
                total_pnl += pnl
        positions.append(
            {
                "wallet": actor,
                "condition_id": m.condition_id,
                "is_exchange": actor in exchanges,
                "usdc_net": usdc,
                "token_balances": bal,
                "resolved": m.payout is not None,
                "pnl_units": pnl,
            }
        )
    ctf_in = sum(e["usdc_amount"] for e in events if e["kind"] == "split")
    ctf_out = sum(e["usdc_amount"] for e in events if e["kind"] in ("merge", "redeem"))
    return {
        "collateral": s.collateral,
        "ctf": s.erc1155[0],
        "oracle": ORACLE,
        "wallets": history.wallets,
        "conditions": conditions,
        "events": events,
        "positions": positions,
        "summary": {
            "markets": len(history.markets),
            "markets_resolved": sum(m.payout is not None for m in history.markets),
            "binary_share": (
                sum(m.outcome_count == 2 for m in history.markets) / len(history.markets)
                if history.markets
                else 0.0
            ),
            "events": len(events),
            "resolved_positions": resolved,
            "winning_positions": won,
            "win_rate": won / resolved if resolved else None,
            "total_pnl_units": total_pnl,
            # Collateral paid into ConditionalTokens by splits and paid out by merges/redemptions;
            # the difference backs tokens still held (unresolved markets, unredeemed positions).
            "ctf_usdc_in": ctf_in,
            "ctf_usdc_out": ctf_out,
            "ctf_usdc_outstanding": ctf_in - ctf_out,
            "note": "positions/win_rate exclude the exchange addresses (their inventory)",
        },
    }
