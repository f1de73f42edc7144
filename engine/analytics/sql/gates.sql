-- Gate queries, one per "-- query: NAME" section; engine/analytics/gates.py turns their rows into gate values.
-- Placeholders as in rebuild.sql: {db}, {sfx} (the analytics tables under test), {start_date},
-- {days}, {cash_tokens} (the collateral), {issuers}. Formulas and thresholds: docs/ANALYTICS.md.

-- query: completeness
-- Per configured day: the checkpoint's counts next to the rows staged for that day (after FINAL).
SELECT
    d.day_idx AS day_idx,
    cp.status AS status,
    cp.erc20_count AS erc20_checkpoint,
    s20.n AS erc20_staged,
    cp.erc1155_count AS erc1155_checkpoint,
    s1155.n AS erc1155_staged,
    cp.resolution_count AS resolution_checkpoint,
    sres.n AS resolution_staged,
    cp.registration_count AS registration_checkpoint,
    sreg.n AS registration_staged
FROM (SELECT toUInt32(number) AS day_idx FROM numbers({days})) AS d
LEFT JOIN
(
    SELECT day_idx, status, erc20_count, erc1155_count, resolution_count, registration_count
    FROM {db}.backfill_checkpoint FINAL
    WHERE start_date = toDate('{start_date}')
) AS cp ON d.day_idx = cp.day_idx
LEFT JOIN
(
    SELECT day_idx, count() AS n FROM {db}.erc20_transfers_staging FINAL GROUP BY day_idx
) AS s20 ON d.day_idx = s20.day_idx
LEFT JOIN
(
    SELECT day_idx, count() AS n FROM {db}.erc1155_transfers_staging FINAL GROUP BY day_idx
) AS s1155 ON d.day_idx = s1155.day_idx
LEFT JOIN
(
    SELECT day_idx, count() AS n FROM {db}.condition_resolutions FINAL GROUP BY day_idx
) AS sres ON d.day_idx = sres.day_idx
LEFT JOIN
(
    SELECT day_idx, count() AS n FROM {db}.token_registrations FINAL GROUP BY day_idx
) AS sreg ON d.day_idx = sreg.day_idx
ORDER BY day_idx;

-- query: multi_block_txs
-- The transactions whose rows (after FINAL) name more than one block, over the four staging
-- tables: written once into the scratch table gate_multi_block{sfx} (engine/analytics/gates.py
-- creates and drops it), which the duplicates query then reads four times. One grouping (it
-- spills to disk under the memory budget); one per table would each fill their own.
INSERT INTO {db}.gate_multi_block{sfx}
SELECT tx_hash
FROM
(
    SELECT tx_hash, block_number FROM {db}.erc20_transfers_staging FINAL
    UNION ALL
    SELECT tx_hash, block_number FROM {db}.erc1155_transfers_staging FINAL
    UNION ALL
    SELECT tx_hash, block_number FROM {db}.condition_resolutions FINAL
    UNION ALL
    SELECT tx_hash, block_number FROM {db}.token_registrations FINAL
)
GROUP BY tx_hash
HAVING min(block_number) != max(block_number);

-- query: duplicates
-- Per table: rows left after FINAL beyond the distinct keys of the raw table (keys FINAL did not
-- collapse; a server with do_not_merge_across_partitions_select_final = 1 leaves one per extra
-- partition), plus rows after FINAL of a transaction staged under more than one block (the same
-- logs under new keys, e.g. re-staged after a reorg or by a log_index bug: FINAL keeps both).
-- raw_rows - unique_keys (rows waiting for a background merge) is shown but harmless.
-- Comparing count() FINAL with uniqExact(key) FINAL would always give 0 and prove nothing.
-- The rebuilt tables must have unique keys too. Distinct keys are counted as the groups of a
-- GROUP BY in the table's sort order (streamed, bounded memory; same number as uniqExact).
SELECT 'erc20_transfers_staging' AS tbl,
       (SELECT count() FROM {db}.erc20_transfers_staging FINAL) AS final_rows,
       (SELECT count() FROM (SELECT 1 FROM {db}.erc20_transfers_staging
                             GROUP BY tx_hash, log_index)) AS unique_keys,
       (SELECT count() FROM {db}.erc20_transfers_staging) AS raw_rows,
       (SELECT count() FROM {db}.erc20_transfers_staging FINAL
        WHERE tx_hash IN (SELECT tx_hash FROM {db}.gate_multi_block{sfx})) AS multi_block_rows
