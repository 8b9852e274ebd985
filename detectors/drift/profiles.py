"""Reference profiles: the statistics of a reference window, computed once in ClickHouse and reused.

A profile is keyed by (model, model version or '', feature, reference window). It
holds the reference's exact distribution — distinct values and counts of a numeric
feature (``support_values``/``support_counts``), counts per category of a
categorical one — plus rows, missing rows, moments and a ``profile_hash`` computed
in SQL over all of it. Every later drift run against that reference merges its
current window with the stored profile instead of scanning the reference again.
A profile whose row count no longer matches its window (late data arrived) is
rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from detectors.drift import sql
from detectors.window import Window, micros


@dataclass(frozen=True)
class Profile:
    feature: str
    kind: str
    rows: int
    missing: int
    unique_values: int
    std: float
    min: float
    max: float
    categories: tuple[str, ...]
    category_counts: tuple[int, ...]
    profile_hash: str

    @property
    def values(self) -> int:
        """Rows that hold a value of the feature."""
        return self.rows - self.missing


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
    max_values: int,
) -> dict[str, Profile]:
    """The profiles of ``names``, built in ClickHouse for those missing or stale."""
    key_prefix = prefix(target, kind)
    profiles = _read(client, source, reference, key_prefix, names, max_values)
    stale = [n for n in names if n not in profiles or profiles[n].rows != reference_rows]
    if stale:
        build = sql.build_numeric_profiles if kind == "numeric" else sql.build_categorical_profiles
        for batch in batches(stale, reference_rows) if kind == "numeric" else [stale]:
            client.command(
                build(source, reference, target, key_prefix),
                parameters={
                    **source.parameters(),
                    **window_parameters(reference),
                    "names": batch,
                    "rows": reference_rows,
                    "prefix": key_prefix,
                    "profile_version": source.model_version or "",
                },
            )
        profiles = _read(client, source, reference, key_prefix, names, max_values)
    return profiles


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
    for feature, kind, n, missing, unique, std, lo, hi, categories, counts, digest in rows:
        name = feature[len(key_prefix) :]
        out[name] = Profile(
            name, kind, int(n), int(missing), int(unique), std, lo, hi, tuple(categories), tuple(counts), digest
        )
    return out
