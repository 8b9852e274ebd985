"""The ``auto`` method choice, as Evidently's ``get_default_stattest`` makes it.

Read from ``evidently/legacy/calculations/stattests/registry.py`` (0.7.23),
``_get_default_stattest``, which the 0.7 ``DataDriftPreset`` calls per column:

* reference of at most 1000 rows (after dropping missing values):
  numeric with more than 5 distinct values -> ``ks``;
  numeric with 3-5, or categorical with more than 2 -> ``chisquare``;
  numeric or categorical with at most 2 -> ``ztest``;
* reference above 1000 rows:
  numeric with more than 5 distinct values -> ``wasserstein``; anything else -> ``jensenshannon``.

Distinct values are counted over the reference and current windows together.
Evidently's source differs from its documentation in one place: the binary
Z-test also applies to numeric features with at most 2 values; we follow the source.
"""

from __future__ import annotations

# Above this many distinct values a numeric feature gets a distance (or KS); at or below, a method on counts.
COUNTS_MAX_DISTINCT = 5


def auto_method(kind: str, reference_rows: int, distinct_values: int, small_reference_rows: int = 1000) -> str:
    """The method Evidently would pick for a feature of ``kind`` with these counts."""
    if reference_rows <= small_reference_rows:
        if kind == "numeric" and distinct_values > COUNTS_MAX_DISTINCT:
            return "ks"
        return "chisquare" if distinct_values > 2 else "ztest"
    if kind == "numeric" and distinct_values > COUNTS_MAX_DISTINCT:
        return "wasserstein"
    return "jensenshannon"
