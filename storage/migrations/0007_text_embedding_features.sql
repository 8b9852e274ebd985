-- 0007: text and embedding features beside the numeric and categorical ones.
--
-- Same layout as num_*/cat_*: parallel arrays of names and values per event, so one table
-- serves every model. text_values holds the text of each text feature after redaction (a prompt,
-- a completion, a document a classifier reads); emb_values one Float32 vector per embedding
-- feature (an embeddings response, a 2-D float tensor of an Open Inference Protocol request).
-- Float32 is what embedding models produce; it halves the bytes of Float64 for the same vector.
-- Text drift reads these arrays in SQL (descriptors, vocabulary) and a bounded sample of rows for
-- its classifier; embedding drift reduces the vectors in SQL (counts per dimension, means) and reads a
-- bounded sample for its classifier, MMD and per-component tests.

ALTER TABLE inferences ADD COLUMN IF NOT EXISTS text_names Array(LowCardinality(String));

ALTER TABLE inferences ADD COLUMN IF NOT EXISTS text_values Array(String) CODEC(ZSTD(3));

ALTER TABLE inferences ADD COLUMN IF NOT EXISTS emb_names Array(LowCardinality(String));

ALTER TABLE inferences ADD COLUMN IF NOT EXISTS emb_values Array(Array(Float32)) CODEC(ZSTD(1));
