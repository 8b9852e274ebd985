-- 0012: results of the model-owner analytics: multivariate drift, data quality, segments.
--
-- All three are ReplacingMergeTree by computed_at: recomputing a window writes new rows with
-- a later computed_at, readers use FINAL. Windows are half-open [start, end) in UTC.

-- Multivariate drift of a window against its reference, one row per method:
--   pca_reconstruction: mean PCA reconstruction error of the standardised, count-encoded rows
--                       (NannyML's DataReconstructionDriftCalculator), thresholds = mean +- 3 std
--                       of the reference split into chunks as long as the current window;
--   domain_classifier:  cross-validated ROC AUC of a classifier telling current rows from
--                       reference rows (NannyML's DomainClassifierCalculator), thresholds 0.45..0.65.
-- `drivers` is JSON: the features that drive the change, largest first.
CREATE TABLE IF NOT EXISTS multivariate_results
(
    run_id          UUID,
    computed_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    model           LowCardinality(String),
    model_version   LowCardinality(String),      -- '' when the windows span all versions
    method          LowCardinality(String),      -- pca_reconstruction | domain_classifier
    value           Nullable(Float64),           -- NULL when there was no verdict (`message` says why)
    sampling_error  Nullable(Float64),
    lower_threshold Nullable(Float64),
    upper_threshold Nullable(Float64),
    alert           Bool,
    features        Array(String),               -- the features that entered the method
    drivers         String,                      -- JSON: [{feature, score, ...}] largest first
    details         String,                      -- JSON: components, reference chunk values, sample sizes
    message         String,                      -- why there is no value, or ''
    reference_start DateTime64(6, 'UTC'),
    reference_end   DateTime64(6, 'UTC'),
    current_start   DateTime64(6, 'UTC'),
    current_end     DateTime64(6, 'UTC'),
    reference_rows  UInt64,
    current_rows    UInt64,
    code_version    LowCardinality(String),
    schema_version  UInt32,
    input_hash      String
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(current_start)
ORDER BY (model, model_version, method, current_start, current_end, reference_start, reference_end);

-- Data-quality checks per window, one row per check and feature ('' for checks of the whole row):
--   missing, type_mismatch, out_of_range, unseen_category, constant, feature_added,
--   feature_removed, malformed_rows. `value` is the share (or count, for malformed_rows and the
--   schema checks) compared with `threshold`; `failed` when it is above it.
CREATE TABLE IF NOT EXISTS quality_results
(
    run_id          UUID,
    computed_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    model           LowCardinality(String),
    model_version   LowCardinality(String),
    check_name      LowCardinality(String),
    feature         String,
    feature_type    LowCardinality(String),      -- numeric | categorical | ''
    value           Float64,
    threshold       Float64,
    failed          Bool,
    affected_rows   UInt64,                      -- rows the check counts (missing rows, malformed rows, ...)
    current_rows    UInt64,
    details         String,                      -- JSON: examples (unseen categories, ranges)
    reference_start DateTime64(6, 'UTC'),
    reference_end   DateTime64(6, 'UTC'),
    current_start   DateTime64(6, 'UTC'),
    current_end     DateTime64(6, 'UTC'),
    code_version    LowCardinality(String),
    schema_version  UInt32,
    input_hash      String
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(current_start)
ORDER BY (model, model_version, check_name, feature, current_start, current_end);

-- Signals per segment of a dimension (a categorical feature or a tag: tenant, model_version,
-- region, ...), one row per segment, signal and window. Segments beyond the configured cap are
-- summed into the segment 'other'. `degradation` is the signal's change against the segment's
-- reference (ratio - 1 for errors and latency, drop for accuracy-like metrics, the drift score
-- over its threshold for drift), on which segments are ranked (`rank` 1 = degraded most).
CREATE TABLE IF NOT EXISTS segment_results
(
    run_id          UUID,
    computed_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    model           LowCardinality(String),
    model_version   LowCardinality(String),
    dimension       LowCardinality(String),      -- e.g. tenant, model_version, feature:region
    segment         String,                      -- the segment's value, or 'other'
    signal          LowCardinality(String),      -- drift | performance | estimated_performance | latency
    metric          LowCardinality(String),      -- e.g. mae, accuracy, latency_p95_ms, psi, jensenshannon
    value           Nullable(Float64),
    reference_value Nullable(Float64),
    degradation     Nullable(Float64),
    flagged         Bool,
    rank            UInt32,
    current_rows    UInt64,
    reference_rows  UInt64,
    message         String,                      -- why there is no value (e.g. a segment with one row), or ''
    details         String,
    reference_start DateTime64(6, 'UTC'),
    reference_end   DateTime64(6, 'UTC'),
    current_start   DateTime64(6, 'UTC'),
    current_end     DateTime64(6, 'UTC'),
    code_version    LowCardinality(String),
    schema_version  UInt32,
    input_hash      String
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(current_start)
ORDER BY (model, model_version, dimension, signal, metric, segment, current_start, current_end);
