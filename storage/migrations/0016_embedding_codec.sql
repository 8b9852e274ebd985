-- 0016: embedding vectors compressed with LZ4 instead of ZSTD(1).
--
-- The mantissas of Float32 embeddings are close to random: ZSTD(1) saves about 8% of their bytes
-- (MiniLM-sized Gaussian vectors: 284 MB against 308 MB for LZ4 per 200,000 vectors) but every
-- embedding drift run decompresses each window's vectors once, and ZSTD costs 0.36 CPU seconds per
-- 100,000 x 384 vectors against 0.21 for LZ4 (BENCHMARKS.md, embedding drift). Changing a codec is a
-- metadata change, not a mutation: parts written from now on, and parts merged from now on, use LZ4;
-- existing parts keep ZSTD(1) until a merge rewrites them, and are read as before.

ALTER TABLE inferences MODIFY COLUMN IF EXISTS emb_values Array(Array(Float32)) CODEC(LZ4);
