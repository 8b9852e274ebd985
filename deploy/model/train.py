"""Train the demo model of the stack: bikers per hour from weather and time (Capital Bikeshare 2011).

Runs at image build (deploy/model/Dockerfile) inside the MLServer image, so the model is
pickled by the same scikit-learn that serves it. Trained on January only: the scenario of a
model that decays as the seasons change, which the loadgen's drift phase then shows.

    python train.py --data Bikeshare.csv --out /mnt/models/bikeshare --version v1
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import joblib
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

NUMERIC = ["temp", "atemp", "hum", "windspeed", "hr", "weekday", "workingday", "holiday"]
CATEGORICAL = ["weathersit"]
TARGET = "bikers"


def train(data: Path, out: Path, version: str, month: str = "Jan") -> str:
    """Fit on ``month``, write ``model.joblib`` and ``model-settings.json`` to ``out``; return the digest."""
    frame = pd.read_csv(data)
    frame["hr"] = frame["hr"].astype(int)
    train_rows = frame[frame["mnth"] == month]
    model = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        ("numeric", "passthrough", NUMERIC),
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                    ]
                ),
            ),
            ("regressor", HistGradientBoostingRegressor(max_iter=200, random_state=2011)),
        ]
    )
    model.fit(train_rows[NUMERIC + CATEGORICAL], train_rows[TARGET])
    out.mkdir(parents=True, exist_ok=True)
    artifact = out / "model.joblib"
    joblib.dump(model, artifact)
    digest = "sha256:" + hashlib.sha256(artifact.read_bytes()).hexdigest()
    settings = {
        "name": "bikeshare",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": version, "content_type": "pd"},
    }
    (out / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    (out / "DIGEST").write_text(digest + "\n")
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Bikeshare.csv (from the islp package)")
    parser.add_argument("--out", type=Path, required=True, help="model directory MLServer loads")
    parser.add_argument("--version", default="v1")
    args = parser.parse_args()
    print(train(args.data, args.out, args.version))


if __name__ == "__main__":
    main()
