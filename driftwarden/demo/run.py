"""``driftwarden demo``: train, serve, collect, replay, detect, report — in one process, on real data.

Order: fail fast if the store is held; train the forest; start the model server
(MLServer, else the built-in one); start a :class:`driftwarden.up.Platform` with
one collector in front of the model (protocol oip), the API and the detectors;
replay January and February; after each simulated day post the ground truth that
is due, wait until the writer has stored every answered request, and let the
scheduler thread analyse the windows that ended by then (simulated time: the
detectors run ``Scheduler.run_once(now=simulated)``). Ends when the replay is
done (or ``--duration``, Ctrl-C, SIGTERM), leaving the store on disk.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from driftwarden.demo.model import FEATURES, MODEL_NAME, MODEL_VERSION, REPLAY, TRAIN, load_hours, train
from driftwarden.demo.status import (
    Status,
    alerts_for,
    count_analysed_windows,
    read_drift_windows,
    read_findings,
    read_mae,
)
from driftwarden.detectors.window import Window
from driftwarden.errors import UserError

WINDOW = dt.timedelta(days=7)
REPLAY_SAMPLE = 12  # recorded requests per week that the replay detector re-sends at the end
ERROR_RISE = 1.5  # announce a week whose MAE is this many times January's (the training month's)
DRIFT_THRESHOLD = 1.0  # Wasserstein, in reference standard deviations; see docs/demo.md for why
DEMO_CONFIG = f"""
window: 7d
schedule: {{every: 1m, lag: 0s, catch_up: 12}}
baselines:
  january: {TRAIN[0]:%Y-%m-%d}..{TRAIN[1]:%Y-%m-%d}
reference: january
drift:
  by_kind:
    numeric: {{method: wasserstein, threshold: {DRIFT_THRESHOLD}}}
  prediction: {{method: wasserstein, threshold: {DRIFT_THRESHOLD}}}
  persistence: 2
  drift_share: 0.5
slo: {{latency_ms: 250, percentile: 0.99, availability: 0.999}}
models:
  - name: {MODEL_NAME}
    features:
      numeric: [{", ".join(FEATURES)}]
    performance: {{task: regression, label_horizon: 28d}}
    reproducibility: {{consistency: true}}
