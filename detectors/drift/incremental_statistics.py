"""Drift statistics from merged hour cells (:mod:`driftwarden.detectors.drift.incremental`), with error bounds.

Both windows arrive as cells in key order: per cell ``[a, a + w)`` of the relative-error grid,
the count ``c``, the sum of the offsets ``ticks`` (``u = (v - a) / w`` in ``2^-16`` units), of
their squares, and the smallest and largest value. The cells are aggregates of at most a few
thousand rows per feature, so the arithmetic below runs in numpy, in a fixed order (the same
cells always give the same numbers). With ``g = F_ref - F_cur`` the gap between the ECDFs, ``ga``
its value at a cell's start and ``gb`` after it — the same reasoning as the fixed-width cells of
:mod:`driftwarden.detectors.drift.cells`, with each cell's own width:

* **Wasserstein** ``∫|g|``: inside a cell ``∫ F_ref = w (sum(1 - u) / n_ref + before / n_ref)``, so
  ``∫ g`` over a cell is exact up to the ``2^-16`` rounding of ``u``; between cells ``g`` is
  constant (``gb`` times the gap to the next cell). ``∫|g| = |∫ g|`` over a cell where ``g`` keeps
  its sign; where it may cross zero (``g`` lies in ``[ga - p_cur, ga + p_ref]``, ``p`` the cell's
  shares) the error is at most ``2 w min(g_max, -g_min)``. Their sum plus ``max w 2^-16`` is the
  reported bound.
* **Kolmogorov–Smirnov** ``D = max |g|`` read at every cell boundary; a cell holding both windows'
  values may hide a larger gap, up to ``|ga| +`` its share: the bound reported.
* **Counts per value**: one cell per distinct value while distinct values are more than ``2^-8``
  apart relatively; cells holding more than one value are counted (``mixed_cells``).
* **Sturges' bins** (PSI and Jensen–Shannon on numeric features): the edges are exact (both windows'
  smallest and largest values are kept); a cell is counted in the bin of its smallest value, so a
  cell straddling an edge may put values one bin off: ``straddling`` is their share.
* **Moments** of the reference: ``v = a + w u`` per value, summed from the cells around their
  mean (no cancellation), exact up to the ``2^-16`` rounding.

A relative grid is fine where a feature's values spread over a range comparable to their
magnitude; for values far from zero relative to their spread (``1000 ± 1``) its cells are wide,
so a feature whose reference values lie in cells of mean spread above ``MAX_RELATIVE_SPREAD``
reference standard deviations is left to the per-window cells (:func:`coarse`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from driftwarden.detectors.drift.incremental import CELL_SHIFT, TICKS
from driftwarden.detectors.drift.profiles import Profile
from driftwarden.detectors.methods.wasserstein import STD_FLOOR
from driftwarden.lazy import numpy as np

MAX_RELATIVE_SPREAD = 0.02  # mean range of the values inside a reference cell, in reference standard deviations


@dataclass(frozen=True)
class Cells:
    """One window's cells of one numeric feature, in key order."""

    keys: np.ndarray
    counts: np.ndarray
    ticks: np.ndarray
    ticks2: np.ndarray
    los: np.ndarray
    his: np.ndarray

    @property
    def values(self) -> int:
        return int(self.counts.sum())

    def digest(self) -> str:
        data = b"".join(np.ascontiguousarray(a).tobytes() for a in (self.keys, self.counts, self.ticks, self.los))
        return hashlib.sha256(data).hexdigest()[:16]


def empty_cells() -> Cells:
    ints = np.zeros(0, dtype=np.int64)
    return Cells(ints, ints.astype(np.uint64), ints.astype(np.uint64), ints.astype(np.uint64), ints * 0.0, ints * 0.0)


