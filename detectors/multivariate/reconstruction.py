"""PCA reconstruction error: how badly the reference's principal components rebuild the current rows.

As NannyML's ``DataReconstructionDriftCalculator``, with every sum computed in ClickHouse:

1. Each row becomes its standardised vector ``z`` (:mod:`.encoding`: imputation, count
   encoding, scaling by the reference).
2. PCA of the reference: the covariance of the centred rows ``c = z * std`` is ClickHouse's
   native ``covarSampMatrix`` (one pass), and ``cov(z) = cov(c) / (std std^T)``; its
   eigenvectors, in decreasing order of eigenvalue, are the principal components. The first ``k`` are kept,
   ``k`` the smallest number whose explained variance reaches ``n_components`` (0.65 by
   default, scikit-learn's rule for a fraction: ``searchsorted(cumsum(ratio), 0.65, "right") + 1``).
3. Each row's reconstruction error, in SQL, with ``z_c = z - m`` and ``V`` the ``k x d``
   components (orthonormal rows, so the residual's norm needs only the projections)::

       e = || z_c - V^T V z_c ||_2 = sqrt(||z_c||^2 - sum_i (V_i . z_c)^2)

   The window's value is the mean of ``e`` over its rows, its sampling error
   ``std(e) / sqrt(n)``.
4. Thresholds: the reference is split into chunks as long as the current window (at least
   3; otherwise into 10 chunks of equal duration); ``mean +- 3 std`` of the chunks' values
   (population std, lower bound at least 0). Alert when the value leaves them.

Passes over the data: the encoding (one aggregate over the reference, :func:`.encoding.fit_encoding`),
the covariance (one over the reference), the errors of the reference chunks (one), the error and second
moments of the current window (one). Everything from the reference is a :class:`ReferenceFit`, stored
by :mod:`.store` and reused while the reference's rows do not change: a scheduled run scans only the
current window.

Drivers: per feature ``j`` the mean squared residual ``mean((z_c - V^T V z_c)_j^2)`` in the
current window against the reference, ``diag(R E[z_c z_c^T] R)`` with ``R = I - V^T V``, read from
each window's second moments (``covarSampMatrix`` and column sums; the reference's are those of the
PCA fit) without any per-row array;
features whose residual grew most drive the change
(their joint behaviour is no longer what the reference components describe). The mean of
``z_j`` in the current window is reported beside it: the shift of the feature's mean in
reference standard deviations.

Reference: NannyML, "Data Reconstruction with PCA", https://nannyml.readthedocs.io
(``nannyml/drift/multivariate/data_reconstruction/calculator.py``, 0.13).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from clickhouse_connect.driver.client import Client

from driftwarden.detectors.multivariate.encoding import Encoding, source_parameters, source_where
from driftwarden.detectors.multivariate.result import MultivariateResult, MultivariateSettings
from driftwarden.detectors.window import Window, micros

METHOD = "pca_reconstruction"
MIN_TIME_CHUNKS = 3
FALLBACK_CHUNKS = 10


@dataclass(frozen=True)
class ReferenceFit:
    """Everything the method needs from the reference window, in ``z`` units unless said otherwise.

    ``mean`` (d) and ``components`` (k x d, orthonormal rows) of the PCA, ``ratio`` the explained variance
    ratio of every component; ``rows`` and ``value`` (mean error) of the reference; ``chunk_values`` the mean
    error of each reference chunk (the thresholds); ``second`` (d x d) the reference's sum of
    ``(c - mean * std)(c - mean * std)^T`` in ``c = z * std`` units (the drivers).
    """

    encoding: Encoding
    mean: np.ndarray
    components: np.ndarray
    ratio: np.ndarray
    rows: int
    value: float
    chunk_values: tuple[float, ...]
    chunking: str
    second: np.ndarray


def _matrix_sql(d: int) -> str:
    """``covarSampMatrix`` over the ``d`` columns of the row array ``c`` (a native aggregate, no per-row lambda)."""
    return f"covarSampMatrix({', '.join(f'c[{j + 1}]' for j in range(d))})"


def fit_components(
    client: Client, encoding: Encoding, model: str, reference: Window, model_version: str | None, n_components: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """``(mean m, components V (k x d), explained variance ratio of every component, second moments, rows)`` of
    the reference, in z units (the second moments in c units, about the mean).

    One pass: the count, the column sums and ``covarSampMatrix`` of the centred rows ``c = z * std``; then
    ``cov(z) = cov(c) / (std std^T)``.
    """
    d = len(encoding.features)
    n, sums, matrix = client.query(
        f"""
        SELECT count(), sumForEach(c), {_matrix_sql(d)}
        FROM (SELECT {encoding.centred_sql()} AS c FROM inferences FINAL WHERE {source_where(reference, model_version)})
        """,
        parameters={**source_parameters(model, model_version), **encoding.parameters()},
    ).result_rows[0]
    n = int(n)
    if n < 2:
        raise ValueError("the reference window needs at least 2 rows for PCA")
    sigma = np.asarray(encoding.scale, dtype=float)
    mean = np.asarray(sums, dtype=float) / n / sigma
    centred_covariance = np.asarray(matrix, dtype=float).reshape(d, d)
    covariance = centred_covariance / np.outer(sigma, sigma)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    eigenvectors = eigenvectors[:, order]
    total = eigenvalues.sum()
    ratio = eigenvalues / total if total > 0 else np.full(d, 1.0 / d)
    if 0 < n_components < 1:
        k = int(np.searchsorted(np.cumsum(ratio), n_components, side="right") + 1)
    else:
        k = int(n_components)
    k = max(1, min(k, d))
    return mean, eigenvectors[:, :k].T.copy(), ratio, centred_covariance * (n - 1), n


def _error_sql(encoding: Encoding, k: int) -> str:
    """Per row: ``c`` (centred on the PCA mean, in units of std) and ``err`` (the reconstruction error).

    With ``U = V / std`` (each component divided by the scales) the projection on component ``i`` is
    ``dotProduct(U_i, c)`` and, the components being orthonormal, ``err^2 = ||z_c||^2 - sum_i proj_i^2``.
    One ``dotProduct`` with a constant array per component: mapping over the whole matrix would copy it
    into every row (and unrolling it into scalar columns measured 3x slower).
    """
    projections = " + ".join(f"pow(dotProduct({{pca_u{i}:Array(Float64)}}, c), 2)" for i in range(k))
    return f"""
        SELECT {encoding.centred_sql()} - {{pca_mc:Array(Float64)}} AS c,
               sqrt(greatest(0., dotProduct(arrayMap(x -> x * x, c), {{pca_iv:Array(Float64)}}) - ({projections})))
                   AS err,
               ts
        FROM inferences FINAL"""


def _error_parameters(encoding: Encoding, mean: np.ndarray, components: np.ndarray) -> dict:
    sigma = np.asarray(encoding.scale, dtype=float)
    return {
        **encoding.parameters(),
        "pca_mc": (mean * sigma).tolist(),
        **{f"pca_u{i}": (row / sigma).tolist() for i, row in enumerate(components)},
        "pca_iv": (1.0 / sigma**2).tolist(),
    }


def chunk_length(reference: Window, current: Window) -> tuple[int, int, str]:
    """``(chunk length in microseconds, chunks counted for the thresholds, how)`` of the reference."""
    length = micros(current.end) - micros(current.start)
    span = micros(reference.end) - micros(reference.start)
    chunks = span // length
    if chunks >= MIN_TIME_CHUNKS:
        return length, chunks, f"{chunks} chunks as long as the current window"
    return (
        max(1, span // FALLBACK_CHUNKS),
        FALLBACK_CHUNKS,
        f"{FALLBACK_CHUNKS} chunks of equal duration (the reference holds fewer than {MIN_TIME_CHUNKS} "
        "windows as long as the current one)",
    )


def fit_reference(
    client: Client,
    encoding: Encoding,
    model: str,
    reference: Window,
    current: Window,
    model_version: str | None,
    settings: MultivariateSettings,
) -> ReferenceFit:
    """The :class:`ReferenceFit` of ``reference`` for windows as long as ``current``: two passes (PCA, chunk errors)."""
    mean, components, ratio, second, n = fit_components(
        client, encoding, model, reference, model_version, settings.n_components
    )
    chunk_us, chunks, chunking = chunk_length(reference, current)
    rows = client.query(
        f"""
        SELECT intDiv(toUnixTimestamp64Micro(ts) - {micros(reference.start)}, {chunk_us}) AS chunk, count(), sum(err)
        FROM ({_error_sql(encoding, len(components))} WHERE {source_where(reference, model_version)})
        GROUP BY chunk ORDER BY chunk
        """,
        parameters={**source_parameters(model, model_version), **_error_parameters(encoding, mean, components)},
    ).result_rows
    total = sum(float(s) for _, _, s in rows)
    chunk_values = tuple(float(s) / int(c) for chunk, c, s in rows if int(chunk) < chunks and int(c) >= 2)
    return ReferenceFit(
        encoding=encoding,
        mean=mean,
        components=components,
        ratio=ratio,
        rows=n,
        value=total / n,
        chunk_values=chunk_values,
        chunking=chunking,
        second=second,
    )


def reconstruction_drift(
    client: Client,
    fit: ReferenceFit,
    model: str,
    current: Window,
    model_version: str | None,
    settings: MultivariateSettings,
) -> MultivariateResult:
    """The PCA reconstruction error of ``current`` against the reference of ``fit``, with thresholds and drivers.

    One pass over the current window: count, sum and sum of squares of the error, column sums and
    ``covarSampMatrix`` of ``c``.
    """
    encoding, components = fit.encoding, fit.components
    sigma = np.asarray(encoding.scale, dtype=float)
    d = len(encoding.features)
    cur_n, cur_sum, cur_squares, sums, matrix = client.query(
        f"""
        SELECT count(), sum(err), sum(err * err), sumForEach(c), {_matrix_sql(d)}
        FROM ({_error_sql(encoding, len(components))} WHERE {source_where(current, model_version)})
        """,
        parameters={**source_parameters(model, model_version), **_error_parameters(encoding, fit.mean, components)},
    ).result_rows[0]
    cur_n, cur_sum, cur_squares = int(cur_n), float(cur_sum), float(cur_squares)
    cur_c = np.asarray(sums, dtype=float) if cur_n else np.zeros(d)
    covariance = np.nan_to_num(np.asarray(matrix, dtype=float).reshape(d, d)) if cur_n else np.zeros((d, d))
    cur_second = covariance * max(0, cur_n - 1) + np.outer(cur_c, cur_c) / max(1, cur_n)
    ref_n, chunk_values = fit.rows, list(fit.chunk_values)
    value = cur_sum / cur_n if cur_n else math.nan
    std = math.sqrt(max(0.0, (cur_squares - cur_n * value * value) / (cur_n - 1))) if cur_n > 1 else math.nan
    lower = upper = None
    if len(chunk_values) >= 2:
        centre, spread = float(np.mean(chunk_values)), float(np.std(chunk_values))
        lower = max(0.0, centre - settings.sigma * spread)
        upper = centre + settings.sigma * spread
    # mean squared residual per feature: diag(R E[z z^T] R), R = I - V^T V, from the second moments alone
    residual = np.eye(d) - components.T @ components
    scale = np.outer(sigma, sigma)

    def residuals(second: np.ndarray, n: int) -> np.ndarray:
        return np.diag(residual @ (second / scale / max(1, n)) @ residual)

    ref_r2, cur_r2 = residuals(fit.second, ref_n), residuals(cur_second, cur_n)
    drivers = []
    if cur_n and ref_n:
        for j, name in enumerate(encoding.features):
            drivers.append(
                {
                    "feature": name,
                    "score": float(cur_r2[j] - ref_r2[j]),
                    "current_residual": float(cur_r2[j]),
                    "reference_residual": float(ref_r2[j]),
                    "mean_shift_std": float(cur_c[j] / cur_n / sigma[j]),
                }
            )
        drivers.sort(key=lambda d: -d["score"])
    message = ""
    if cur_n < settings.min_rows or ref_n < settings.min_rows:
        message = f"no verdict: {ref_n} reference and {cur_n} current rows, below the minimum of {settings.min_rows}"
    elif lower is None:
        message = "no thresholds: fewer than 2 reference chunks with rows"
    alert = bool(not message and not (lower < value < upper))  # type: ignore[operator]
    return MultivariateResult(
        method=METHOD,
        value=None if (message.startswith("no verdict") or not math.isfinite(value)) else value,
        sampling_error=std / math.sqrt(cur_n) if cur_n > 1 and math.isfinite(std) else None,
        lower_threshold=lower,
        upper_threshold=upper,
        alert=alert,
        features=encoding.features,
        drivers=drivers[: settings.max_drivers],
        details={
            "n_components": int(components.shape[0]),
            "explained_variance": float(np.sum(fit.ratio[: components.shape[0]])),
            "n_components_setting": settings.n_components,
            "reference_value": fit.value,
            "reference_chunks": chunk_values,
            "chunking": fit.chunking,
            "sigma": settings.sigma,
        },
        message=message,
        reference_rows=ref_n,
        current_rows=cur_n,
    )
