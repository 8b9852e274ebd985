"""Per-model sampling of payload capture.

Metadata, features, predictions and hashes are captured for every request;
only the raw bodies (``input_payload``/``output_payload``) are sampled, and the
event's ``payload_sampled`` says whether they were kept. The draw is
independent per request (all the events of one batched request share it).
"""

from __future__ import annotations

import random


class PayloadSampler:
    """Decides whether a request's payload is kept: rate per model, else the default rate."""

    def __init__(self, default_rate: float = 1.0, rates: dict[str, float] | None = None) -> None:
        self._default = default_rate
        self._rates = dict(rates or {})
        self._random = random.Random()

    def rate(self, model: str) -> float:
        return self._rates.get(model, self._default)

    def keep(self, model: str) -> bool:
        rate = self._rates.get(model, self._default)
        if rate >= 1.0:
            return True
        if rate <= 0.0:
            return False
        return self._random.random() < rate
