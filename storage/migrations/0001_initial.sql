-- 0001: the initial schema.
--
-- Conventions for every migration in this folder:
--   * files are append-only: never edit one that has been released, add the next number;
--   * ${RETENTION_DAYS} is replaced by the configured retention of raw data (days);
--   * each CREATE TABLE is written for one node; `driftwarden migrate --cluster NAME`
--     renders it as ReplicatedMergeTree ON CLUSTER plus a Distributed table, sharded
--     by the expression in the statement's `-- shard by:` comment (rand() when absent).
--   * readers that need exact counts use FINAL (or the `final` setting): the
--     ReplacingMergeTree tables deduplicate retried writes by key at merge time.
--
-- Feature layout: parallel name/value arrays (num_names/num_values, cat_names/cat_values).
-- Measured with bench/feature_layout.py (1M events, 20 numeric + 5 categorical features,
-- see BENCHMARKS.md): against one typed column per feature, arrays insert at 1.7x the time
-- and read one feature's histogram at 1.8x, all 20 features at 2.0x; Map inserts at 2.4x
-- but reads 20 features at 5.1x (a linear key scan per row); the JSON type reads at 1.0-1.4x
-- but inserts at 18.6x (about 60k events/s here, below what one collector must sustain).
-- One column per feature is not an option for a table shared by every model.

