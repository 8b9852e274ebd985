-- 0006: language-model calls (OpenTelemetry GenAI conventions) in the inferences table.
--
-- A call to a language model is an inference like any other: one row in `inferences`, whether
-- the sidecar captured it from an OpenAI-compatible API (protocol 'openai') or an application
-- exported it as an OpenTelemetry span (protocol 'otlp'). Both fill the same columns, so every
-- query, metric and page works for both, and a model seen only through spans is a model like
-- any other. Columns that already exist keep their meaning:
--   ts                 start of the call (span start)            latency_ms   its duration (end - start)
--   prompt_tokens      gen_ai.usage.input_tokens                 completion_tokens  gen_ai.usage.output_tokens
--   finish_reason      the first of gen_ai.response.finish_reasons   error_class  error.type ('' on success)
--   ttft_ms            time to first token (streaming)           trace_id     W3C trace id, 32 hex digits
--   input_payload / output_payload   gen_ai.input.messages / gen_ai.output.messages (only when captured,
--                      after redaction)                         output_text  the text parts of the output
-- The columns below are the GenAI attributes the table lacked. Nullable where "not set" differs
-- from zero (a temperature of 0 is a choice; no temperature is the server's default).

-- gen_ai.operation.name: chat | text_completion | embeddings | generate_content | invoke_agent | execute_tool | ...
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS operation_name LowCardinality(String);

-- gen_ai.provider.name (or the older gen_ai.system)
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS provider_name LowCardinality(String);

-- gen_ai.request.model
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS request_model LowCardinality(String);

-- gen_ai.response.model
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS response_model LowCardinality(String);

-- gen_ai.request.temperature
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS temperature Nullable(Float64);

-- gen_ai.request.top_p
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS top_p Nullable(Float64);

-- gen_ai.request.max_tokens
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS max_tokens Nullable(UInt32);

-- gen_ai.request.seed
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS seed Nullable(Int64);

-- server.address (the upstream host for the sidecar)
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS server_address LowCardinality(String);

-- the resource's service.name (spans)
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS service_name LowCardinality(String);

-- 16 hex digits; '' when unknown
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS span_id String;

-- 16 hex digits; '' for a root span: follow an agent's tree of calls
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS parent_span_id String;

-- unset | ok | error ('' when not a span)
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS span_status LowCardinality(String);

-- from the configured price table when the call was received; 0 when the model has no price
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS cost Float64;

-- end of the call (span end)
ALTER TABLE inferences ADD COLUMN IF NOT EXISTS ended_at DateTime64(6, 'UTC') ALIAS ts + toIntervalMicrosecond(toInt64(latency_ms * 1000));
