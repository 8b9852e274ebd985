-- 0017: the reference side of the PCA reconstruction method, fitted once and reused.
--
-- A scheduled run compares each new window with the same reference: its encoding (means, scales,
-- category shares), principal components, the reconstruction error of its chunks (the thresholds)
-- and its second moments (the drivers) do not change, so they are stored here and a later run
-- scans only the current window. `fit_key` hashes what the fit depends on (features, the number of
-- components, the chunk length, the format of `fit`); `reference_rows` is the window's stored row
-- count when it was fitted: late rows change it and the fit is redone. ReplacingMergeTree by
-- created_at: refitting writes a newer row, readers use FINAL.
CREATE TABLE IF NOT EXISTS multivariate_references
(
    model           LowCardinality(String),
    model_version   LowCardinality(String),      -- '' when the reference spans all versions
    reference_start DateTime64(6, 'UTC'),
    reference_end   DateTime64(6, 'UTC'),
    fit_key         String,                      -- hash of features, settings, chunk length, format
    reference_rows  UInt64,                      -- count() of the window's stored rows when fitted
    fit             String CODEC(ZSTD(3)),       -- JSON: encoding, mean, components, chunks, moments
    created_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (model, model_version, reference_start, reference_end, fit_key);
