"""The demo's model: a random forest of hourly bike rentals, trained on January 2011.

Data: Capital Bikeshare 2011 hourly demand (``Bikeshare.csv``, shipped inside the
``islp`` package, read by path: importing ``ISLP`` would pull torch). Each row is
one hour; ``day`` is the day of the year and ``hr`` the hour, so each row has an
exact timestamp. Trained on January, the model meets a warmer February with more
riders: its inputs drift and its error grows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from driftwarden.errors import UserError

MODEL_NAME = "bikes"
MODEL_VERSION = "rf-2011-01"
TARGET = "bikers"
# Inputs of the model, in tensor column order. weathersit is sent as its code 1..4 (clear .. heavy rain/snow).
FEATURES = ("temp", "atemp", "hum", "windspeed", "hr", "weekday", "workingday", "holiday", "weathersit")
WEATHER_CODES = {"clear": 1, "cloudy/misty": 2, "light rain/snow": 3, "heavy rain/snow": 4}
YEAR_START = dt.datetime(2011, 1, 1, tzinfo=dt.UTC)
TRAIN = (YEAR_START, dt.datetime(2011, 2, 1, tzinfo=dt.UTC))  # January: the training data and the reference
REPLAY = (YEAR_START, dt.datetime(2011, 3, 1, tzinfo=dt.UTC))  # January and February: the replayed traffic
TREES = 50
MAX_DEPTH = 10
SEED = 0


def bikeshare_csv() -> Path:
    """Where ``Bikeshare.csv`` is, found through the installed ``islp`` package without importing it."""
    spec = importlib.util.find_spec("ISLP")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "data" / "Bikeshare.csv"
        if path.is_file():
            return path
    raise UserError(
        "the demo needs the Capital Bikeshare data that ships in the `islp` package, which is not installed: "
        "run `pip install --no-deps islp` (only its data files are used)"
    )


def load_hours(path: Path | None = None) -> pd.DataFrame:
    """January and February 2011, one row per hour, with ``ts`` (UTC) and the model's inputs, oldest first."""
    frame = pd.read_csv(path or bikeshare_csv())
    frame["hr"] = frame["hr"].astype(int)
    frame["ts"] = (
        pd.Timestamp(YEAR_START) + pd.to_timedelta(frame["day"] - 1, unit="D") + pd.to_timedelta(frame["hr"], unit="h")
    )
    frame["weathersit"] = frame["weathersit"].map(WEATHER_CODES).astype(float)
    if frame["weathersit"].isna().any():
        raise UserError(f"unexpected weathersit values in {path}: expected {', '.join(WEATHER_CODES)}")
    start, end = pd.Timestamp(REPLAY[0]), pd.Timestamp(REPLAY[1])
    frame = frame[(frame["ts"] >= start) & (frame["ts"] < end)].sort_values("ts").reset_index(drop=True)
    return frame[["ts", *FEATURES, TARGET]]


def training_rows(hours: pd.DataFrame) -> pd.DataFrame:
    return hours[(hours["ts"] >= pd.Timestamp(TRAIN[0])) & (hours["ts"] < pd.Timestamp(TRAIN[1]))]


@dataclass(frozen=True)
class TrainedModel:
    """The fitted forest and the MLServer model directory it was written to."""

    estimator: object
    directory: Path
    digest: str  # sha256 of the joblib file: the model_digest of every event
    train_rows: int
    train_mae: float


def train(hours: pd.DataFrame, directory: Path) -> TrainedModel:
    """Fit the forest on January and write ``model.joblib`` + ``model-settings.json`` for MLServer."""
    try:
        from sklearn.ensemble import RandomForestRegressor
    except ImportError:
        raise UserError(
            "the demo trains its model with scikit-learn, which is not installed: "
            "run `pip install 'driftwarden[demo]'` (or `make demo`, which does)"
        ) from None

    january = training_rows(hours)
    x = january[list(FEATURES)].to_numpy(dtype=np.float64)
    y = january[TARGET].to_numpy(dtype=np.float64)
    forest = RandomForestRegressor(n_estimators=TREES, max_depth=MAX_DEPTH, random_state=SEED, n_jobs=1)
    forest.fit(x, y)
    digest = write_mlserver_model(forest, directory, MODEL_NAME, MODEL_VERSION)
    mae = float(np.mean(np.abs(forest.predict(x) - y)))
    return TrainedModel(forest, directory, digest, len(january), mae)


def write_mlserver_model(estimator, directory: Path, name: str, version: str) -> str:
    """Write ``estimator`` as an MLServer scikit-learn model folder (``model.joblib`` and its
    ``model-settings.json``); returns the artifact's digest, ``sha256:...``."""
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    artifact = directory / "model.joblib"
    joblib.dump(estimator, artifact)
    settings = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": version},
    }
    (directory / "model-settings.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return "sha256:" + hashlib.sha256(artifact.read_bytes()).hexdigest()
