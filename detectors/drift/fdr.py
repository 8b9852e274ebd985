"""Benjamini–Hochberg adjustment of the p-values of one drift run."""

from __future__ import annotations

from collections.abc import Sequence


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values, in the input order.

    ``p_adj(i) = min_{j >= i} p_(j) m / j`` over the p-values sorted ascending, capped at 1.
    Calling drift when ``p_adj < alpha`` keeps the expected share of false alarms among
    the features called drifted at most ``alpha`` (for independent or positively dependent tests).

    >>> [round(p, 3) for p in benjamini_hochberg([0.01, 0.04, 0.03, 0.2])]
    [0.04, 0.053, 0.053, 0.2]

    Reference: Benjamini, Y., Hochberg, Y. (1995), "Controlling the false discovery rate",
    J. R. Statist. Soc. B 57(1).
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        adjusted[i] = running
    return adjusted
