"""Typed configuration of language-model monitoring: prices, service-to-model mapping, limits.

The ``genai:`` section of the ``driftwarden up`` YAML, of the API configuration file
(``$DRIFTWARDEN_API_CONFIG``, read by ``driftwarden api``) and of a collector's ``--config``
file. Validated with pydantic at the edge; nothing is fetched from anywhere (prices are what
the operator writes here). Example::

    genai:
      currency: EUR
      prices:                      # per million tokens, keyed by model name
        llama-3.1-8b-instruct: {input: 0.05, output: 0.08}
        gpt-4o-mini: {input: 0.15, output: 0.60}
      daily_budget: 200            # exported as driftwarden_gen_ai_daily_cost_budget; the alert compares
      service_models:              # spans of service.name "support-bot" are stored as model "support"
        support-bot: support
      store_content: true          # keep message content (after redaction) when spans or log records carry it
      redaction: {mode: hash}      # the collector's redaction rules (collector/README.md)
      grpc_listen: 0.0.0.0:4317    # OTLP/gRPC too (TraceService/Export), beside POST /v1/traces; off by default
      journal: true                # POST /v1/traces answers once the calls are fsync'd in a journal (below)
      journal_dir: /var/lib/driftwarden/otlp-journal   # default: beside an embedded store
      journal_max_bytes: 268435456 # 503 (retry later) once this much waits for the store

The journal (``collector.ingest_journal``): with ``journal`` on and a directory (``journal_dir``, by
default ``<store>-spool/otlp`` beside an embedded store; a ClickHouse server has no default), each
request is answered once its calls are ``fsync``'d there, and a background thread inserts them in
large groups; without one, the answer waits for the insert.

A call's price is looked up by its response model, then its request model, then the
model it is stored under; a model without a price costs 0 (and is counted as unpriced).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from driftwarden.names import model_name_problem

JOURNAL_MAX_BYTES = 256 << 20
"""Default ``journal_max_bytes``: journaled calls waiting for the store above which ``/v1/traces`` answers 503."""

DEFAULT_MAX_REQUEST_BYTES = 20 * 1024 * 1024
"""Largest OTLP or CloudEvents request body, compressed and decompressed (the OpenTelemetry
Collector's default ``max_request_body_size`` is the same 20 MiB)."""


class ModelPrice(BaseModel):
    """Price of one model per million input (prompt) and output (completion) tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, description="price per million input tokens")
    output: float = Field(ge=0, description="price per million output tokens")


class GenAIConfig(BaseModel):
    """The ``genai:`` section; see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code of the prices")
    prices: dict[str, ModelPrice] = Field(default_factory=dict, description="model name -> price per 1M tokens")
    daily_budget: float | None = Field(
        default=None, ge=0, description="spend per day (UTC) in `currency` above which LLMDailyCostBudgetExceeded fires"
    )
    service_models: dict[str, str] = Field(
        default_factory=dict, description="span resource service.name -> model name the calls are stored under"
    )
    provider_name: str = Field(
        default="openai",
        description="gen_ai.provider.name recorded for calls the sidecar captures from an OpenAI-compatible API",
    )
    store_content: bool = Field(
        default=True, description="store message content when spans or log records carry it (redacted)"
    )
    max_content_bytes: int = Field(default=65536, ge=0, description="content longer than this is cut")
    max_request_bytes: int = Field(
        default=DEFAULT_MAX_REQUEST_BYTES, ge=1024, description="largest OTLP/CloudEvents body (413 above)"
    )
    max_tokens_per_call: int = Field(
        default=10_000_000, ge=1, description="a span reporting more input or output tokens than this is rejected"
    )
    redaction: dict = Field(
        default_factory=dict, description="redaction of content: the keys of the collector's `redaction:` section"
    )
    cloudevents_require_token: bool = Field(
        default=True,
        description=(
            "POST /v1/cloudevents needs the ingest token like /v1/events; KServe's payload logger cannot send one: "
            "false admits its CloudEvents without it (restrict who reaches the api with a NetworkPolicy)"
        ),
    )

    grpc_listen: str | None = Field(
        default=None,
        description=(
            "HOST:PORT of the OTLP/gRPC trace receiver (TraceService/Export; 0.0.0.0:4317 by convention) beside "
            "POST /v1/traces, in `driftwarden api` and `up`; none (the default): no gRPC listener"
        ),
    )

    journal: bool = Field(
        default=True,
        description=(
            "POST /v1/traces answers once the calls are fsync'd in the ingest journal and inserts them behind, "
            "when the journal has a directory (journal_dir, or beside an embedded store); false: after the insert"
        ),
    )
    journal_dir: str | None = Field(
        default=None,
        description="directory of the ingest journal; default <store>-spool/otlp (embedded store), none (a server)",
    )
    journal_max_bytes: int = Field(
        default=JOURNAL_MAX_BYTES,
        ge=1 << 20,
        description="journaled calls waiting for the store above which POST /v1/traces answers 503 (retry later)",
    )

    @field_validator("service_models")
    @classmethod
    def _models(cls, value: dict[str, str]) -> dict[str, str]:
        for service, model in value.items():
            problem = model_name_problem(model)
            if problem:
                raise ValueError(f"service {service!r} maps to model {model!r}, which is refused: {problem}")
        return value

    @field_validator("grpc_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        from driftwarden.collector.config import parse_host_port

        if value is not None:
            parse_host_port(value)  # ValueError: HOST:PORT expected
        return value

    @field_validator("redaction")
    @classmethod
    def _redaction(cls, value: dict) -> dict:
        from driftwarden.collector.config import RedactionConfig

        RedactionConfig.model_validate(value)  # same keys and checks as the collector's section
        return value

    def price(self, *models: str) -> ModelPrice | None:
        """The price of the first of ``models`` that has one."""
        for model in models:
            if model and model in self.prices:
                return self.prices[model]
        return None


def parse_section(data: object, source: str) -> GenAIConfig:
    """The ``genai:`` mapping of a configuration file as a :class:`GenAIConfig`; :class:`UserError` naming the key."""
    from pydantic import ValidationError

    from driftwarden.errors import UserError

    if data is None:
        return GenAIConfig()
    if not isinstance(data, dict):
        raise UserError(f"{source}: genai: expected a mapping (prices, service_models, currency, ...)")
    try:
        return GenAIConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = "genai." + ".".join(map(str, err["loc"]))
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message += f"; accepted keys: {', '.join(GenAIConfig.model_fields)}"
            problems.append(f"{key}: value {err.get('input')!r} is not accepted: {message}")
        raise UserError(f"{source}: " + "; ".join(problems)) from None


def load_file_section(path: str | None) -> GenAIConfig:
    """The ``genai:`` section of the YAML file ``path`` (the API configuration file); defaults without one."""
    if not path:
        return GenAIConfig()
    import yaml

    from driftwarden.errors import UserError

    try:
        document = yaml.safe_load(open(path, encoding="utf-8").read())  # noqa: SIM115
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    section = document.get("genai") if isinstance(document, dict) else None
    return parse_section(section, str(path))