UNION ALL
SELECT 'erc1155_transfers_staging',
       (SELECT count() FROM {db}.erc1155_transfers_staging FINAL),
       (SELECT count() FROM (SELECT 1 FROM {db}.erc1155_transfers_staging
                             GROUP BY tx_hash, log_index, batch_index)),
       (SELECT count() FROM {db}.erc1155_transfers_staging),
       (SELECT count() FROM {db}.erc1155_transfers_staging FINAL
        WHERE tx_hash IN (SELECT tx_hash FROM {db}.gate_multi_block{sfx}))
UNION ALL
SELECT 'condition_resolutions',
       (SELECT count() FROM {db}.condition_resolutions FINAL),
       (SELECT count() FROM (SELECT 1 FROM {db}.condition_resolutions
                             GROUP BY tx_hash, log_index)),
       (SELECT count() FROM {db}.condition_resolutions),
       (SELECT count() FROM {db}.condition_resolutions FINAL
        WHERE tx_hash IN (SELECT tx_hash FROM {db}.gate_multi_block{sfx}))
UNION ALL
SELECT 'token_registrations',
       (SELECT count() FROM {db}.token_registrations FINAL),
       (SELECT count() FROM (SELECT 1 FROM {db}.token_registrations
                             GROUP BY tx_hash, log_index)),
       (SELECT count() FROM {db}.token_registrations),
       (SELECT count() FROM {db}.token_registrations FINAL
        WHERE tx_hash IN (SELECT tx_hash FROM {db}.gate_multi_block{sfx}))
UNION ALL
SELECT 'token_outcomes{sfx}',
       (SELECT count() FROM {db}.token_outcomes{sfx}),
       (SELECT count() FROM (SELECT 1 FROM {db}.token_outcomes{sfx} GROUP BY token_id)),
       (SELECT count() FROM {db}.token_outcomes{sfx}),
       0
UNION ALL
SELECT 'net_flows{sfx}',
       (SELECT count() FROM {db}.net_flows{sfx}),
       (SELECT count() FROM (SELECT 1 FROM {db}.net_flows{sfx}
                             GROUP BY wallet, condition_id, tx_hash, outcome_index, token_id)),
       (SELECT count() FROM {db}.net_flows{sfx}),
       0
UNION ALL
SELECT 'trades_with_direction{sfx}',
       (SELECT count() FROM {db}.trades_with_direction{sfx}),
       (SELECT count() FROM (SELECT 1 FROM {db}.trades_with_direction{sfx}
                             GROUP BY wallet, tx_hash, condition_id, outcome_index, token_id)),
       (SELECT count() FROM {db}.trades_with_direction{sfx}),
       0
UNION ALL
SELECT 'wallet_market_pnl{sfx}',
       (SELECT count() FROM {db}.wallet_market_pnl{sfx}),
       (SELECT count() FROM (SELECT 1 FROM {db}.wallet_market_pnl{sfx}
                             GROUP BY wallet, condition_id)),
       (SELECT count() FROM {db}.wallet_market_pnl{sfx}),
       0;

-- query: high_confidence_share
SELECT confidence, count() AS trades, sum(usdc_amount) AS usdc_volume
FROM {db}.trades_with_direction{sfx}
GROUP BY confidence;

-- query: conservation_supply
-- Per (condition, outcome): tokens minted (from the zero address) minus burned (to it) by the
-- issuers before the condition's resolution, read from staging (not from net_flows).
WITH
    {complete_days_cte},
    resolved AS (
        SELECT condition_id, min((block_number, log_index)) AS resolved_at, 1 AS is_resolved
        FROM {db}.condition_resolutions FINAL
        WHERE day_idx IN (SELECT day_idx FROM complete_days)
        GROUP BY condition_id
    )
SELECT
    o.condition_id AS condition_id,
    o.outcome_index AS outcome_index,
    sum(if(t.from_address = '0x0000000000000000000000000000000000000000',
           toInt256(t.value), -toInt256(t.value))) AS supply,
    sumIf(toInt256(t.value), t.from_address = '0x0000000000000000000000000000000000000000')
        AS minted
FROM {db}.erc1155_transfers_staging AS t FINAL
INNER JOIN {db}.token_outcomes{sfx} AS o ON t.token_id = o.token_id
LEFT JOIN resolved AS r ON o.condition_id = r.condition_id
WHERE t.contract IN {issuers}
  AND t.day_idx IN (SELECT day_idx FROM complete_days)
  AND (t.from_address = '0x0000000000000000000000000000000000000000'
       OR t.to_address = '0x0000000000000000000000000000000000000000')
  AND t.from_address != t.to_address
  AND (r.is_resolved = 0 OR (t.block_number, t.log_index) < r.resolved_at)
