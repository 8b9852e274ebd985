-- 0004: the exact empirical distribution of a numeric reference feature.
--
-- Kolmogorov-Smirnov and Wasserstein are computed exactly (as scipy and Evidently do)
-- over the merged sorted support of both windows. Keeping the reference's distinct
-- values and their counts in its profile lets every later drift run merge the current
-- window against the stored profile instead of scanning the reference window again.
-- Sorted ascending; support_counts[i] is the number of reference rows equal to
-- support_values[i]. Empty for categorical profiles (they use categories/category_counts).

ALTER TABLE reference_profiles ADD COLUMN IF NOT EXISTS support_values Array(Float64) CODEC(ZSTD(1));

ALTER TABLE reference_profiles ADD COLUMN IF NOT EXISTS support_counts Array(UInt64) CODEC(ZSTD(1));
