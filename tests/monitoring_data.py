"""A store populated as a running deployment would leave it, for checking dashboard queries.

Traffic is the real Capital Bikeshare 2011 hourly data: January is the reference, February
the current traffic (weather and demand shift between the two), served by ``bikes`` version
``v1`` until 14 February and ``v2`` after. The detector results (reference profiles, daily
drift, performance, reproducibility and detector runs) are computed from that data the way
the detectors define them. When the collector and detectors land, ``populate`` can be
replaced by running them on the same data; the dashboards' tests only need the returned
:class:`Populated` description.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import importlib.util
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

UTC = dt.UTC
MODEL = "bikes"
NUMERIC = ["temp", "atemp", "hum", "windspeed", "hr"]
CATEGORICAL = ["weathersit"]
SWITCH = dt.datetime(2011, 2, 14, tzinfo=UTC)
DIGESTS = {"v1": "sha256:" + "1a" * 32, "v2": "sha256:" + "2b" * 32}


@dataclass
class Populated:
    """What a test needs to query the store: a time range with data and template variable values."""

    start: dt.datetime
    end: dt.datetime
    variables: dict[str, str] = field(default_factory=dict)


def bikeshare_csv() -> Path:
    spec = importlib.util.find_spec("ISLP")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the islp package (Capital Bikeshare data) is not installed: run make test's install")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "Bikeshare.csv"


def _rows() -> list[dict]:
    with bikeshare_csv().open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["ts"] = dt.datetime(2011, 1, 1, tzinfo=UTC) + dt.timedelta(days=int(row["day"]) - 1, hours=int(row["hr"]))
    return [r for r in rows if r["ts"] < dt.datetime(2011, 3, 1, tzinfo=UTC)]


def _u64(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def _version(ts: dt.datetime) -> str:
    return "v1" if ts < SWITCH else "v2"


def populate(client, model: str = MODEL) -> Populated:
    """Insert traffic and detector results into the migrated store behind ``client``."""
    rows = _rows()
    rng = np.random.default_rng(2011)
    jan = [r for r in rows if r["ts"].month == 1]
    x_jan = np.array([[1.0] + [float(r[f]) for f in NUMERIC] for r in jan])
    coef, *_ = np.linalg.lstsq(x_jan, np.array([float(r["bikers"]) for r in jan]), rcond=None)

    inference_cols = [
        "event_id", "ts", "model", "model_version", "model_digest", "protocol", "endpoint", "status",
        "latency_ms", "upstream_latency_ms", "num_names", "num_values", "cat_names", "cat_values",
        "prediction", "input_hash", "output_hash", "error_class", "is_replay", "replay_of",
    ]  # fmt: skip
    events, predictions = [], {}
    for row in rows:
        values = [float(row[f]) for f in NUMERIC]
        prediction = float(coef @ np.array([1.0, *values]))
        failed = rng.random() < 0.01
        version = _version(row["ts"])
        event_id = uuid.UUID(int=_u64("event", row["ts"].isoformat()) << 64 | 1)
        predictions[event_id] = (row, prediction)
        upstream = float(rng.lognormal(1.0, 0.4))
        events.append([
            event_id, row["ts"], model, version, DIGESTS[version], "oip", f"/v2/models/{model}/infer",
            500 if failed else 200, upstream + 0.3, upstream, NUMERIC, values, CATEGORICAL, [row["weathersit"]],
            prediction, _u64(values), _u64(round(prediction, 6)), "upstream_5xx" if failed else "", False, None,
        ])  # fmt: skip
    # The replay detector re-sent some February events; a few did not reproduce.
    february = [e for e in events if e[1].month == 2]
    for i, original in enumerate(february[::25]):
        replay_ts = original[1] + dt.timedelta(minutes=30)
        version = _version(original[1])
        mismatch = i % 4 == 0
        output_hash = original[16] ^ 1 if mismatch else original[16]
        events.append([
            uuid.UUID(int=_u64("replay", i) << 64 | 2), replay_ts, model, version, DIGESTS[version], "oip",
            f"/v2/models/{model}/infer", 200, 3.0, 2.7, NUMERIC, original[11], CATEGORICAL, original[13],
            original[14] + (0.5 if mismatch else 0.0), original[15], output_hash, "", True, original[0],
        ])  # fmt: skip
    client.insert("inferences", events, column_names=inference_cols)

    client.insert(
        "ground_truth",
        [[e[0], model, e[1] + dt.timedelta(hours=1), "", float(predictions[e[0]][0]["bikers"])] for e in february],
        column_names=["event_id", "model", "ts", "label", "value"],
    )
    _reference_profiles(client, jan, model)
    _results(client, rows, coef, rng, model)
    return Populated(
        start=dt.datetime(2011, 1, 1, tzinfo=UTC),
        end=dt.datetime(2011, 3, 1, tzinfo=UTC),
        variables={"model": model, "version": "__all", "feature": "temp", "api_url": "http://127.0.0.1:8000"},
    )


def _reference_profiles(client, jan: list[dict], model: str) -> None:
    ref_start, ref_end = dt.datetime(2011, 1, 1, tzinfo=UTC), dt.datetime(2011, 2, 1, tzinfo=UTC)
    profiles = []
    for name in NUMERIC:
        values = np.array([float(r[name]) for r in jan])
        edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)))
        counts, _ = np.histogram(values, bins=edges)
        profiles.append([
            model, "", name, "numeric", ref_start, ref_end, len(values), 0, len(np.unique(values)),
            float(values.mean()), float(values.std()), float(values.min()), float(values.max()),
            edges.tolist(), counts.tolist(), [], [], f"profile-{name}",
        ])  # fmt: skip
    for name in CATEGORICAL:
        cats, counts = np.unique([r[name] for r in jan], return_counts=True)
        profiles.append([
            model, "", name, "categorical", ref_start, ref_end, len(jan), 0, len(cats),
            0.0, 0.0, 0.0, 0.0, [], [], cats.tolist(), counts.tolist(), f"profile-{name}",
        ])  # fmt: skip
    client.insert(
        "reference_profiles",
        profiles,
        column_names=[
            "model", "model_version", "feature", "feature_type", "reference_start", "reference_end", "rows",
            "missing", "unique_values", "mean", "std", "min", "max", "bin_edges", "bin_counts", "categories",
            "category_counts", "profile_hash",
        ],
    )  # fmt: skip


def _results(client, rows: list[dict], coef: np.ndarray, rng: np.random.Generator, model: str) -> None:
    """Daily February windows: drift per feature (KS p-value), dataset share, prediction drift,
    performance on labels, reproducibility, and the detector runs that wrote them."""
    ref_start, ref_end = dt.datetime(2011, 1, 1, tzinfo=UTC), dt.datetime(2011, 2, 1, tzinfo=UTC)
    jan = [r for r in rows if r["ts"] < ref_end]

    def predict(subset: list[dict]) -> np.ndarray:
        return np.array([[1.0] + [float(r[f]) for f in NUMERIC] for r in subset]) @ coef

    drift, perf, repro, runs = [], [], [], []
    streak: dict[str, int] = {}
    day = ref_end
    while day < dt.datetime(2011, 3, 1, tzinfo=UTC):
        end = day + dt.timedelta(days=1)
        window = [r for r in rows if day <= r["ts"] < end]
        version = _version(day)
        run_id = uuid.UUID(int=_u64("run", day.isoformat()))
        common = dict(
            run_id=run_id, model=model, model_version=version, reference_start=ref_start, reference_end=ref_end,
            current_start=day, current_end=end, reference_rows=len(jan), current_rows=len(window),
            code_version="0.1.0", schema_version=1,
        )  # fmt: skip
        drifted_features = 0
        for name in NUMERIC + ["prediction"]:
            if name == "prediction":
                ref_values, cur_values = predict(jan), predict(window)
            else:
                ref_values = np.array([float(r[name]) for r in jan])
                cur_values = np.array([float(r[name]) for r in window])
            result = stats.ks_2samp(ref_values, cur_values)
            drifted = bool(result.pvalue < 0.05)
            streak[name] = streak.get(name, 0) + 1 if drifted else 0
            drifted_features += drifted and name != "prediction"
            drift.append(dict(
                common, target="prediction" if name == "prediction" else "feature", feature=name,
                feature_type="numeric", method="ks", statistic=float(result.pvalue), p_value=float(result.pvalue),
                threshold=0.05, drifted=drifted, persistent=streak[name] >= 3,
                details=json.dumps({"statistic": float(result.statistic)}), input_hash=f"{name}-{day:%F}",
            ))  # fmt: skip
        share = drifted_features / len(NUMERIC)
        drift.append(dict(
            common, target="dataset", feature="", feature_type="", method="share", statistic=share,
            p_value=None, threshold=0.5, drifted=share >= 0.5, persistent=False, details="{}",
            input_hash=f"ds-{day:%F}",
        ))  # fmt: skip
        errors = predict(window) - np.array([float(r["bikers"]) for r in window])
        for metric, value in (("mae", np.abs(errors).mean()), ("rmse", np.sqrt((errors**2).mean()))):
            perf.append([run_id, model, version, "regression", metric, float(value), day, end, len(window),
                         len(window), "0.1.0", 1, f"perf-{day:%F}"])  # fmt: skip
        for kind in ("consistency", "replay"):
            checked = int(rng.integers(20, 40))
            mismatches = int(rng.integers(0, 3))
            repro.append([run_id, model, version, DIGESTS[version], kind, day, end, checked, mismatches,
                          1 - mismatches / checked, 1e-6, json.dumps({"sample": []}), "0.1.0", 1,
                          f"{kind}-{day:%F}"])  # fmt: skip
        for detector in ("drift", "performance", "consistency", "replay"):
            started = end + dt.timedelta(minutes=5)
            runs.append([uuid.UUID(int=_u64(detector, day.isoformat())), detector, model, started,
                         started + dt.timedelta(seconds=2), 2000.0, "ok", "", day, end, 7,
                         f"{detector}-{day:%F}", "0.1.0"])  # fmt: skip
        day = end

    columns = list(drift[0])
    client.insert("drift_results", [[r[c] for c in columns] for r in drift], column_names=columns)
    client.insert(
        "performance_results",
        perf,
        column_names=["run_id", "model", "model_version", "task", "metric", "value", "current_start", "current_end",
                      "predictions", "labelled", "code_version", "schema_version", "input_hash"],
    )  # fmt: skip
    client.insert(
        "reproducibility_results",
        repro,
        column_names=["run_id", "model", "model_version", "model_digest", "kind", "current_start", "current_end",
                      "checked", "mismatches", "rate", "tolerance", "details", "code_version", "schema_version",
                      "input_hash"],
    )  # fmt: skip
    client.insert(
        "detector_runs",
        runs,
        column_names=["run_id", "detector", "model", "started_at", "finished_at", "duration_ms", "status", "error",
                      "current_start", "current_end", "results", "input_hash", "code_version"],
    )  # fmt: skip
