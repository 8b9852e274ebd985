-- 0022: parts of fewer than 100,000 rows of `inferences` are written in the compact format.
--
-- ClickHouse writes a new part "wide" (one file per column and substream) from 10 MiB of
-- uncompressed data (`min_bytes_for_wide_part`), and "compact" (every column in one file) below.
-- A GenAI call fills enough columns of `inferences` that an insert of 25,000 of them (what the hub's
-- ingest journal gathers in half a second at 50,000 spans/s) is estimated over 10 MiB: each such
-- insert opened and compressed about 150 column streams, a fixed cost of about 80 ms of CPU per
-- insert in the embedded store. Measured on this schema (100,000 rows inserted per figure, merges
-- stopped): 25,000-row inserts 11.2 µs of CPU per row wide against 3.5 compact, 5,000-row inserts
-- 22.5 against 5.7, 100,000-row inserts 5.9 against 2.9; with the merges that follow, 15.5-15.8 µs
-- per row against 8.0-8.3 (BENCHMARKS.md, OTLP fifth pass).
--
-- Only new parts are affected: a part has the compact format while it holds fewer rows than
-- `min_rows_for_wide_part` (either threshold keeps it compact); the merges of inserted parts into
-- larger ones write them wide as before, so the long-lived data and how it is read do not change.
-- A settings change is metadata only: no part is rewritten.

ALTER TABLE inferences MODIFY SETTING min_rows_for_wide_part = 100000;
