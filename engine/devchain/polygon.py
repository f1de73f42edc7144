"""A procedural Polygon-shaped chain: blocks, logs and ground truth derived from a seed on demand.

Nothing is stored: block ``b``'s timestamp, its transactions and their logs are pure functions of
``(spec, b)``, so a 1,048-day chain of ~43,000 blocks a day costs no memory, and the ground truth
of a day (counts, value sums, timestamp sums, key-set hashes) is computed by walking its blocks.
``engine.devchain.polygon_node`` serves it over JSON-RPC.

Block times: ~``block_time_s`` (2.1 s: ~41,000 blocks a day), the rate drifting +-5 % from one
2,048-block segment to the next, each block jittered by up to 40 % of the interval (integer
timestamps, strictly increasing). Genesis is at 00:00:00 UTC the day before ``start_date``; the
chain ends a day and 512 blocks after the last day, so every day is final.

Log density: events (transactions) per block are Poisson with a rate of ``events_per_block``
times growth over the years (``growth_per_year``), a day factor (about 1 day in 8 is quiet at
x0.25, 1 in 10 busy at x2, the rest x0.8..1.2), an intraday cycle (x0.6..1.4) and bursts
(15-minute slots at x4, ``bursts_per_day`` on average). Event kinds, at the real contract
addresses (``engine.config`` defaults) with the real event shapes (``engine.decode``):

- trade: an ERC20 ``Transfer`` wallet <-> exchange and a ``TransferSingle`` through the exchange
- ERC20 transfer with a counterparty on one side, or between two counterparties (returned by
  both counterparty filters, kept once)
- split / merge: an ERC20 leg with ConditionalTokens and a ``TransferBatch`` mint / burn (2 ids)
- gift: ``TransferSingle`` wallet -> wallet
- ``TokenRegistered`` pairs at an exchange, ``ConditionResolution`` at ConditionalTokens
- noise the product must skip: ERC20 transfers without a counterparty, transfers of another token,
  ERC721-shaped ``Transfer`` (4 topics, no data) from a counterparty, a malformed
  ``TransferSingle`` (one data word)

Key-set hash of a table: the sum mod 2^64 of ``key_hash(tx_hash, log_index, batch_index)``
(``KEY_HASH_SQL`` computes the same in ClickHouse).
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from engine.config import (
    CONDITIONAL_TOKENS,
    CTF_EXCHANGE,
    CTF_EXCHANGE_V2,
    NEGRISK_ADAPTER,
    NEGRISK_CTF_EXCHANGE,
    NEGRISK_CTF_EXCHANGE_V2,
    PUSD,
    USDC_E,
)
from engine.constants import (
    CONDITION_RESOLUTION_TOPIC,
    SECONDS_PER_DAY,
    TOKEN_REGISTERED_TOPIC,
    TRANSFER_BATCH_TOPIC,
    TRANSFER_SINGLE_TOPIC,
    TRANSFER_TOPIC,
)

CHAIN_ID = 137
#: Blocks per rate segment (the block rate drifts from one segment to the next).
SEGMENT = 2048
#: Blocks after the last day's end (past any confirmation depth the product uses).
TAIL_BLOCKS = 512
#: A token on Polygon that the product does not capture (WETH): its transfers are noise.
OTHER_TOKEN = "0x7ceb23fd6bc0add59e62ac25578270cff1b9f619"
#: Distinct outcome token ids on the chain (markets come and go; ids repeat).
TOKEN_IDS = 8192
M64 = 0xFFFFFFFFFFFFFFFF
GOLD = 0x9E3779B97F4A7C15
#: Multipliers of log_index and batch_index in key_hash (odd 64-bit constants).
KEY_LI = 0xBF58476D1CE4E5B9
KEY_BI = 0x94D049BB133111EB
#: ClickHouse expression of key_hash for a row of a staging table (sum() wraps mod 2^64 too).
KEY_HASH_SQL = (
    "reinterpretAsUInt64(reverse(unhex(substring(tx_hash, 3, 16))))"
    f" + toUInt64(log_index) * {KEY_LI} + toUInt64({{bi}}) * {KEY_BI}"
)

# Event kinds and their default weights (share of events).
TRADE, CP_TRANSFER, CP_TO_CP, NOISE, OTHER, SPLIT, MERGE, GIFT = range(8)
ERC721, MALFORMED, REGISTER, RESOLVE = range(8, 12)
KIND_NAMES = (
    "trade",
    "cp_transfer",
    "cp_to_cp",
    "noise",
    "other_token",
    "split",
    "merge",
    "gift",
    "erc721_shaped",
    "malformed",
    "register",
    "resolve",
)
DEFAULT_WEIGHTS = (40.0, 14.0, 2.0, 15.0, 6.0, 6.0, 4.0, 6.0, 0.6, 0.3, 0.5, 0.3)
#: Logs per event of each kind (fixed, so log indexes follow from the kinds alone).
KIND_LOGS = (2, 1, 1, 1, 1, 2, 2, 1, 1, 1, 2, 1)
# Data shapes of a log: one word, TransferSingle (id, value), TransferBatch (2 ids, 2 values),
# none, ConditionResolution payouts.
D_WORD, D_SINGLE, D_BATCH, D_EMPTY, D_RESOLVE = range(5)
BATCH_HEAD = "0x" + "".join(f"{x:064x}" for x in (0x40, 0xA0, 2))
TWO = f"{2:064x}"
RESOLVE_DATA = tuple(
    "0x" + "".join(f"{x:064x}" for x in (2, 0x40, 2, *p)) for p in ((1, 0), (0, 1), (1, 1))
)
KIND_LOGS_NP = np.array(KIND_LOGS, dtype=np.int64)
#: Kinds whose every log is outside the product's filters (no timestamp needed for them).
NOISE_KINDS = frozenset({NOISE, OTHER})


def mix(z: int) -> int:
    """splitmix64 finaliser: a 64-bit hash of an integer."""
    z = (z + GOLD) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


_U = np.uint64
_GOLD = _U(GOLD)
_C1 = _U(0xBF58476D1CE4E5B9)
_C2 = _U(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = _U(30), _U(27), _U(31), _U(11)


def mix_np(z: np.ndarray) -> np.ndarray:
    """mix() over a uint64 array (wrapping arithmetic, the same values)."""
    z = z + _GOLD
    z = (z ^ (z >> _S30)) * _C1
    z = (z ^ (z >> _S27)) * _C2
    return z ^ (z >> _S31)


def unit_np(z: np.ndarray) -> np.ndarray:
    return (z >> _S11).astype(np.float64) * (1.0 / (1 << 53))


#: Multipliers that spread block numbers and transaction indexes over 64 bits.
K_BLOCK = 0xD1B54A32D192ED03
K_TX = 0xABC98388FB8FAC03
K_JITTER = 0x8CB92BA72F3D8DD7


def unit(z: int) -> float:
    """A float in [0, 1) from a 64-bit hash."""
    return (z >> 11) * (1.0 / (1 << 53))


def key_hash(tx_hash: str, log_index: int, batch_index: int = 0) -> int:
    """The hash of one row key that key-set hashes add up (mod 2^64); see KEY_HASH_SQL."""
    return (int(tx_hash[2:18], 16) + log_index * KEY_LI + batch_index * KEY_BI) & M64


def _pad(addr: str) -> str:
    return "0x" + "0" * 24 + addr[2:]


def _word(n: int) -> str:
    return f"{n:064x}"


@dataclass(frozen=True)
class PolygonSpec:
    """Shape of a procedural chain. The same spec gives the same chain, byte for byte."""

    seed: int = 137
    start_date: dt.date = dt.date(2022, 12, 18)
    days: int = 30
    block_time_s: float = 2.1
    events_per_block: float = 2.0
    growth_per_year: float = 1.0  # density x(1 + growth * day / 365)
    quiet_day_share: float = 0.12
    busy_day_share: float = 0.10
    bursts_per_day: float = 3.0
    weights: tuple[float, ...] = DEFAULT_WEIGHTS
    wallets: int = 4096
    tokens: tuple[str, ...] = (USDC_E, PUSD)
    counterparties: tuple[str, ...] = (
        CONDITIONAL_TOKENS,
        CTF_EXCHANGE,
        NEGRISK_CTF_EXCHANGE,
        NEGRISK_ADAPTER,
        CTF_EXCHANGE_V2,
        NEGRISK_CTF_EXCHANGE_V2,
    )
    ctf: str = CONDITIONAL_TOKENS
    exchanges: tuple[str, ...] = (
        CTF_EXCHANGE,
        NEGRISK_CTF_EXCHANGE,
        CTF_EXCHANGE_V2,
        NEGRISK_CTF_EXCHANGE_V2,
    )

    def __post_init__(self) -> None:
        if self.block_time_s < 2.0:
            raise ValueError(f"block_time_s = {self.block_time_s}: expected a number >= 2")
        if self.days < 1:
            raise ValueError(f"days = {self.days}: expected an integer >= 1")
        if len(self.weights) != len(KIND_NAMES) or min(self.weights) < 0:
            raise ValueError(f"weights: expected {len(KIND_NAMES)} numbers >= 0")


@dataclass
class DayTruth:
    """What the product must capture from one UTC day (the ground truth)."""

    day: int
    from_block: int
    to_block: int
    erc20_count: int = 0
    erc20_value_sum: int = 0
    erc20_ts_sum: int = 0
    erc20_key_hash: int = 0
    erc1155_count: int = 0
    erc1155_value_sum: int = 0
    erc1155_ts_sum: int = 0
    erc1155_key_hash: int = 0
    resolutions: int = 0
    registrations: int = 0
    #: Distinct blocks with a log that the product's filters return (needs a timestamp).
    blocks_with_logs: int = 0
    #: Logs returned by the filters but skipped by the decoder, by reason.
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n_blocks(self) -> int:
        return self.to_block - self.from_block + 1

    @property
    def rows(self) -> int:
        return self.erc20_count + self.erc1155_count + self.resolutions + self.registrations


@dataclass
class Events:
    """The events of a block range, one array entry per event (transaction), in chain order."""

    block: np.ndarray  # int64
    tx: np.ndarray  # transaction index in its block
    li: np.ndarray  # log index of the event's first log in its block
    kind: np.ndarray  # event kind (TRADE, ...)
    e: np.ndarray  # uint64 hash the event's fields derive from
    ts: np.ndarray  # block timestamp of the event
    blocks: np.ndarray  # every block of the range
    block_ts: np.ndarray  # their timestamps
    per_block: np.ndarray  # events per block

    def __len__(self) -> int:
        return int(self.kind.size)


@dataclass
class LogTable:
    """The logs of a block range: one entry per log, indexes into the chain's string tables."""

    events: Events
    ev: np.ndarray  # index of the log's event in `events`
    j: np.ndarray  # position of the log in its event
    addr: np.ndarray  # into addr_strings
    t0: np.ndarray  # into topic_strings (t3 = -1 with 3 topics)
    t1: np.ndarray
    t2: np.ndarray
    t3: np.ndarray
    nt: np.ndarray  # number of topics
    dk: np.ndarray  # data shape (D_WORD, ...)
    v: np.ndarray  # amount (D_RESOLVE: payout variant)
    d1: np.ndarray  # token id index
    d2: np.ndarray  # second token id index

    def __len__(self) -> int:
        return int(self.ev.size)


