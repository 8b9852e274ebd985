"""Typed configuration of the collector: command-line flags over an optional YAML file.

Every value is validated here, at the edge; a bad one raises
:class:`driftwarden.errors.UserError` naming the key, the value given and what
would be accepted. The rest of the collector trusts a :class:`CollectorConfig`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from driftwarden.collector.genai_config import GenAIConfig
from driftwarden.errors import UserError
from driftwarden.names import model_name_problem

PROTOCOLS = ("auto", "oip", "openai", "generic")
REDACTION_RULES = ("email", "card", "iban", "national_id", "phone")
DEFAULT_REDACTED_FIELDS = (
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "access_token",
    "authorization",
    "ssn",
    "social_security_number",
    "card_number",
    "credit_card",
    "cvv",
    "iban",
)
_PATH = re.compile(r"^(\$\.)?[A-Za-z_][\w-]*(\[\d+\]|\[\*\])?(\.[\w-]+(\[\d+\]|\[\*\])?|\[\d+\])*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedactionConfig(_Strict):
    """What is redacted before an event leaves the process, and how."""

    mode: Literal["hash", "mask"] = "hash"
    key: str | None = Field(default=None, description="HMAC key for mode=hash; else $DRIFTWARDEN_REDACTION_KEY")
    fields: tuple[str, ...] = DEFAULT_REDACTED_FIELDS
    rules: tuple[Literal["email", "card", "iban", "national_id", "phone"], ...] = REDACTION_RULES
    patterns: dict[str, str] = Field(default_factory=dict, description="extra rules: name -> regular expression")

    @field_validator("patterns")
    @classmethod
    def _compile(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"rule name {name!r} must be lower-case letters, digits and _")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern {pattern!r} of rule {name!r} is not a valid regular expression: {exc}"
                ) from None
        return value


class PayloadConfig(_Strict):
    """Capture of raw request and response bodies."""

    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0, description="share of requests whose payload is kept")
    sample_rates: dict[str, float] = Field(default_factory=dict, description="per model: name -> rate in [0, 1]")
    max_bytes: int = Field(default=65536, ge=0, description="payloads longer than this are cut")
    max_parse_bytes: int = Field(default=1 << 20, ge=0, description="bodies longer than this are not parsed")

    @field_validator("sample_rates")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        for model, rate in value.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"sample rate {rate!r} of model {model!r} must be between 0 and 1")
        return value


class OIPConfig(_Strict):
    """Open Inference Protocol: names of the columns of 2-D input tensors, and which tensors hold text or
    embeddings (collector/receivers/oip.py)."""

    columns: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="tensor name -> column names")
    text: tuple[str, ...] = Field(
        default=("text", "texts", "prompt", "document", "query", "sentence", "input_text", "review"),
        description="BYTES input tensors that hold free text: text features (other BYTES tensors are categorical)",
    )
    embeddings: tuple[str, ...] = Field(
        default=(), description="2-D float input tensors that hold embeddings (one vector per row)"
    )
    embedding_min_dim: int = Field(
        default=32,
        ge=2,
        description="a 2-D float input tensor with at least this many unnamed columns is an embedding too",
    )


class GenericConfig(_Strict):
    """Generic JSON: where features and predictions are in the request and the response.

    Paths are dotted keys with optional ``[i]`` indexes, rooted at ``request``
    or ``response`` (``request.features.temp``, ``response.outputs[0]``). With
    ``rows`` (``request.instances[*]``) and ``response_rows``
    (``response.predictions[*]``) every element is one event, and paths that
    start with ``row.`` / ``prediction_row.`` are read inside the element.
    """

    numeric: dict[str, str] = Field(default_factory=dict, description="feature name -> path")
    categorical: dict[str, str] = Field(default_factory=dict, description="feature name -> path")
    prediction: str | None = None
    prediction_label: str | None = None
    outputs: dict[str, str] = Field(default_factory=dict, description="numeric output name -> path")
    output_text: str | None = None
    rows: str | None = None
    response_rows: str | None = None
    paths: tuple[str, ...] = Field(default=(), description="URL path prefixes handled (default: any POST)")

    @model_validator(mode="after")
    def _paths_valid(self) -> GenericConfig:
        roots = ("request", "response", "row", "prediction_row", "$")
        for key, path in self._all_paths():
            if not _PATH.match(path) or path.split(".", 1)[0].split("[", 1)[0] not in roots:
                raise ValueError(
                    f"{key} = {path!r} is not a path; accepted: dotted keys with optional [i] indexes starting "
                    "with request., response., row. or prediction_row. (e.g. request.features.temp)"
                )
        return self

    def _all_paths(self) -> list[tuple[str, str]]:
        out = [(f"numeric.{k}", v) for k, v in self.numeric.items()]
        out += [(f"categorical.{k}", v) for k, v in self.categorical.items()]
        out += [(f"outputs.{k}", v) for k, v in self.outputs.items()]
        for key in ("prediction", "prediction_label", "output_text", "rows", "response_rows"):
            value = getattr(self, key)
            if value:
                out.append((key, value))
        return out


class CollectorConfig(_Strict):
    """Everything ``driftwarden collector`` needs; see collector/README.md for each key."""

    upstream: str
    listen: str = "127.0.0.1:8080"
    model: str
    model_version: str = ""
    model_digest: str = ""
    protocol: Literal["auto", "oip", "openai", "generic"] = "auto"
    store: str | None = None
    hub: str | None = None
    spool_dir: str | None = None
    admin_listen: str | None = None
    tenant_header: str = "X-Driftwarden-Tenant"
    default_tenant: str = ""
    trust_client_event_headers: bool = Field(
        default=False,
        description="honour X-Driftwarden-Timestamp and X-Driftwarden-Event-Id from clients (backfills, the demo); "
        "off by default, since a client could otherwise backdate events or overwrite another event by reusing its id",
    )
    upstream_timeout_s: float = Field(default=300.0, gt=0, description="longest wait for the upstream's next bytes")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=1000, ge=1, description="connections to the upstream kept open at most")
    batch_events: int = Field(default=1000, ge=1)
    flush_interval_ms: int = Field(default=1000, ge=1)
    fsync: Literal["off", "interval", "always"] = Field(
        default="interval",
        description="when the write-ahead journal (in spool_dir) is fdatasync'd: off (page cache only: survives "
        "a process crash, not a power cut), interval (every fsync_interval_ms: a power cut loses at most that "
        "much), always (before each response, group-committed)",
    )
    fsync_interval_ms: int = Field(default=1000, ge=1)
    engine: Literal["python", "nginx"] = Field(
        default="python",
        description="the data plane: python (the built-in proxy) or nginx (nginx with an njs hook proxies, the "
        "collector captures from its log; needs nginx, libnginx-mod-http-js and spool_dir; see collector/README.md)",
    )
    nginx_workers: int = Field(default=1, ge=1, le=64, description="nginx worker processes (engine nginx)")
    capture_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="engine nginx: the collector process (capture) runs at this nice level above nginx's, so that "
        "answering comes first on a busy machine and capture catches up from the log",
    )
    capture_idle: bool = Field(
        default=True,
        description="engine nginx: the collector process (capture) also runs under Linux's SCHED_IDLE policy, so "
        "that nginx and the model server preempt it at once (the slowest answers stay fast); capture catches up "
        "from the log on disk (driftwarden_collector_capture_backlog_bytes)",
    )
    payload: PayloadConfig = PayloadConfig()
    redaction: RedactionConfig = RedactionConfig()
    oip: OIPConfig = OIPConfig()
    generic: GenericConfig | None = None
    genai: GenAIConfig = GenAIConfig()  # prices of OpenAI-compatible calls, provider name (collector.genai_config)

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL of the model server, e.g. http://127.0.0.1:8081")
        if parts.query or parts.fragment:
            raise ValueError("the upstream URL must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("listen", "admin_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            parse_host_port(value)
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        problem = model_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_sink(self) -> CollectorConfig:
        if self.store and self.hub:
            raise ValueError("give either store (write to ClickHouse) or hub (send to an ingest endpoint), not both")
        if self.engine == "nginx" and not self.spool_dir:
            raise ValueError("engine nginx needs spool_dir: nginx's capture log and its state live there")
        if self.protocol == "generic" and self.generic is None:
            raise ValueError("protocol generic needs a `generic:` mapping in the --config file")
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_host_port(self.listen)

    @property
    def admin_address(self) -> tuple[str, int] | None:
        return parse_host_port(self.admin_listen) if self.admin_listen else None


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port); port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port 0-65535, e.g. 127.0.0.1:8080; got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def load(overrides: dict[str, Any], config_file: str | Path | None = None) -> CollectorConfig:
    """Merge a YAML file (if any) with command-line ``overrides`` (None = not given) and validate."""
    data: dict[str, Any] = {}
    where = "command line"
    if config_file is not None:
        data = _read_yaml(Path(config_file))
        where = f"{config_file} (or the command line)"
    data.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return CollectorConfig(**data)
    except ValidationError as exc:
        raise UserError(_describe(exc, where)) from None
    except TypeError as exc:
        raise UserError(f"{where}: {exc}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read the collector config {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"the collector config {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of keys (upstream:, model:, redaction:, ...), not a list")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def _describe(exc: ValidationError, where: str) -> str:
    messages = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            messages.append(f"{key} is required")
        elif error["type"] == "extra_forbidden":
            known = _known_keys(error["loc"])
            messages.append(f"unknown key {key}; accepted keys here: {', '.join(known)}")
        else:
            messages.append(f"{key} = {error.get('input')!r}: {message}")
    return f"invalid collector configuration in {where}: " + "; ".join(messages)


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = CollectorConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None) if field else None
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nested is None:
            break
        model = nested
    return sorted(model.model_fields)
