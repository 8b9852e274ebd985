"""A drift run's profiles and comparisons read from the hour profiles of both windows.

:func:`compare_from_hours` is what :func:`driftwarden.detectors.drift.compute.compute_drift` calls for
long windows (``DriftSettings.hour_profiles_min_rows``): each window's complete hours come from
``drift_hour_profiles`` (the few missing or stale ones profiled first,
:mod:`driftwarden.detectors.drift.incremental`), its partial edge hours are read raw, the cells and
counts of both are merged in ClickHouse per feature, and the statistics are read off them
(:mod:`driftwarden.detectors.drift.incremental_statistics`). Features for which the relative grid is
too coarse are returned as not handled, for the per-window cells path; windows whose hours were not
kept as data arrived (``MAX_UNPROFILED_SHARE``) are left to the per-window paths altogether.
:func:`discover` finds a reference window's features in its hours' name lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.drift import incremental
from driftwarden.detectors.drift import incremental_statistics as statistics
from driftwarden.detectors.drift.profiles import Profile, prefix
from driftwarden.detectors.drift.settings import DriftSettings
from driftwarden.detectors.drift.sql import Source
from driftwarden.detectors.window import Window
from driftwarden.lazy import numpy as np

# A run profiles the complete hours it finds unprofiled (or changed) itself while they are at most this share of its
# windows' complete hours (late rows, the hour just completed); above, the windows were not kept as data arrived (a
# first run on a store the scheduler never profiled), and profiling every hour costs about 1.5 times the per-window
# path: the run takes that path, and the hours are left to the scheduler (:func:`incremental.refresh`).
MAX_UNPROFILED_SHARE = 0.25

# Up to this many numeric features: a wide model's hours would hold each feature's cells per hour (500 features x
# thousands of cells an hour), a poor trade against one scan; wide models keep the per-window paths.
MAX_NUMERIC_FEATURES = 200


@dataclass
class HourComparison:
    """Per kind, the profiles and comparison rows of the features read from hours (those not listed are not)."""

    profiles: dict[str, dict[str, Profile]] = field(default_factory=lambda: {"numeric": {}, "categorical": {}})
    rows: dict[str, dict[str, dict]] = field(default_factory=lambda: {"numeric": {}, "categorical": {}})
    hours_built: int = 0


def applies(numeric: int, reference_rows: int, settings: DriftSettings) -> bool:
    """Whether a run reads its windows from the hour profiles."""
    return (
        reference_rows >= settings.hour_profiles_min_rows
        and reference_rows > settings.exact_max_values
        and numeric <= MAX_NUMERIC_FEATURES
    )


def discover(
    client: Client, source: Source, reference: Window, reference_rows: int, settings: DriftSettings
) -> tuple[list[str], list[str], int, int] | None:
    """The reference window's features as :func:`sql.discover` finds them, from the name lists of its hour profiles
    when the window is long (:func:`applies`) and every complete hour is profiled at its current stamp (as the
    scheduler keeps them); None otherwise (a scan of the window's names finds them then)."""
    if not applies(0, reference_rows, settings):
        return None
    hours = incremental.window_hours(client, source.model, reference, build=False)
    if hours.hours_raw or not hours.stamps:  # a complete hour not profiled, or changed since: scan the names
        return None
    query = incremental.discover(source, hours)
    listed, numeric, categorical, predictions, labels = client.query(
        query, parameters=incremental.read_parameters(source, hours, "", [])
    ).result_rows[0]
    if listed != len(hours.stamps):
        return None
    return list(numeric), list(categorical), int(predictions), int(labels)


def compare_from_hours(
    client: Client,
    source: Source,
    reference: Window,
    current: Window,
    target: str,
    numeric: list[str],
    numeric_ends_limits: dict[str, int],
    binned: set[str],
    categorical: list[str],
    settings: DriftSettings,
    reference_rows: int,
) -> HourComparison | None:
    """The profiles and comparison rows of ``numeric`` and ``categorical`` (those the relative grid suits) between
    the two windows; ``reference_rows`` is the reference window's event count (its profiles' ``rows``). None when
    more than ``MAX_UNPROFILED_SHARE`` of the windows' complete hours are not profiled at their current stamp."""
    out = HourComparison()
    ref_hours = incremental.window_hours(client, source.model, reference, build=False)
    cur_hours = incremental.window_hours(client, source.model, current, build=False)
    unprofiled = ref_hours.hours_raw + cur_hours.hours_raw
    if unprofiled > MAX_UNPROFILED_SHARE * (unprofiled + len(ref_hours.stamps) + len(cur_hours.stamps)):
        return None
    if ref_hours.hours_raw:
        ref_hours = incremental.window_hours(client, source.model, reference)
    if cur_hours.hours_raw:
        cur_hours = incremental.window_hours(client, source.model, current)
    out.hours_built = ref_hours.hours_built + cur_hours.hours_built
    if numeric:
        key_prefix = prefix(target, "numeric")
        ref_cells = _numeric_cells(client, source, target, ref_hours, key_prefix, numeric)
        cur_cells = _numeric_cells(client, source, target, cur_hours, key_prefix, numeric)
        for name in numeric:
            cells_r = ref_cells.get(name, statistics.empty_cells())
            profile = statistics.numeric_profile(name, key_prefix, reference_rows, cells_r)
            if statistics.coarse(cells_r, profile.std):
                continue
            out.profiles["numeric"][name] = profile
            cells_c = cur_cells.get(name)
            if cells_r.values and cells_c is not None and cells_c.values:
                row = statistics.compare(cells_r, cells_c, profile, numeric_ends_limits[name], name in binned)
                out.rows["numeric"][name] = row
    if categorical:
        key_prefix = prefix(target, "categorical")
        ref_counts = _categorical_counts(client, source, target, ref_hours, key_prefix, categorical)
        cur_counts = _categorical_counts(client, source, target, cur_hours, key_prefix, categorical)
        for name in categorical:
            categories, counts = ref_counts.get(name, ([], []))
            out.profiles["categorical"][name] = statistics.categorical_profile(
                name, key_prefix, reference_rows, categories, counts, settings.max_categories
            )
            out.rows["categorical"][name] = statistics.categorical_row(
                *cur_counts.get(name, ([], [])), settings.max_categories
            )
    return out


def _numeric_cells(
    client: Client, source: Source, target: str, hours: incremental.WindowHours, key_prefix: str, names: list[str]
) -> dict[str, statistics.Cells]:
    table = client.query_arrow(
        incremental.numeric_cells(source, target, hours),
        parameters=incremental.read_parameters(source, hours, key_prefix, names),
    )
    found = [names[f - 1] for f in table.column("f").to_pylist()]
    columns = {}
    for column, dtype in (
        ("keys", np.int64),
        ("counts", np.uint64),
        ("ticks", np.uint64),
        ("ticks2", np.uint64),
        ("los", np.float64),
        ("his", np.float64),
    ):
        lists = table.column(column).combine_chunks()
        offsets = lists.offsets.to_numpy()
        flat = lists.flatten().to_numpy().astype(dtype, copy=False)
        columns[column] = [flat[offsets[i] : offsets[i + 1]] for i in range(len(found))]
    return {
        name: statistics.Cells(*(columns[c][i] for c in ("keys", "counts", "ticks", "ticks2", "los", "his")))
        for i, name in enumerate(found)
    }


def _categorical_counts(
    client: Client, source: Source, target: str, hours: incremental.WindowHours, key_prefix: str, names: list[str]
) -> dict[str, tuple[list[str], list[int]]]:
    result = client.query(
        incremental.categorical_counts(source, target, hours),
        parameters=incremental.read_parameters(source, hours, key_prefix, names),
    )
    return {name: (list(categories), [int(c) for c in counts]) for name, categories, counts in result.result_rows}
