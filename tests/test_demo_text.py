"""``driftwarden demo --text`` end to end: real tweets, a real text model in MLServer, the collector, the detectors.

One run (module fixture) at the highest speed into a store of its own, in a network namespace
with only loopback when this machine allows one (``unshare -n``): nothing is downloaded. The
tests read what it printed and, from a subprocess, what it stored; the words it printed are
checked against the stored documents, not against a list written here.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from driftwarden.demo.text_model import CHANGE, MODEL_NAME, REFERENCE_END, START
from tests.store_probe import query

ROOT = Path(__file__).resolve().parent.parent
DETECTION_BOUND = dt.timedelta(days=2)  # the first drifting day must end within two days of the change
_WORD = re.compile(r"(?u)\b\w\w+\b")  # the tokens of scikit-learn's TfidfVectorizer (the classifier's words)


@dataclass
class TextDemoRun:
    store: str
    done: subprocess.CompletedProcess
    isolated: bool


def _netns_available() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> TextDemoRun:
    base = tmp_path_factory.mktemp("demo_text")
    store = f"chdb://{base}/store"
    command = [sys.executable, "-m", "driftwarden", "demo", "--text", "--store", store, "--speed", "1e7"]
    command += ["--listen", "127.0.0.1:0"]
    isolated = _netns_available()
    if isolated:
        command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    env = {k: v for k, v in os.environ.items() if k != "DRIFTWARDEN_API_TOKENS"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=ROOT, env=env)
    assert done.returncode == 0, f"demo failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return TextDemoRun(store, done, isolated)


def _printed(run: TextDemoRun, label: str) -> str:
    found = re.search(rf"^\s*{re.escape(label)}:\s*(.+)$", run.done.stdout, re.MULTILINE)
    assert found, f"the demo did not print {label!r}:\n{run.done.stdout[-3000:]}"
    return found.group(1).strip()


@pytest.mark.slow
@pytest.mark.timeout(450)
def test_text_demo_serves_a_real_model_and_detects_the_change_of_topic_after_the_known_date(demo) -> None:
    assert "MLServer ready" in demo.done.stdout and "replay finished" in demo.done.stdout
    assert _printed(demo, "known change of topic").startswith(f"{CHANGE:%Y-%m-%d %H:%M} UTC")
    window = re.match(r"(\S+)Z\.\.(\S+)Z,", _printed(demo, "first drifting window"))
    assert window, demo.done.stdout[-2000:]
    start, end = (dt.datetime.fromisoformat(t).replace(tzinfo=dt.UTC) for t in window.groups())
    # Detected once a window with new traffic ended: not before the change, and within the bound.
    assert CHANGE <= end <= CHANGE + DETECTION_BOUND and start < end
    # What the store says agrees with what was printed: every analysed day before the change is quiet, and
    # the printed window is the first drifting one of the text feature.
    rows = query(
        demo.store,
        {
            "verdicts": "SELECT toString(current_start), toString(current_end), drifted FROM drift_results FINAL "
            f"WHERE model = '{MODEL_NAME}' AND target = 'feature' AND feature = 'text' "
            f"AND current_start >= '{REFERENCE_END:%Y-%m-%d %H:%M:%S}' ORDER BY current_start",
            "events": f"SELECT count(), countIf(ts < '{CHANGE:%Y-%m-%d %H:%M:%S}'), min(ts) >= "
            f"'{START:%Y-%m-%d %H:%M:%S}' FROM inferences FINAL WHERE model = '{MODEL_NAME}' AND NOT is_replay "
            "AND length(text_names) = 1 AND prediction_label IN ('android', 'staff')",
        },
    )
    verdicts = [(dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC), bool(d)) for s, _, d in rows["verdicts"]]
    quiet = [d for s, d in verdicts if s < CHANGE]
    assert len(quiet) >= 3 and not any(quiet), verdicts
    assert next(s for s, d in verdicts if d) == start
    total, before, after_start = rows["events"][0]
    assert total > before > 0 and after_start  # every event is a served tweet with the model's answer


@pytest.mark.slow
@pytest.mark.timeout(450)
def test_text_demo_prints_words_of_the_new_topic(demo) -> None:
    words = [w.strip() for w in _printed(demo, "words that drove it").split(",")]
    assert len(words) >= 5
    rows = query(
        demo.store,
        {
            "texts": f"SELECT ts >= '{CHANGE:%Y-%m-%d %H:%M:%S}', text_values[1] FROM inferences FINAL "
            f"WHERE model = '{MODEL_NAME}' AND NOT is_replay"
        },
    )
    documents: dict[bool, list[set[str]]] = {True: [], False: []}
    for after, text in rows["texts"]:
        documents[bool(after)].append(set(_WORD.findall(text.lower())))

    def share(word: str, after: bool) -> float:
        return sum(word in d for d in documents[after]) / len(documents[after])

    for word in words:  # each is more common in the tweets after the change than before it
        assert share(word, True) > share(word, False), (word, share(word, True), share(word, False))
    # and, together, they mark the new traffic: a tweet after the change holds one far more often than before
    hits = {after: sum(bool(d & set(words)) for d in documents[after]) / len(documents[after]) for after in documents}
    assert hits[True] > 2 * hits[False], hits
