"""Multivariate drift: PCA reconstruction error and the domain classifier over every feature of a window.

``compute_multivariate`` runs the configured methods between a reference and a current
window and returns one :class:`MultivariateResult` per method, each with its value,
thresholds, alert and the features that drive the change; ``write_multivariate`` stores
them in ``multivariate_results`` (migration 0012). The maths of each method is in its
module: :mod:`.reconstruction` (aggregates in ClickHouse) and :mod:`.classifier` (a
bounded sample); :mod:`.encoding` turns a row into the vector both see; :mod:`.store` keeps
the reference side of the PCA method (migration 0017) so that later runs against the same
reference scan only the current window.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from clickhouse_connect.driver.client import Client

from driftwarden.detectors import provenance
from driftwarden.detectors.multivariate.classifier import draw_samples, fit_classifier
from driftwarden.detectors.multivariate.encoding import dominant_order, fit_encoding, window_features
from driftwarden.detectors.multivariate.reconstruction import (
    ReferenceFit,
    chunk_length,
    fit_reference,
    reconstruction_drift,
)
from driftwarden.detectors.multivariate.result import (
    METHODS,
    MultivariateResult,
    MultivariateSettings,
    write_multivariate,
)
from driftwarden.detectors.multivariate.store import fit_key, load_fit, save_fit, stored_rows
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
    reuse: bool = True,
) -> list[MultivariateResult]:
    """Multivariate drift of ``current`` against ``reference`` by each method of ``settings``.

    ``numeric``/``categorical`` default to every feature seen in the reference window. A
    window with too few rows, or a model without any feature, gives results without a value
    whose ``message`` says why; it never raises for the data. With ``reuse`` the PCA method's
    reference fit is read from ``multivariate_references`` when one matches (and stored after
    fitting); without, it is always fitted and not stored.
    """
    settings = settings or MultivariateSettings()
    if numeric is None or categorical is None:
        seen_numeric, seen_categorical = window_features(client, model, reference, model_version)
        numeric = seen_numeric if numeric is None else numeric
        categorical = seen_categorical if categorical is None else categorical
    numeric = dominant_order(client, model, current, model_version, sorted(numeric))
    categorical = sorted(categorical)
    results: list[MultivariateResult] = []
    classifier = None
    if "domain_classifier" in settings.methods and (numeric or categorical):
        # The classifier's samples are read first; its fit (one thread, no store) then runs beside the PCA
        # method's queries (ClickHouse releases the GIL), so the two methods overlap on a machine with 2 cores.
        samples = draw_samples(client, model, reference, current, model_version, numeric, categorical, settings)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="domain-classifier")
        classifier = pool.submit(fit_classifier, samples, list(numeric), categorical, settings)
        pool.shutdown(wait=False)
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
            fit = _reference_fit(
                client, model, reference, current, model_version, numeric, categorical, settings, reuse
            )
            if isinstance(fit, ReferenceFit):
                result = reconstruction_drift(client, fit, model, current, model_version, settings)
            else:
                result = fit
        else:
            assert classifier is not None
            result = classifier.result()
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


def _reference_fit(
    client: Client,
    model: str,
    reference: Window,
    current: Window,
    model_version: str | None,
    numeric: Sequence[str],
    categorical: Sequence[str],
    settings: MultivariateSettings,
    reuse: bool,
) -> ReferenceFit | MultivariateResult:
    """The PCA method's reference fit: stored (``reuse``, same key and rows) or fitted (and stored); a result
    without a value when the reference has fewer than 2 rows."""
    chunk_us, chunks, _ = chunk_length(reference, current)
    key = fit_key(list(numeric), list(categorical), settings.n_components, chunk_us, chunks)
    rows = stored_rows(client, model, reference, model_version) if reuse else 0
    fit = load_fit(client, model, reference, model_version, key, rows) if reuse else None
    if fit is not None:
        return fit
    encoding = fit_encoding(client, model, reference, list(numeric), list(categorical), model_version)
    if encoding.reference_rows < 2:
        return MultivariateResult(
            method="pca_reconstruction",
            value=None,
            sampling_error=None,
            lower_threshold=None,
            upper_threshold=None,
            alert=False,
            features=encoding.features,
            drivers=[],
            details={},
            message=f"no verdict: {encoding.reference_rows} reference rows, below the minimum of "
            f"{max(2, settings.min_rows)}",
            reference_rows=encoding.reference_rows,
            current_rows=0,
        )
    fit = fit_reference(client, encoding, model, reference, current, model_version, settings)
    if reuse:
        save_fit(client, model, reference, model_version, key, rows, fit)
    return fit