GROUP BY o.condition_id, o.outcome_index;

-- query: conservation_locked
-- Per condition: cash paid into the issuers minus cash paid out of them in the txs that minted or
-- burned that condition's tokens before its resolution (txs touching several conditions are left
-- out and counted in `ambiguous_txs`).
WITH
    {complete_days_cte},
    resolved AS (
        SELECT condition_id, min((block_number, log_index)) AS resolved_at, 1 AS is_resolved
        FROM {db}.condition_resolutions FINAL
        WHERE day_idx IN (SELECT day_idx FROM complete_days)
        GROUP BY condition_id
    ),
    mint_txs AS (
        SELECT t.tx_hash AS tx_hash,
               uniqExact(o.condition_id) AS n_conditions,
               any(o.condition_id) AS condition_id
        FROM {db}.erc1155_transfers_staging AS t FINAL
        INNER JOIN {db}.token_outcomes{sfx} AS o ON t.token_id = o.token_id
        LEFT JOIN resolved AS r ON o.condition_id = r.condition_id
        WHERE t.contract IN {issuers}
          AND t.day_idx IN (SELECT day_idx FROM complete_days)
          AND (t.from_address = '0x0000000000000000000000000000000000000000'
               OR t.to_address = '0x0000000000000000000000000000000000000000')
          AND t.from_address != t.to_address
          AND (r.is_resolved = 0 OR (t.block_number, t.log_index) < r.resolved_at)
        GROUP BY t.tx_hash
    ),
    issuer_cash AS (
        SELECT tx_hash,
               sum(multiIf(to_address IN {issuers} AND from_address NOT IN {issuers},
                           toInt256(value),
                           from_address IN {issuers} AND to_address NOT IN {issuers},
                           -toInt256(value),
                           toInt256(0))) AS into_issuers
        FROM {db}.erc20_transfers_staging FINAL
        WHERE token IN {cash_tokens}
          AND day_idx IN (SELECT day_idx FROM complete_days)
          AND tx_hash IN (SELECT tx_hash FROM mint_txs)
        GROUP BY tx_hash
    )
SELECT
    if(m.n_conditions = 1, m.condition_id, '') AS condition_id,
    sum(c.into_issuers) AS locked,
    countIf(m.n_conditions != 1) AS ambiguous_txs
FROM mint_txs AS m
LEFT JOIN issuer_cash AS c ON m.tx_hash = c.tx_hash
GROUP BY condition_id;

-- query: cash_neutrality
-- Over the mapped markets (condition_id != ''): every holder's cash plus every holder's tokens
-- valued at the payout vector (resolved markets) or at 1 / outcome_count per token (open markets).
-- Zero when the issuers hold exactly the collateral that backs the outstanding tokens and every
-- leg is signed and attributed right. Rows of unmapped tokens are counted separately.
WITH
    {complete_days_cte},
    resolutions AS (
        SELECT condition_id,
               argMin(payout_numerators, (block_number, log_index)) AS payouts,
               1 AS is_resolved
        FROM {db}.condition_resolutions FINAL
        WHERE day_idx IN (SELECT day_idx FROM complete_days)
        GROUP BY condition_id
    ),
    markets AS (
        SELECT condition_id, max(outcome_count) AS outcome_count
        FROM {db}.token_outcomes{sfx}
        GROUP BY condition_id
    ),
    holdings AS (
        SELECT wallet, condition_id, outcome_index, sum(token_delta) AS held
        FROM {db}.net_flows{sfx}
        WHERE condition_id != '' AND outcome_index >= 0
        GROUP BY wallet, condition_id, outcome_index
    ),
    valued AS (
        SELECT
            r.is_resolved = 1 AND arraySum(r.payouts) > 0 AS resolved,
            if(resolved,
               intDiv(h.held * toInt256(r.payouts[h.outcome_index + 1]),
                      toInt256(arraySum(r.payouts))),
               toInt256(0)) AS resolved_value,
            if(resolved OR m.outcome_count = 0, 0.,
               toFloat64(h.held) / m.outcome_count) AS open_value
        FROM holdings AS h
        LEFT JOIN resolutions AS r ON h.condition_id = r.condition_id
        LEFT JOIN markets AS m ON h.condition_id = m.condition_id
    )
