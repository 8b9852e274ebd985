"""The scheduler: runs every configured detector on every due window of every model, once.

Windows are aligned to their length from the Unix epoch (hourly windows start
on the hour, daily ones at midnight UTC). At time ``now`` the due windows are
the ``schedule.catch_up`` most recent ones that ended at least
``schedule.lag`` ago (the lag lets late batches land); performance looks back
over ``performance.label_horizon`` instead, because labels arrive late.

Idempotency: before computing, the scheduler derives the run's input hash
(detector, model, version filter, window, the detector's settings; for
performance also the label fingerprint of the window from
:func:`driftwarden.detectors.performance.label_states`, one query for every window) and
skips the window when ``detector_runs`` already holds a successful run with
that window and hash.
So a restart, a second ``--once`` or an overlapping tick computes nothing
twice, a configuration change recomputes, and a performance window is
recomputed exactly when its labels changed. Windows without any event of the
model are skipped without a record (there is nothing to compute); a drift run
whose ``previous`` reference window is empty too.

A failing detector is logged (one line), counted
(``driftwarden_detector_errors_total``), recorded in ``detector_runs`` with
``status = 'error'`` and its message, and the others go on.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from driftwarden.detectors import runs
from driftwarden.detectors.config import Config, DriftConfig, FeatureOverride, ModelConfig, format_duration
from driftwarden.detectors.exporter import Exporter
from driftwarden.detectors.latency import compute_latency, write_latency
from driftwarden.detectors.performance import compute_performance, label_states, write_performance
from driftwarden.detectors.provenance import content_hash
from driftwarden.detectors.reproducibility.consistency import compute_consistency, write_reproducibility
from driftwarden.detectors.reproducibility.replay import compute_replay
from driftwarden.detectors.window import Window, micros

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
logger = logging.getLogger("driftwarden.detectors")
ANALYTICS = ("multivariate_drift", "data_quality", "segments")  # compare a window with the drift reference


def due_windows(length: dt.timedelta, now: dt.datetime, lag: dt.timedelta, count: int) -> list[Window]:
    """The ``count`` most recent windows aligned to ``length`` that ended by ``now - lag``, oldest first."""
    size = _micros_delta(length)
    last_end_us = (micros(now - lag) // size) * size
    out = []
    for k in range(count, 0, -1):
        end_us = last_end_us - (k - 1) * size
        out.append(Window(_from_micros(end_us - size), _from_micros(end_us)))
    return out


def _micros_delta(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=us)


@dataclass
class Job:
    """One detector, one model, one window: what to compute and the key it is recorded under."""

    detector: str
    model: ModelConfig
    window: Window
    input_hash: str


class Scheduler:
    """Runs the detectors of a :class:`Config` against a store and exports their results."""

    def __init__(self, client: Client, config: Config, exporter: Exporter | None = None) -> None:
        self.client = client
        self.config = config
        self.exporter = exporter or Exporter()
        self._detectors: dict[str, Callable[[ModelConfig, Window], int]] = {
            "drift": self._drift,
            "prediction_drift": self._prediction_drift,
            "performance": self._performance,
            "estimated_performance": self._estimated_performance,
            "latency": self._latency,
            "consistency": self._consistency,
            "replay": self._replay,
            "multivariate_drift": self._multivariate,
            "data_quality": self._quality,
            "segments": self._segments,
        }
        self.problems: list[str] = []  # failures of the last pass that are not a window's run
        self._estimators: dict[str, object] = {}  # fitted CBPE / DLE per model, reference and window length
        for model in config.models:
            for detector in config.enabled(model):
                self.exporter.touch(detector, model.name)

    # -- one pass ---------------------------------------------------------------------------------

    def run_once(self, now: dt.datetime | None = None) -> list[runs.Run]:
        """Compute every due window not computed yet; return the runs made (failed ones included)."""
        now = now or dt.datetime.now(UTC)
        self.problems = []
        made: list[runs.Run] = []
        for model in self.config.models:
            self._profile_hours(model, now)
            for detector in self.config.enabled(model):
                problems = len(self.problems)
                runs_ = [self._run(job) for job in self._jobs(detector, model, now)]
                made.extend(runs_)
                if len(self.problems) == problems and all(r.status != "error" for r in runs_):
                    # Up to date without error, even when nothing was due: a daily detector is not stale
                    # an hour after its last window.
                    self.exporter.last_success.labels(detector, model.name).set(time.time())
        try:
            self.exporter.observe_events(self.client, [m.name for m in self.config.models])
        except Exception as exc:  # the event gauges must not stop the detectors
            logger.error("reading event counts failed: %s", _one_line(exc))
        return made

    def run_forever(self, stop: threading.Event) -> None:
        """Run a pass every ``schedule.every`` until ``stop`` is set."""
        every = self.config.schedule.every.total_seconds()
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except Exception as exc:  # e.g. the store is unreachable: log, retry on the next tick
                logger.error("scheduler pass failed: %s", _one_line(exc))
            stop.wait(max(0.0, every - (time.monotonic() - started)))

    def _profile_hours(self, model: ModelConfig, now: dt.datetime) -> None:
        """Profile the hours completed since the last pass (or changed by late rows) of a model whose drift runs
        read hour profiles (``detectors/drift/incremental.py``), so that no run scans its windows."""
        if not {"drift", "prediction_drift"} & set(self.config.enabled(model)):
            return
        from driftwarden.detectors.drift import incremental
        from driftwarden.detectors.drift.incremental_compare import MAX_NUMERIC_FEATURES

        length = self.config.window_for(model)
        lag = self.config.schedule.lag
        latest = Window(now - lag - length, now - lag)
        min_rows = drift_settings(self.config.drift_for(model)).hour_profiles_min_rows
        try:
            if incremental.worth_profiling(self.client, model.name, latest, min_rows, MAX_NUMERIC_FEATURES):
                # the hours of the latest window and the day before (each pass reads their stamps: a look-back of
                # every catch-up window would scan weeks of events each minute for daily windows); older windows
                # caught up after a pause profile their few stale hours themselves, or take the per-window path
                lookback = length + lag + dt.timedelta(days=1)
                incremental.refresh(self.client, model.name, now, lookback, lag)
                # and the latest window's reference (a fixed reference: its hours once, then only their stamps)
                reference = self.config.resolve_reference(model).for_current(due_windows(length, now, lag, 1)[-1])
                if reference.start < now - lookback:
                    incremental.refresh_window(self.client, model.name, reference)
        except Exception as exc:  # the windows are then read raw by the runs: slower, not wrong
            self._problem("drift", model.name, f"cannot profile the completed hours: {_one_line(exc)}")

    # -- which windows -----------------------------------------------------------------------------

    def _jobs(self, detector: str, model: ModelConfig, now: dt.datetime) -> list[Job]:
        length = self.config.window_for(model)
        count = self.config.schedule.catch_up
        if detector in ("performance", "estimated_performance") and model.performance is not None:
            count = max(1, min(10_000, int(model.performance.label_horizon / length)))
        windows = due_windows(length, now, self.config.schedule.lag, count)
        try:
            busy = self._windows_with_events(model, windows)
            done = runs.completed(self.client, detector, model.name, windows[0].start)
            labels: dict = {}
            if detector in ("performance", "estimated_performance"):
                labels = label_states(self.client, model.name, [w for w in windows if w in busy], model.version)
        except Exception as exc:
            self._problem(detector, model.name, f"cannot read the store: {_one_line(exc)}")
            return []
        jobs = []
        for window in windows:
            if window not in busy:
                continue
            try:
                input_hash = self._input_hash(detector, model, window, labels.get(window, {}), busy)
            except _Skip:
                continue
            except Exception as exc:
                self._problem(detector, model.name, f"cannot prepare window {window}: {_one_line(exc)}")
                continue
            if runs.key(window, input_hash) not in done:
                jobs.append(Job(detector, model, window, input_hash))
        return jobs

    def _windows_with_events(self, model: ModelConfig, windows: list[Window]) -> set[Window]:
        size = _micros_delta(windows[0].end - windows[0].start)
        span = Window(windows[0].start, windows[-1].end)
        version = "" if model.version is None else "AND model_version = {v:String}"
        rows = self.client.query(
            f"SELECT DISTINCT intDiv(toUnixTimestamp64Micro(ts), {size}) FROM inferences "
            f"WHERE model = {{m:String}} AND NOT is_replay AND {span.sql()} {version}",
            parameters={"m": model.name, "v": model.version or ""},
        ).result_rows
        buckets = {int(b) for (b,) in rows}
        return {w for w in windows if micros(w.start) // size in buckets}

    def _problem(self, detector: str, model: str, message: str) -> None:
        """A failure outside a window's run (the store cannot be read): logged, counted, reported by --once."""
        logger.error("detector %s model %s: %s", detector, model, message)
        self.exporter.errors.labels(detector, model).inc()
        self.problems.append(f"{detector} for model {model}: {message}")

    def _input_hash(self, detector: str, model: ModelConfig, window: Window, labels: dict, busy: set[Window]) -> str:
        inputs: dict = {
            "detector": detector,
            "model": model.name,
            "model_version": model.version,
            "window": [window.start, window.end],
        }
        if detector in ("drift", "prediction_drift", *ANALYTICS):
            resolved = self.config.resolve_reference(model)
            reference = resolved.for_current(window)
            if (
                resolved.kind == "previous"
                and reference not in busy
                and not self._windows_with_events(model, [reference])
            ):
                raise _Skip()  # nothing to compare with yet
            inputs["reference"] = [reference.start, reference.end]
            inputs["drift"] = self.config.drift_for(model).model_dump(mode="json")
            inputs["features"] = model.features.model_dump(mode="json") if model.features else None
            if detector in ANALYTICS:
                inputs["analytics"] = model.model_dump(mode="json", include={"multivariate", "quality", "segments"})
        elif detector == "latency":
            inputs["slo"] = self.config.slo_for(model).model_dump()
            inputs["collector_error_classes"] = sorted(self.config.collector_error_classes)
        elif detector == "performance":
            assert model.performance is not None
            if not any(labelled for _, labelled, _ in labels.values()):
                raise _Skip()
            inputs["performance"] = model.performance.model_dump(mode="json", exclude={"label_horizon"})
            inputs["labels"] = {v: list(s) for v, s in sorted(labels.items())}
        elif detector == "estimated_performance":
            # estimated without labels, recomputed when labels of the window arrive (the realized value)
            assert model.performance is not None
            reference = self.config.resolve_reference(model).for_current(window)
            inputs["reference"] = [reference.start, reference.end]
            inputs["performance"] = model.performance.model_dump(mode="json", exclude={"label_horizon"})
            inputs["labels"] = {v: list(s) for v, s in sorted(labels.items())}
        elif detector == "replay":
            assert model.reproducibility.replay is not None
            inputs["replay"] = model.reproducibility.replay.model_dump(mode="json")
        return content_hash(inputs)

    # -- running one job ---------------------------------------------------------------------------

    def _run(self, job: Job) -> runs.Run:
        started = dt.datetime.now(UTC)
        t0 = time.perf_counter()
        status, error, results = "ok", "", 0
        try:
            results = self._detectors[job.detector](job.model, job.window)
        except Exception as exc:
            status, error = "error", _one_line(exc)
            logger.error(
                "detector %s failed for model %s window %s: %s", job.detector, job.model.name, job.window, error
            )
        finished = started + dt.timedelta(seconds=time.perf_counter() - t0)
        run = runs.Run(
            detector=job.detector,
            model=job.model.name,
            window=job.window,
            input_hash=job.input_hash,
            started_at=started,
            finished_at=finished,
            status=status,
            results=results,
            error=error,
            run_id=uuid.uuid4(),
        )
        try:
            runs.record(self.client, run)
        except Exception as exc:
            logger.error("cannot record the run of %s for %s: %s", job.detector, job.model.name, _one_line(exc))
        self.exporter.observe_run(run)
        if status == "ok":
            logger.info(
                "detector %s model %s window %s: %d rows in %.3f s",
                job.detector,
                job.model.name,
                job.window,
                results,
                run.duration_seconds,
            )
        return run

    # -- the detectors -----------------------------------------------------------------------------

    def _drift(self, model: ModelConfig, window: Window) -> int:
        return self._drift_target(model, window, "feature")

    def _prediction_drift(self, model: ModelConfig, window: Window) -> int:
        return self._drift_target(model, window, "prediction")

    def _drift_target(self, model: ModelConfig, window: Window, target: str) -> int:
        from driftwarden.detectors.drift import compute_drift, write_drift

        reference = self.config.resolve_reference(model).for_current(window)
        drift = self.config.drift_for(model)
        if target == "feature":
            assert model.features is not None
            specs = feature_specs(self.client, model, drift, reference)
        else:
            specs = prediction_specs(self.client, model, drift, reference)
        report = compute_drift(
            self.client,
            model=model.name,
            reference=reference,
            current=window,
            features=specs,
            settings=drift_settings(drift),
            model_version=model.version,
            target=target,
        )
        write_drift(self.client, report)
        self.exporter.observe_drift(report, model.version or "")
        return len(report.features) + 1  # and the dataset row

    def _performance(self, model: ModelConfig, window: Window) -> int:
        assert model.performance is not None
        results = compute_performance(
            self.client,
            model.name,
            window,
            model.performance.task,
            model_version=model.version,
            positive_label=model.performance.positive_label,
        )
        written = write_performance(self.client, results)
        self.exporter.observe_performance(results)
        return written

    def _estimated_performance(self, model: ModelConfig, window: Window) -> int:
        from driftwarden.detectors.estimation.estimator import estimate
        from driftwarden.detectors.estimation.results import write_estimates

        results = estimate(self.client, self._estimator(model, window), window)
        written = write_estimates(self.client, results)
        self.exporter.observe_estimates(results)
        return written

    def _segment_estimator(self, model: ModelConfig, window: Window):
        """The estimator for estimated performance per segment, or None (not configured, or the reference
        cannot be used: the estimated_performance detector's own run reports why)."""
        from driftwarden.detectors.estimation.cbpe import EstimationError

        if not self.config._estimates(model):
            return None
        try:
            return self._estimator(model, window)
        except EstimationError:
            return None

    def _estimator(self, model: ModelConfig, window: Window):
        """The CBPE / DLE fitted on the model's reference for windows as long as ``window`` (fitted once)."""
        from driftwarden.detectors.estimation.estimator import fit_estimator

        assert model.performance is not None
        reference = self.config.resolve_reference(model).for_current(window)
        key = content_hash(
            {
                "model": model.name,
                "version": model.version,
                "reference": [reference.start, reference.end],
                "window": window.seconds,
                "performance": model.performance.model_dump(mode="json", exclude={"label_horizon"}),
            }
        )
        fit = self._estimators.get(key)
        if fit is None:  # fitted once per process: the reference is a fixed, past window
            fit = fit_estimator(
                self.client,
                model.name,
                reference,
                window.end - window.start,
                task=model.performance.task,
                metrics=model.performance.estimate_metrics,
                model_version=model.version,
                positive_label=model.performance.positive_label,
            )
            self._estimators[key] = fit
        return fit

    def _latency(self, model: ModelConfig, window: Window) -> int:
        results = compute_latency(
            self.client,
            model.name,
            window,
            self.config.slo_for(model),
            model_version=model.version,
            collector_error_classes=self.config.collector_error_classes,
        )
        written = write_latency(self.client, results)
        self.exporter.observe_latency(results)
        return written

    def _consistency(self, model: ModelConfig, window: Window) -> int:
        results = compute_consistency(self.client, model.name, window, model_version=model.version)
        written = write_reproducibility(self.client, results)
        self.exporter.observe_reproducibility(results)
        return written

    def _replay(self, model: ModelConfig, window: Window) -> int:
        assert model.reproducibility.replay is not None
        results = compute_replay(
            self.client, model.name, window, model.reproducibility.replay, model_version=model.version
        )
        written = write_reproducibility(self.client, results)
        self.exporter.observe_reproducibility(results)
        return written

    def _multivariate(self, model: ModelConfig, window: Window) -> int:
        from driftwarden.detectors.multivariate import MultivariateSettings, compute_multivariate, write_multivariate

        assert model.features is not None
        reference = self.config.resolve_reference(model).for_current(window)
        specs = feature_specs(self.client, model, self.config.drift_for(model), reference)
        options = model.multivariate
        results = compute_multivariate(
            self.client,
            model.name,
            reference,
            window,
            numeric=[s.name for s in specs if s.kind == "numeric"],
            categorical=[s.name for s in specs if s.kind == "categorical"],
            model_version=model.version,
            settings=MultivariateSettings(
                methods=tuple(options.methods),
                n_components=options.n_components,
                sigma=options.sigma,
                classifier_rows=options.classifier_rows,
                auc_thresholds=(options.auc_lower, options.auc_upper),
            ),
        )
        written = write_multivariate(self.client, results)
        self.exporter.observe_multivariate(results)
        return written

    def _quality(self, model: ModelConfig, window: Window) -> int:
        from driftwarden.detectors.quality import compute_quality, write_quality

        reference = self.config.resolve_reference(model).for_current(window)
        results = compute_quality(
            self.client, model.name, reference, window, model_version=model.version, config=model.quality
        )
        written = write_quality(self.client, results)
        self.exporter.observe_quality(results)
        return written

    def _segments(self, model: ModelConfig, window: Window) -> int:
        from driftwarden.detectors.segments import compute_segments, write_segments

        assert model.segments is not None
        reference = self.config.resolve_reference(model).for_current(window)
        results = compute_segments(
            self.client,
            model.name,
            reference,
            window,
            model.segments,
            model_version=model.version,
            task=model.performance.task if model.performance else None,
            # estimated performance per segment, with the estimator of the estimated_performance detector
            estimator=self._segment_estimator(model, window),
        )
        written = write_segments(self.client, results)
        self.exporter.observe_segments(results)
        return written


