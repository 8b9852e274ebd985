"""``driftwarden collector``: the sidecar proxy that captures every inference."""

from __future__ import annotations

import argparse

from driftwarden.commands import add_store_argument


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "collector",
        help="run the sidecar proxy that records every inference into the store",
        description="A transparent reverse proxy in front of a model server: requests and responses pass "
        "unchanged, and each inference is recorded (features, predictions, latency, hashes; payloads "
        "sampled and redacted) into the store or a hub. SIGTERM flushes everything before exiting. "
        "Flags override the same keys of --config.",
    )
    parser.add_argument("--upstream", metavar="URL", help="the model server, e.g. http://127.0.0.1:8081")
    parser.add_argument("--listen", metavar="HOST:PORT", help="where clients connect (default 127.0.0.1:8080)")
    parser.add_argument("--model", metavar="NAME", help="name of the monitored model")
    parser.add_argument("--model-version", metavar="V", help="version recorded with each event")
    parser.add_argument("--model-digest", metavar="D", help="digest of the model artifact (reproducibility)")
    parser.add_argument(
        "--protocol",
        choices=("auto", "oip", "openai", "generic"),
        help="how requests are read (default auto: by path)",
    )
    add_store_argument(parser)
    parser.add_argument("--hub", metavar="URL", help="send events to a hub's ingest endpoint instead of a store")
    parser.add_argument(
        "--spool-dir",
        metavar="DIR",
        help="on-disk spool for events the sink cannot take yet, and the write-ahead journal of answered inferences",
    )
    parser.add_argument(
        "--fsync",
        choices=("off", "interval", "always"),
        help="when the journal is flushed to disk: off (survives a process crash, not a power cut), interval "
        "(default: every fsync_interval_ms), always (before each response, group-committed)",
    )
    parser.add_argument(
        "--engine",
        choices=("python", "nginx"),
        help="the data plane: python (default, the built-in proxy) or nginx (nginx + njs proxies, the collector "
        "captures from its log; needs --spool-dir and: apt-get install nginx libnginx-mod-http-js)",
    )
    parser.add_argument("--admin-listen", metavar="HOST:PORT", help="serve /metrics, /healthz and /readyz here")
    parser.add_argument("--config", metavar="FILE", help="YAML file: redaction, sampling, payload cap, mappings")
    parser.add_argument("--upstream-timeout", type=float, metavar="S", help="seconds to wait for the upstream")
    parser.add_argument("--payload-sample-rate", type=float, metavar="R", help="share of payloads kept, 0..1")
    parser.add_argument(
        "--trust-client-event-headers",
        action="store_true",
        default=None,
        help="take each event's time and id from X-Driftwarden-Timestamp / X-Driftwarden-Event-Id "
        "(for backfills of recorded traffic; off by default)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from driftwarden.collector import config as collector_config
    from driftwarden.collector import service
    from driftwarden.errors import UserError
    from driftwarden.storage.errors import StoreError

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {
        "upstream": args.upstream,
        "listen": args.listen,
        "model": args.model,
        "model_version": args.model_version,
        "model_digest": args.model_digest,
        "protocol": args.protocol,
        "store": args.store,
        "hub": args.hub,
        "spool_dir": args.spool_dir,
        "fsync": args.fsync,
        "engine": args.engine,
        "admin_listen": args.admin_listen,
        "upstream_timeout_s": args.upstream_timeout,
        "trust_client_event_headers": args.trust_client_event_headers,
    }
    config = collector_config.load(overrides, args.config)
    if args.payload_sample_rate is not None:
        payload = {**config.payload.model_dump(), "sample_rate": args.payload_sample_rate}
        config = collector_config.load({**overrides, "payload": payload}, args.config)
    try:
        if config.engine == "nginx":
            from driftwarden.collector.edge import engine

            return engine.run(config)
        return service.run(config)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot listen on {config.listen}: {exc.strerror or exc}") from None