"""


@dataclass(frozen=True)
class Options:
    store: str | None = None
    duration_s: float | None = None
    speed: float = 100_000.0
    listen: str = "127.0.0.1:8000"
    keep_serving: bool = False
    model_server: str = "auto"  # auto | mlserver | builtin


class SimulatedClock:
    """The simulated time up to which every event and due label is in the store (the detectors' ``now``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.watermark: dt.datetime | None = None
        self.analysed: dt.datetime | None = None  # the watermark of the last finished detector pass

    def advance(self, moment: dt.datetime) -> None:
        with self._cond:
            self.watermark = moment
            self._cond.notify_all()

    def wait_analysed(self, moment: dt.datetime, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.analysed is not None and self.analysed >= moment, timeout)


def run_demo(options: Options) -> int:
    from driftwarden import storage
    from driftwarden.storage.url import parse, resolve

    started = time.monotonic()
    deadline = started + options.duration_s if options.duration_s else None
    status = Status()
    url = resolve(options.store)
    target = parse(url)
    early = storage.connect(url, create_database=target.embedded)  # fails now, not after training, if held
    status.say(f"driftwarden demo: store {storage.describe(url)}")

    interrupted = False
    with DemoSession("driftwarden-demo-", status) as session:
        stop, workdir = session.stop, session.workdir
        hours = load_hours()
        t0 = time.monotonic()
        trained = train(hours, workdir / MODEL_NAME)
        status.say(
            f"trained a random forest (50 trees, depth 10) on {trained.train_rows} hours of January 2011 "
            f"in {time.monotonic() - t0:.1f} s; MAE on its own training data {trained.train_mae:.1f} riders/hour"
        )
        server = session.own(_serve(trained, options.model_server, status))
        if stop.is_set():  # Ctrl-C while the model server started
            return 130
        token_env, token_hint = demo_tokens()
        platform = session.own(_platform(options, url, server.url, trained.digest, token_env))
        platform.start()
        del early  # the platform holds its own client now
        api = platform.addresses.api_url()
        page = f"{api}/models/{MODEL_NAME}"
        status.page_url = page
        status.say(f"model server: {server.kind} at {server.url}")
        status.say(f"collector: {platform.addresses.collector_url(0)}/v2/models/{MODEL_NAME}/infer -> {server.url}")
        status.say(f"reports: {page}  (sign in at {api}/login with {token_hint})")
        status.say(f"metrics: {api}/metrics")
        status.say(
            f"replaying {len(hours):,} hours of {REPLAY[0]:%B} and {(REPLAY[1] - dt.timedelta(days=1)):%B %Y} at "
            f"{options.speed:,.0f}x; ground truth follows a simulated day later; detectors analyse every week "
            f"against January"
        )
        finished, interrupted = _replay(platform, hours, status, options, stop, deadline)
        if finished and not stop.is_set():
            _replay_check(platform, status)
        summary = _summary(platform.client)
        status.finish()
        _print_summary(status, summary, finished)
        if options.keep_serving and not interrupted:
            session.keep_serving(page, deadline)
    where = say_where_to_look(status, url, token_env, MODEL_NAME)
    status.say(
        f"  driftwarden drift --store {where} --model {MODEL_NAME} "
        f"--reference {TRAIN[0]:%Y-%m-%d}..{TRAIN[1]:%Y-%m-%d} --current 2011-02-17..2011-02-24"
    )
    return 0


class DemoSession:
    """What a demo run holds until it ends, however it ends.

    Entering creates a scratch folder and turns Ctrl-C (SIGINT) and SIGTERM into :attr:`stop`;
    leaving stops what :meth:`own` registered (the last first), removes the folder and puts the
    signal handlers back.
    """

    def __init__(self, prefix: str, status: Status) -> None:
        self.prefix, self.status = prefix, status
        self.stop = threading.Event()
        self._owned: list = []

    def __enter__(self) -> DemoSession:
        signals = (signal.SIGINT, signal.SIGTERM)
        self._previous = {sig: signal.signal(sig, lambda *_: self.stop.set()) for sig in signals}
        self.workdir = Path(tempfile.mkdtemp(prefix=self.prefix))
        return self

    def own(self, process):
        """Stop ``process`` (anything with ``stop()``) when the session ends; returns it."""
        self._owned.append(process)
        return process

    def keep_serving(self, page: str, deadline: float | None) -> None:
        """Serve on until Ctrl-C or the deadline of ``--duration``; at once if already stopped."""
        if self.stop.is_set():
            return
        self.status.say(f"still serving {page} — Ctrl-C to stop")
        while not self.stop.wait(0.5):
            if deadline and time.monotonic() > deadline:
                break

    def __exit__(self, *exc) -> None:
        self.status.finish()
        for process in reversed(self._owned):
            process.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def say_where_to_look(status: Status, url: str, token_env: str, model: str) -> str:
    """The closing lines every demo prints: where the store stays and how to open its pages; returns where."""
    from driftwarden import storage

    where = storage.describe(url)
    status.say("")
    status.say(f"The store stays in {where}. Look at it afterwards with:")
    status.say(f"  {token_env} driftwarden api --store {where}     # then open http://127.0.0.1:8000/models/{model}")
    return where


def _serve(trained, choice: str, status: Status):
    from driftwarden.demo.server import BuiltinServer, MLServerProcess

    if choice in ("auto", "mlserver"):
        process = MLServerProcess(trained.directory)
        status.say(f"starting MLServer on {process.url} (mlserver start {trained.directory}) ...")
        t0 = time.monotonic()
        try:
            process.launch()
            process.wait_ready(MODEL_NAME)
        except (RuntimeError, OSError) as exc:
            process.stop()
            if choice == "mlserver":
                raise UserError(f"MLServer could not serve the demo's model: {exc}") from None
            status.say(f"MLServer could not start ({exc}); using the built-in Open Inference Protocol server")
        else:
            status.say(f"MLServer {_mlserver_version()} ready in {time.monotonic() - t0:.1f} s")
            return process
    server = BuiltinServer(trained.estimator, MODEL_NAME, MODEL_VERSION)
    server.start()
    return server


def _mlserver_version() -> str:
    try:
        from importlib.metadata import version

        return version("mlserver")
    except Exception:
        return ""


def demo_tokens() -> tuple[str, str]:
    """``DRIFTWARDEN_API_TOKENS=...`` for the commands printed at the end, and how to sign in now."""
    from driftwarden.auth import TOKENS_ENV

    given = os.environ.get(TOKENS_ENV, "").strip()
    if given:
        return f"{TOKENS_ENV}='{given}'", f"a token from ${TOKENS_ENV}"
    token = secrets.token_urlsafe(18)
    os.environ[TOKENS_ENV] = f"demo:{token}"  # read by the API settings below, and by nothing else
    return f"{TOKENS_ENV}=demo:{token}", f"the token {token}"


def _platform(options: Options, url: str, upstream: str, digest: str, token_env: str):
    from driftwarden.collector.config import CollectorConfig, OIPConfig, PayloadConfig, RedactionConfig
    from driftwarden.demo.replay import TENSOR
    from driftwarden.detectors.config import parse as parse_detectors

    collector = CollectorConfig(
        model=MODEL_NAME,
        model_version=MODEL_VERSION,
        model_digest=digest,
        upstream=upstream,
        listen="127.0.0.1:0",
        protocol="oip",
        oip=OIPConfig(columns={TENSOR: FEATURES}),
        payload=PayloadConfig(sample_rate=1.0),
        trust_client_event_headers=True,  # the replay sets each event's simulated hour and id
        # Nothing personal is replayed; a key of this run keeps redaction quiet about a missing one.
        redaction=RedactionConfig(key=secrets.token_hex(16)),
        flush_interval_ms=50,
    )
    detectors = parse_detectors(DEMO_CONFIG, source="the demo's detector configuration")
    return demo_platform(options, url, collector, detectors)


def demo_platform(options: Options, url: str, collector, detectors):
    """The platform of a demo (not started): one collector, the API on ``--listen``, the detectors run by the replay."""
    from driftwarden.storage.url import parse
    from driftwarden.up import ApiSection, Platform, UpConfig, _api

    target = parse(url)
    api_data: dict = {"listen": options.listen}
    if target.embedded:  # reports cached next to the store, not in the working directory
        api_data["report_cache_dir"] = f"{target.path}-reports"
    problems: list[str] = []
    api = _api(api_data, problems, os.environ)
    if problems:
        raise UserError("; ".join(problems))
    assert isinstance(api, ApiSection)
    config = UpConfig(detectors=detectors, collectors=(collector,), api=api, store=url, source="demo")
    platform = Platform(config, run_scheduler=False, announce=lambda _line: None, grace_s=5.0)
    platform.api_listen_key = "--listen"
    return platform


def _replay(platform, hours, status: Status, options: Options, stop: threading.Event, deadline):
    """Run the replay and the detector thread; returns (replay finished, interrupted)."""
    from driftwarden.demo.replay import Replay

    clock = SimulatedClock()
    replay = Replay(hours, platform.addresses.collector_url(0), platform.addresses.api_url(), options.speed)
    writer = platform.writers[0]
    detectors_done = threading.Event()
    detector_thread = threading.Thread(
        target=_detect, args=(platform, clock, status, detectors_done), name="dw-demo-detectors", daemon=True
    )
    detector_thread.start()
    expired = threading.Event()

    def stopper() -> None:  # --duration: stop the replay at the deadline
        while not stop.is_set() and not detectors_done.is_set():
            if deadline and time.monotonic() > deadline:
                expired.set()
                stop.set()
                return
            time.sleep(0.1)

    threading.Thread(target=stopper, daemon=True).start()

    def new_day(moment: dt.datetime) -> None:
        replay.send_labels(moment)
        if _window_end(moment) == moment:  # a week ended: once its events are stored, the detectors may run
            wait_written(writer, replay.sent)
            clock.advance(moment)
        status.update(simulated=moment, events=writer.stats().written, labels=replay.labels_sent)

    try:
        finished = replay.run(stop, new_day)
        if finished:
            end = REPLAY[1]
            replay.send_labels(None)  # the last day's counts: delivered at the end of the replay
            wait_written(writer, replay.sent)
            status.update(simulated=end, events=writer.stats().written, labels=replay.labels_sent)
            final = _window_end(end)  # the last (partial) week is analysed too
            clock.advance(final)
            clock.wait_analysed(final, timeout=300)
        else:
            wait_written(writer, replay.sent)
    finally:
        detectors_done.set()
        clock.advance(clock.watermark or REPLAY[0])  # wake the detector thread so it ends
        detector_thread.join(120)
        replay.close()
    status.update(events=writer.stats().written)
    if replay.failed:
        status.say(f"{replay.failed} requests failed (the model server or the collector answered an error)")
    return finished, stop.is_set() and not expired.is_set()


def _detect(platform, clock: SimulatedClock, status: Status, done: threading.Event) -> None:
    """The detector thread: one scheduler pass per advance of the simulated clock.

    Drift is compared with the whole of January, so it is analysed once January is
    complete in the store (a reference still filling would give every January week a
    verdict against part of itself); until then only performance, latency and
    consistency run.
    """
    import logging

    from driftwarden.detectors.scheduler import Scheduler

    log = logging.getLogger("driftwarden.demo")
    before_reference = Scheduler(platform.client, _without_drift(platform.config.detectors), platform.exporter)
    announced_drift: set[Window] = set()
    announced_error: set[dt.datetime] = set()
    while True:
        with clock._cond:
            clock._cond.wait_for(lambda: clock.watermark != clock.analysed or done.is_set(), 1.0)
            now = clock.watermark
        if done.is_set():
            return
        if now is None or now == clock.analysed:
            continue
        try:
            scheduler = platform.scheduler if now >= TRAIN[1] else before_reference
            for run in scheduler.run_once(now):
                if run.status == "error":
                    status.say(f"detector {run.detector} failed on {run.window}: {run.error}")
            # Read back what the store holds up to `now`: the same whether this pass computed it or a
            # previous run of the demo on the same store did.
            client = platform.client
            latest = None
            for window in read_drift_windows(client, MODEL_NAME, now):
                latest = read_findings(client, MODEL_NAME, window)
                if window not in announced_drift:
                    announced_drift.add(window)
                    status.announce_drift(latest)
            maes = [m for m in read_mae(client, MODEL_NAME, now) if m[2] > 0]
            january = [(mae, n) for start, mae, n in maes if start + WINDOW <= TRAIN[1]]
            if january:
                baseline = sum(mae * n for mae, n in january) / sum(n for _, n in january)
                for start, mae, _ in maes:
                    if start + WINDOW > TRAIN[1] and start not in announced_error and mae > ERROR_RISE * baseline:
                        announced_error.add(start)
                        status.announce_error(start, mae, baseline)
            values: dict = {"windows": count_analysed_windows(client, MODEL_NAME, now)}
            if latest is not None:
                values["drifting"] = [d.feature for d in latest.drifted]
            values["alerts"] = alerts_for(latest, maes)
            if maes:
                values["mae"] = maes[-1][1]
            status.update(**values)
        except Exception as exc:  # a failed pass is shown; the next advance tries again
            log.error("detector pass failed: %s", exc)
        with clock._cond:
            clock.analysed = now
            clock._cond.notify_all()


def _without_drift(config):
    """The demo's detector configuration with the drift detectors left out."""
    models = [m.model_copy(update={"detectors": ["performance", "latency", "consistency"]}) for m in config.models]
    return config.model_copy(update={"models": models})


def wait_written(writer, expected: int, timeout: float = 30.0) -> None:
    """Until the writer has stored ``expected`` events (or dropped some, which it counts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = writer.stats()
        if stats.acknowledged + sum(stats.dropped.values()) >= expected:
            return
        time.sleep(0.01)


def _window_end(moment: dt.datetime) -> dt.datetime:
    """The end of the epoch-aligned window that contains the instant before ``moment``."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    size = WINDOW.total_seconds()
    elapsed = (moment - epoch).total_seconds()
    return epoch + dt.timedelta(seconds=-(-elapsed // size) * size)


def _replay_check(platform, status: Status) -> None:
    """After the traffic: the replay detector re-sends a sample of each week's recorded requests through the
    collector (marked as replays, never counted as traffic) and compares the answers with the recorded ones.

    Run once at the end rather than every week, so that the replayed events never mix with the traffic the
    demo waits for.
    """
    from driftwarden.detectors.config import ReplayConfig, ReproducibilityConfig
    from driftwarden.detectors.scheduler import Scheduler

    config = platform.config.detectors
    replay = ReplayConfig(collector_url=platform.addresses.collector_url(0), sample_size=REPLAY_SAMPLE)
    models = [
        m.model_copy(
            update={
                "reproducibility": ReproducibilityConfig(consistency=True, replay=replay),
                "detectors": ["replay"],
            }
        )
        for m in config.models
    ]
    scheduler = Scheduler(platform.client, config.model_copy(update={"models": models}), platform.exporter)
    status.say(f"replaying a sample of {REPLAY_SAMPLE} recorded requests per week through the collector ...")
    for run in scheduler.run_once(_window_end(REPLAY[1])):
        if run.status == "error":
            status.say(f"detector replay failed on {run.window}: {run.error}")


def _summary(client) -> dict:
    """What the store holds after the replay, by month: events, labels, MAE (computed in ClickHouse)."""
    rows = client.query(
        "SELECT toMonth(i.ts) AS month, count() AS events, countIf(g.value IS NOT NULL) AS labelled, "
        "avgIf(abs(i.prediction - g.value), g.value IS NOT NULL) AS mae "
        "FROM (SELECT event_id, ts, prediction FROM inferences FINAL WHERE model = {m:String} AND NOT is_replay) AS i "
        "LEFT JOIN (SELECT event_id, value FROM ground_truth FINAL WHERE model = {m:String}) AS g "
        "ON i.event_id = g.event_id GROUP BY month ORDER BY month",
        parameters={"m": MODEL_NAME},
        settings={"join_use_nulls": 1},
    ).result_rows
    drifted = client.query(
        "SELECT current_start, groupArray(feature) FROM drift_results FINAL WHERE model = {m:String} "
        "AND target = 'feature' AND drifted GROUP BY current_start ORDER BY current_start",
        parameters={"m": MODEL_NAME},
    ).result_rows
    reproducibility = client.query(
        "SELECT kind, sum(checked), sum(mismatches), count() FROM reproducibility_results FINAL "
        "WHERE model = {m:String} GROUP BY kind ORDER BY kind",
        parameters={"m": MODEL_NAME},
    ).result_rows
    estimated = client.query(
        "SELECT metric, argMax(estimated, current_start), argMax(realized, current_start), "
        "argMax(reference_value, current_start), max(current_start), countIf(alert) "
        "FROM estimated_performance_results FINAL WHERE model = {m:String} AND estimated IS NOT NULL "
        "GROUP BY metric ORDER BY metric",
        parameters={"m": MODEL_NAME},
    ).result_rows
    return {"months": rows, "drifted": drifted, "reproducibility": reproducibility, "estimated": estimated}


def _print_summary(status: Status, summary: dict, finished: bool) -> None:
    status.say("")
    status.say("driftwarden demo: " + ("replay finished" if finished else "replay stopped early"))
    for month, events, labelled, mae in summary["months"]:
        name = dt.date(2011, int(month), 1).strftime("%B")
        shown = f"{mae:.1f}" if labelled else "-"
        status.say(f"  {name}: {events:,} events stored, {labelled:,} with ground truth, MAE {shown} riders/hour")
    if summary["drifted"]:
        for start, features in summary["drifted"]:
            status.say(f"  drift in the week from {start:%-d %b}: {', '.join(sorted(features))}")
    else:
        status.say("  no feature drifted in the analysed weeks")
    for kind, checked, mismatches, windows in summary["reproducibility"]:
        what = "repeated inputs answered alike" if kind == "consistency" else "recorded requests replayed alike"
        share = f"{100 * (1 - mismatches / checked):.1f}%" if checked else "-"
        status.say(
            f"  reproducibility ({kind}): {share} of {checked:,} {what} in {windows} weeks, {mismatches} differed"
        )
    if not summary["reproducibility"]:
        status.say("  reproducibility: not checked (no repeated or replayed requests)")
    for metric, estimated, realized, reference, start, alerts in summary["estimated"]:
        known = f", realized {realized:.1f}" if realized is not None else ", not yet realized"
        status.say(
            f"  {metric.upper()} estimated without labels (DLE) for the week from {start:%-d %b}: {estimated:.1f}"
            f"{known}; January {'-' if reference is None else f'{reference:.1f}'}; "
            f"{alerts} week(s) outside January's range"
        )
    status.say("  now: " + status.line())