def cell_bounds(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a, w)``: the start and width of each cell, from its key (the float's top bits, sign-folded)."""
    magnitude = np.where(keys >= 0, keys, -1 - keys).astype(np.uint64)
    low = (magnitude << np.uint64(CELL_SHIFT)).view(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        high = ((magnitude + np.uint64(1)) << np.uint64(CELL_SHIFT)).view(np.float64)
        width = high - low
    return np.where(keys >= 0, low, -high), width


def moments(cells: Cells) -> tuple[float, float]:
    """Mean and population standard deviation of the cells' values (``nan`` for none)."""
    n = cells.values
    if n == 0:
        return math.nan, math.nan
    start, width = cell_bounds(cells.keys)
    counts = cells.counts.astype(np.float64)
    offsets = (cells.ticks.astype(np.float64) + counts / 2) / TICKS  # sum of u per cell
    squares = (cells.ticks2.astype(np.float64) + counts / 2 + (cells.ticks + counts / 4) / TICKS) / TICKS
    mean = float(np.sum(counts * start + width * offsets)) / n
    centred = start - mean
    variance = float(np.sum(counts * centred**2 + 2 * centred * width * offsets + width**2 * squares)) / n
    return mean, math.sqrt(max(variance, 0.0))


def numeric_profile(name: str, key_prefix: str, rows: int, cells: Cells) -> Profile:
    """The reference profile of a numeric feature from its merged cells (``profile_hash`` over the cells)."""
    mean, std = moments(cells)
    present = cells.counts > 0
    digest = hashlib.sha256(f"{key_prefix}{name}/{rows}/{cells.digest()}".encode()).hexdigest()
    return Profile(
        feature=name,
        kind="numeric",
        rows=rows,
        missing=rows - cells.values,
        unique_values=len(cells.keys),
        mean=mean,
        std=std,
        min=float(cells.los[present].min()) if present.any() else math.nan,
        max=float(cells.his[present].max()) if present.any() else math.nan,
        categories=(),
        category_counts=(),
        profile_hash=digest,
    )


def categorical_profile(
    name: str, key_prefix: str, rows: int, categories: list[str], counts: list[int], max_categories: int
) -> Profile:
    """The reference profile of a categorical feature from its merged counts per category."""
    digest = hashlib.sha256(
        f"{key_prefix}{name}/{rows}/{list(zip(categories, counts, strict=True))}".encode()
    ).hexdigest()
    shown = len(categories) <= max_categories
    return Profile(
        feature=name,
        kind="categorical",
        rows=rows,
        missing=rows - int(sum(counts)),
        unique_values=len(categories),
        mean=math.nan,
        std=math.nan,
        min=math.nan,
        max=math.nan,
        categories=tuple(categories) if shown else (),
        category_counts=tuple(int(c) for c in counts) if shown else (),
        profile_hash=digest,
    )


def categorical_row(categories: list[str], counts: list[int], max_categories: int) -> dict:
    """The current window's counts per category in the shape of :func:`sql.compare_categorical`."""
    shown = len(categories) <= max_categories
    digest = hashlib.sha256(repr(list(zip(categories, counts, strict=True))).encode()).hexdigest()[:16]
    return {
        "distinct_values": len(categories),
        "categories": list(categories) if shown else [],
        "counts": [int(c) for c in counts] if shown else [],
        "present": int(sum(counts)),
        "current_digest": digest,
    }


def coarse(cells: Cells, std: float) -> bool:
    """Whether the relative grid is too coarse for this reference: its values lie in cells whose mean spread
    (largest minus smallest value) exceeds ``MAX_RELATIVE_SPREAD`` standard deviations."""
    n = cells.values
    if n == 0:
        return False
    spread = float(np.sum(cells.counts * (cells.his - cells.los))) / n
    return spread > MAX_RELATIVE_SPREAD * max(std if math.isfinite(std) else 0.0, STD_FLOOR)


def _merge(reference: Cells, current: Cells) -> dict[str, np.ndarray]:
    keys = np.union1d(reference.keys, current.keys)
    at_r = np.searchsorted(keys, reference.keys)
    at_c = np.searchsorted(keys, current.keys)

    def spread(values: np.ndarray, at: np.ndarray, fill: float, dtype=np.float64) -> np.ndarray:
        out = np.full(len(keys), fill, dtype=dtype)
        out[at] = values
        return out

    return {
        "k": keys,
        "cr": spread(reference.counts, at_r, 0.0),
        "tr": spread(reference.ticks, at_r, 0.0),
        "lo_r": spread(reference.los, at_r, math.inf),
        "hi_r": spread(reference.his, at_r, -math.inf),
        "cc": spread(current.counts, at_c, 0.0),
        "tc": spread(current.ticks, at_c, 0.0),
        "lo_c": spread(current.los, at_c, math.inf),
        "hi_c": spread(current.his, at_c, -math.inf),
    }


def compare(reference: Cells, current: Cells, profile: Profile, ends_limit: int, binned: bool) -> dict:
    """The comparison row of one numeric feature, in the shape ``compute._score_numeric`` reads from the cells
    path: KS and Wasserstein (value units) with their bounds, counts per value (``ends``) while the cells number
    at most ``ends_limit``, Sturges' bins when ``binned``."""
    m = _merge(reference, current)
    k, cr, cc, tr, tc = m["k"], m["cr"], m["cc"], m["tr"], m["tc"]
    nr, nc = float(cr.sum()), float(cc.sum())
    start, width = cell_bounds(k)
    br = np.cumsum(cr) - cr
    bc = np.cumsum(cc) - cc
    ga = br / nr - bc / nc
    gb = ga + cr / nr - cc / nc
    g_hi = ga + cr / nr
    g_lo = ga - cc / nc
    inner = width * ((cr - (tr + cr / 2) / TICKS + br) / nr - (cc - (tc + cc / 2) / TICKS + bc) / nc)
    gaps = np.append(start[1:] - (start[:-1] + width[:-1]), 0.0)
    both = (cr > 0) & (cc > 0)
    boundary = np.maximum(np.abs(ga), np.abs(gb))
    ks = float(boundary.max())
    hidden = np.where(both, np.maximum(np.abs(g_lo), np.abs(g_hi)), boundary)
    crossing = (g_hi > 0) & (g_lo < 0)
    occupied = width[(cr > 0) | (cc > 0)]
    with np.errstate(invalid="ignore"):
        bound = float(np.sum(np.where(crossing, 2 * width * np.minimum(g_hi, -g_lo), 0.0)))
    bound += float(occupied.max()) / TICKS
    present_r = np.nonzero(cr > 0)[0]
    k_min, k_max = k[present_r[0]], k[present_r[-1]]
    lo = np.minimum(m["lo_r"], m["lo_c"])
    mixed = (m["lo_r"] < m["hi_r"]) | (m["lo_c"] < m["hi_c"]) | (both & (m["lo_c"] != m["lo_r"]))
    infinite = int(np.count_nonzero(~np.isfinite(width)))
    row = {
        "nr": int(nr),
        "nc": int(nc),
        "current_digest": current.digest(),
        "reference_distinct": int(np.count_nonzero(cr > 0)),
        "distinct_values": len(k),
        "mixed_cells": int(np.count_nonzero(mixed)),
        "clamped_cells": infinite,
        "ks_statistic": ks,
        "ks_bound": math.inf if infinite else max(float(hidden.max()) - ks, 0.0),
        "wasserstein": float(np.sum(np.abs(inner)) + np.sum(np.abs(gb) * gaps)),
        "wasserstein_bound": math.inf if infinite else bound,
        "out_of_range": int(np.sum(np.where((k < k_min) | (k > k_max), cc, 0.0))),
        "ends": _ends(lo, cr, cc) if len(k) <= ends_limit else [],
        "computation": "hour cells",
        "cell_width": float(occupied.max()),
        "reference_min": profile.min,
        "reference_max": profile.max,
    }
    if binned:
        row.update(_sturges(m, lo, nr, nc))
    return row


def _ends(lo: np.ndarray, cr: np.ndarray, cc: np.ndarray) -> list[tuple[float, int, int]]:
    """Per cell its smallest value and both cumulative counts after it (what the exact path returns per value)."""
    cum_r = np.cumsum(cr).astype(np.int64).tolist()
    cum_c = np.cumsum(cc).astype(np.int64).tolist()
    return list(zip(lo.tolist(), cum_r, cum_c, strict=True))


def _sturges(m: dict[str, np.ndarray], lo: np.ndarray, nr: float, nc: float) -> dict:
    """Sturges' bins of :func:`sql.sturges_bins` over the merged cells, counting each cell in its smallest value's
    bin; ``straddling`` is the share of values in cells that reach into the next bin."""
    top = np.maximum(m["hi_r"], m["hi_c"])
    low, high = float(lo.min()), float(top.max())
    if not high > low:
        return {}
    bins = math.ceil((high - low) / ((high - low) / (math.log2(nr + nc) + 1.0)))
    edges = [i * ((high - low) / bins) + low for i in range(bins)] + [high]
    cuts = np.asarray(edges)
    at = np.clip(np.searchsorted(cuts, lo, side="right") - 1, 0, bins - 1)
    at_top = np.clip(np.searchsorted(cuts, top, side="right") - 1, 0, bins - 1)
    return {
        "edges": edges,
        "bin_reference": np.bincount(at, weights=m["cr"], minlength=bins).astype(np.int64).tolist(),
        "bin_current": np.bincount(at, weights=m["cc"], minlength=bins).astype(np.int64).tolist(),
        "straddling": float(np.sum(np.where(at != at_top, m["cr"] / nr + m["cc"] / nc, 0.0)) / 2),
    }