# -- configuration -> drift settings ----------------------------------------------------------------


def drift_settings(drift: DriftConfig):
    """The :class:`~detectors.drift.DriftSettings` of a drift configuration (unset keys keep the defaults)."""
    from driftwarden.detectors.drift import DriftSettings

    kwargs: dict = {"thresholds": dict(drift.thresholds)}
    for ours, theirs in (
        ("drift_share", "drift_share"),
        ("min_samples", "min_rows"),
        ("effect_floor", "effect_size_floor"),
        ("bh", "fdr"),
        ("persistence", "persistence"),
        ("chisquare_homogeneity", "chisquare_homogeneity"),
        ("exact_max_values", "exact_max_values"),
        ("exact_max_run_values", "exact_max_run_values"),
        ("cell_resolution", "cell_resolution"),
        ("hour_profiles_min_rows", "hour_profiles_min_rows"),
    ):
        value = getattr(drift, ours)
        if value is not None:
            kwargs[theirs] = value
    return DriftSettings(**kwargs)


def _override(drift: DriftConfig, name: str, kind: str) -> tuple[str, float | None]:
    """Method and threshold of a feature: its own, else its kind's, else auto and the method's default."""
    own = drift.by_feature.get(name) or FeatureOverride()
    by_kind = drift.by_kind.get(kind) or FeatureOverride()  # type: ignore[call-overload]
    method = own.method or by_kind.method or "auto"
    threshold = own.threshold if own.threshold is not None else by_kind.threshold
    return method, threshold


