"""Reproducibility detectors: consistency of deterministic requests, and replay of recorded inputs."""

from driftwarden.detectors.reproducibility.consistency import (
    ReproducibilityResult,
    compute_consistency,
    write_reproducibility,
)
from driftwarden.detectors.reproducibility.replay import ReplayError, compute_replay

__all__ = ["ReplayError", "ReproducibilityResult", "compute_consistency", "compute_replay", "write_reproducibility"]
