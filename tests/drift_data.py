"""Loading data sets into ``inferences`` for the drift tests and benchmark (no conftest: imported directly)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import math
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

UTC = dt.UTC


def package_data(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def bikeshare() -> pd.DataFrame:
    """Capital Bikeshare 2011 hourly, with ``ts`` from day-of-year and hour."""
    frame = pd.read_csv(package_data("ISLP", "data", "Bikeshare.csv"))
    frame["hr"] = frame["hr"].astype(int)
    start = pd.Timestamp("2011-01-01", tz="UTC")
    frame["ts"] = start + pd.to_timedelta(frame["day"] - 1, unit="D") + pd.to_timedelta(frame["hr"], unit="h")
    return frame


def employment(part: str) -> pd.DataFrame:
    """US census MA employment (nannyml): ``reference`` (2015) or ``analysis`` (2016-2018)."""
    return pd.read_parquet(package_data("nannyml", "datasets", "data", f"employment_MA_{part}.pq"))


def insert(
    client,
    model: str,
    ts: Sequence[dt.datetime],
    numeric: Mapping[str, Sequence[float]],
    categorical: Mapping[str, Sequence[str]] | None = None,
    prediction: Sequence[float] | None = None,
    prediction_label: Sequence[str] | None = None,
    model_version: str = "v1",
) -> int:
    """Insert one event per timestamp; features go into the parallel name/value arrays."""
    categorical = categorical or {}
    n = len(ts)
    num_names = list(numeric)
    cat_names = list(categorical)
    num_matrix = np.column_stack([np.asarray(numeric[k], dtype=float) for k in num_names]) if num_names else None
    cat_columns = [list(map(str, categorical[k])) for k in cat_names]
    columns = {
        "event_id": [uuid.uuid4() for _ in range(n)],
        "ts": list(ts),
        "model": [model] * n,
        "model_version": [model_version] * n,
        "num_names": [num_names] * n,
        "num_values": num_matrix.tolist() if num_matrix is not None else [[] for _ in range(n)],
        "cat_names": [cat_names] * n,
        "cat_values": [list(row) for row in zip(*cat_columns, strict=True)] if cat_names else [[] for _ in range(n)],
        "prediction": list(prediction) if prediction is not None else [None] * n,
        "prediction_label": list(map(str, prediction_label)) if prediction_label is not None else [""] * n,
    }
    client.insert("inferences", list(columns.values()), column_names=list(columns), column_oriented=True)
    return n


def timestamps(start: dt.datetime, n: int, step: dt.timedelta = dt.timedelta(seconds=1)) -> list[dt.datetime]:
    return [start + i * step for i in range(n)]


EVIDENTLY_METHODS = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "ztest",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "PSI": "psi",
}


def evidently_drift(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> tuple[dict[str, tuple[str, float, bool]], float]:
    """Evidently's ``DataDriftPreset`` on two frames: ``{column: (method, score, drifted)}`` and the drifted share.

    Telemetry is switched off before evidently is imported (``DO_NOT_TRACK``, read by
    ``evidently.telemetry``; ``EVIDENTLY_DISABLE_TELEMETRY``, read by ``evidently.legacy._config``).
    """
    import os

    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["EVIDENTLY_DISABLE_TELEMETRY"] = "1"
    import warnings

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = numeric + categorical
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset(columns=columns)], include_tests=True).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
        )
    result = snapshot.dict()
    verdicts = {
        t["metric_config"]["params"]["column"]: t["status"] == "FAIL"
        for t in result["tests"]
        if t["metric_config"]["params"]["type"].endswith("ValueDrift")
    }
    out, share = {}, math.nan
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            column = config["column"]
            out[column] = (EVIDENTLY_METHODS[config["method"]], float(metric["value"]), verdicts[column])
        elif config["type"].endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    return out, share


# A standard normal drawn deterministically from (row, feature): Box-Muller over two hash-based uniforms,
# so that synthetic data generated inside ClickHouse is the same on every run.
_UNIFORM = "((cityHash64({row}, {k}, {salt}) % 9007199254740992) + 0.5) / 9007199254740992"
SQL_NORMAL = (
    f"(sqrt(-2 * log({_UNIFORM.format(row='{row}', k='{k}', salt=1)})) "
    f"* cos(2 * pi() * {_UNIFORM.format(row='{row}', k='{k}', salt=2)}))"
)


def insert_synthetic(
    client,
    model: str,
    start: dt.datetime,
    rows: int,
    numeric: int,
    categorical: int,
    shift: float | Sequence[float] = 0.0,
    salt: int = 0,
    step_us: int = 1_000,
    skew: float | Sequence[float] = 2.0,
) -> None:
    """``rows`` events from ``start`` (``step_us`` apart), generated inside ClickHouse.

    Numeric feature ``n{k:02d}`` is N(shift[k], 1); categorical ``c{k}`` takes 12 values,
    ``floor(12 u^skew[k])`` (skew 2 by default). ``salt`` picks an independent sample.
    """
    shifts = [float(shift)] * numeric if isinstance(shift, (int, float)) else [float(v) for v in shift]
    skews = [float(skew)] * categorical if isinstance(skew, (int, float)) else [float(v) for v in skew]
    start_us = int((start - dt.datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
    normal = SQL_NORMAL.format(row=f"number + {salt} * 1000000007", k="k")
    uniform = _UNIFORM.format(row=f"number + {salt} * 1000000007", k="k + 100", salt=3)
    client.command(
        f"""
        INSERT INTO inferences (event_id, ts, model, model_version, num_names, num_values, cat_names, cat_values)
        SELECT generateUUIDv4(number), fromUnixTimestamp64Micro({start_us} + number * {step_us}, 'UTC'),
               {{model:String}}, 'v1',
               {[f"n{k:02d}" for k in range(numeric)]!r},
               arrayMap(k -> {shifts or [0.0]!r}[k + 1] + {normal}, range({numeric})),
               {[f"c{k}" for k in range(categorical)]!r},
               arrayMap(k -> toString(toUInt8(floor(12 * pow({uniform}, {skews or [2.0]!r}[k + 1])))),
                        range({categorical}))
        FROM numbers({rows})""",
        parameters={"model": model},
    )