def feature_specs(client: Client, model: ModelConfig, drift: DriftConfig, reference: Window) -> list:
    """The features of ``model``: listed ones, then (with ``discover``) the others seen in the reference window."""
    from driftwarden.detectors.drift import FeatureSpec

    assert model.features is not None
    kinds = {entry.name: entry.kind for entry in model.features.listed()}
    if model.features.discover:
        version = "" if model.version is None else "AND model_version = {v:String}"
        numeric, categorical, text, embedding = client.query(
            "SELECT arraySort(groupUniqArrayArray(num_names)), arraySort(groupUniqArrayArray(cat_names)), "
            "arraySort(groupUniqArrayArray(text_names)), arraySort(groupUniqArrayArray(emb_names)) "
            f"FROM inferences WHERE model = {{m:String}} AND NOT is_replay AND {reference.sql()} {version}",
            parameters={"m": model.name, "v": model.version or ""},
        ).result_rows[0]
        for name in numeric:
            kinds.setdefault(name, "numeric")
        for name in categorical:
            kinds.setdefault(name, "categorical")
        for name in text:
            kinds.setdefault(name, "text")
        for name in embedding:
            kinds.setdefault(name, "embedding")
    specs = []
    for name, kind in kinds.items():
        method, threshold = _override(drift, name, kind)
        specs.append(FeatureSpec(name, kind, method, threshold))
    return specs


