-- The rebuild: staging tables -> net_flows, trades_with_direction, wallet_market_pnl (token_outcomes
-- is filled from Python first). Run in order by engine/analytics/build.py into the {sfx} tables
-- (normally '_new'); the hard gate then decides whether they are swapped in. Three scratch tables,
-- dropped at the end: rebuild_legs{sfx} (one row per asset movement per holder),
-- rebuild_cash{sfx} (cash attributed per tx, holder, condition) and rebuild_flows{sfx} (one day
-- range's net flows). Every per-transaction step groups by tx_hash (a tx lives in one day), so it
-- runs per day range.
-- Placeholders, filled by engine/analytics/templating.py (sql_params):
--   {db} database, {sfx} table suffix, {start_date} 'YYYY-MM-DD', {days} configured days,
--   {cash_tokens} the ERC20 counted as cash: the collateral (contracts.collateral),
--   {issuers} ConditionalTokens contracts (contracts.erc1155): they mint/burn outcome tokens and
--     hold the collateral, so they are never holders,
--   {exchanges} contracts.exchanges, {system} every configured contract address,
--   {day_from}, {day_to} the day range of one chunk (section chunk, engine/analytics/build.py).
-- Only rows of days whose checkpoint is COMPLETE (for this start_date, within the configured days)
-- are read, each staging table with FINAL. Formulas and signs: docs/ANALYTICS.md.
--
-- Three sections, each introduced by a "-- section: NAME" line (docs/ANALYTICS.md, "Memory and
-- time"):
--   setup   once: the scratch tables;
--   chunk   once per day range: legs, cash attribution, net flows and trades of the range,
--           appended to net_flows{sfx} and trades_with_direction{sfx}. A range holds whole
--           staging partitions (intDiv(day_idx, 32)) or a part of one, so its FINAL (within a
--           partition) reads only those;
--   finish  once: wallet_market_pnl{sfx} over all net flows (grouped in net_flows' sort order),
--           then the scratch tables are dropped.

-- section: setup
DROP TABLE IF EXISTS {db}.rebuild_legs{sfx} SYNC;
DROP TABLE IF EXISTS {db}.rebuild_cash{sfx} SYNC;
DROP TABLE IF EXISTS {db}.rebuild_flows{sfx} SYNC;

-- One row per asset movement per holder: each transfer gives a + leg to the receiver and a - leg to
-- the sender. The zero address (mint/burn) and the issuers are not holders.
CREATE TABLE {db}.rebuild_legs{sfx}
(
    tx_hash          String,
    block_number     UInt64,
    log_index        UInt32,
    block_timestamp  DateTime('UTC'),
    day_idx          UInt32,
    holder           String,
    asset            LowCardinality(String),  -- token | cash
    token_id         UInt256,
    condition_id     String,
    outcome_index    Int16,
    delta            Int256,
    counterparty     String,
    operator         String,
    after_resolution UInt8     -- the token's condition was resolved earlier in the chain
)
ENGINE = MergeTree
ORDER BY (tx_hash, holder);

-- Cash attributed per (tx, holder, condition): see the chunk's INSERT below.
CREATE TABLE {db}.rebuild_cash{sfx}
(
    tx_hash      String,
    holder       String,
    condition_id String,
    usdc_delta   Int256
)
ENGINE = MergeTree
ORDER BY (tx_hash, holder);

-- One day range's net flows, before they are appended to net_flows{sfx} (its trades are read here).
CREATE TABLE {db}.rebuild_flows{sfx} AS {db}.net_flows{sfx}
ENGINE = MergeTree
ORDER BY (tx_hash, wallet);

-- section: chunk
TRUNCATE TABLE {db}.rebuild_legs{sfx};
TRUNCATE TABLE {db}.rebuild_cash{sfx};
TRUNCATE TABLE {db}.rebuild_flows{sfx};

-- Token legs (ERC1155 TransferSingle / TransferBatch items of the issuers).
INSERT INTO {db}.rebuild_legs{sfx}
WITH
    {complete_days_cte},
    resolved AS (
        SELECT condition_id, min((block_number, log_index)) AS resolved_at
        FROM {db}.condition_resolutions FINAL
        WHERE day_idx IN (SELECT day_idx FROM complete_days)
        GROUP BY condition_id
    ),
    outcomes AS (
        SELECT token_id, condition_id, toInt16(outcome_index) AS outcome_index, 1 AS mapped
        FROM {db}.token_outcomes{sfx}
    ),
    legs AS (
        SELECT
            t.tx_hash AS tx_hash,
            t.block_number AS block_number,
            t.log_index AS log_index,
            t.block_timestamp AS block_timestamp,
            t.day_idx AS day_idx,
            leg.1 AS holder,
            t.token_id AS token_id,
            leg.2 AS delta,
            leg.3 AS counterparty,
            t.operator AS operator
        FROM {db}.erc1155_transfers_staging AS t FINAL
        ARRAY JOIN
            [(t.to_address, toInt256(t.value), t.from_address),
             (t.from_address, -toInt256(t.value), t.to_address)] AS leg
        WHERE t.contract IN {issuers}
          AND t.day_idx BETWEEN {day_from} AND {day_to}
          AND t.day_idx IN (SELECT day_idx FROM complete_days)
    )
SELECT
    l.tx_hash,
    l.block_number,
    l.log_index,
    l.block_timestamp,
    l.day_idx,
    l.holder,
    'token',
    l.token_id,
    if(o.mapped = 1, o.condition_id, ''),
    if(o.mapped = 1, o.outcome_index, toInt16(-1)),
    l.delta,
    l.counterparty,
    l.operator,
    r.condition_id != '' AND (l.block_number, l.log_index) > r.resolved_at
FROM legs AS l
LEFT JOIN outcomes AS o ON l.token_id = o.token_id
LEFT JOIN resolved AS r ON o.condition_id = r.condition_id
WHERE l.holder != '0x0000000000000000000000000000000000000000'
  AND l.holder NOT IN {issuers};

-- Cash legs (ERC20 Transfer of the collateral).
INSERT INTO {db}.rebuild_legs{sfx}
WITH
    {complete_days_cte}
SELECT
    t.tx_hash,
    t.block_number,
    t.log_index,
    t.block_timestamp,
    t.day_idx,
    leg.1 AS holder,
    'cash',
    toUInt256(0),
    '',
    toInt16(-1),
    leg.2,
    leg.3,
    '',
    0
FROM {db}.erc20_transfers_staging AS t FINAL
ARRAY JOIN
    [(t.to_address, toInt256(t.value), t.from_address),
     (t.from_address, -toInt256(t.value), t.to_address)] AS leg
WHERE t.token IN {cash_tokens}
  AND t.day_idx BETWEEN {day_from} AND {day_to}
  AND t.day_idx IN (SELECT day_idx FROM complete_days)
  AND leg.1 != '0x0000000000000000000000000000000000000000'
  AND leg.1 NOT IN {issuers};

-- Cash attribution, leg by leg (docs/ANALYTICS.md, "Cash attribution"): one row per (tx, holder,
-- condition) with the cash attributed to it. Each cash leg of a holder is paired with a run of its
-- token legs in the same tx: same pairing class (the issuers' mints/burns go with cash to or from
-- an issuer; any other leg with the legs of the same counterparty), opposite sign, matched in log
-- order by a stack (a leg pairs with the latest unpaired item of the other kind and opposite sign;
-- consecutive token legs of one condition and sign are one run). A paired cash leg belongs to its
-- run's condition; an unpaired one to the one condition the holder's token legs touched in the tx,
-- else to condition ''. Grouped by tx_hash (a tx lives in one day): works per day range.
INSERT INTO {db}.rebuild_cash{sfx}
SELECT
    tx_hash,
    holder,
    if(leg.2 = 1, leg.3, if(length(conditions) = 1, conditions[1], '')) AS condition_id,
    sum(leg.1) AS usdc_delta
FROM
(
    SELECT
        tx_hash,
        holder,
        groupArrayArray(cash_legs) AS legs,
        groupUniqArrayArray(token_conditions) AS conditions
    FROM
    (
        -- Per (tx, holder, class): the items in log order folded through a stack of
        -- (is_cash, delta, condition); cash_legs = (delta, paired, condition) per cash leg.
        SELECT
            tx_hash,
            holder,
            token_conditions,
            arrayFold(
                (acc, x) -> if(
                    length(acc.1) > 0 AND acc.1[-1].1 != x.1 AND sign(acc.1[-1].2) = -sign(x.2),
                    (arrayPopBack(acc.1),
                     arrayPushBack(acc.2, if(x.1 = 1, (x.2, toUInt8(1), acc.1[-1].3),
                                                      (acc.1[-1].2, toUInt8(1), x.3)))),
                    if(x.1 = 0 AND length(acc.1) > 0 AND acc.1[-1].1 = 0
                           AND acc.1[-1].3 = x.3 AND sign(acc.1[-1].2) = sign(x.2),
                       acc,
                       (arrayPushBack(acc.1, x), acc.2))),
                arrayMap(i -> (i.3, i.4, i.5), arraySort(i -> (i.1, i.2), items)),
                ([] :: Array(Tuple(UInt8, Int256, String)),
                 [] :: Array(Tuple(Int256, UInt8, String)))) AS state,
            arrayConcat(state.2,
                        arrayMap(s -> (s.2, toUInt8(0), ''), arrayFilter(s -> s.1 = 1, state.1)))
                AS cash_legs
        FROM
        (
            SELECT
                tx_hash,
                holder,
                groupArrayIf((log_index, token_id, toUInt8(asset = 'cash'), delta, condition_id),
                             counterparty != holder) AS items,
                groupUniqArrayIf(condition_id, asset = 'token') AS token_conditions
            FROM {db}.rebuild_legs{sfx}
            GROUP BY
                tx_hash,
                holder,
                if(asset = 'cash',
                   if(counterparty IN {issuers}, 'issuer', counterparty),
                   if(counterparty = '0x0000000000000000000000000000000000000000', 'issuer',
                      counterparty))
        )
    )
    GROUP BY tx_hash, holder
)
ARRAY JOIN legs AS leg
GROUP BY tx_hash, holder, condition_id
HAVING usdc_delta != 0;

-- net_flows: token rows per (tx, holder, token) with a non-zero net, plus the attributed cash. Per
-- (tx, holder, condition) the cash goes on the token row when exactly one token of that condition
-- moved for the holder, else on a cash row (outcome_index -1) of the condition.
INSERT INTO {db}.rebuild_flows{sfx}
WITH
    per_holder AS (
        SELECT
            tx_hash,
            holder,
            min(block_number) AS block_number,
            min(log_index) AS log_index,
            min(block_timestamp) AS block_timestamp,
            min(day_idx) AS day_idx,
            max(asset = 'token' AND delta > 0
                AND counterparty = '0x0000000000000000000000000000000000000000') AS minted,
            max(asset = 'token' AND delta < 0
                AND counterparty = '0x0000000000000000000000000000000000000000') AS burned,
            max(asset = 'token' AND delta < 0 AND after_resolution = 1
                AND counterparty = '0x0000000000000000000000000000000000000000') AS redeemed,
            max(counterparty IN {exchanges} OR operator IN {exchanges}) AS with_exchange,
            uniqExactIf(condition_id, asset = 'token') AS n_leg_conditions
        FROM {db}.rebuild_legs{sfx}
        GROUP BY tx_hash, holder
    ),
    -- Kind flags of the token legs of one condition (used when a holder touched several).
    per_condition AS (
        SELECT
            tx_hash,
            holder,
            condition_id,
            max(delta > 0 AND counterparty = '0x0000000000000000000000000000000000000000')
                AS minted,
            max(delta < 0 AND counterparty = '0x0000000000000000000000000000000000000000')
                AS burned,
            max(delta < 0 AND after_resolution = 1
                AND counterparty = '0x0000000000000000000000000000000000000000') AS redeemed,
            max(counterparty IN {exchanges} OR operator IN {exchanges}) AS with_exchange,
            1 AS seen
        FROM {db}.rebuild_legs{sfx}
        WHERE asset = 'token'
        GROUP BY tx_hash, holder, condition_id
    ),
    -- Per (tx, holder, condition): its non-zero token nets and its attributed cash.
    groups AS (
        SELECT
            tx_hash,
            holder,
            condition_id,
            groupArrayIf((outcome_index, token_id, token_delta), is_token = 1) AS tokens,
            sumIf(usdc, is_token = 0) AS usdc_delta
        FROM
        (
            SELECT
                tx_hash,
                holder,
                condition_id,
                toUInt8(1) AS is_token,
                outcome_index,
                token_id,
                sum(delta) AS token_delta,
                toInt256(0) AS usdc
            FROM {db}.rebuild_legs{sfx}
            WHERE asset = 'token'
            GROUP BY tx_hash, holder, condition_id, outcome_index, token_id
            HAVING token_delta != 0
            UNION ALL
            SELECT tx_hash, holder, condition_id, 0, toInt16(-1), toUInt256(0), toInt256(0),
                   usdc_delta
            FROM {db}.rebuild_cash{sfx}
        )
        GROUP BY tx_hash, holder, condition_id
    ),
    -- kind: the holder's flags when it touched at most one condition (or for cash of a condition
    -- whose tokens it did not move), else the flags of that condition's token legs.
    classified AS (
        SELECT
            g.tx_hash AS tx_hash,
            g.holder AS holder,
            g.condition_id AS condition_id,
            g.tokens AS tokens,
            g.usdc_delta AS usdc_delta,
            h.block_number AS block_number,
            h.log_index AS log_index,
            h.block_timestamp AS block_timestamp,
            h.day_idx AS day_idx,
            h.n_leg_conditions <= 1 OR p.seen = 0 AS holder_flags,
            multiIf(if(holder_flags, h.redeemed, p.redeemed) = 1, 'redeem',
                    if(holder_flags, h.burned, p.burned) = 1, 'merge',
                    if(holder_flags, h.minted, p.minted) = 1, 'split',
                    if(holder_flags, h.with_exchange, p.with_exchange) = 1, 'trade',
                    'transfer') AS kind
        FROM groups AS g
        INNER JOIN per_holder AS h ON g.tx_hash = h.tx_hash AND g.holder = h.holder
        LEFT JOIN per_condition AS p
            ON g.tx_hash = p.tx_hash AND g.holder = p.holder AND g.condition_id = p.condition_id
    )
SELECT
    tx_hash,
    block_number,
    log_index,
    block_timestamp,
    day_idx,
    holder,
    holder IN {system},
    kind,
    condition_id,
    row.1,
    row.2,
    row.3,
    row.4
FROM classified
ARRAY JOIN
    arrayConcat(
        arrayMap(t -> (t.1, t.2, t.3, if(length(tokens) = 1, usdc_delta, toInt256(0))), tokens),
        if(usdc_delta != 0 AND length(tokens) != 1,
           [(toInt16(-1), toUInt256(0), toInt256(0), usdc_delta)],
           [])) AS row;

INSERT INTO {db}.net_flows{sfx} SELECT * FROM {db}.rebuild_flows{sfx};

-- trades_with_direction: the trade rows of wallets. Direction from the row's own leg (token leg
-- first, else cash); confidence from the opposite leg the pairing gave the same wallet in the same
-- tx and condition (its cash there for a token row, its token legs there for a cash row).
INSERT INTO {db}.trades_with_direction{sfx}
SELECT
    tx_hash,
    block_number,
    block_timestamp,
    day_idx,
    wallet,
    condition_id,
    outcome_index,
    token_id,
    multiIf(token_delta > 0, 'BUY',
            token_delta < 0, 'SELL',
            usdc_delta < 0, 'BUY',
            'SELL') AS direction,
    multiIf(
        -- token row: the cash paired with the condition is the opposite leg
        token_delta != 0 AND pair_usdc_delta = 0, 'MEDIUM',
        token_delta > 0 AND pair_usdc_delta < 0, 'HIGH',
        token_delta < 0 AND pair_usdc_delta > 0, 'HIGH',
        token_delta != 0, 'LOW',
        -- cash-only row: the token legs of the condition are the opposite leg
        pair_tokens_in = 0 AND pair_tokens_out = 0, 'MEDIUM',
        usdc_delta < 0 AND pair_tokens_in = 1, 'HIGH',
        usdc_delta > 0 AND pair_tokens_out = 1, 'HIGH',
        'LOW') AS confidence,
    toUInt256(abs(token_delta)) AS token_amount,
    toUInt256(abs(usdc_delta)) AS usdc_amount,
    token_delta,
    usdc_delta,
    tx_usdc_delta,
    if(token_amount = 0 OR usdc_amount = 0, 0.,
       toFloat64(usdc_amount) / toFloat64(token_amount)) AS price
FROM
(
    SELECT
        *,
        sum(usdc_delta) OVER tx AS tx_usdc_delta,
        sum(usdc_delta) OVER pair AS pair_usdc_delta,
        max(token_delta > 0) OVER pair AS pair_tokens_in,
        max(token_delta < 0) OVER pair AS pair_tokens_out
    FROM {db}.rebuild_flows{sfx}
    WHERE is_system = 0
    WINDOW tx AS (PARTITION BY tx_hash, wallet),
           pair AS (PARTITION BY tx_hash, wallet, condition_id)
)
WHERE kind = 'trade';

-- section: finish
-- wallet_market_pnl: positions per outcome, cash, payout value and PnL per (wallet, condition).
-- Payout arrays are 1-based in ClickHouse: outcome i pays payout_numerators[i + 1].
INSERT INTO {db}.wallet_market_pnl{sfx}
WITH
    {complete_days_cte},
    markets AS (
        SELECT condition_id, max(outcome_count) AS outcome_count
        FROM {db}.token_outcomes{sfx}
        GROUP BY condition_id
    ),
    resolutions AS (
        SELECT
            condition_id,
            argMin(payout_numerators, (block_number, log_index)) AS payouts,
            1 AS is_resolved
        FROM {db}.condition_resolutions FINAL
        WHERE day_idx IN (SELECT day_idx FROM complete_days)
        GROUP BY condition_id
    ),
    -- Grouped by a prefix of net_flows' sort key, so the grouping streams in that order.
    per_wallet AS (
        SELECT
            wallet,
            condition_id,
            sumMap([outcome_index], [token_delta]) AS held,  -- (outcome indexes, net tokens)
            sum(usdc_delta) AS cash_units,
            count() AS flows
        FROM {db}.net_flows{sfx}
        WHERE is_system = 0 AND condition_id != ''
        GROUP BY wallet, condition_id
    ),
    positions AS (
        SELECT
            w.wallet AS wallet,
            w.condition_id AS condition_id,
            m.outcome_count AS outcome_count,
            arrayMap(i -> if(has(w.held.1, toInt16(i)),
                             toInt256(w.held.2[indexOf(w.held.1, toInt16(i))]), toInt256(0)),
                     range(m.outcome_count)) AS positions,
            w.cash_units AS cash_units,
            w.flows AS flows
        FROM per_wallet AS w
        INNER JOIN markets AS m ON w.condition_id = m.condition_id
    )
SELECT
    p.wallet,
    p.condition_id,
    p.outcome_count,
    p.positions,
    p.cash_units,
    if(r.is_resolved = 1 AND arraySum(r.payouts) > 0,
       arraySum(arrayMap((h, num) -> intDiv(h * toInt256(num), toInt256(arraySum(r.payouts))),
                         p.positions,
                         arrayResize(r.payouts, length(p.positions), toUInt256(0)))),
       toInt256(0)) AS payout_units,
    p.cash_units + payout_units,
    r.is_resolved = 1,
    if(r.is_resolved = 1, r.payouts, []),
    p.flows
FROM positions AS p
LEFT JOIN resolutions AS r ON p.condition_id = r.condition_id;

DROP TABLE IF EXISTS {db}.rebuild_legs{sfx} SYNC;
DROP TABLE IF EXISTS {db}.rebuild_cash{sfx} SYNC;
DROP TABLE IF EXISTS {db}.rebuild_flows{sfx} SYNC;
