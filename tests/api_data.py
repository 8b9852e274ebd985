"""A store populated for the API and page tests, through the real detectors (no conftest: imported directly).

Traffic is Capital Bikeshare 2011 hourly (shipped in the ``islp`` package): January is the
reference, February the current traffic, when the weather shifts (temperature and humidity
drift, the season column does not change). Two models are written so that scoped tokens have
something to hide:

* ``bikes`` (tenant ``acme``): numeric ``temp``, ``atemp``, ``hum``, ``windspeed`` and
  categorical ``season``, ``weathersit``, ``workingday``, ``holiday``; the prediction is a
  linear model of temperature and hour fitted on January, the ground truth is ``bikers``;
  latency grows with demand, a few requests fail.
* ``scooters`` (tenant ``globex``): the same hours with only the weather columns and no
  prediction, so its configured prediction drift detector fails on every window: real
  failed runs in ``detector_runs``, with their error messages.

The detector results are then computed by :class:`driftwarden.detectors.scheduler.Scheduler` (drift,
prediction drift, performance, latency, consistency, multivariate drift, data quality, segments by
model version and weather; weekly windows) exactly as ``driftwarden
detectors --once`` would, so ``drift_results``, ``performance_results``, ``latency_results``,
``reproducibility_results`` and ``detector_runs`` hold what a deployment would hold.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driftwarden import storage
from tests.drift_data import bikeshare
from tests.inference_rows import COLUMNS, event, insert_labels

UTC = dt.UTC
REFERENCE = "2011-01-01T00:00:00Z..2011-02-01T00:00:00Z"
CURRENT = "2011-02-03T00:00:00Z..2011-02-10T00:00:00Z"  # one scheduler week (weeks start on Thursdays)
EMPTY = "2011-06-01T00:00:00Z..2011-06-08T00:00:00Z"  # no traffic at all
NOW = dt.datetime(2011, 3, 4, tzinfo=UTC)
NUMERIC = ["temp", "atemp", "hum", "windspeed"]
CATEGORICAL = ["season", "weathersit", "workingday", "holiday"]

CONFIG = f"""
window: 7d
reference: "{REFERENCE}"
schedule: {{lag: 1m, catch_up: 10}}
slo: {{latency_ms: 250, percentile: 0.95, availability: 0.99}}
models:
  - name: bikes
    features:
      numeric: [{", ".join(NUMERIC)}]
      categorical: [{", ".join(CATEGORICAL)}]
    performance: {{task: regression}}
    segments: {{dimensions: [model_version, weathersit]}}
    multivariate: {{methods: [pca_reconstruction]}}  # the domain classifier has its own tests (~6 s per window)
    detectors: [drift, prediction_drift, performance, latency, consistency, multivariate_drift, data_quality, segments]
  - name: scooters
    features:
      numeric: [temp, hum]
      categorical: [weathersit]
    detectors: [drift, prediction_drift, latency]
"""


_populated: dict[str, tuple[object, str, Populated]] = {}


def populated_store(engine_dir: Path) -> tuple[object, str, Populated]:
    """``(client, store_url, Populated)`` of one populated database per test session (computed once).

    The API tests only read it, so the modules that need it share it instead of spending ~10 s each.
    """
    key = str(engine_dir)
    if key not in _populated:
        url = f"chdb://{engine_dir}?database=api_bikeshare"
        client = storage.connect(url, create_database=True)
        storage.migrate(client, retention_days=30)
        _populated[key] = (client, url, populate(client))  # the client is kept: the engine lives while it does
    return _populated[key]


@dataclass
class Populated:
    """What the tests need to know about the populated store."""

    models: dict[str, str]  # model -> tenant
    runs: int
    failed_runs: int


def populate(client) -> Populated:
    """Insert Jan-Feb 2011 traffic for ``bikes`` and ``scooters`` and run every configured detector once."""
    from driftwarden.detectors.config import parse
    from driftwarden.detectors.scheduler import Scheduler

    frame = bikeshare()
    frame = frame[frame["ts"] < "2011-03-01"].reset_index(drop=True)
    january = frame[frame["ts"] < "2011-02-01"]
    # The "model": least squares of bikers on temperature and hour, fitted on January.
    design = np.column_stack([np.ones(len(frame)), frame["temp"], frame["hr"]])
    coef, *_ = np.linalg.lstsq(design[: len(january)], january["bikers"].to_numpy(float), rcond=None)
    predictions = design @ coef

    rows, labels = [], []
    for i, rec in enumerate(frame.itertuples(index=False)):
        ts = rec.ts.to_pydatetime()
        demand = float(rec.bikers)
        failed = i % 97 == 0
        row = event(
            "bikes",
            ts,
            tenant="acme",
            model_version="v1" if ts < dt.datetime(2011, 2, 14, tzinfo=UTC) else "v2",
            status=500 if failed else 200,
            latency_ms=40.0 + demand * 0.9 + (i % 13) * 3.0,
            upstream_latency_ms=35.0 + demand * 0.9,
            num_names=NUMERIC,
            num_values=[float(getattr(rec, f)) for f in NUMERIC],
            cat_names=CATEGORICAL,
            cat_values=[str(getattr(rec, f)) for f in CATEGORICAL],
            prediction=float(predictions[i]),
            input_hash=hash((rec.temp, rec.hr)) & 0xFFFFFFFFFFFF,
            output_hash=hash(round(float(predictions[i]), 6)) & 0xFFFFFFFFFFFF,
            deterministic=True,
        )
        rows.append(row)
        labels.append((row["event_id"], "", demand))
        rows.append(
            event(
                "scooters",
                ts,
                tenant="globex",
                latency_ms=20.0 + (i % 7),
                num_names=["temp", "hum"],
                num_values=[float(rec.temp), float(rec.hum)],
                cat_names=["weathersit"],
                cat_values=[str(rec.weathersit)],
            )
        )
    client.insert("inferences", [[r[c] for c in COLUMNS] for r in rows], column_names=COLUMNS)
    insert_labels(client, "bikes", labels, dt.datetime(2011, 3, 1, tzinfo=UTC))

    made = Scheduler(client, parse(CONFIG)).run_once(now=NOW)
    return Populated(
        models={"bikes": "acme", "scooters": "globex"},
        runs=len(made),
        failed_runs=sum(1 for r in made if r.status != "ok"),
    )