def prediction_specs(client: Client, model: ModelConfig, drift: DriftConfig, reference: Window) -> list | None:
    """The outputs to compare; None (the drift detector's own choice) unless a method or threshold is set."""
    from driftwarden.detectors.drift import FeatureSpec
    from driftwarden.detectors.methods import METHODS as DRIFT_METHODS

    override = drift.prediction
    if override.method is None and override.threshold is None:
        return None
    version = "" if model.version is None else "AND model_version = {v:String}"
    numeric, labels = client.query(
        "SELECT countIf(prediction IS NOT NULL), countIf(prediction_label != '') FROM inferences "
        f"WHERE model = {{m:String}} AND NOT is_replay AND {reference.sql()} {version}",
        parameters={"m": model.name, "v": model.version or ""},
    ).result_rows[0]
    specs = []
    for name, kind, present in (("prediction", "numeric", numeric), ("prediction_label", "categorical", labels)):
        if not present:
            continue
        method = override.method or "auto"
        if method != "auto" and kind not in DRIFT_METHODS[method].feature_types:
            method = "auto"
        specs.append(FeatureSpec(name, kind, method, override.threshold))
    return specs


class _Skip(Exception):
    """Nothing to compute for this window (no labels yet, an empty previous reference)."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def describe(run: runs.Run) -> str:
    """One line for the command's summary."""
    window = f"{run.window.start:%Y-%m-%dT%H:%M:%SZ}/{format_duration(run.window.end - run.window.start)}"
    tail = f"{run.results} rows" if run.status == "ok" else run.error
    return f"{run.status:5} {run.detector:16} {run.model:20} {window}  {tail}"
