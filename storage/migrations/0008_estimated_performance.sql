-- 0008: performance estimated without labels (CBPE for classifiers, DLE for regressors).
--
-- One row per metric per analysed window. `estimated` is NULL when the window could not
-- be estimated, and `message` says why (no scores, a score outside [0, 1], a class the
-- reference never saw, too few reference rows). The thresholds come from the realized
-- metric on the reference split into chunks as long as the current window (mean +- 3
-- standard deviations, as NannyML); `alert` is set when the estimate leaves them.
-- `realized` stays NULL until labels of the window arrive; recomputing the window writes
-- new rows with a later `computed_at` (ReplacingMergeTree: readers use FINAL).

CREATE TABLE IF NOT EXISTS estimated_performance_results
(
    run_id          UUID,
    computed_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    model           LowCardinality(String),
    model_version   LowCardinality(String),      -- '' when the windows span all versions
    method          LowCardinality(String),      -- cbpe | dle
    task            LowCardinality(String),      -- binary | multiclass | regression
    metric          LowCardinality(String),      -- roc_auc | f1 | precision | recall | accuracy | mae | rmse
    estimated       Nullable(Float64),
    sampling_error  Nullable(Float64),
    lower_threshold Nullable(Float64),
    upper_threshold Nullable(Float64),
    alert           Bool,
    realized        Nullable(Float64),           -- from the labels of the window, once they arrived
    reference_value Nullable(Float64),           -- the realized metric over the whole reference
    reference_start DateTime64(6, 'UTC'),
    reference_end   DateTime64(6, 'UTC'),
    current_start   DateTime64(6, 'UTC'),
    current_end     DateTime64(6, 'UTC'),
    predictions     UInt64,                      -- predictions in the current window
    labelled        UInt64,                      -- of which have ground truth so far
    reference_chunks UInt32,                     -- reference chunks the thresholds came from
    message         String,                      -- why `estimated` is NULL, or a caveat; '' when none
    details         String,                      -- JSON: calibration, positive label, classes, sample sizes
    code_version    LowCardinality(String),
    schema_version  UInt32,
    input_hash      String
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(current_start)
ORDER BY (model, model_version, metric, current_start, current_end, reference_start, reference_end);
