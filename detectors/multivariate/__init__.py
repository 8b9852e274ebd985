"""Multivariate drift: PCA reconstruction error and the domain classifier over every feature of a window.

``compute_multivariate`` runs the configured methods between a reference and a current
window and returns one :class:`MultivariateResult` per method, each with its value,
thresholds, alert and the features that drive the change; ``write_multivariate`` stores
them in ``multivariate_results`` (migration 0012). The maths of each method is in its
module: :mod:`.reconstruction` (aggregates in ClickHouse) and :mod:`.classifier` (a
bounded sample); :mod:`.encoding` turns a row into the vector both see.
"""

from __future__ import annotations

from collections.abc import Sequence

from clickhouse_connect.driver.client import Client

from driftwarden.detectors import provenance
from driftwarden.detectors.multivariate.classifier import classifier_drift
from driftwarden.detectors.multivariate.encoding import dominant_order, fit_encoding, window_features
from driftwarden.detectors.multivariate.reconstruction import reconstruction_drift
from driftwarden.detectors.multivariate.result import (
    METHODS,
    MultivariateResult,
    MultivariateSettings,
    write_multivariate,
)
from driftwarden.detectors.window import Window

__all__ = ["METHODS", "MultivariateResult", "MultivariateSettings", "compute_multivariate", "write_multivariate"]


def compute_multivariate(
    client: Client,
    model: str,
    reference: Window,
    current: Window,
    *,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    model_version: str | None = None,
    settings: MultivariateSettings | None = None,
) -> list[MultivariateResult]:
    """Multivariate drift of ``current`` against ``reference`` by each method of ``settings``.

    ``numeric``/``categorical`` default to every feature seen in the reference window. A
    window with too few rows, or a model without any feature, gives results without a value
    whose ``message`` says why; it never raises for the data.
    """
    settings = settings or MultivariateSettings()
    if numeric is None or categorical is None:
        seen_numeric, seen_categorical = window_features(client, model, reference, model_version)
        numeric = seen_numeric if numeric is None else numeric
        categorical = seen_categorical if categorical is None else categorical
    numeric = dominant_order(client, model, current, model_version, sorted(numeric))
    categorical = sorted(categorical)
    results: list[MultivariateResult] = []
    encoding = None
    for method in settings.methods:
        if not numeric and not categorical:
            result = MultivariateResult(
                method=method,
                value=None,
                sampling_error=None,
                lower_threshold=None,
                upper_threshold=None,
                alert=False,
                features=[],
                drivers=[],
                details={},
                message="no verdict: the reference window has no numeric or categorical features",
                reference_rows=0,
                current_rows=0,
            )
        elif method == "pca_reconstruction":
            encoding = encoding or fit_encoding(client, model, reference, list(numeric), categorical, model_version)
            result = reconstruction_drift(client, encoding, model, reference, current, model_version, settings)
        else:
            result = classifier_drift(
                client, model, reference, current, model_version, list(numeric), categorical, settings
            )
        result.model = model
        result.model_version = model_version or ""
        result.reference_start, result.reference_end = reference.start, reference.end
        result.current_start, result.current_end = current.start, current.end
        result.input_hash = provenance.content_hash(
            {
                "detector": "multivariate",
                "method": method,
                "model": model,
                "model_version": model_version or "",
                "reference": [reference.start, reference.end, result.reference_rows],
                "current": [current.start, current.end, result.current_rows],
                "features": list(result.features),
                "settings": settings.as_dict(),
            }
        )
        results.append(result)
    return results
