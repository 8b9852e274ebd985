-- 0021: partial drift profiles per hour, kept up to date as data arrives.
--
-- A drift run over long windows merges these instead of scanning every event of both windows:
-- one row per (model, model version, hour, feature) holds the hour's values of the feature on
-- a grid that depends on no window — numeric values on cells of the float's sign, exponent and
-- top 7 mantissa bits (relative width 2^-7, as DDSketch and HDR histograms do), with per cell
-- the count, the sum of the values' offsets inside the cell in 2^-16 cell widths (and of their
-- squares) and the smallest and largest value; categorical values as counts per category.
-- Counts add up, so any set of hours merges by summing them.
--
-- `feature` is the drift key prefix and the name (`feature/numeric/temp`,
-- `prediction/categorical/prediction_label`); the row with `model_version = feature = ''` records
-- that the hour was profiled, a row `feature = '/names'` per version lists its feature names.
-- `stamp` is cityHash64(rows, sum(cityHash64(event_id))) of the hour's deduplicated, non-replayed
-- events (every version) when it was profiled: a run reads an hour only while its stamp still
-- matches the events (late rows, replaced or expired events change it and the hour is profiled
-- again; the newer row replaces the older: ReplacingMergeTree by built_at, readers use FINAL). On a
-- cluster an hour's rows share a shard, so FINAL sees every version of them. The retention follows
-- the raw data's: profiles built from events live as long as them.
CREATE TABLE IF NOT EXISTS drift_hour_profiles
(
    -- shard by: cityHash64(model, hour)
    model           LowCardinality(String),
    model_version   LowCardinality(String),
    hour            DateTime('UTC'),
    feature         LowCardinality(String),
    stamp           UInt64,
    rows            UInt64,                                -- the feature's values in the hour
    cell_keys       Array(Int64) CODEC(ZSTD(1)),
    cell_counts     Array(UInt64) CODEC(ZSTD(1)),
    cell_ticks      Array(UInt64) CODEC(ZSTD(1)),
    cell_ticks2     Array(UInt64) CODEC(ZSTD(1)),
    cell_min        Array(Float64) CODEC(ZSTD(1)),
    cell_max        Array(Float64) CODEC(ZSTD(1)),
    categories      Array(String) CODEC(ZSTD(1)),
    category_counts Array(UInt64) CODEC(ZSTD(1)),
    built_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(built_at)
ORDER BY (model, model_version, hour, feature)
TTL toDateTime(built_at) + INTERVAL ${RETENTION_DAYS} DAY;