CREATE TABLE IF NOT EXISTS inferences
(
    -- shard by: cityHash64(event_id)
    event_id            UUID,
    ts                  DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    received_at         DateTime('UTC') DEFAULT now() CODEC(Delta, ZSTD(1)),
    model               LowCardinality(String),
    model_version       LowCardinality(String),
    model_digest        LowCardinality(String),
    protocol            LowCardinality(String),  -- oip | openai | generic | python | ingest | unknown
    endpoint            LowCardinality(String),  -- request path, e.g. /v2/models/bikes/infer
    tenant              LowCardinality(String),
    status              UInt16,                  -- HTTP status returned to the client; 0 when none was
    latency_ms          Float64 CODEC(Gorilla, ZSTD(1)),  -- total, as the client saw it
    upstream_latency_ms Float64 CODEC(Gorilla, ZSTD(1)),  -- model server only
    ttft_ms             Nullable(Float64),       -- time to first token of a streamed response
    request_bytes       UInt32,
    response_bytes      UInt32,
    num_names           Array(LowCardinality(String)),
    num_values          Array(Float64),
    cat_names           Array(LowCardinality(String)),
    cat_values          Array(String),
    prediction          Nullable(Float64),       -- the primary numeric output (regression value, score)
    prediction_label    String,                  -- the primary categorical output (class label)
    output_names        Array(LowCardinality(String)),  -- every numeric output, e.g. class probabilities
    output_values       Array(Float64),
    output_text         String CODEC(ZSTD(3)),   -- generated text (after redaction)
    input_payload       String CODEC(ZSTD(3)),   -- raw request body, when sampled (after redaction)
    output_payload      String CODEC(ZSTD(3)),   -- raw response body, when sampled (after redaction)
    payload_sampled     Bool,
    payload_truncated   Bool,
    input_hash          UInt64,                  -- canonical hash of the inputs
    output_hash         UInt64,                  -- canonical hash of the outputs
    params_hash         UInt64,                  -- canonical hash of the inference parameters
    deterministic       Bool,                    -- parameters ask for a deterministic output
    prompt_tokens       UInt32,
    completion_tokens   UInt32,
    finish_reason       LowCardinality(String),
    error_class         LowCardinality(String),  -- '' when the inference succeeded
    trace_id            String,                  -- W3C trace id from traceparent
    is_replay           Bool,                    -- sent by the replay detector, never counted as traffic
    replay_of           Nullable(UUID),          -- the recorded event a replay re-sent
    redactions          UInt16,                  -- values redacted before the event left the collector
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_input_hash input_hash TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (model, ts, event_id)
TTL received_at + INTERVAL ${RETENTION_DAYS} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS ground_truth
(
    -- shard by: cityHash64(event_id)
    event_id    UUID,
    model       LowCardinality(String),
    ts          DateTime64(6, 'UTC'),            -- when the outcome was observed
    label       String,                          -- class label, for classification
    value       Nullable(Float64),               -- numeric outcome, for regression
    received_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(received_at)         -- a later label for the same event replaces the earlier
ORDER BY (model, event_id)
TTL toDateTime(received_at) + INTERVAL ${RETENTION_DAYS} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Statistics of a reference window, computed once and reused by every drift run.
CREATE TABLE IF NOT EXISTS reference_profiles
(
    model           LowCardinality(String),
    model_version   LowCardinality(String),      -- '' when the reference spans all versions
    feature         LowCardinality(String),
    feature_type    LowCardinality(String),      -- numeric | categorical | prediction
    reference_start DateTime64(6, 'UTC'),
    reference_end   DateTime64(6, 'UTC'),
    rows            UInt64,
    missing         UInt64,
    unique_values   UInt64,
    mean            Float64,
    std             Float64,
    min             Float64,
    max             Float64,
    bin_edges       Array(Float64),              -- numeric: histogram edges (reference quantiles)
    bin_counts      Array(UInt64),
    categories      Array(String),               -- categorical: observed categories
    category_counts Array(UInt64),
    profile_hash    String,                      -- content hash of the inputs of this profile
    created_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (model, model_version, feature, reference_start, reference_end);

-- One row per feature (or the prediction, or the whole dataset) per analysed window.
CREATE TABLE IF NOT EXISTS drift_results
(
    run_id             UUID,
    computed_at        DateTime64(3, 'UTC') DEFAULT now64(3),
    model              LowCardinality(String),
    model_version      LowCardinality(String),
    target             LowCardinality(String),   -- feature | prediction | dataset
    feature            LowCardinality(String),
    feature_type       LowCardinality(String),
    method             LowCardinality(String),   -- ks | wasserstein | psi | jensenshannon | chisquare | ztest | share
    statistic          Float64,                  -- the method's score (distance, statistic, or p-value)
    p_value            Nullable(Float64),
    threshold          Float64,
    drifted            Bool,                     -- this window's verdict
    persistent         Bool,                     -- drifted in the configured number of consecutive windows
    missing_share      Float64,
    out_of_range_share Float64,
    new_categories     Array(String),
    reference_start    DateTime64(6, 'UTC'),
    reference_end      DateTime64(6, 'UTC'),
    current_start      DateTime64(6, 'UTC'),
    current_end        DateTime64(6, 'UTC'),
    reference_rows     UInt64,
    current_rows       UInt64,
    details            String,                   -- JSON: bins and counts of both windows
    code_version       LowCardinality(String),
    schema_version     UInt32,
    input_hash         String                    -- content hash of everything the result depends on
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(current_start)
ORDER BY (model, model_version, target, feature, method, current_start, current_end, reference_start, reference_end);

CREATE TABLE IF NOT EXISTS performance_results
(
    run_id          UUID,
    computed_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    model           LowCardinality(String),
    model_version   LowCardinality(String),
    task            LowCardinality(String),      -- classification | regression
    metric          LowCardinality(String),      -- accuracy | precision | recall | f1 | roc_auc | mae | rmse | mean_error
    value           Float64,
    current_start   DateTime64(6, 'UTC'),
    current_end     DateTime64(6, 'UTC'),
    predictions     UInt64,                      -- predictions in the window
    labelled        UInt64,                      -- of which have ground truth so far
    code_version    LowCardinality(String),
    schema_version  UInt32,
    input_hash      String
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(current_start)
ORDER BY (model, model_version, metric, current_start, current_end);

CREATE TABLE IF NOT EXISTS latency_results
(
    run_id            UUID,
    computed_at       DateTime64(3, 'UTC') DEFAULT now64(3),
    model             LowCardinality(String),
    model_version     LowCardinality(String),
    current_start     DateTime64(6, 'UTC'),
    current_end       DateTime64(6, 'UTC'),
    requests          UInt64,
    errors            UInt64,                    -- upstream 5xx and collector errors
    upstream_errors   UInt64,
    collector_errors  UInt64,
    throughput_rps    Float64,
    error_ratio       Float64,
    latency_mean_ms   Float64,
    latency_p50_ms    Float64,
    latency_p90_ms    Float64,
    latency_p95_ms    Float64,
    latency_p99_ms    Float64,
    ttft_p50_ms       Nullable(Float64),
    ttft_p95_ms       Nullable(Float64),
    slo_latency_ms    Float64,                   -- latency objective
    slo_percentile    Float64,                   -- share of requests that must meet it
    slo_attainment    Float64,                   -- share of requests that met it
    burn_rate_1h      Float64,
    burn_rate_6h      Float64,
    burn_rate_24h     Float64,
    burn_rate_30d     Float64,
    code_version      LowCardinality(String),
    schema_version    UInt32,
    input_hash        String
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(current_start)
ORDER BY (model, model_version, current_start, current_end);

CREATE TABLE IF NOT EXISTS reproducibility_results
(
    run_id          UUID,
    computed_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    model           LowCardinality(String),
    model_version   LowCardinality(String),
    model_digest    LowCardinality(String),
    kind            LowCardinality(String),      -- consistency | replay
    current_start   DateTime64(6, 'UTC'),
    current_end     DateTime64(6, 'UTC'),
    checked         UInt64,                      -- input groups (consistency) or replayed events (replay)
    mismatches      UInt64,
    rate            Float64,                     -- share reproduced: 1 - mismatches / checked
    tolerance       Float64,
    details         String,                      -- JSON: sample of mismatching event ids
    code_version    LowCardinality(String),
    schema_version  UInt32,
    input_hash      String
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(current_start)
ORDER BY (model, model_version, model_digest, kind, current_start, current_end);

CREATE TABLE IF NOT EXISTS detector_runs
(
    run_id          UUID,
    detector        LowCardinality(String),      -- drift | performance | latency | consistency | replay
    model           LowCardinality(String),
    started_at      DateTime64(3, 'UTC'),
    finished_at     DateTime64(3, 'UTC'),
    duration_ms     Float64,
    status          LowCardinality(String),      -- ok | error | skipped
    error           String,
    current_start   DateTime64(6, 'UTC'),
    current_end     DateTime64(6, 'UTC'),
    results         UInt32,                      -- rows written
    input_hash      String,
    code_version    LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(started_at)
ORDER BY (detector, model, started_at);
