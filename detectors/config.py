"""The detectors' configuration: one YAML file per deployment, validated at the edge with pydantic.

A bad value is reported with its key path (``models[0].slo.percentile``), the
value found and what would be accepted, one line per problem, as a
:class:`~driftwarden.errors.UserError`. ``examples/detectors.yaml`` shows
every key; ``detectors/OPS.md`` explains them.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from driftwarden.detectors.methods import METHODS as DRIFT_METHODS
from driftwarden.detectors.window import Window
from driftwarden.errors import UserError
from driftwarden.names import model_name_problem

DETECTORS = (
    "drift",
    "prediction_drift",
    "performance",
    "estimated_performance",
    "latency",
    "consistency",
    "replay",
    "multivariate_drift",
    "data_quality",
    "segments",
)
FEATURE_KINDS = ("numeric", "categorical", "text", "embedding")
# Text features are documents (text_names/text_values), embeddings vectors (emb_names/emb_values): migration 0007.
_ANALYSED_AS = {"numeric": "numeric", "categorical": "categorical", "text": "text", "embedding": "embedding"}
# Methods the drift detectors implement, by the kind of feature they apply to ("auto" picks as Evidently does).
METHODS: dict[str, tuple[str, ...]] = {
    kind: ("auto", *sorted(n for n, m in DRIFT_METHODS.items() if analysed in m.feature_types))
    for kind, analysed in _ANALYSED_AS.items()
}
ALL_METHODS = ("auto", *sorted(DRIFT_METHODS))
# error_class values of failures of the collector's own or of its way to the model (it answers 502/504 then);
# client_disconnected, malformed_request and upstream_4xx are the client's doing and are not errors here.
DEFAULT_COLLECTOR_ERROR_CLASSES = ("upstream_unreachable", "upstream_timeout", "collector_error")

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_HELP = "a whole number followed by s, m, h or d, e.g. 30s, 5m, 1h, 1d"


def parse_duration(value: Any) -> dt.timedelta:
    """``30s``, ``5m``, ``1h``, ``1d`` (or a number of seconds) as a timedelta."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration: {DURATION_HELP}")
    if isinstance(value, int) and value > 0:
        return dt.timedelta(seconds=value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"expected a positive duration: {DURATION_HELP}")
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def format_duration(value: dt.timedelta) -> str:
    """The shortest ``Nd``/``Nh``/``Nm``/``Ns`` spelling of a duration (as used in metric labels)."""
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def _parse_lag(value: Any) -> dt.timedelta:
    if value in (0, "0", "0s", "0m"):
        return dt.timedelta(0)
    return parse_duration(value)


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]
DurationOrZero = Annotated[dt.timedelta, BeforeValidator(_parse_lag)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureOverride(_Strict):
    """Method and/or threshold for one feature, or for every feature of one kind."""

    method: str | None = None
    threshold: float | None = Field(default=None, gt=0)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str | None) -> str | None:
        if value is not None and value not in ALL_METHODS:
            raise ValueError(f"unknown drift method; accepted: {', '.join(ALL_METHODS)}")
        return value


