"""The fallback receiver: a request no adapter recognises is recorded with what the proxy knows.

No features are read; the hashes are of the raw bodies, so repeated identical
requests can still be compared.
"""

from __future__ import annotations

from driftwarden.collector.exchange import Exchange
from driftwarden.collector.processors.hashing import bytes_hash
from driftwarden.collector.receivers.base import Captured, base_event


class UnknownReceiver:
    """Metadata-only capture for requests outside every configured protocol."""

    name = "unknown"

    def matches(self, method: str, path: str) -> bool:
        # Reads (health checks, model metadata) are not inferences; anything that sends data may be.
        return method not in ("GET", "HEAD", "OPTIONS")

    def capture(self, ex: Exchange, *, model: str, model_version: str, model_digest: str) -> Captured:
        event = base_event(ex, model=model, model_version=model_version, model_digest=model_digest, protocol="unknown")
        event.input_hash = bytes_hash(ex.request_body)
        if not ex.response_cut:
            event.output_hash = bytes_hash(ex.response_body)
        return Captured(events=[event])
