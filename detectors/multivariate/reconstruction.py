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

Drivers: per feature ``j`` the mean squared residual ``mean((z_c - V^T V z_c)_j^2)`` in the
current window against the reference, ``diag(R E[z_c z_c^T] R)`` with ``R = I - V^T V``, read from
each window's second moments (``covarSampMatrix`` and column sums) without any per-row array;
features whose residual grew most drive the change
(their joint behaviour is no longer what the reference components describe). The mean of
``z_j`` in the current window is reported beside it: the shift of the feature's mean in
reference standard deviations.

Reference: NannyML, "Data Reconstruction with PCA", https://nannyml.readthedocs.io
(``nannyml/drift/multivariate/data_reconstruction/calculator.py``, 0.13).
"""

from __future__ import annotations

import math

import numpy as np
from clickhouse_connect.driver.client import Client

from driftwarden.detectors.multivariate.encoding import Encoding, source_parameters, source_where
from driftwarden.detectors.multivariate.result import MultivariateResult, MultivariateSettings
from driftwarden.detectors.window import Window, micros

METHOD = "pca_reconstruction"
MIN_TIME_CHUNKS = 3
FALLBACK_CHUNKS = 10


def _matrix_sql(d: int) -> str:
    """``covarSampMatrix`` over the ``d`` columns of the row array ``c`` (a native aggregate, no per-row lambda)."""
    return f"covarSampMatrix({', '.join(f'c[{j + 1}]' for j in range(d))})"


def fit_components(
    client: Client, encoding: Encoding, model: str, reference: Window, model_version: str | None, n_components: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean m, components V (k x d), explained variance ratio of every component)`` of the reference, in z units.

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
    covariance = np.asarray(matrix, dtype=float).reshape(d, d) / np.outer(sigma, sigma)
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
    return mean, eigenvectors[:, :k].T.copy(), ratio


def _error_sql(encoding: Encoding, k: int) -> str:
    """Per row: ``c`` (centred on the PCA mean, in units of std) and ``err`` (the reconstruction error).

    With ``U = V / std`` (each component divided by the scales) the projection on component ``i`` is
    ``dotProduct(U_i, c)`` and, the components being orthonormal, ``err^2 = ||z_c||^2 - sum_i proj_i^2``.
    One ``dotProduct`` with a constant array per component: mapping over the whole matrix would copy it
    into every row.
    """
    projections = " + ".join(f"pow(dotProduct({{pca_u{i}:Array(Float64)}}, c), 2)" for i in range(k))
    return f"""
        SELECT {encoding.centred_sql()} - {{pca_mc:Array(Float64)}} AS c,
               sqrt(greatest(0., dotProduct(arrayMap(x -> x * x, c), {{pca_iv:Array(Float64)}}) - ({projections})))
                   AS err,
               ts
        FROM inferences FINAL"""


def reconstruction_drift(
    client: Client,
    encoding: Encoding,
    model: str,
    reference: Window,
    current: Window,
    model_version: str | None,
    settings: MultivariateSettings,
) -> MultivariateResult:
    """The PCA reconstruction error of ``current`` against ``reference``, with thresholds and drivers."""
    mean, components, ratio = fit_components(client, encoding, model, reference, model_version, settings.n_components)
    sigma = np.asarray(encoding.scale, dtype=float)
    params = {
        **source_parameters(model, model_version),
        **encoding.parameters(),
        "pca_mc": (mean * sigma).tolist(),
        **{f"pca_u{i}": (row / sigma).tolist() for i, row in enumerate(components)},
        "pca_iv": (1.0 / sigma**2).tolist(),
    }
    d = len(encoding.features)
    length = micros(current.end) - micros(current.start)
    span = micros(reference.end) - micros(reference.start)
    chunks = span // length
    if chunks >= MIN_TIME_CHUNKS:
        chunk_us, chunking = length, f"{chunks} chunks as long as the current window"
    else:
        chunks = FALLBACK_CHUNKS
        chunk_us = max(1, span // FALLBACK_CHUNKS)
        chunking = (
            f"{FALLBACK_CHUNKS} chunks of equal duration (the reference holds fewer than {MIN_TIME_CHUNKS} "
            "windows as long as the current one)"
        )
    rows = client.query(
        f"""
        SELECT w, chunk, count(), sum(err), sum(err * err), sumForEach(c), {_matrix_sql(d)}
        FROM (
            SELECT 'reference' AS w,
                   intDiv(toUnixTimestamp64Micro(ts) - {micros(reference.start)}, {chunk_us}) AS chunk, err, c
            FROM ({_error_sql(encoding, len(components))} WHERE {source_where(reference, model_version)})
            UNION ALL
            SELECT 'current' AS w, 0 AS chunk, err, c
            FROM ({_error_sql(encoding, len(components))} WHERE {source_where(current, model_version)})
        )
        GROUP BY w, chunk ORDER BY w, chunk
        """,
        parameters=params,
    ).result_rows
    # per window: rows, sum of err, sum of err^2, sum of c, sum of c c^T (c in std units: divided below)
    totals = {w: [0, 0.0, 0.0, np.zeros(d), np.zeros((d, d))] for w in ("reference", "current")}
    chunk_values = []
    for w, chunk, n, total, squares, sums, matrix in rows:
        n = int(n)
        t = totals[str(w)]
        c_sum = np.asarray(sums, dtype=float)
        covariance = np.nan_to_num(np.asarray(matrix, dtype=float).reshape(d, d))
        t[0] += n
        t[1] += float(total)
        t[2] += float(squares)
        t[3] += c_sum
        t[4] += covariance * max(0, n - 1) + np.outer(c_sum, c_sum) / max(1, n)
        if w == "reference" and int(chunk) < chunks and n >= 2:
            chunk_values.append(float(total) / n)
    ref_n, ref_sum, _, _, ref_second = totals["reference"]
    cur_n, cur_sum, cur_squares, cur_c, cur_second = totals["current"]
    ref_avg = ref_sum / ref_n if ref_n else math.nan
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

    ref_r2, cur_r2 = residuals(ref_second, ref_n), residuals(cur_second, cur_n)
    drivers = []
    if cur_n and ref_n:
        for j, name in enumerate(encoding.features):
            ref_residual = ref_r2[j]
            cur_residual = cur_r2[j]
            drivers.append(
                {
                    "feature": name,
                    "score": float(cur_residual - ref_residual),
                    "current_residual": float(cur_residual),
                    "reference_residual": float(ref_residual),
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
            "explained_variance": float(np.sum(ratio[: components.shape[0]])),
            "n_components_setting": settings.n_components,
            "reference_value": ref_avg,
            "reference_chunks": chunk_values,
            "chunking": chunking,
            "sigma": settings.sigma,
        },
        message=message,
        reference_rows=ref_n,
        current_rows=cur_n,
    )
