"""Statistical drift methods, one per module, behind one interface (:class:`DriftMethod`).

Every method scores an aggregate that ClickHouse computed (:class:`Support` or
:class:`Counts`), never raw rows: ``METHODS[name]().score(aggregate, threshold)``.
The numbers equal scipy's and Evidently's implementations of the same method.
"""

from __future__ import annotations

from driftwarden.detectors.methods.base import Counts, DriftMethod, Score, Support
from driftwarden.detectors.methods.chisquare import ChiSquare
from driftwarden.detectors.methods.component_share import ComponentShare
from driftwarden.detectors.methods.domain_classifier import DomainClassifier
from driftwarden.detectors.methods.jensenshannon import JensenShannon
from driftwarden.detectors.methods.ks import KolmogorovSmirnov
from driftwarden.detectors.methods.mean_distance import MeanDistance
from driftwarden.detectors.methods.mmd import MaximumMeanDiscrepancy
from driftwarden.detectors.methods.psi import PopulationStabilityIndex
from driftwarden.detectors.methods.wasserstein import Wasserstein
from driftwarden.detectors.methods.ztest import ZTest

METHODS: dict[str, type[DriftMethod]] = {
    m.name: m
    for m in (
        KolmogorovSmirnov,
        Wasserstein,
        PopulationStabilityIndex,
        JensenShannon,
        ChiSquare,
        ZTest,
        # text and embedding features: scored on bounded samples and SQL means (methods/samples.py)
        DomainClassifier,
        MaximumMeanDiscrepancy,
        ComponentShare,
        MeanDistance,
    )
}


def get_method(name: str, **options) -> DriftMethod:
    """The method called ``name``, built with ``options``; a ValueError lists the accepted names."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown drift method {name!r}; accepted: auto, {', '.join(sorted(METHODS))}") from None
    return cls(**options)


__all__ = [
    "METHODS",
    "ChiSquare",
    "ComponentShare",
    "Counts",
    "DomainClassifier",
    "DriftMethod",
    "JensenShannon",
    "KolmogorovSmirnov",
    "MaximumMeanDiscrepancy",
    "MeanDistance",
    "PopulationStabilityIndex",
    "Score",
    "Support",
    "Wasserstein",
    "ZTest",
    "get_method",
]
