"""Domain classifier: can a classifier tell the current window's rows from the reference's?

As NannyML's ``DomainClassifierCalculator``: rows of the reference are labelled 0 and rows
of the current window 1; a gradient-boosted tree classifier is cross-validated over them
(stratified ``cv_folds``-fold), and the ROC AUC of its out-of-fold scores is the drift
measure::

    AUC = P(score(current row) > score(reference row))      0.5: the windows look alike

NannyML's default alert range is 0.45 < AUC < 0.65. Every numeric and categorical feature
enters at once (missing numeric values stay missing: the trees route them; categories are
ordinal-coded as native categorical splits), so joint changes that no single feature shows
are found. The classifier is scikit-learn's ``HistGradientBoostingClassifier``, the
histogram algorithm of LightGBM (which NannyML uses) with the same defaults: up to 100 trees, 31
leaves, learning rate 0.1, at least 20 rows per leaf. Boosting stops early when the log loss on
10% of the training fold has not improved for 10 iterations (scikit-learn's own default for more
than 10,000 training rows): a window like the reference stops after a few dozen trees instead of
fitting noise with 100. On the 1M-row benchmark that halved the fits' CPU time and moved the
held-out AUC from 0.631 to 0.637 (fewer trees overfit less); the alert range is unchanged.

Bounded sample: at most ``classifier_rows`` rows per window, the first by
``cityHash64(event_id)`` (a uniform draw that the same events always reproduce); the
aggregates stay in ClickHouse, only this sample is read.

Drivers: permutation importance on a held-out sample: ``PERMUTATION_ROWS`` rows drawn at random
from the test folds (both windows in their proportions), each scored by the model that did not
see it; the drop of their AUC when one feature's column is shuffled among them
(``AUC_sample - AUC_permuted``). The features whose shuffling costs most carry the difference
between the windows.

Reference: NannyML, "Domain Classifier", https://nannyml.readthedocs.io
(``nannyml/drift/multivariate/domain_classifier/calculator.py``, 0.13); Rabanser et al.,
"Failing Loudly", NeurIPS 2019.
"""

from __future__ import annotations

import numpy as np
from clickhouse_connect.driver.client import Client

from driftwarden.detectors.multivariate.encoding import source_parameters, source_where
from driftwarden.detectors.multivariate.result import MultivariateResult, MultivariateSettings
from driftwarden.detectors.window import Window

METHOD = "domain_classifier"
MISSING = "\x00missing"
MAX_CODES = 254  # HistGradientBoosting handles at most max_bins - 1 = 254 categories per feature
PERMUTATION_ROWS = 5_000  # held-out rows (all folds together) shuffled for the permutation importance
OVERSAMPLE = 3  # events kept by the hash bound per sampled row (the sample is then sorted from those)
PATIENCE = 10  # boosting iterations without a better validation loss before it stops


def sample(
    client: Client,
    model: str,
    window: Window,
    model_version: str | None,
    numeric: list[str],
    categorical: list[str],
    rows: int,
) -> tuple[np.ndarray, list[list[str]]]:
    """``(numeric matrix with NaN for missing, categorical values per row)`` of a bounded hash sample.

    The ``rows`` events with the smallest ``cityHash64(event_id)``. The hash is uniform, so in a window of
    ``N`` stored events about ``OVERSAMPLE * rows`` have a hash below ``2^64 * OVERSAMPLE * rows / N``: the
    query sorts only those (the same first ``rows``, read for 40% less CPU than sorting the window) and
    falls back to sorting every event in the rare case that fewer than ``rows`` pass.
    """
    where = source_where(window, model_version)
    parameters = {
        **source_parameters(model, model_version),
        "num": numeric,
        "cat": categorical,
        "missing": MISSING,
        "n": rows,
    }
    stored = int(
        client.query(
            f"SELECT count() FROM inferences WHERE {where}", parameters=source_parameters(model, model_version)
        ).result_rows[0][0]
    )
    bound = 2**64 * OVERSAMPLE * rows // stored if stored else 2**64

    def query(bounded: str) -> list:
        return client.query(
            f"""
            SELECT arrayMap(n -> if(indexOf(num_names, n) > 0, num_values[indexOf(num_names, n)], nan),
                            {{num:Array(String)}}),
                   arrayMap(n -> if(indexOf(cat_names, n) > 0, cat_values[indexOf(cat_names, n)], {{missing:String}}),
                            {{cat:Array(String)}})
            FROM inferences FINAL
            WHERE {where} {bounded}
            ORDER BY cityHash64(event_id), event_id
            LIMIT {{n:UInt32}}
            """,
            parameters={**parameters, "bound": bound} if bounded else parameters,
        ).result_rows

    result = query("AND cityHash64(event_id) < {bound:UInt64}") if bound < 2**64 else []
    if len(result) < rows:
        result = query("")
    matrix = np.array([r[0] for r in result], dtype=float).reshape(len(result), len(numeric))
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix, [list(r[1]) for r in result]