class PolygonChain:
    """The chain of a spec: timestamps, events and logs per block, day ranges, ground truth."""

    def __init__(self, spec: PolygonSpec) -> None:
        self.spec = spec
        self.key = mix(spec.seed * 0x2545F4914F6CDD1D + 137)
        self.start_ts = calendar.timegm(spec.start_date.timetuple())
        self.genesis_ts = self.start_ts - SECONDS_PER_DAY
        self._prefix: list[float] = [0.0]  # seconds from genesis at the start of segment k
        self._rates: list[float] = []
        self._day_factor: dict[int, float] = {}
        w = spec.weights
        total = sum(w)
        table: list[int] = []
        for kind, weight in enumerate(w):
            table += [kind] * int(round(4096 * weight / total))
        self._kinds_np = np.array((table + [TRADE] * 4096)[:4096], dtype=np.int64)
        self.wallets = [
            "0x" + hashlib.blake2b(f"{spec.seed}:{i}".encode(), digest_size=20).hexdigest()
            for i in range(spec.wallets)
        ]
        self.wallet_topics = [_pad(a) for a in self.wallets]
        low = str.lower
        self.tokens = [low(a) for a in spec.tokens]
        self.cps = [low(a) for a in spec.counterparties]
        self.cp_topics = [_pad(a) for a in self.cps]
        self.ctf = low(spec.ctf)
        self.ctf_topic = _pad(self.ctf)
        self.exchanges = [low(a) for a in spec.exchanges]
        self.exchange_topics = [_pad(a) for a in self.exchanges]
        self.zero_topic = "0x" + "0" * 64
        #: Outcome token ids (64 hex digits each) that events draw from.
        self.token_ids = [
            hashlib.blake2b(f"id{spec.seed}:{i}".encode(), digest_size=32).hexdigest()
            for i in range(TOKEN_IDS)
        ]
        self._intern()
        self.end_ts = self.start_ts + spec.days * SECONDS_PER_DAY
        self.head = self.first_at_or_after(self.end_ts + SECONDS_PER_DAY) + TAIL_BLOCKS

    # ---- block times ----------------------------------------------------------------------------
    def _segment(self, k: int) -> None:
        """Extend the segment rates and start offsets to cover segment k."""
        while len(self._rates) <= k:
            n = len(self._rates)
            r = self.spec.block_time_s * (1.0 + 0.05 * (2.0 * unit(mix(self.key ^ (n * GOLD))) - 1))
            self._rates.append(r)
            self._prefix.append(self._prefix[-1] + SEGMENT * r)

    def ts_many(self, blocks: np.ndarray) -> np.ndarray:
        """Unix times of blocks (int64 array in, int64 array out); strictly increasing."""
        b = np.asarray(blocks, dtype=np.int64)
        if b.size == 0:
            return b.copy()
        k = b // SEGMENT
        self._segment(int(k.max()))
        rates = np.asarray(self._rates)[k]
        base = np.asarray(self._prefix)[k]
        jitter = 0.4 * rates * unit_np(mix_np(b.astype(np.uint64) * _U(K_JITTER) + _U(self.key)))
        jitter[b == 0] = 0.0
        return self.genesis_ts + (base + (b - k * SEGMENT) * rates + jitter).astype(np.int64)

    def ts(self, block: int) -> int:
        """Unix time of one block."""
        return int(self.ts_many(np.array([block]))[0])

    def first_at_or_after(self, t: int) -> int:
        """The first block with timestamp >= t."""
        lo, hi = 0, 1
        while self.ts(hi) < t:
            lo, hi = hi, hi * 2
        while lo < hi:
            mid = (lo + hi) // 2
            if self.ts(mid) >= t:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def day_of(self, ts: int) -> int:
        return (ts - self.start_ts) // SECONDS_PER_DAY

    def day_range(self, day: int) -> tuple[int, int]:
        """Blocks [first, last] of a UTC day (day 0 = start_date)."""
        t0 = self.start_ts + day * SECONDS_PER_DAY
        return self.first_at_or_after(t0), self.first_at_or_after(t0 + SECONDS_PER_DAY) - 1

    def _words(self, z: int) -> str:
        """64 hex digits from a 64-bit seed (four chained mixes)."""
        a = mix(z)
        b = mix(a)
        c = mix(b)
        return f"{a:016x}{b:016x}{c:016x}{mix(c):016x}"

    def block_hash(self, block: int) -> str:
        return "0x" + self._words(mix(self.key ^ ((block * K_BLOCK) & M64)) ^ 0x5BD1E995)

    def tx_seed(self, block: int, tx_index: int) -> int:
        """The first 64 bits of a transaction's hash."""
        hb = mix(self.key ^ ((block * K_BLOCK) & M64))
        return mix(hb ^ (((tx_index + 1) * K_TX) & M64))

    def tx_hash(self, block: int, tx_index: int) -> str:
        a = self.tx_seed(block, tx_index)
        b = mix(a)
        c = mix(b)
        return f"0x{a:016x}{b:016x}{c:016x}{mix(c):016x}"

    # ---- density -------------------------------------------------------------------------------
    def day_factor(self, day: int) -> float:
        f = self._day_factor.get(day)
        if f is None:
            s = self.spec
            u = unit(mix(self.key ^ (day * 0xD6E8FEB86659FD93 + 1)))
            if day > 0 and u < s.quiet_day_share:
                f = 0.25
            elif u > 1.0 - s.busy_day_share:
                f = 2.0
            else:
                f = 0.8 + 0.4 * unit(mix(self.key ^ (day * 0x9FB21C651E98DF25 + 7)))
            f *= 1.0 + s.growth_per_year * max(0, day) / 365.0
            self._day_factor[day] = f
        return f

    def rates(self, ts: np.ndarray) -> np.ndarray:
        """Expected events per block at these block times (day, intraday cycle, bursts)."""
        rel = ts - self.start_ts
        day = rel // SECONDS_PER_DAY
        days = np.unique(day)
        factors = np.array([self.day_factor(int(d)) for d in days])
        lam = self.spec.events_per_block * factors[np.searchsorted(days, day)]
        phase = (rel % SECONDS_PER_DAY) / SECONDS_PER_DAY
        lam = lam * (1.0 + 0.4 * np.sin(2 * np.pi * (phase + 0.15)))
        slot = (rel // 900).astype(np.uint64)
        burst = unit_np(mix_np(slot * _U(0xA24BAED4963EE407) + _U(self.key))) < (
            self.spec.bursts_per_day / 96
        )
        return np.where(burst, lam * 4.0, lam)

    def events(self, lo: int, hi: int) -> Events:
        """Every event (transaction) of blocks [lo, hi], in chain order."""
        blocks = np.arange(lo, hi + 1, dtype=np.int64)
        ts = self.ts_many(blocks)
        lam = self.rates(ts)
        h0 = mix_np(blocks.astype(np.uint64) * _U(K_BLOCK) ^ _U(self.key))
        u = unit_np(h0)
        p = np.exp(-lam)
        acc = p.copy()
        n = np.zeros(blocks.size, dtype=np.int64)
        k = 0
        todo = u > acc
        while todo.any() and k < 400:  # inverse-CDF Poisson, all blocks at once
            k += 1
            n += todo
            p = p * lam / k
            acc = acc + p
            todo &= u > acc
        total = int(n.sum())
        eb = np.repeat(blocks, n)
        starts = np.cumsum(n) - n
        tx = np.arange(total, dtype=np.int64) - np.repeat(starts, n)
        hb = np.repeat(h0, n)
        e = mix_np(hb + (tx + 1).astype(np.uint64) * _GOLD)
        kind = self._kinds_np[(e >> _U(52)).astype(np.int64)]
        nlogs = KIND_LOGS_NP[kind]
        csum = np.cumsum(nlogs) - nlogs
        li = csum
        if total:
            li = csum - np.repeat(csum[starts[n > 0]], n[n > 0])
        return Events(eb, tx, li, kind, e, np.repeat(ts, n), blocks, ts, n)

    # ---- logs ----------------------------------------------------------------------------------
    def _intern(self) -> None:
        """String tables the log arrays index into: addresses, topics, token ids."""
        self.addr_strings = [*self.tokens, self.ctf, *self.exchanges, OTHER_TOKEN]
        nt = len(self.tokens)
        self.A_TOKEN0, self.A_CTF, self.A_EX, self.A_OTHER = (
            0,
            nt,
            nt + 1,
            nt + 1 + len(self.exchanges),
        )
        self.A_TOKEN_LAST = nt - 1
        topics = [
            TRANSFER_TOPIC,
            TRANSFER_SINGLE_TOPIC,
            TRANSFER_BATCH_TOPIC,
            CONDITION_RESOLUTION_TOPIC,
            TOKEN_REGISTERED_TOPIC,
            self.zero_topic,
            self.ctf_topic,
        ]
        self.T_WAL = len(topics)
        topics += self.wallet_topics
        self.T_CP = len(topics)
        topics += self.cp_topics
        self.T_EX = len(topics)
        topics += self.exchange_topics
        self.T_ID = len(topics)
        topics += ["0x" + t for t in self.token_ids]
        self.T_COND = len(topics)
        topics += ["0x" + t[::-1] for t in self.token_ids]
        self.topic_strings = topics
        self.topic_ids: dict[str, list[int]] = {}
        for n, t in enumerate(topics):
            self.topic_ids.setdefault(t, []).append(n)
        self.address_ids: dict[str, list[int]] = {}
        for n, a in enumerate(self.addr_strings):
            self.address_ids.setdefault(a, []).append(n)

    def logs(self, lo: int, hi: int) -> LogTable:
        """Every log of blocks [lo, hi] as arrays of string-table indexes, in chain order."""
        ev = self.events(lo, hi)
        e, kind = ev.e, ev.kind
        nw, ncp, nex = len(self.wallets), len(self.cps), len(self.exchanges)
        f = mix_np(e)
        amount = (f % _U(1_000_000) + _U(1)).astype(np.int64) * 10_000
        wal = self.T_WAL + ((e >> _U(8)) % _U(nw)).astype(np.int64)
        wal2 = self.T_WAL + ((e >> _U(24)) % _U(nw)).astype(np.int64)
        last = ((e >> _U(40)) % _U(5)) == _U(0)
        tok = np.where(last, self.A_TOKEN_LAST, self.A_TOKEN0)
        exi = ((e >> _U(44)) % _U(nex)).astype(np.int64)
        ex_t = self.T_EX + exi
        cpi = ((e >> _U(48)) % _U(ncp)).astype(np.int64)
        cp_t = self.T_CP + cpi
        cp2_t = self.T_CP + (cpi + 1 + ((e >> _U(52)) % _U(ncp - 1)).astype(np.int64)) % ncp
        nid = len(self.token_ids)
        tid = ((f >> _U(32)) % _U(nid)).astype(np.int64)
        tid2 = (tid + 1) % nid
        cond = self.T_COND + ((f >> _U(16)) % _U(nid)).astype(np.int64)
        question = self.T_ID + ((f >> _U(8)) % _U(nid)).astype(np.int64)
        sell = (e & _U(1)) == _U(1)
        pick = np.where(((e >> _U(6)) % _U(8)) == _U(0), (e >> _U(4)) % _U(3), (e >> _U(4)) % _U(2))
        payout = pick.astype(np.int64)
        idx = np.arange(len(ev), dtype=np.int64)
        zero = np.zeros(len(ev), dtype=np.int64)
        none = zero - 1
        T, TS, TB, CR, TR, Z, CT = range(7)
        parts: list[tuple] = []

        def add(m, j, addr, t0, t1, t2, t3, nt, dk, v=zero, d1=zero, d2=zero) -> None:
            def at(x):
                return x[m] if isinstance(x, np.ndarray) else np.full(int(m.sum()), x)

            cols = (idx, j, addr, t0, t1, t2, t3, nt, dk, v, d1, d2)
            parts.append(tuple(at(c) for c in cols))

        half = amount // 2
        m = (kind == TRADE) & ~sell  # a buy: USDC to the exchange, tokens back
        add(m, 0, tok, T, wal, ex_t, none, 3, D_WORD, half)
        add(m, 1, self.A_CTF, TS, ex_t, ex_t, wal, 4, D_SINGLE, amount, tid)
        m = (kind == TRADE) & sell
        add(m, 0, self.A_CTF, TS, ex_t, wal, ex_t, 4, D_SINGLE, amount, tid)
        add(m, 1, tok, T, ex_t, wal, none, 3, D_WORD, half)
        m = kind == CP_TRANSFER
        add(m & sell, 0, tok, T, wal, cp_t, none, 3, D_WORD, amount)
        add(m & ~sell, 0, tok, T, cp_t, wal, none, 3, D_WORD, amount)
        add(kind == CP_TO_CP, 0, tok, T, cp_t, cp2_t, none, 3, D_WORD, amount)
        add(kind == NOISE, 0, self.A_TOKEN0, T, wal, wal2, none, 3, D_WORD, amount)
        add(kind == OTHER, 0, self.A_OTHER, T, wal, ex_t, none, 3, D_WORD, amount)
        m = kind == SPLIT
        add(m, 0, self.A_TOKEN0, T, wal, CT, none, 3, D_WORD, amount)
        add(m, 1, self.A_CTF, TB, wal, Z, wal, 4, D_BATCH, amount, tid, tid2)
        m = kind == MERGE
        add(m, 0, self.A_CTF, TB, wal, wal, Z, 4, D_BATCH, amount, tid, tid2)
        add(m, 1, self.A_TOKEN0, T, CT, wal, none, 3, D_WORD, amount)
        add(kind == GIFT, 0, self.A_CTF, TS, wal, wal, wal2, 4, D_SINGLE, amount, tid)
        m = kind == ERC721
        add(m, 0, self.A_TOKEN0, T, cp_t, wal, self.T_ID + tid, 4, D_EMPTY)
        m = kind == MALFORMED
        add(m, 0, self.A_CTF, TS, ex_t, ex_t, wal, 4, D_WORD, amount)
        m = kind == REGISTER
        exa = self.A_EX + exi
        add(m, 0, exa, TR, self.T_ID + tid, self.T_ID + tid2, cond, 4, D_EMPTY)
        add(m, 1, exa, TR, self.T_ID + tid2, self.T_ID + tid, cond, 4, D_EMPTY)
        add(kind == RESOLVE, 0, self.A_CTF, CR, cond, wal, question, 4, D_RESOLVE, payout)
        cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
        order = np.argsort(cols[0] * 2 + cols[1], kind="stable")
        cols = [c[order] for c in cols]
        return LogTable(ev, *cols)

    def data_string(self, dk: int, v: int, d1: int, d2: int) -> str:
        """The hex data of a log from its LogTable columns."""
        if dk == D_WORD:
            return f"0x{v:064x}"
        if dk == D_SINGLE:
            return f"0x{self.token_ids[d1]}{v:064x}"
        if dk == D_BATCH:
            a = f"{v:064x}"
            return f"{BATCH_HEAD}{self.token_ids[d1]}{self.token_ids[d2]}{TWO}{a}{a}"
        if dk == D_EMPTY:
            return "0x"
        return RESOLVE_DATA[v]

    def block_logs(self, block: int) -> Iterator[tuple[int, int, str, list[str], str]]:
        """(tx_index, log_index, address, topics, data) of every log of a block."""
        t = self.logs(block, block)
        ts = self.topic_strings
        for n in range(len(t)):
            ev = int(t.ev[n])
            topics = [ts[int(x)] for x in (t.t0[n], t.t1[n], t.t2[n], t.t3[n])[: int(t.nt[n])]]
            data = self.data_string(int(t.dk[n]), int(t.v[n]), int(t.d1[n]), int(t.d2[n]))
            li = int(t.events.li[ev] + t.j[n])
            yield int(t.events.tx[ev]), li, self.addr_strings[int(t.addr[n])], topics, data

    # ---- ground truth --------------------------------------------------------------------------
    def day_truth(self, day: int) -> DayTruth:
        """Ground truth of one day, from the events' meaning (not from their serialised logs, so
        a wrong encoding or decoding shows); nothing is stored."""
        first, last = self.day_range(day)
        t = DayTruth(day, first, last)
        if last < first:
            return t
        ev = self.events(first, last)
        kind, e = ev.kind, ev.e
        amount = (mix_np(e) % _U(1_000_000) + _U(1)).astype(np.int64) * 10_000
        sell = (e & _U(1)).astype(np.int64)
        hb = mix_np(ev.block.astype(np.uint64) * _U(K_BLOCK) ^ _U(self.key))
        tx64 = mix_np(hb ^ (ev.tx + 1).astype(np.uint64) * _U(K_TX))
        li = ev.li
        zero = np.zeros_like(li)
        # (kinds, log offset, batch index, value) of each row shape, per table.
        erc20 = [
            ((TRADE,), sell, zero, amount // 2),
            ((CP_TRANSFER, CP_TO_CP, SPLIT), zero, zero, amount),
            ((MERGE,), zero + 1, zero, amount),
        ]
        erc1155 = [
            ((TRADE,), 1 - sell, zero, amount),
            ((GIFT,), zero, zero, amount),
            ((SPLIT,), zero + 1, zero, amount),
            ((SPLIT,), zero + 1, zero + 1, amount),
            ((MERGE,), zero, zero, amount),
            ((MERGE,), zero, zero + 1, amount),
        ]
        for shapes, table in ((erc20, "erc20"), (erc1155, "erc1155")):
            count = value = ts_sum = 0
            kh = _U(0)
            for kinds, off, bi, val in shapes:
                m = np.isin(kind, kinds)
                count += int(m.sum())
                value += int(val[m].sum())
                ts_sum += int(ev.ts[m].sum())
                keys = tx64[m] + (li[m] + off[m]).astype(np.uint64) * _U(KEY_LI)
                keys = keys + bi[m].astype(np.uint64) * _U(KEY_BI)
                kh = _U((int(kh) + int(keys.sum(dtype=np.uint64))) & M64)
            setattr(t, f"{table}_count", count)
            setattr(t, f"{table}_value_sum", value)
            setattr(t, f"{table}_ts_sum", ts_sum)
            setattr(t, f"{table}_key_hash", int(kh))
        t.registrations = 2 * int((kind == REGISTER).sum())
        t.resolutions = int((kind == RESOLVE).sum())
        t.blocks_with_logs = int(np.unique(ev.block[~np.isin(kind, list(NOISE_KINDS))]).size)
        t.skipped = {
            KIND_NAMES[k]: int((kind == k).sum()) for k in (ERC721, MALFORMED) if (kind == k).any()
        }
        return t
