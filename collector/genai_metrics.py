"""Prometheus metrics of language-model calls, named as the OpenTelemetry GenAI metrics translate.

The OpenTelemetry GenAI semantic conventions define ``gen_ai.client.token.usage`` (unit
``{token}``), ``gen_ai.client.operation.duration`` (s), ``gen_ai.server.time_to_first_token``
(s) and ``gen_ai.server.time_per_output_token`` (s); the OpenTelemetry-to-Prometheus
translation replaces dots by underscores and appends the unit (``_seconds``), giving:

* ``gen_ai_client_token_usage`` histogram, label ``gen_ai_token_type`` = ``input`` | ``output``;
* ``gen_ai_client_operation_duration_seconds`` histogram;
* ``gen_ai_server_time_to_first_token_seconds`` histogram (streamed calls that report it);
* ``gen_ai_server_time_per_output_token_seconds`` histogram: (duration - TTFT) / (output tokens - 1),
  for streamed calls with at least two output tokens;

each with ``gen_ai_operation_name``, ``gen_ai_provider_name``, ``gen_ai_request_model`` and
``error_type`` ('' on success: Prometheus treats an empty label as absent). Bucket
boundaries are the ones the conventions advise. Beside them, driftwarden's own:

* ``driftwarden_gen_ai_tokens_total`` counter by model and token type: per-model token
  throughput is its ``rate()``;
* ``driftwarden_gen_ai_cost_total`` counter by model, token type and ``currency``, from the
  configured price table (``collector.genai_config``); calls of a model without a price
  count in ``driftwarden_gen_ai_unpriced_calls_total``; ``driftwarden_gen_ai_daily_cost_budget``
  is the configured ``genai.daily_budget`` (for the LLMDailyCostBudgetExceeded alert);
* ``driftwarden_gen_ai_finish_reasons_total`` by model and ``finish_reason``.

They live in the collector's registry (``collector.metrics.REGISTRY``), so they appear on
the ``/metrics`` of whichever process receives the calls: a sidecar's admin port,
``driftwarden api``, ``driftwarden up``. Observed once a call is accepted (after the store
took it for the OTLP receiver), so a retried request is not counted twice. prometheus-client
metrics are thread-safe; label children are cached per label set.

Two ways in, with the same result: :meth:`GenAIRecorder.observe` for a few calls (the sidecar, one
call at a time), :meth:`GenAIRecorder.observe_calls` for the calls of an OTLP request given column
by column, which adds each label set's bucket counts and sums at once (``observe_many``).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from driftwarden.collector.event import Event
from driftwarden.collector.genai_config import GenAIConfig
from driftwarden.collector.metrics import REGISTRY

if TYPE_CHECKING:
    from driftwarden.collector.receivers.genai_spans import Calls

LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "error_type")

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

token_usage = Histogram(
    "gen_ai_client_token_usage",
    "Input and output tokens per language-model call (OpenTelemetry gen_ai.client.token.usage)",
    [*LABELS, "gen_ai_token_type"],
    buckets=TOKEN_BUCKETS,
    registry=REGISTRY,
)
operation_duration = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "Duration of language-model calls (OpenTelemetry gen_ai.client.operation.duration)",
    LABELS,
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
time_to_first_token = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Time to the first output token of streamed calls (OpenTelemetry gen_ai.server.time_to_first_token)",
    LABELS,
    buckets=TTFT_BUCKETS,
    registry=REGISTRY,
)
time_per_output_token = Histogram(
    "gen_ai_server_time_per_output_token_seconds",
    "Time per output token after the first, of streamed calls (OpenTelemetry gen_ai.server.time_per_output_token)",
    LABELS,
    buckets=TPOT_BUCKETS,
    registry=REGISTRY,
)
tokens = Counter(
    "driftwarden_gen_ai_tokens",
    "Tokens of language-model calls by model and type; rate() is the model's token throughput",
    ["gen_ai_provider_name", "gen_ai_request_model", "gen_ai_token_type"],
    registry=REGISTRY,
)
cost = Counter(
    "driftwarden_gen_ai_cost",
    "Cost of language-model calls from the configured price table, in the configured currency",
    ["gen_ai_provider_name", "gen_ai_request_model", "gen_ai_token_type", "currency"],
    registry=REGISTRY,
)
finish_reasons = Counter(
    "driftwarden_gen_ai_finish_reasons",
    "Language-model calls by the reason generation stopped (stop, length, tool_calls, content_filter, ...)",
    ["gen_ai_provider_name", "gen_ai_request_model", "finish_reason"],
    registry=REGISTRY,
)
daily_cost_budget = Gauge(
    "driftwarden_gen_ai_daily_cost_budget",
    "The configured spend per day on language-model calls (genai.daily_budget), in the configured currency",
    ["currency"],
    registry=REGISTRY,
)
unpriced_calls = Counter(
    "driftwarden_gen_ai_unpriced_calls",
    "Language-model calls of a model without a price in the configuration (they cost 0)",
    ["gen_ai_provider_name", "gen_ai_request_model"],
    registry=REGISTRY,
)


def labels_of(event: Event) -> tuple[str, str, str, str]:
    """The four GenAI label values of a stored call."""
    return (
        event.operation_name,
        event.provider_name,
        event.request_model or event.response_model or event.model,
        event.error_class,
    )


class GenAIRecorder:
    """Prices calls and observes the GenAI metrics; one per process configuration, shareable across threads."""

    def __init__(self, config: GenAIConfig | None = None) -> None:
        self.config = config or GenAIConfig()
        self._children: dict[tuple[str, ...], tuple] = {}
        self._reasons: dict[tuple[str, str, str], Any] = {}
        if self.config.daily_budget is not None:
            daily_cost_budget.labels(self.config.currency).set(self.config.daily_budget)

    def price(self, event: Event) -> float:
        """The call's cost from the price table (0 for a model without a price)."""
        price = self.config.price(event.response_model, event.request_model, event.model)
        if price is None:
            return 0.0
        return (event.prompt_tokens * price.input + event.completion_tokens * price.output) / 1_000_000

    def observe(self, events: Iterable[Event]) -> None:
        """Observe every metric of these calls."""
        for event in events:
            key = labels_of(event)
            children = self._children.get(key)
            if children is None:
                children = self._resolve(key)
            usage_in, usage_out, duration, ttft, tpot, tok_in, tok_out, cost_in, cost_out, unpriced = children
            usage_in.observe(event.prompt_tokens)
            usage_out.observe(event.completion_tokens)
            tok_in.inc(event.prompt_tokens)
            tok_out.inc(event.completion_tokens)
            duration.observe(event.latency_ms / 1000.0)
            if event.ttft_ms is not None:
                ttft.observe(event.ttft_ms / 1000.0)
                if event.completion_tokens > 1 and event.latency_ms >= event.ttft_ms:
                    tpot.observe((event.latency_ms - event.ttft_ms) / 1000.0 / (event.completion_tokens - 1))
            if event.finish_reason:
                reason_key = (key[1], key[2], event.finish_reason[:40])
                reason = self._reasons.get(reason_key)
                if reason is None:
                    reason = finish_reasons.labels(*reason_key)
                    if len(self._reasons) < 10_000:
                        self._reasons[reason_key] = reason
                reason.inc()
            price = self.config.price(event.response_model, event.request_model, event.model)
            if price is None:
                unpriced.inc()
            else:
                cost_in.inc(event.prompt_tokens * price.input / 1_000_000)
                cost_out.inc(event.completion_tokens * price.output / 1_000_000)

    def observe_calls(self, calls: Calls) -> None:
        """Observe every metric of these calls, given column by column; the same result as :meth:`observe`."""
        n = len(calls)
        if not n:
            return
        groups: dict[tuple[str, ...], list[int]] = {}
        keys = zip(
            calls.operation,
            calls.provider,
            calls.request_model,
            calls.response_model,
            calls.model,
            calls.error,
            strict=True,
        )
        for i, key in enumerate(keys):
            rows = groups.get(key)
            if rows is None:
                groups[key] = [i]
            else:
                rows.append(i)
        prompt = np.asarray(calls.prompt_tokens, dtype=np.float64)
        completion = np.asarray(calls.completion_tokens, dtype=np.float64)
        latency = np.asarray(calls.latency_ms, dtype=np.float64)
        ttft = np.asarray([np.nan if v is None else v for v in calls.ttft_ms], dtype=np.float64)
        for (operation, provider, request_model, response_model, model, error), rows in groups.items():
            key = (operation, provider, request_model or response_model or model, error)
            children = self._children.get(key)
            if children is None:
                children = self._resolve(key)
            usage_in, usage_out, duration, ttft_child, tpot, tok_in, tok_out, cost_in, cost_out, unpriced = children
            index = None if len(rows) == n else np.asarray(rows)
            p, c, lat, first = (a if index is None else a[index] for a in (prompt, completion, latency, ttft))
            observe_many(usage_in, p)
            observe_many(usage_out, c)
            tok_in.inc(float(p.sum()))
            tok_out.inc(float(c.sum()))
            observe_many(duration, lat / 1000.0)
            streamed = ~np.isnan(first)
            if streamed.any():
                observe_many(ttft_child, first[streamed] / 1000.0)
                per_token = streamed & (c > 1) & (lat >= np.where(streamed, first, np.inf))
                if per_token.any():
                    observe_many(tpot, (lat[per_token] - first[per_token]) / 1000.0 / (c[per_token] - 1))
            reasons = Tally(calls.finish_reason[i][:40] for i in rows)
            for reason, count in reasons.items():
                if reason:
                    reason_key = (key[1], key[2], reason)
                    child = self._reasons.get(reason_key)
                    if child is None:
                        child = finish_reasons.labels(*reason_key)
                        if len(self._reasons) < 10_000:
                            self._reasons[reason_key] = child
                    child.inc(count)
            price = self.config.price(response_model, request_model, model)
            if price is None:
                unpriced.inc(len(rows))
            else:
                cost_in.inc(float(p.sum()) * price.input / 1_000_000)
                cost_out.inc(float(c.sum()) * price.output / 1_000_000)

    def _resolve(self, key: tuple[str, str, str, str]) -> tuple:
        _operation, provider, model, _error = key
        currency = self.config.currency
        children = (
            token_usage.labels(*key, "input"),
            token_usage.labels(*key, "output"),
            operation_duration.labels(*key),
            time_to_first_token.labels(*key),
            time_per_output_token.labels(*key),
            tokens.labels(provider, model, "input"),
            tokens.labels(provider, model, "output"),
            cost.labels(provider, model, "input", currency),
            cost.labels(provider, model, "output", currency),
            unpriced_calls.labels(provider, model),
        )
        if len(self._children) < 10_000:  # a bounded cache: label sets come from clients
            self._children[key] = children
        return children


def observe_many(histogram: Any, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for every ``v`` of ``values``, in one pass.

    A prometheus-client histogram child keeps one counter per bucket (not cumulative: an
    observation adds 1 to the first bucket whose upper bound is >= the value) and a sum; this
    adds each bucket's count and the sum once. ``np.searchsorted(bounds, v, side="left")`` is that
    first bucket. Relies on the child's ``_upper_bounds``, ``_buckets`` and ``_sum`` (prometheus-client
    0.x, the range pyproject.toml allows; tests/test_genai_bulk.py compares it with ``observe``).
    """
    if not len(values):
        return
    bounds = histogram._upper_bounds
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    buckets = histogram._buckets
    for i in np.flatnonzero(counts[: len(bounds)]):
        buckets[i].inc(int(counts[i]))
    histogram._sum.inc(float(values.sum()))
