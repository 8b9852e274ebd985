"""Reference profiles: the statistics of a reference window, computed once in ClickHouse and reused.

A profile is keyed by (model, model version or '', feature, reference window). It
holds the reference's exact distribution — distinct values and counts of a numeric
feature (``support_values``/``support_counts``), counts per category of a
categorical one — plus rows, missing rows, moments and a ``profile_hash`` computed
in SQL over all of it. Every later drift run against that reference merges its
current window with the stored profile instead of scanning the reference again.
A profile whose row count no longer matches its window (late data arrived) is
rebuilt.

A numeric reference window of more than ``DriftSettings.exact_max_values`` rows is
profiled on cells instead (:mod:`driftwarden.detectors.drift.cells`): counts and offset sums per
cell of a fine grid, whatever the number of distinct values.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.drift import cells, sql
from driftwarden.detectors.drift.settings import DriftSettings
from driftwarden.detectors.window import Window, micros


@dataclass(frozen=True)
class Profile:
    feature: str
    kind: str
    rows: int
    missing: int
    unique_values: int
    mean: float
    std: float
    min: float
    max: float
    categories: tuple[str, ...]
    category_counts: tuple[int, ...]
    profile_hash: str
    cell_resolution: float = 0.0
    cell_origin: float = 0.0
    cell_width: float = 0.0

    @property
    def values(self) -> int:
        """Rows that hold a value of the feature."""
        return self.rows - self.missing

    @property
    def on_cells(self) -> bool:
        """A numeric profile kept as cells (large reference) rather than the exact sorted support."""
        return self.cell_width > 0

    def grid(self, resolution: float) -> tuple[float, float]:
        """``(origin, width)`` of the cells the current window is counted in against this profile."""
        if self.on_cells:
            return self.cell_origin, self.cell_width
        return cells.grid(self.mean, self.std, resolution)


def prefix(target: str, kind: str) -> str:
    """The profile key prefix of a feature: ``feature/numeric/temp``, ``prediction/categorical/prediction_label``.

    The kind is part of the key because the table's sort key has no feature type: a numeric
    and a categorical feature of one name would otherwise replace each other.
    """
    return f"{target}/{kind}/"


# Numeric features are sorted as whole arrays inside one query; this bounds the values a query
# holds at once (about 16 bytes each while sorting), so that wide models over long windows run in
# several queries instead of exhausting memory. Results do not depend on it.
MAX_VALUES_PER_QUERY = 60_000_000


def batches(names: list[str], rows_per_feature: int) -> list[list[str]]:
    """``names`` split so that each batch holds at most MAX_VALUES_PER_QUERY values (one feature at least)."""
    size = max(1, MAX_VALUES_PER_QUERY // max(1, rows_per_feature))
    return [names[i : i + size] for i in range(0, len(names), size)]


def window_parameters(reference: Window) -> dict:
    return {"reference_start": micros(reference.start), "reference_end": micros(reference.end)}


def ensure_profiles(
    client: Client,
    source: sql.Source,
    reference: Window,
    target: str,
    kind: str,
    names: list[str],
    reference_rows: int,
    settings: DriftSettings,
    wide: bool = False,
) -> dict[str, Profile]:
    """The profiles of ``names``, built in ClickHouse for those missing or stale.

    A profile is stale when late rows changed its window's row count, or when it is not of
    the form the settings ask for (exact support up to ``exact_max_values`` reference rows,
    cells of ``cell_resolution`` above, and for every feature of a ``wide`` run).
    """
    key_prefix = prefix(target, kind)
    profiles = _read(client, source, reference, key_prefix, names, settings.max_categories)
    on_cells = kind == "numeric" and (wide or reference_rows > settings.exact_max_values)

    def fresh(p: Profile | None) -> bool:
        if p is None or p.rows != reference_rows or (kind == "numeric" and p.on_cells != on_cells):
            return False
        return not on_cells or p.cell_resolution == settings.cell_resolution

    stale = [n for n in names if not fresh(profiles.get(n))]
    if stale:
        parameters = {
            **source.parameters(),
            **window_parameters(reference),
            "rows": reference_rows,
            "prefix": key_prefix,
            "profile_version": source.model_version or "",
        }
        if on_cells:
            _build_cells(client, source, reference, target, stale, settings.cell_resolution, parameters)
        else:
            build = sql.build_numeric_profiles if kind == "numeric" else sql.build_categorical_profiles
            for batch in batches(stale, reference_rows) if kind == "numeric" else [stale]:
                client.command(build(source, reference, target, key_prefix), parameters={**parameters, "names": batch})
        profiles = _read(client, source, reference, key_prefix, names, settings.max_categories)
    return profiles


def _build_cells(
    client: Client,
    source: sql.Source,
    reference: Window,
    target: str,
    names: list[str],
    resolution: float,
    parameters: dict,
) -> None:
    """Fix each feature's cell grid from the window's first events (from all of them for a feature those do
    not hold), then profile the window on it: in one scan, or one per batch of features
    (:func:`cells.feature_batches`)."""
    moments: dict[str, tuple[float, float]] = {}
    for whole in (False, True):
        missing = [n for n in names if n not in moments]
        if missing:
            query = cells.sample_moments(source, reference, target, whole, cells.sample_events(len(names)))
            rows = client.query(query, parameters={**source.parameters(), "names": missing}).result_rows
            moments.update({name: (mean, std) for name, mean, std in rows})
    grids = {n: cells.grid(*moments.get(n, (0.0, 0.0)), resolution) for n in names}
    for batch, per_feature in cells.feature_batches(names, int(parameters["rows"])):
        client.command(
            cells.build_profiles(source, reference, target, per_feature),
            parameters={
                **parameters,
                "names": batch,
                "origins": [grids[n][0] for n in batch],
                "scales": [cells.TICKS / grids[n][1] for n in batch],
                "resolution": resolution,
            },
        )


def _read(
    client: Client, source: sql.Source, reference: Window, key_prefix: str, names: list[str], max_values: int
) -> dict[str, Profile]:
    rows = client.query(
        sql.read_profiles(),
        parameters={
            "model": source.model,
            "profile_version": source.model_version or "",
            **window_parameters(reference),
            "keys": [key_prefix + n for n in names],
            "max_values": max_values,
        },
    ).result_rows
    out = {}
    for feature, kind, n, missing, unique, mean, std, lo, hi, categories, counts, digest, *grid in rows:
        name = feature[len(key_prefix) :]
        out[name] = Profile(
            name,
            kind,
            int(n),
            int(missing),
            int(unique),
            mean,
            std,
            lo,
            hi,
            tuple(categories),
            tuple(counts),
            digest,
            *grid,
        )
    return out