class DriftConfig(_Strict):
    """Drift methods, thresholds and false-positive control. Keys left out keep the detector's defaults."""

    thresholds: dict[str, float] = {}  # default threshold per method name
    by_kind: dict[Literal["numeric", "categorical", "text", "embedding"], FeatureOverride] = {}
    by_feature: dict[str, FeatureOverride] = {}
    prediction: FeatureOverride = FeatureOverride()
    min_samples: int | None = Field(default=None, ge=1)
    effect_floor: float | None = Field(default=None, ge=0, le=1)
    bh: bool | None = None  # Benjamini-Hochberg across features: thresholds of tests become the FDR
    persistence: int | None = Field(default=None, ge=1)  # consecutive drifted windows for `persistent`
    drift_share: float | None = Field(default=None, gt=0, le=1)  # share of drifted features = dataset drift
    # chi-squared as a two-sample test of homogeneity instead of Evidently's goodness of fit
    chisquare_homogeneity: bool | None = None
    # numeric features with more values than this (reference + current) are compared on cells
    exact_max_values: int | None = Field(default=None, ge=0)
    exact_max_run_values: int | None = Field(default=None, ge=0)  # features x rows of a run above: all on cells
    cell_resolution: float | None = Field(default=None, gt=0, le=0.1)  # cell width, in reference std
    # reference windows of at least this many events are read from the hour profiles kept as data arrives
    hour_profiles_min_rows: int | None = Field(default=None, ge=0)

    @field_validator("thresholds")
    @classmethod
    def _threshold_methods(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if name not in DRIFT_METHODS:
                raise ValueError(f"unknown drift method {name!r}; accepted: {', '.join(sorted(DRIFT_METHODS))}")
            if not threshold > 0:
                raise ValueError(f"the threshold of {name} must be > 0, got {threshold}")
        return value

    @model_validator(mode="after")
    def _methods_fit_kinds(self) -> DriftConfig:
        for kind, override in self.by_kind.items():
            if override.method and override.method not in METHODS[kind]:
                raise ValueError(
                    f"method {override.method!r} does not apply to {kind} features; accepted: "
                    + ", ".join(METHODS[kind])
                )
        return self

    def merged(self, override: DriftConfig | None) -> DriftConfig:
        """This configuration with the keys set in ``override`` replacing its own."""
        if override is None:
            return self
        data = self.model_dump()
        for key, value in override.model_dump(exclude_unset=True).items():
            if isinstance(value, dict) and key in ("by_kind", "by_feature", "thresholds"):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return DriftConfig.model_validate(data)


def _check_window(text: str, name: str) -> None:
    try:
        Window.parse(str(text), name=name)
    except UserError as exc:  # pydantic reports ValueError with the key path; UserError would escape it
        raise ValueError(str(exc)) from None


class FeatureEntry(_Strict):
    name: str = Field(min_length=1)
    kind: Literal["numeric", "categorical", "text", "embedding"]


class FeaturesConfig(_Strict):
    """Features to watch: listed, discovered from the reference window, or both."""

    discover: bool = False
    numeric: list[str] = []
    categorical: list[str] = []
    text: list[str] = []
    embedding: list[str] = []

    @model_validator(mode="after")
    def _something(self) -> FeaturesConfig:
        if not (self.discover or self.numeric or self.categorical or self.text or self.embedding):
            raise ValueError("no features: list numeric/categorical/text/embedding features or set discover: true")
        return self

    def listed(self) -> list[FeatureEntry]:
        return [FeatureEntry(name=n, kind=k) for k in FEATURE_KINDS for n in getattr(self, k)]


class SLOConfig(_Strict):
    """Service level objectives: a latency objective and an availability objective."""

    latency_ms: float = Field(default=1000.0, gt=0)
    percentile: float = Field(default=0.99, gt=0, lt=1)  # share of requests that must be faster
    availability: float = Field(default=0.999, gt=0, lt=1)  # share of requests that must not fail

    @property
    def objective(self) -> float:
        """Objective of the combined SLI (good = succeeded and under the latency objective).

        Its error budget is the sum of both budgets: ``(1 - percentile) + (1 - availability)``.
        """
        return 1.0 - ((1.0 - self.percentile) + (1.0 - self.availability))


class PerformanceConfig(_Strict):
    task: Literal["classification", "regression"]
    positive_label: str | None = None  # binary classification; default "1", "true" or the greater label
    label_horizon: Duration = dt.timedelta(days=7)  # windows this recent are recomputed as labels arrive
    # performance without labels (CBPE / DLE) against the model's fixed, labelled reference window
    estimate: bool = True
    estimate_metrics: list[Literal["roc_auc", "f1", "precision", "recall", "accuracy", "mae", "rmse"]] | None = None


class ReplayConfig(_Strict):
    collector_url: str
    sample_size: int = Field(default=50, ge=1, le=10_000)
    tolerance: float = Field(default=1e-6, ge=0)  # numbers: |a - b| <= tolerance * max(1, |a|, |b|)
    text_similarity: float = Field(default=0.9, ge=0, le=1)  # difflib ratio for free text
    timeout: Duration = dt.timedelta(seconds=30)

    @field_validator("collector_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected the collector's URL, http://host:port or https://host:port")
        return value.rstrip("/")


class MultivariateConfig(_Strict):
    """Multivariate drift (detectors/multivariate): methods and their options; NannyML's defaults."""

    methods: list[Literal["pca_reconstruction", "domain_classifier"]] = ["pca_reconstruction", "domain_classifier"]
    n_components: float = Field(default=0.65, gt=0)  # PCA: explained variance to keep (< 1) or a count
    sigma: float = Field(default=3.0, gt=0)  # PCA thresholds: mean +- sigma std of the reference chunks
    classifier_rows: int = Field(default=10_000, ge=100, le=1_000_000)  # sampled rows per window
    auc_lower: float = Field(default=0.45, ge=0, le=1)
    auc_upper: float = Field(default=0.65, ge=0, le=1)


class QualityConfig(_Strict):
    """Data-quality thresholds (detectors/quality.py): a check fails when its value is above its threshold."""

    missing: float = Field(default=0.05, ge=0, le=1)  # share of rows without the feature (beyond the reference's)
    type_mismatch: float = Field(default=0.0, ge=0, le=1)  # share of rows with the feature under the other kind
    out_of_range: float = Field(default=0.05, ge=0, le=1)  # share of numeric values outside the reference range
    unseen_category: float = Field(default=0.05, ge=0, le=1)  # share of categorical values the reference lacked
    malformed_rows: int = Field(default=0, ge=0)  # rows whose name and value arrays differ in length
    constant: bool = True  # a feature with one value in the window (not constant in the reference) fails
    schema_changes: bool = True  # a feature that appears or disappears against the reference fails


class SegmentsConfig(_Strict):
    """Segment dimensions (detectors/segments.py): tags (tenant, model_version) or categorical features."""

    dimensions: list[str] = Field(min_length=1)  # tenant | model_version | endpoint | a categorical feature name
    max_segments: int = Field(default=20, ge=1, le=200)  # per dimension; the rest is summed into 'other'
    min_rows: int = Field(default=30, ge=1)  # fewer rows in a segment: no value, a message says why


class ReproducibilityConfig(_Strict):
    consistency: bool = True
    replay: ReplayConfig | None = None


class ScheduleConfig(_Strict):
    every: Duration = dt.timedelta(minutes=1)  # how often the scheduler looks for due windows
    lag: DurationOrZero = dt.timedelta(minutes=1)  # a window is due this long after it ends (late batches)
    catch_up: int = Field(default=24, ge=1, le=10_000)  # most recent ended windows considered per run


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    version: str | None = None  # only this model_version; all versions when absent
    window: Duration | None = None
    reference: str | None = None
    features: FeaturesConfig | None = None
    drift: DriftConfig | None = None
    slo: SLOConfig | None = None
    performance: PerformanceConfig | None = None
    reproducibility: ReproducibilityConfig = ReproducibilityConfig()
    multivariate: MultivariateConfig = MultivariateConfig()
    quality: QualityConfig = QualityConfig()
    segments: SegmentsConfig | None = None
    detectors: list[Literal[DETECTORS]] | None = None  # type: ignore[valid-type]

    @field_validator("reference")
    @classmethod
    def _reference_form(cls, value: str | None) -> str | None:
        if value is None or value == "previous" or ".." not in value:
            return value
        _check_window(value, "reference")
        return value

    @field_validator("name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        problem = model_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class Reference(BaseModel):
    """A resolved reference: a fixed window or the window before the current one."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["window", "previous"]
    window: Window | None = None
    name: str = ""  # the baseline name, when pinned by name

    def for_current(self, current: Window) -> Window:
        if self.kind == "previous":
            return Window(current.start - (current.end - current.start), current.start)
        assert self.window is not None
        return self.window


class Config(_Strict):
    store: str | None = None
    retention_days: int | None = Field(default=None, ge=1)
    window: Duration = dt.timedelta(hours=1)
    schedule: ScheduleConfig = ScheduleConfig()
    baselines: dict[str, str] = {}
    reference: str = "previous"
    drift: DriftConfig = DriftConfig()
    slo: SLOConfig = SLOConfig()
    collector_error_classes: list[str] = list(DEFAULT_COLLECTOR_ERROR_CLASSES)
    models: list[ModelConfig] = Field(min_length=1)

    @field_validator("baselines")
    @classmethod
    def _baseline_windows(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            _check_window(text, f"baseline {name!r}")
        return value

    # -- resolved views, the scheduler reads these -------------------------------------------------

    def window_for(self, model: ModelConfig) -> dt.timedelta:
        return model.window or self.window

    def drift_for(self, model: ModelConfig) -> DriftConfig:
        return self.drift.merged(model.drift)

    def slo_for(self, model: ModelConfig) -> SLOConfig:
        return model.slo or self.slo

    def resolve_reference(self, model: ModelConfig) -> Reference:
        text = model.reference or self.reference
        if text == "previous":
            return Reference(kind="previous")
        if ".." in text:
            return Reference(kind="window", window=Window.parse(text, name="reference"))
        if text in self.baselines:
            return Reference(kind="window", window=Window.parse(self.baselines[text]), name=text)
        accepted = ", ".join(repr(b) for b in self.baselines) or "none defined under `baselines`"
        raise ValueError(f"accepted: 'previous', a START..END window, or a name under `baselines` ({accepted})")

    def _estimates(self, model: ModelConfig) -> bool:
        """Estimation runs with a performance section and a fixed reference window (it learns on its labels)."""
        if model.performance is None or not model.performance.estimate:
            return False
        try:
            return self.resolve_reference(model).kind == "window"
        except ValueError:
            return False

    def enabled(self, model: ModelConfig) -> list[str]:
        """The detectors that run for ``model``: the listed ones, else every one it is configured for."""
        wanted = list(model.detectors) if model.detectors is not None else list(DETECTORS)
        out = []
        for name in wanted:
            if name in ("drift",) and model.features is None:
                continue
            if name == "performance" and model.performance is None:
                continue
            if name in ("multivariate_drift", "data_quality") and model.features is None:
                continue
            if name == "segments" and model.segments is None:
                continue
            if name == "estimated_performance" and not self._estimates(model):
                continue
            if name == "consistency" and not model.reproducibility.consistency:
                continue
            if name == "replay" and model.reproducibility.replay is None:
                continue
            out.append(name)
        return out


def read_file(path: str | Path) -> str:
    """The text of a configuration file; :class:`UserError` when it is missing or unreadable."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"configuration file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def load(path: str | Path) -> Config:
    """Read and validate the YAML configuration at ``path``; raise :class:`UserError` on any problem."""
    return parse(read_file(path), source=str(path))


def load_mapping(text: str, *, source: str, keys: str) -> dict:
    """The YAML document ``text`` as a mapping; :class:`UserError` naming the line of a syntax error."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise UserError(f"{source}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of keys ({keys}, ...), got {type(data).__name__}")
    return data


def parse(text: str, *, source: str = "configuration") -> Config:
    """Validate a YAML document; raise :class:`UserError` with one line per problem."""
    data = load_mapping(text, source=source, keys="store, window, models")
    try:
        config = Config.model_validate(data)
        problems = _consistency_problems(config)
    except ValidationError as exc:
        problems = [describe_error(err) for err in exc.errors()]
    if problems:
        head = f"{source}: " if len(problems) == 1 else f"{source}: {len(problems)} problems:\n  "
        raise UserError(head + "\n  ".join(problems)) from None
    return config


def _consistency_problems(config: Config) -> list[str]:
    """Problems that span keys: unique model names, references that resolve."""
    problems = []
    seen: set[str] = set()
    for i, model in enumerate(config.models):
        if model.name in seen:
            problems.append(
                f"models[{i}].name: value {model.name!r} is not accepted: another model has this name; "
                "list each model once (use `version` to filter one version)"
            )
        seen.add(model.name)
        try:
            config.resolve_reference(model)
        except ValueError as exc:
            key = f"models[{i}].reference" if model.reference else "reference"
            problems.append(f"{key}: value {model.reference or config.reference!r} is not accepted: {exc}")
    return problems


def describe_error(err: dict[str, Any]) -> str:
    """One pydantic error as ``key.path: value V is not accepted: what is accepted``."""
    loc = tuple(err.get("loc", ()))
    path = _path(loc) or "(top level)"
    message = err.get("msg", "invalid")
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    kind = err.get("type", "")
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "extra_forbidden":
        accepted = _accepted_keys(loc[:-1])
        hint = f"; accepted keys here: {', '.join(accepted)}" if accepted else ""
        return f"{path}: unknown key{hint}"
    value = err.get("input")
    shown = _show(value)
    return f"{path}: value {shown} is not accepted: {message}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "literal[")) or part == "[key]":
            continue  # pydantic's validator/union tags are not keys
        else:
            out += ("." if out else "") + str(part)
    return out


def _accepted_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model found at ``loc`` in :class:`Config`, or [] when it is not a model."""
    current: Any = Config
    for part in loc:
        origin = getattr(current, "__origin__", None)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            field = current.model_fields.get(part)
            if field is None:
                return []
            current = _unwrap(field.annotation)
        elif origin is list and isinstance(part, int):
            current = _unwrap(current.__args__[0])
        elif origin is dict:
            current = _unwrap(current.__args__[1])
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """The model class inside ``X | None``; containers are returned as they are."""
    args = getattr(annotation, "__args__", None)
    if args and type(None) in args:
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            return models[0]
    return annotation