SELECT
    (SELECT sum(usdc_delta) FROM {db}.net_flows{sfx} WHERE condition_id != '') AS cash,
    (SELECT sum(abs(usdc_delta)) FROM {db}.net_flows{sfx} WHERE condition_id != '')
        AS cash_gross,
    (SELECT sum(resolved_value) FROM valued) AS resolved_value,
    (SELECT sum(open_value) FROM valued) AS open_value,
    (SELECT count() FROM {db}.net_flows{sfx} WHERE condition_id = '' AND token_id != 0)
        AS unmapped_token_rows;

-- query: unattributed_cash
-- Per (tx, wallet) of non-system holders that moved a mapped market's tokens in the tx: its cash
-- volume, and the part of it net_flows left under condition '' (no token leg to pair it with).
-- Cash of txs that moved only unmapped tokens is counted apart (token_mapping / cash_neutrality
-- see those); cash with no token in the tx (deposits, plain transfers) is not market cash.
WITH
    per_tx AS (
        SELECT
            tx_hash,
            wallet,
            max(token_id != 0 AND condition_id != '') AS mapped_tokens,
            max(token_id != 0) AS any_tokens,
            sum(abs(usdc_delta)) AS tx_volume,
            sumIf(abs(usdc_delta), condition_id = '') AS tx_unattributed
        FROM {db}.net_flows{sfx}
        WHERE is_system = 0
        GROUP BY tx_hash, wallet
    )
SELECT
    sumIf(tx_unattributed, mapped_tokens = 1) AS unattributed,
    sumIf(tx_volume, mapped_tokens = 1) AS volume,
    countIf(mapped_tokens = 1 AND tx_unattributed > 0) AS txs,
    sumIf(tx_volume, mapped_tokens = 0 AND any_tokens = 1) AS unmapped_volume
FROM per_tx;

-- query: resolution_sanity
-- One row per resolved condition. winning_index is 0-based and payout arrays are 1-based, so the
-- winner's numerator is payout_numerators[winning_index + 1].
WITH
    {complete_days_cte},
    registered AS (
        SELECT condition_id, 1 AS is_registered
        FROM {db}.token_registrations FINAL
        WHERE day_idx IN (SELECT day_idx FROM complete_days)
        GROUP BY condition_id
    )
SELECT
    r.condition_id AS condition_id,
    count() AS events,
    any(r.outcome_slot_count) AS slots,
    any(r.payout_numerators) AS payouts,
    any(r.payout_denominator) AS denominator,
    any(r.winning_index) AS winning_index,
    max(g.is_registered) AS registered,
    multiIf(
        events != 1, 'resolved more than once',
        arraySum(payouts) = 0, 'payouts sum to 0',
        denominator != arraySum(payouts), 'payout_denominator != sum(payout_numerators)',
        slots < 2, 'fewer than 2 outcomes',
        length(payouts) != slots, 'length(payout_numerators) != outcome_slot_count',
        registered = 1 AND slots != 2, 'registered as a binary pair but outcome count != 2',
        countEqual(arrayMap(p -> p != 0, payouts), 1) = 1
            AND (winning_index < 0 OR winning_index >= slots), 'one-hot but winning_index out of range',
        countEqual(arrayMap(p -> p != 0, payouts), 1) = 1
            AND payouts[winning_index + 1] != denominator, 'winning_index does not name the paid outcome',
        countEqual(arrayMap(p -> p != 0, payouts), 1) != 1 AND winning_index != -1,
            'not one-hot but winning_index != -1',
        '') AS problem
FROM {db}.condition_resolutions AS r FINAL
LEFT JOIN registered AS g ON r.condition_id = g.condition_id
WHERE r.day_idx IN (SELECT day_idx FROM complete_days)
GROUP BY r.condition_id;

-- query: win_rate
SELECT countIf(pnl_units > 0) AS winners, count() AS positions
FROM {db}.wallet_market_pnl{sfx}
WHERE resolved = 1;

-- query: token_mapping
-- Every TokenRegistered pair must be the outcome 0 and outcome 1 position ids computed for its
-- condition (in either order; the exchange registers (token, complement) and the reverse).
WITH
    {complete_days_cte}
SELECT
    count() AS registrations,
    countIf(a.condition_id = g.condition_id AND b.condition_id = g.condition_id
            AND a.outcome_count = 2
            AND arraySort([a.outcome_index, b.outcome_index]) = [0, 1]) AS matching
FROM {db}.token_registrations AS g FINAL
LEFT JOIN {db}.token_outcomes{sfx} AS a ON g.token0 = a.token_id
LEFT JOIN {db}.token_outcomes{sfx} AS b ON g.token1 = b.token_id
WHERE g.day_idx IN (SELECT day_idx FROM complete_days);
