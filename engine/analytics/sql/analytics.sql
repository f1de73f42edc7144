-- Rebuilt analytics tables and the gate results table. Same DDL on embedded chdb and a server.
-- {db} is the database; {sfx} is '' for the live tables operators query, '_new' for a rebuild in
-- progress, '_check' for a standalone gate run and '_prev' for the version a swap replaced.
-- Formulas and sign conventions: docs/ANALYTICS.md. Statements are separated by ';' at line end.

-- ConditionalTokens position id -> (condition, outcome), computed in Python (engine/analytics/positions.py)
-- for every condition seen in condition_resolutions or token_registrations.
CREATE TABLE IF NOT EXISTS {db}.token_outcomes{sfx}
(
    token_id      UInt256,
    condition_id  String,
    outcome_index UInt16,   -- 0-based; index set 1 << outcome_index
    outcome_count UInt16,   -- outcome_slot_count of the resolution, else 2 (registered pair)
    collateral    String,
    registered    UInt8     -- 1 when a TokenRegistered pair names this token for this condition
)
ENGINE = MergeTree
ORDER BY token_id;

-- Net flows per (tx, holder, condition, outcome, token). + = into the holder.
-- outcome_index -1 rows carry cash that cannot be tied to one outcome (see ANALYTICS.md).
CREATE TABLE IF NOT EXISTS {db}.net_flows{sfx}
(
    tx_hash         String,
    block_number    UInt64,
    log_index       UInt32,   -- first log of the tx that moved this holder's assets
    block_timestamp DateTime('UTC'),
    day_idx         UInt32,
    wallet          String,
    is_system       UInt8,    -- 1 for configured contracts (exchanges, counterparties, tokens)
    kind            LowCardinality(String),  -- trade | split | merge | redeem | transfer
    condition_id    String,   -- '' when unknown (unmapped token, or cash of several conditions)
    outcome_index   Int16,    -- 0-based; -1 = cash of the whole condition / unattributed
    token_id        UInt256,  -- 0 on cash rows
    token_delta     Int256,
    usdc_delta      Int256    -- collateral base units (6 decimals for USDC)
)
ENGINE = MergeTree
ORDER BY (wallet, condition_id, tx_hash, outcome_index, token_id);

-- Wallet trades (kind = 'trade', non-system holders) with a direction read from the legs alone.
CREATE TABLE IF NOT EXISTS {db}.trades_with_direction{sfx}
(
    tx_hash         String,
    block_number    UInt64,
    block_timestamp DateTime('UTC'),
    day_idx         UInt32,
    wallet          String,
    condition_id    String,
    outcome_index   Int16,
    token_id        UInt256,
    direction       LowCardinality(String),  -- BUY | SELL
    confidence      LowCardinality(String),  -- HIGH | MEDIUM | LOW
    token_amount    UInt256,
    usdc_amount     UInt256,
    token_delta     Int256,
    usdc_delta      Int256,
    tx_usdc_delta   Int256,   -- the wallet's whole cash delta in the tx
    price           Float64   -- usdc_amount / token_amount, 0 when either is 0
)
ENGINE = MergeTree
ORDER BY (wallet, tx_hash, condition_id, outcome_index, token_id);

-- Positions and PnL per (wallet, market), against the payout vector of the resolution.
CREATE TABLE IF NOT EXISTS {db}.wallet_market_pnl{sfx}
(
    wallet            String,
    condition_id      String,
    outcome_count     UInt16,
    positions         Array(Int256),   -- positions[i + 1] = tokens held of outcome i (1-based array)
    cash_units        Int256,          -- sum of usdc_delta (bought -, sold/merged/redeemed +)
    payout_units      Int256,          -- sum_i intDiv(positions[i] * payout[i], denominator)
    pnl_units         Int256,          -- cash_units + payout_units (payout 0 while unresolved)
    resolved          UInt8,
    payout_numerators Array(UInt256),  -- [] while unresolved
    flows             UInt64           -- net_flows rows behind this position
)
ENGINE = MergeTree
ORDER BY (wallet, condition_id);

-- Append-only: one row per gate per run (periodic relaxed runs, hard gates, rebuilds).
CREATE TABLE IF NOT EXISTS {db}.gate_results
(
    run_id     String,
    name       LowCardinality(String),
    mode       LowCardinality(String),   -- relaxed | strict
    value      Nullable(Float64),
    threshold  String,
    passed     UInt8,
    detail     String,
    target     String,                   -- the analytics tables checked, e.g. 'net_flows_new'
    checked_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (checked_at, run_id, name);
