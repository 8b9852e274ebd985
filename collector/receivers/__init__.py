"""Receivers: protocol adapters that turn a request/response pair into events.

One module per protocol (``oip``, ``openai``, ``generic``) plus the fallback
``unknown``. Each has ``matches(method, path)`` and ``capture(exchange, ...)``
returning a :class:`~collector.receivers.base.Captured`. :func:`select`
builds the chain for a configured ``--protocol``: ``auto`` tries OIP, then
OpenAI, then the generic mapping when one is configured, by request path.
A request that no receiver claims is recorded by ``unknown`` when it sends
data (not GET/HEAD/OPTIONS), and not recorded at all otherwise: health checks
and metadata reads are proxied but are not inferences.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

from driftwarden.collector.config import CollectorConfig
from driftwarden.collector.exchange import Exchange
from driftwarden.collector.genai_metrics import GenAIRecorder
from driftwarden.collector.receivers.base import Captured
from driftwarden.collector.receivers.generic import GenericReceiver
from driftwarden.collector.receivers.oip import OIPReceiver
from driftwarden.collector.receivers.openai import OpenAIReceiver
from driftwarden.collector.receivers.unknown import UnknownReceiver

__all__ = ["Captured", "Receiver", "Selector", "select"]


class Receiver(Protocol):
    name: str

    def matches(self, method: str, path: str) -> bool: ...

    def capture(self, ex: Exchange, *, model: str, model_version: str, model_digest: str) -> Captured: ...


class Selector:
    """Picks the receiver of a request by method and path (first match wins)."""

    def __init__(self, receivers: list[Receiver]) -> None:
        self.receivers = receivers

    def pick(self, method: str, path: str) -> Receiver | None:
        for receiver in self.receivers:
            if receiver.matches(method, path):
                return receiver
        return None


def select(config: CollectorConfig) -> Selector:
    """The receiver chain for ``config.protocol``; the fallback ``unknown`` always comes last."""
    chain: list[Receiver] = []
    if config.protocol in ("auto", "oip"):
        chain.append(
            OIPReceiver(
                config.oip.columns,
                text=config.oip.text,
                embeddings=config.oip.embeddings,
                embedding_min_dim=config.oip.embedding_min_dim,
            )
        )
    if config.protocol in ("auto", "openai"):
        recorder = GenAIRecorder(config.genai)
        host = urlsplit(config.upstream).hostname or ""
        chain.append(OpenAIReceiver(recorder, server_address=host, provider_name=config.genai.provider_name))
    if config.generic is not None and config.protocol in ("auto", "generic"):
        chain.append(GenericReceiver(config.generic))
    chain.append(UnknownReceiver())
    return Selector(chain)
