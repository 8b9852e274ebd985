-- 0005: the reference distribution of a large numeric window, on fine cells.
--
-- Above `exact_max_values` values a numeric feature is not compared over its exact sorted
-- support (that sorts every value) but over cells of width `cell_width` counted from
-- `cell_origin` (a thousandth of a reference standard deviation by default). Per cell,
-- sorted by key: the number of reference values, the sum of their offsets inside the cell
-- in units of 2^-20 cell widths (and of the squared offsets, for the moments), and the
-- smallest and largest value. Wasserstein, KS and the counts per value are read from these
-- with a computed error bound. Empty for exact profiles and categorical features.

ALTER TABLE reference_profiles ADD COLUMN IF NOT EXISTS cell_resolution Float64;

ALTER TABLE reference_profiles ADD COLUMN IF NOT EXISTS cell_origin Float64;

ALTER TABLE reference_profiles ADD COLUMN IF NOT EXISTS cell_width Float64;

ALTER TABLE reference_profiles ADD COLUMN IF NOT EXISTS cell_keys Array(Int64) CODEC(ZSTD(1));

ALTER TABLE reference_profiles ADD COLUMN IF NOT EXISTS cell_counts Array(UInt64) CODEC(ZSTD(1));

ALTER TABLE reference_profiles ADD COLUMN IF NOT EXISTS cell_ticks Array(UInt64) CODEC(ZSTD(1));

ALTER TABLE reference_profiles ADD COLUMN IF NOT EXISTS cell_ticks2 Array(UInt64) CODEC(ZSTD(1));

ALTER TABLE reference_profiles ADD COLUMN IF NOT EXISTS cell_min Array(Float64) CODEC(ZSTD(1));

ALTER TABLE reference_profiles ADD COLUMN IF NOT EXISTS cell_max Array(Float64) CODEC(ZSTD(1));
