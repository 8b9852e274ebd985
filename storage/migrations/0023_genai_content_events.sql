-- 0023: message content that applications send as OpenTelemetry log records, for the call's span.
--
-- The GenAI instrumentations (OpenAI's `openai-v2` among them) send a call's prompt and answer
-- not on its span but as log records ("events") that carry the span's trace and span ids:
-- `gen_ai.client.inference.operation.details` (current conventions), or one
-- `gen_ai.{system,user,assistant,tool}.message` per input message and one `gen_ai.choice` per
-- answer (the previous ones). `POST /v1/logs` keeps one row here per such record, already
-- redacted as the collector redacts payloads; the receiver then writes the assembled content
-- into the call's row of `inferences` (the same sorting key, inserted again: a ReplacingMergeTree
-- read with FINAL keeps the later row) once the span is there, whichever arrived first, and again
-- when more of the call's records arrive. A span that carries its own content keeps it.
--
--   kind          whole: input and/or output messages in one record (operation details,
--                 gen_ai.content.prompt/.completion); message: one input message; choice: one answer
--   input/output  the record's part as JSON after redaction ('' when it has none), cut at
--                 genai.max_content_bytes (truncated)
--   input_hash/output_hash  canonical hashes of the parts before redaction (0: none)
CREATE TABLE IF NOT EXISTS genai_content_events
(
    -- shard by: cityHash64(trace_id, span_id)
    trace_id      String,                               -- 32 hex digits, as in inferences
    span_id       String,                               -- 16 hex digits
    ts            DateTime64(9, 'UTC'),                 -- the record's time (observed time when unset)
    seq           UInt32,                               -- its position in the export request
    name          LowCardinality(String),               -- the event name
    kind          LowCardinality(String),               -- whole | message | choice
    choice_index  Int64,                                -- gen_ai.choice: its index
    input         String CODEC(ZSTD(1)),
    output        String CODEC(ZSTD(1)),
    output_text   String CODEC(ZSTD(1)),                -- the text parts of the output, redacted
    input_hash    UInt64,
    output_hash   UInt64,
    redactions    UInt16,
    truncated     Bool,
    received_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (trace_id, span_id, ts, seq)
TTL toDateTime(received_at) + INTERVAL ${RETENTION_DAYS} DAY;

-- where a call's content came from: '' (none, or the call itself: its span, the collector's capture),
-- 'logs' (assembled from genai_content_events)
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS content_source LowCardinality(String);
