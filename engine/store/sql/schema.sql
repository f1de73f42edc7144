-- Staging, checkpoint, heartbeat, cache and bookkeeping tables of the store.
-- {db} is replaced by the configured database name. Statements are separated by ';' at line end.

CREATE DATABASE IF NOT EXISTS {db};

-- ERC20 Transfer logs of the configured tokens (3 topics + 32 data bytes only).
CREATE TABLE IF NOT EXISTS {db}.erc20_transfers_staging
(
    tx_hash         String,
    log_index       UInt32,
    block_number    UInt64,
    block_timestamp DateTime('UTC'),
    day_idx         UInt32,
    token           LowCardinality(String),
    from_address    String,
    to_address      String,
    value           UInt256,
    created_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY intDiv(day_idx, 32)
ORDER BY (tx_hash, log_index);

-- ERC1155 TransferSingle (batch_index 0) and TransferBatch (one row per (id, value)).
CREATE TABLE IF NOT EXISTS {db}.erc1155_transfers_staging
(
    tx_hash         String,
    log_index       UInt32,
    batch_index     UInt32,
    block_number    UInt64,
    block_timestamp DateTime('UTC'),
    day_idx         UInt32,
    contract        LowCardinality(String),
    operator        String,
    from_address    String,
    to_address      String,
    token_id        UInt256,
    value           UInt256,
    created_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY intDiv(day_idx, 32)
ORDER BY (tx_hash, log_index, batch_index);

-- ConditionalTokens ConditionResolution events. winning_index is 0-based, -1 when not one-hot.
CREATE TABLE IF NOT EXISTS {db}.condition_resolutions
(
    tx_hash            String,
    log_index          UInt32,
    block_number       UInt64,
    block_timestamp    DateTime('UTC'),
    day_idx            UInt32,
    contract           LowCardinality(String),
    condition_id       String,
    oracle             String,
    question_id        String,
    outcome_slot_count UInt32,
    payout_numerators  Array(UInt256),
    payout_denominator UInt256,
    winning_index      Int32,
    created_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (tx_hash, log_index);

-- CTF Exchange TokenRegistered events: the (token0, token1) pair of a condition.
CREATE TABLE IF NOT EXISTS {db}.token_registrations
(
    tx_hash         String,
    log_index       UInt32,
    block_number    UInt64,
    block_timestamp DateTime('UTC'),
    day_idx         UInt32,
    exchange        LowCardinality(String),
    token0          UInt256,
    token1          UInt256,
    condition_id    String,
    created_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (tx_hash, log_index);

-- One row per finished day, written only after the day's rows are inserted.
-- chain_id and start_date make checkpoints of another chain or calendar invisible.
CREATE TABLE IF NOT EXISTS {db}.backfill_checkpoint
(
    day_idx            UInt32,
    status             LowCardinality(String),
    shard_id           UInt16,
    from_block         UInt64,
    to_block           UInt64,
    erc20_count        UInt64,
    erc1155_count      UInt64,
    resolution_count   UInt64,
    registration_count UInt64,
    chain_id           UInt64,
    start_date         Date,
    error              String,
    updated_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY day_idx;

-- Latest heartbeat per worker; operators query dateDiff('minute', updated_at, now()).
CREATE TABLE IF NOT EXISTS {db}.worker_heartbeats
(
    worker_id  String,
    shard_id   UInt16,
    shards     UInt16,
    pid        UInt32,
    state      LowCardinality(String),
    day_idx    Int32,
    from_block UInt64,
    to_block   UInt64,
    rows       UInt64,
    last_batch String,
    last_error String,
    updated_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY worker_id;

-- Cache of day -> block range (binary search results). to_block = from_block - 1 for a day with no blocks.
CREATE TABLE IF NOT EXISTS {db}.day_blocks
(
    chain_id   UInt64,
    start_date Date,
    day_idx    UInt32,
    from_block UInt64,
    to_block   UInt64,
    n_blocks   UInt64,
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (chain_id, start_date, day_idx);

-- Logs and rows per raw chunk and kind, written by the decode views (engine/store/sql/decode.sql);
-- checkpoint counts and skip reports are read from here. Kept a week.
CREATE TABLE IF NOT EXISTS {db}.decode_counts
(
    insert_id  UInt64,
    chunk_id   UInt64,
    day_idx    UInt32,
    kind       LowCardinality(String),
    logs       UInt64,
    rows       UInt64,
    created_at DateTime('UTC') DEFAULT now()
)
ENGINE = MergeTree
ORDER BY (day_idx, chunk_id, insert_id, kind)
TTL created_at + INTERVAL 7 DAY;

-- One row per on-complete rebuild of a backfill (chain, start_date, days), written by the console
-- that ran it: with several consoles on one server (--shard-ids) it runs exactly once.
CREATE TABLE IF NOT EXISTS {db}.on_complete_runs
(
    chain_id    UInt64,
    start_date  Date,
    days        UInt32,
    holder      String,
    swapped     UInt8,
    reason      String,
    finished_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (chain_id, start_date, days, finished_at);
