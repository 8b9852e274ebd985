"""Text features in the Evidently-format report (``driftwarden report``, ``/models/{model}/report.html``).

Real tweets (tests/text_data.py) go through the collector's capture pipeline as Open Inference
Protocol requests with a ``text`` tensor, redaction on: every other tweet of the current window
carries an e-mail address, which must never reach the report. The report is built as the
command line and the API build it (``build_report``); its HTML and JSON are read back.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import time
import uuid

import pandas as pd
import pytest

from driftwarden import storage
from driftwarden.auth import Principal
from driftwarden.collector.arrow import to_table
from driftwarden.collector.config import CollectorConfig
from driftwarden.collector.exchange import Exchange
from driftwarden.collector.pipeline import Pipeline
from driftwarden.detectors.api.reports import build_report
from driftwarden.detectors.window import Window
from tests.text_data import tweets

REFERENCE = Window.parse("2013-01-01..2013-03-01")  # business, TV and golf
CURRENT = Window.parse("2016-01-01..2016-03-01")  # the primaries
SAMPLE = 2000  # every tweet of each window: above 1000 reference documents, Evidently's fixed 0.55 rule
_counter = itertools.count()
_WORD = re.compile(r"(?u)\b\w\w+\b")  # the tokens of scikit-learn's TfidfVectorizer


class _Events:
    def __init__(self) -> None:
        self.events = []

    def submit(self, event) -> None:
        self.events.append(event)


def _capture(pipeline: Pipeline, ts: pd.Timestamp, text: str, number: int) -> None:
    t0 = time.perf_counter()
    ex = Exchange(method="POST", path="/v2/models/tweets/infer", query="", ts_us=ts.value // 1000, t_start=t0)
    # Event ids fixed by the tweet's place: the report's sample is ordered by a hash of them, and the order of the
    # documents Evidently's classifier learns from decides which rare words weigh most (random ids made the
    # words of a window, and this test, differ from run to run).
    ex.exchange_id = uuid.UUID(int=number + 1, version=4)
    ex.request_body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]})
    ex.request_body = ex.request_body.encode()
    ex.response_body = b'{"outputs": [{"name": "predict", "shape": [1], "datatype": "BYTES", "data": ["staff"]}]}'
    ex.response_bytes = len(ex.response_body)
    ex.status = 200
    ex.t_upstream_start, ex.t_upstream_end, ex.t_end = t0 + 0.001, t0 + 0.003, t0 + 0.004
    pipeline.process(ex)


@pytest.fixture(scope="module")
def built(engine_dir, tmp_path_factory):
    data = tweets()
    window = lambda w: data[(data["ts"] >= w.start) & (data["ts"] < w.end)]  # noqa: E731
    reference, current = window(REFERENCE), window(CURRENT)
    current = current.assign(
        text=[t + f" (press: press.office{i}@example.com)" if i % 2 == 0 else t for i, t in enumerate(current["text"])]
    )
    sink = _Events()
    config = CollectorConfig(upstream="http://127.0.0.1:9", model="tweets", redaction={"mode": "mask"})
    pipeline = Pipeline(config, sink)
    number = itertools.count()
    for frame in (reference, current):
        for ts, text in zip(frame["ts"], frame["text"], strict=True):
            _capture(pipeline, ts, text, next(number))
    url = f"chdb://{engine_dir}?database=report_text_{next(_counter)}"
    client = storage.connect(url, create_database=True)
    storage.migrate(client, retention_days=3650)
    client.insert_arrow("inferences", to_table(sink.events))
    report = build_report(
        client,
        Principal(name="test"),
        "tweets",
        REFERENCE,
        CURRENT,
        sample_size=SAMPLE,
        seed=0,
        cache_dir=tmp_path_factory.mktemp("reports"),
    )
    stored = {
        side: [
            r[0]
            for r in client.query(
                "SELECT text_values[1] FROM inferences FINAL WHERE model = 'tweets' AND " + w.sql()
            ).result_rows
        ]
        for side, w in (("reference", REFERENCE), ("current", CURRENT))
    }
    document = json.loads(report.json_path.read_text(encoding="utf-8"))
    return report, document, report.html_path.read_text(encoding="utf-8"), stored, len(reference), len(current)


def _document_frequency(word: str, texts: list[str]) -> float:
    return sum(word in set(_WORD.findall(t.lower())) for t in texts) / len(texts)


@pytest.mark.timeout(300)
def test_report_explains_a_text_feature_with_the_words_of_each_window_that_evidently_agrees_drifted(built):
    report, document, page, stored, n_ref, n_cur = built
    assert report.provenance["text_features"] == ["text"]
    assert (report.provenance["reference_sampled"], report.provenance["current_sampled"]) == (n_ref, n_cur)
    text = document["text"]["text"]
    assert (text["reference_documents"], text["current_documents"]) == (n_ref, n_cur)
    # Evidently's own text drift of the same column on the same samples: the same score and verdict.
    (evidently,) = [
        m
        for m in document["evidently"]["metrics"]
        if m["config"]["type"].endswith("ValueDrift") and m["config"]["column"] == "text"
    ]
    assert text["statistic"] == pytest.approx(float(evidently["value"]), abs=1e-9)
    assert text["drifted"] == (float(evidently["value"]) > float(evidently["config"]["threshold"]))
    assert text["drifted"] and text["verdict"] == "drift"
    # The words of each window are the classifier's heaviest weights (Evidently's rule), not raw counts: a
    # rare word can weigh in a window with about the same share of documents in both. Together they mark
    # their window's documents, and nearly every one of them on its own is more frequent there.
    words = text["typical_words"]
    assert len(words["current"]) >= 10 and len(words["reference"]) >= 10
    for side, other in (("current", "reference"), ("reference", "current")):
        own = [_document_frequency(word, stored[side]) for word in words[side][:10]]
        theirs = [_document_frequency(word, stored[other]) for word in words[side][:10]]
        assert sum(own) > 1.5 * sum(theirs), (side, words[side][:10], own, theirs)
        more_frequent = [word for word, a, b in zip(words[side][:10], own, theirs, strict=True) if a > b]
        assert len(more_frequent) >= 8, (side, words[side][:10], own, theirs)
    # Typical documents are stored documents of their window.
    for side in ("reference", "current"):
        examples = text["typical_examples"][side]
        assert len(examples) == 10
        assert all(any(doc.startswith(e.rstrip("…")) for doc in stored[side]) for e in examples), side


@pytest.mark.timeout(300)
def test_report_page_shows_the_words_and_typical_documents_of_each_window(built):
    _, document, page, _, _, _ = built
    text = document["text"]["text"]
    start = page.index('id="text-features"')
    section = page[start : page.index("</section>", start)]
    assert "<h3>text</h3>" in section and f"ROC AUC {text['statistic']:.3f}" in section
    for side in ("reference", "current"):
        assert html.escape(", ".join(text["typical_words"][side])) in section
        for example in text["typical_examples"][side]:
            assert f"<li>{html.escape(example)}</li>" in section
    # In the provenance table too, and before Evidently's dashboard
    assert "<th>text features</th><td>text</td>" in page
    assert start < page.index("<script>var global = globalThis</script>")


@pytest.mark.timeout(300)
def test_report_shows_documents_after_redaction_only(built):
    _, document, page, stored, _, _ = built
    assert sum("[redacted:email]" in t for t in stored["current"]) > 100
    assert not any("example.com" in t for t in stored["current"])
    raw = json.dumps(document)
    assert "example.com" not in page and "example.com" not in raw
    # the redacted address is part of what sets the current window apart: its marker shows in typical documents
    assert any("[redacted:email]" in e for e in document["text"]["text"]["typical_examples"]["current"])