def _codes(reference: list[list[str]], current: list[list[str]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Ordinal codes per categorical column: the most frequent categories first, the rest share one code."""
    ref = np.zeros((len(reference), width))
    cur = np.zeros((len(current), width))
    for j in range(width):
        counts: dict[str, int] = {}
        for row in (*reference, *current):
            counts[row[j]] = counts.get(row[j], 0) + 1
        ranked = sorted(counts, key=lambda v: (-counts[v], v))
        code = {v: float(min(i, MAX_CODES - 1)) for i, v in enumerate(ranked)}
        code[MISSING] = np.nan
        ref[:, j] = [code[row[j]] for row in reference]
        cur[:, j] = [code[row[j]] for row in current]
    return ref, cur


def classifier_drift(
    client: Client,
    model: str,
    reference: Window,
    current: Window,
    model_version: str | None,
    numeric: list[str],
    categorical: list[str],
    settings: MultivariateSettings,
) -> MultivariateResult:
    """The cross-validated domain-classifier AUC of ``current`` against ``reference``, with drivers."""
    samples = draw_samples(client, model, reference, current, model_version, numeric, categorical, settings)
    return fit_classifier(samples, numeric, categorical, settings)


def draw_samples(
    client: Client,
    model: str,
    reference: Window,
    current: Window,
    model_version: str | None,
    numeric: list[str],
    categorical: list[str],
    settings: MultivariateSettings,
) -> tuple:
    """The two windows' bounded samples (the only part that queries the store): the input of :func:`fit_classifier`."""
    return (
        sample(client, model, reference, model_version, numeric, categorical, settings.classifier_rows),
        sample(client, model, current, model_version, numeric, categorical, settings.classifier_rows),
    )


def fit_classifier(
    samples: tuple, numeric: list[str], categorical: list[str], settings: MultivariateSettings
) -> MultivariateResult:
    """The verdict on the samples of :func:`draw_samples`; needs no store (it may run beside other queries)."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: F401  (loads OpenMP before the limit below)
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    (ref_num, ref_cat), (cur_num, cur_cat) = samples
    lower, upper = settings.auc_thresholds
    base = {
        "features": [*numeric, *categorical],
        "lower_threshold": lower,
        "upper_threshold": upper,
        "reference_rows": len(ref_num),
        "current_rows": len(cur_num),
    }
    if min(len(ref_num), len(cur_num)) < max(settings.min_rows, settings.cv_folds):
        return MultivariateResult(
            method=METHOD,
            value=None,
            sampling_error=None,
            alert=False,
            drivers=[],
            details={"sample_rows": settings.classifier_rows},
            message=f"no verdict: {len(ref_num)} reference and {len(cur_num)} current rows sampled, below the "
            f"minimum of {settings.min_rows}",
            **base,
        )
    ref_codes, cur_codes = _codes(ref_cat, cur_cat, len(categorical))
    x = np.vstack([np.hstack([ref_num, ref_codes]), np.hstack([cur_num, cur_codes])])
    y = np.concatenate([np.zeros(len(ref_num)), np.ones(len(cur_num))])
    mask = np.array([False] * len(numeric) + [True] * len(categorical))
    folds = StratifiedKFold(n_splits=settings.cv_folds, shuffle=True, random_state=settings.seed)
    rng = np.random.default_rng(settings.seed)
    scores = np.zeros(len(y))
    # One OpenMP thread: on a shared machine (and beside ClickHouse's own threads) OpenMP's spinning workers
    # made a 900-row fit take a minute instead of a second. Set after the import that loads the runtime.
    with threadpool_limits(limits=1, user_api="openmp"):
        held_out, permuted, iterations = _cross_validate(x, y, mask, folds, rng, settings.seed, scores)
    auc = float(roc_auc_score(y, scores))
    names = [*numeric, *categorical]
    sample_auc = float(roc_auc_score(y[held_out], scores[held_out]))
    drivers = sorted(
        (
            {
                "feature": name,
                "score": sample_auc - float(roc_auc_score(y[held_out], permuted[j])),
                "kind": "permutation AUC drop",
            }
            for j, name in enumerate(names)
        ),
        key=lambda d: -d["score"],
    )
    # Hanley & McNeil (1982): the standard error of an AUC from the class sizes.
    n0, n1 = float(len(ref_num)), float(len(cur_num))
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    se = float(np.sqrt(max(0.0, (auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n0 * n1))))
    return MultivariateResult(
        method=METHOD,
        value=auc,
        sampling_error=se,
        alert=not (lower < auc < upper),
        drivers=drivers[: settings.max_drivers],
        details={
            "cv_folds": settings.cv_folds,
            "sample_rows": settings.classifier_rows,
            "classifier": "HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=31, learning_rate=0.1, "
            f"early stopping after {PATIENCE} iterations without progress)",
            "iterations": iterations,
            "permutation_rows": len(held_out),
        },
        message="",
        **base,
    )


def _cross_validate(x, y, mask, folds, rng, seed: int, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """Out-of-fold scores of the classifier into ``scores``; return ``(held-out sample, its scores with each column
    shuffled (features x rows), boosting iterations per fold)``.

    The held-out sample: ``PERMUTATION_ROWS / folds`` random test rows of each fold (a fold's test rows are
    stratified, so the sample holds both windows), each scored by its own fold's model.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier  # imported (and its OpenMP loaded) by the caller

    splits = list(folds.split(x, y))
    per_fold = max(1, PERMUTATION_ROWS // len(splits))
    parts, permuted, iterations = [], [], []
    for train, test in splits:
        classifier = HistGradientBoostingClassifier(
            max_iter=100,
            learning_rate=0.1,
            max_leaf_nodes=31,
            min_samples_leaf=20,
            categorical_features=mask if mask.any() else None,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=PATIENCE,
            scoring="loss",
            random_state=seed,
        )
        classifier.fit(x[train], y[train])
        iterations.append(int(classifier.n_iter_))
        scores[test] = classifier.predict_proba(x[test])[:, 1]
        part = np.sort(rng.choice(test, size=min(per_fold, len(test)), replace=False))
        shuffled = np.empty((x.shape[1], len(part)))
        for j in range(x.shape[1]):
            rows = x[part].copy()
            rows[:, j] = rows[rng.permutation(len(part)), j]
            shuffled[j] = classifier.predict_proba(rows)[:, 1]
        parts.append(part)
        permuted.append(shuffled)
    return np.concatenate(parts), np.hstack(permuted), iterations
