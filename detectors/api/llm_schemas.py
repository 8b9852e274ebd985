"""Response model of ``GET /api/v1/models/{model}/llm``: a language model's figures over time and its notable calls."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


class LLMMeasures(BaseModel):
    calls: int
    errors: int = Field(description="calls with an error.type (error_class)")
    input_tokens: int
    output_tokens: int
    spend: float = Field(description="cost from genai.prices, in the configured currency")
    ttft_p50_ms: float | None = Field(description="time to first token of streamed calls; null without any")
    ttft_p95_ms: float | None
    tpot_p50_ms: float | None = Field(description="time per output token after the first, streamed calls")
    latency_p50_ms: float | None = Field(description="duration of the call (span end - start)")
    latency_p95_ms: float | None


class LLMPoint(LLMMeasures):
    t: dt.datetime = Field(description="start of the bucket (UTC)")
    input_per_s: float = Field(description="input tokens per second over the bucket")
    output_per_s: float = Field(description="output tokens per second over the bucket")


class FinishReasonCount(BaseModel):
    finish_reason: str = Field(description="stop | length | tool_calls | content_filter | ... ('' when not reported)")
    calls: int


class LLMCall(BaseModel):
    ts: dt.datetime = Field(description="start of the call")
    trace_id: str = Field(description="W3C trace id (hex), to follow the call in its trace")
    span_id: str = Field(description="span id (hex) for calls received as spans, else ''")
    request_model: str
    response_model: str
    operation_name: str
    service_name: str
    latency_ms: float
    ttft_ms: float | None
    input_tokens: int
    output_tokens: int
    cost: float
    error_type: str = Field(description="'' when the call succeeded")
    finish_reason: str
    output_text: str = Field(description="generated text when content was captured (after redaction), else ''")


class LLMFigures(BaseModel):
    model: str
    start: dt.datetime = Field(description="the range read: the window asked, else the 7 days up to the latest call")
    end: dt.datetime
    bucket_seconds: int = Field(description="width of each point of the series")
    summary: LLMMeasures
    series: list[LLMPoint] = Field(description="one point per bucket with calls, oldest first")
    finish_reasons: list[FinishReasonCount] = Field(description="calls per finish reason, most frequent first")
    slowest: list[LLMCall] = Field(description="the 10 longest calls in the range, longest first")
    most_expensive: list[LLMCall] = Field(description="the 10 costliest priced calls in the range, costliest first")
