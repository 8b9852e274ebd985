"""``compute_drift``: one drift run between a reference and a current window, computed in ClickHouse.

Order of work: check the windows hold events of the model; find the features;
make sure the reference profiles exist (built by ``INSERT ... SELECT`` once, then
reused); one query per feature kind merges the current window with the stored
profiles and returns aggregates (ECDF statistics, counts per value, bins, ranges);
the methods score those aggregates; the false-positive controls of
:class:`DriftSettings` apply last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from clickhouse_connect.driver.client import Client

from driftwarden.detectors import provenance
from driftwarden.detectors.drift import cells, incremental_compare, sql
from driftwarden.detectors.drift import embedding as embedding_drift
from driftwarden.detectors.drift import text as text_drift
from driftwarden.detectors.drift.controls import control_false_positives, mark_persistence
from driftwarden.detectors.drift.profiles import Profile, batches, ensure_profiles, prefix, window_parameters
from driftwarden.detectors.drift.report import DriftReport, FeatureDrift
from driftwarden.detectors.drift.selection import COUNTS_MAX_DISTINCT, auto_method
from driftwarden.detectors.drift.settings import DriftSettings, FeatureSpec
from driftwarden.detectors.methods import METHODS, Counts, Score, Support, get_method
from driftwarden.detectors.methods.wasserstein import STD_FLOOR
from driftwarden.detectors.window import Window
from driftwarden.errors import UserError

TARGETS = ("feature", "prediction")


def compute_drift(
    client: Client,
    model: str,
    reference: Window,
    current: Window,
    features: Sequence[FeatureSpec] | None = None,
    settings: DriftSettings | None = None,
    model_version: str | None = None,
    target: str = "feature",
) -> DriftReport:
    """Drift of each feature (``target="feature"``) or model output (``"prediction"``) between two windows.

    ``features=None`` analyses every feature seen in the reference window (for predictions:
    ``prediction`` as numeric and ``prediction_label`` as categorical, when present).
    Raises :class:`UserError` for an unknown model or a window without events.
    """
    settings = settings or DriftSettings()
    if target not in TARGETS:
        raise UserError(f"drift target {target!r} is not one of {', '.join(TARGETS)}")
    source = sql.Source(model, model_version)
    _check_model(client, model)
    reference_rows = _rows(client, source, reference, "reference")
    current_rows = _rows(client, source, current, "current")
    specs = (
        list(features)
        if features is not None
        else _discover(client, source, reference, reference_rows, target, settings)
    )
    if features is None and target == "feature":
        specs += _discover_text_and_embeddings(client, source, reference)
    if not specs:
        raise UserError(f"the reference window {reference} of model {model!r} has no {target} values to compare")
    _check_specs(specs, target)

    results: dict[str, FeatureDrift] = {}
    profile_hashes: dict[str, str] = {}
    digests: dict[str, str] = {}
    hours = _from_hours(client, source, reference, current, target, specs, settings, reference_rows)
    for kind in ("numeric", "categorical"):
        kind_specs = [s for s in specs if s.kind == kind]
        if not kind_specs:
            continue
        names = [s.name for s in kind_specs]
        wide = kind == "numeric" and _wide(len(names), reference_rows + current_rows, settings)
        # features read from the hour profiles; the others (all, for short windows) on the per-window paths
        profiles = dict(hours.profiles[kind]) if hours else {}
        rows = dict(hours.rows[kind]) if hours else {}
        rest = [s for s in kind_specs if s.name not in profiles]
        if rest:
            rest_names = [s.name for s in rest]
            profiles.update(
                ensure_profiles(client, source, reference, target, kind, rest_names, reference_rows, settings, wide)
            )
            if kind == "numeric":
                rows.update(
                    _compare_numeric(
                        client, source, reference, current, target, rest, settings, profiles, current_rows, wide
                    )
                )
            else:
                rows.update(_compare_categorical(client, source, current, target, rest_names, settings))
        for name, profile in profiles.items():
            profile_hashes[prefix(target, kind) + name] = profile.profile_hash
        for spec in kind_specs:
            row = rows.get(spec.name)
            if row is not None:
                digests[prefix(target, kind) + spec.name] = row["current_digest"]
            results[spec.name] = _score(spec, profiles.get(spec.name), row, settings, current_rows)

    descriptors: list[FeatureDrift] = []  # text descriptors: reported beside their text feature
    for kind, module in (("text", text_drift), ("embedding", embedding_drift)):
        kind_specs = [s for s in specs if s.kind == kind]
        if kind_specs:
            for name, found in module.compare(client, source, reference, current, kind_specs, settings).items():
                results[name] = found[0]
                descriptors.extend(found[1:])

    ordered = [results[s.name] for s in specs] + descriptors
    control_false_positives(ordered, settings)
    mark_persistence(client, ordered, model, model_version, target, current, settings)

    analysed = [f for f in ordered if f.verdict != "no verdict" and f.feature_type != text_drift.DESCRIPTOR_TYPE]
    share = sum(f.drifted for f in analysed) / len(analysed) if analysed else 0.0
    inputs = {
        "model": model,
        "model_version": model_version or "",
        "target": target,
        "reference": {"start": reference.start, "end": reference.end, "rows": reference_rows},
        "current": {"start": current.start, "end": current.end, "rows": current_rows},
        "features": [[s.name, s.kind, s.method, s.threshold] for s in specs],
        "settings": settings.as_dict(),
        "profiles": profile_hashes,
        "current_aggregates": digests,
    }
    return DriftReport(
        model=model,
        model_version=model_version,
        target=target,
        reference=reference,
        current=current,
        features=ordered,
        dataset_drift_share=share,
        dataset_drifted=bool(analysed) and share >= settings.drift_share,
        drift_share_threshold=settings.drift_share,
        input_hash=provenance.content_hash(inputs),
        settings=settings.as_dict(),
        reference_rows=reference_rows,
        current_rows=current_rows,
        code_version=provenance.code_version(),
        schema_version=provenance.schema_version(),
        profile_hashes=profile_hashes,
    )


def _check_schema(client: Client) -> None:
    """A store without the tables (or without migrations 0004 and 0005) gets a message saying to migrate it."""
    present = client.query(
        "SELECT count() FROM system.columns WHERE database = currentDatabase() "
        "AND (table, name) IN (('inferences', 'num_values'), ('reference_profiles', 'support_values'), "
        "('reference_profiles', 'cell_keys'), ('drift_results', 'input_hash'))"
    ).result_rows[0][0]
    if present != 4:
        raise UserError(
            "this store's schema is missing or older than this driftwarden (no reference_profiles.cell_keys); "
            "run `driftwarden migrate` with the same --store first"
        )


def _check_model(client: Client, model: str) -> None:
    _check_schema(client)
    found = client.query(
        "SELECT count() FROM (SELECT 1 FROM inferences WHERE model = {model:String} LIMIT 1)",
        parameters={"model": model},
    ).result_rows[0][0]
    if not found:
        query = "SELECT DISTINCT model FROM inferences ORDER BY model LIMIT 20"
        known = [r[0] for r in client.query(query).result_rows]
        hint = f"models in this store: {', '.join(known)}" if known else "the store has no inferences yet"
        raise UserError(f"unknown model {model!r}: no inferences recorded for it ({hint})")


def _rows(client: Client, source: sql.Source, window: Window, name: str) -> int:
    rows = int(client.query(sql.window_rows(source, window), parameters=source.parameters()).result_rows[0][0])
    if rows == 0:
        version = f" version {source.model_version!r}" if source.model_version is not None else ""
        raise UserError(
            f"the {name} window {window} has no inferences of model {source.model!r}{version}; "
            "choose a window that holds traffic"
        )
    return rows


def _discover(
    client: Client, source: sql.Source, reference: Window, reference_rows: int, target: str, settings: DriftSettings
) -> list[FeatureSpec]:
    """Every feature (or output) seen in the reference window; found once per window and row count, then
    remembered beside its profiles (finding them reads every event's names)."""
    parameters = {
        **source.parameters(),
        **window_parameters(reference),
        "profile_version": source.model_version or "",
        "key": f"{target}/discovered",
        "rows": reference_rows,
    }
    remembered = client.query(sql.remembered_features(), parameters=parameters).result_rows
    if remembered:
        found = [tuple(item.split("/", 1)) for item in remembered[0][0]]
        return [FeatureSpec(name, kind) for kind, name in found]
    # from the hour profiles' name lists when they cover the window (incremental_compare.discover), else a scan
    found = incremental_compare.discover(client, source, reference, reference_rows, settings)
    numeric, categorical, predictions, labels = (
        found or client.query(sql.discover(source, reference), parameters=source.parameters()).result_rows[0]
    )
    if target == "prediction":
        specs = [FeatureSpec("prediction", "numeric")] if predictions else []
        specs += [FeatureSpec("prediction_label", "categorical")] if labels else []
    else:
        specs = [FeatureSpec(n, "numeric") for n in numeric] + [FeatureSpec(n, "categorical") for n in categorical]
    if specs:
        client.command(
            sql.remember_features(), parameters={**parameters, "features": [f"{s.kind}/{s.name}" for s in specs]}
        )
    return specs


def _discover_text_and_embeddings(client: Client, source: sql.Source, reference: Window) -> list[FeatureSpec]:
    """The text and embedding features of the reference window (none on a store without migration 0007)."""
    if not embedding_drift.has_columns(client):
        return []
    return [FeatureSpec(n, "text") for n in text_drift.discover(client, source, reference)] + [
        FeatureSpec(n, "embedding") for n in embedding_drift.discover(client, source, reference)
    ]


def _check_specs(specs: list[FeatureSpec], target: str) -> None:
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise UserError(f"feature {spec.name!r} is listed twice")
        seen.add(spec.name)
        if target == "prediction" and (spec.name, spec.kind) not in {
            ("prediction", "numeric"),
            ("prediction_label", "categorical"),
        }:
            raise UserError(
                f"prediction drift reads 'prediction' (numeric) and 'prediction_label' (categorical), "
                f"not {spec.name!r} ({spec.kind})"
            )


def _compare_numeric(
    client: Client,
    source: sql.Source,
    reference: Window,
    current: Window,
    target: str,
    specs: list[FeatureSpec],
    settings: DriftSettings,
    profiles: dict[str, Profile],
    current_rows: int,
    wide: bool,
) -> dict[str, dict]:
    """The comparison aggregates per feature: exactly over the sorted support while both windows hold at
    most ``exact_max_values`` values together (and the run is not ``wide``, :func:`_wide`), over cells
    (:mod:`driftwarden.detectors.drift.cells`) above; plus
    Sturges' bins for PSI and Jensen–Shannon on features with more than 20 reference values."""
    key_prefix = prefix(target, "numeric")

    def parameters(names: list[str]) -> dict:
        return {
            **source.parameters(),
            **window_parameters(reference),
            "names": names,
            "keys": [key_prefix + n for n in names],
            "prefix_length": len(key_prefix),
            "profile_version": source.model_version or "",
            "max_values": settings.max_categories,
            "ends_limits": [ends_limits[n] for n in names],
        }

    def add_bins(rows: dict[str, dict], query: str, names: list[str], extra: dict | None = None) -> None:
        wanted = [n for n in names if n in binned and n in rows and int(rows[n]["reference_distinct"]) > 20]
        if wanted:
            params = {**parameters(wanted), **(extra(wanted) if extra else {})}
            for row in client.query(query, parameters=params).named_results():
                rows[row["name"]].update(row)

    binned = {s.name for s in specs if s.method in ("psi", "jensenshannon")}
    ends_limits = {s.name: _ends_limit(s, settings) for s in specs}
    names = [s.name for s in specs if s.name in profiles]
    on_cells = [
        n
        for n in names
        if wide or profiles[n].on_cells or profiles[n].values + current_rows > settings.exact_max_values
    ]
    exact = [n for n in names if n not in on_cells]
    rows: dict[str, dict] = {}
    if exact:
        for batch in batches(exact, max(profiles[n].values for n in exact) + current_rows):
            result = client.query(sql.compare_numeric(source, current, target), parameters=parameters(batch))
            rows.update({row["name"]: {**row, "computation": "exact"} for row in result.named_results()})
        add_bins(rows, sql.sturges_bins(source, current, target), exact)
    if on_cells:
        grids = {n: profiles[n].grid(settings.cell_resolution) for n in on_cells}

        def grid_parameters(names: list[str]) -> dict:
            return {
                "origins": [grids[n][0] for n in names],
                "scales": [cells.TICKS / grids[n][1] for n in names],
            }

        for batch, per_feature in cells.feature_batches(on_cells, current_rows):
            query = cells.compare(source, current, target, per_feature)
            for row in client.query(query, parameters={**parameters(batch), **grid_parameters(batch)}).named_results():
                rows[row["name"]] = _cell_row(row, profiles[row["name"]], grids[row["name"]][1])
            add_bins(rows, cells.sturges(source, current, target, per_feature), batch, grid_parameters)
    return rows


def _from_hours(
    client: Client,
    source: sql.Source,
    reference: Window,
    current: Window,
    target: str,
    specs: list[FeatureSpec],
    settings: DriftSettings,
    reference_rows: int,
) -> incremental_compare.HourComparison | None:
    """The numeric and categorical features compared from the windows' hour profiles, when the windows are long
    (:func:`incremental_compare.applies`) and their hours were profiled as data arrived; None otherwise."""
    numeric = [s for s in specs if s.kind == "numeric"]
    categorical = [s.name for s in specs if s.kind == "categorical"]
    if not (numeric or categorical) or not incremental_compare.applies(len(numeric), reference_rows, settings):
        return None
    return incremental_compare.compare_from_hours(
        client,
        source,
        reference,
        current,
        target,
        [s.name for s in numeric],
        {s.name: _ends_limit(s, settings) for s in numeric},
        {s.name for s in numeric if s.method in ("psi", "jensenshannon")},
        categorical,
        settings,
        reference_rows,
    )


def _wide(features: int, rows: int, settings: DriftSettings) -> bool:
    """Whether ``features`` numeric features over ``rows`` events of both windows may hold more values than
    ``exact_max_run_values``: the exact path sorts and stores every one of them, so a wide model goes on cells
    however few rows each feature has."""
    return features * rows > settings.exact_max_run_values


def _ends_limit(spec: FeatureSpec, settings: DriftSettings) -> int:
    """Up to how many distinct values (or cells) a numeric comparison returns its counts per value: the methods
    that read counts need them up to ``max_categories``, ``auto`` picks one of those only up to 5 values, and
    the others never read them (500 features x 10,000 counts each were most of a wide run's transfer)."""
    if spec.method == "auto":
        return COUNTS_MAX_DISTINCT
    return settings.max_categories if METHODS[spec.method].needs == "counts" else 0


def _cell_row(row: dict, profile: Profile, width: float) -> dict:
    """A cells comparison in the units of the exact one, with its error bounds (infinite when values were
    clamped into the outermost cells)."""
    clamped = int(row["clamped_cells"]) > 0
    bound = (float(row["wasserstein_bound_cells"]) + 1 / cells.TICKS) * width
    return {
        **row,
        "computation": "cells",
        "cell_width": width,
        "wasserstein": float(row["wasserstein_cells"]) * width,
        "wasserstein_bound": math.inf if clamped else bound,
        "ks_bound": math.inf if clamped else float(row["ks_bound"]),
        "reference_min": profile.min,
        "reference_max": profile.max,
    }


def _compare_categorical(
    client: Client, source: sql.Source, current: Window, target: str, names: list[str], settings: DriftSettings
) -> dict[str, dict]:
    result = client.query(
        sql.compare_categorical(source, current, target),
        parameters={**source.parameters(), "names": names, "max_values": settings.max_categories},
    )
    return {row["name"]: row for row in result.named_results()}


def _score(
    spec: FeatureSpec, profile: Profile | None, row: dict | None, settings: DriftSettings, window_rows: int
) -> FeatureDrift:
    """Pick the method, build its aggregate, score it; a feature without data gets no verdict."""
    if spec.kind == "numeric":
        return _score_numeric(spec, profile, row, settings, window_rows)
    return _score_categorical(spec, profile, row, settings, window_rows)


def _empty(
    spec: FeatureSpec, method: str, note: str, nr: int, nc: int, missing_share: float, settings: DriftSettings
) -> FeatureDrift:
    return FeatureDrift(
        feature=spec.name,
        feature_type=spec.kind,
        method=method,
        statistic=math.nan,
        p_value=None,
        threshold=_threshold(spec, method, settings),
        drifted=False,
        persistent=False,
        missing_share=missing_share,
        out_of_range_share=0.0,
        new_categories=[],
        reference_rows=nr,
        current_rows=nc,
        verdict="no verdict",
        note=note,
    )


def _threshold(spec: FeatureSpec, method: str, settings: DriftSettings) -> float:
    if spec.threshold is not None:
        return spec.threshold
    return settings.thresholds.get(method, METHODS[method].default_threshold)


def _sample_note(nr: int, nc: int, settings: DriftSettings) -> str:
    if nr < settings.min_rows or nc < settings.min_rows:
        return (
            f"no verdict: {nr} reference and {nc} current values, below the minimum of {settings.min_rows} "
            "values per window"
        )
    return ""


def _score_numeric(
    spec: FeatureSpec, profile: Profile | None, row: dict | None, settings: DriftSettings, window_rows: int
) -> FeatureDrift:
    nr = profile.values if profile else 0
    nc = int(row["nc"]) if row else 0
    missing_share = (window_rows - nc) / window_rows if window_rows else 0.0
    distinct = int(row["distinct_values"]) if row else 0
    method = spec.method
    if method == "auto":
        method = auto_method("numeric", nr, distinct, settings.small_reference_rows)
    note = _sample_note(nr, nc, settings)
    if note:
        return _empty(spec, method, note, nr, nc, missing_share, settings)
    threshold = _threshold(spec, method, settings)
    impl = _method(method, settings)
    details: dict = {
        "reference_missing": profile.missing,
        "distinct_values": distinct,
        "reference_distinct_values": int(row["reference_distinct"]),
        "reference_min": row["reference_min"],
        "reference_max": row["reference_max"],
        "reference_std": profile.std,
        "computation": row["computation"],
    }
    if row["computation"] in ("cells", "hour cells"):
        details.update(_cell_details(row, profile, method))
    if impl.needs == "support":
        data = Support(nr, nc, float(row["ks_statistic"]), float(row["wasserstein"]), float(profile.std))
    elif method in ("psi", "jensenshannon") and int(row["reference_distinct"]) > 20 and "edges" in row:
        edges = list(row["edges"])
        data = Counts(
            tuple(f"[{lo!r}, {hi!r})" for lo, hi in zip(edges[:-1], edges[1:], strict=True)),
            tuple(int(v) for v in row["bin_reference"]),
            tuple(int(v) for v in row["bin_current"]),
        )
        details["bin_edges"] = edges
    elif distinct > settings.max_categories:
        return _empty(
            spec,
            method,
            f"no verdict: {distinct} distinct values, above max_categories={settings.max_categories} for {method}",
            nr,
            nc,
            missing_share,
            settings,
        )
    else:
        data = _value_counts(row["ends"])
    if isinstance(data, Counts):
        details.update(_count_details(data))
    score = impl.score(data, threshold)
    return _verdict(spec, score, missing_share, int(row["out_of_range"]) / nc, [], nr, nc, details)


def _count_details(data: Counts) -> dict:
    return {"keys": list(data.keys), "reference_counts": list(data.reference), "current_counts": list(data.current)}


def _verdict(
    spec: FeatureSpec,
    score: Score,
    missing_share: float,
    out_of_range_share: float,
    new_categories: list[str],
    nr: int,
    nc: int,
    details: dict,
) -> FeatureDrift:
    """The result of a scored feature (before the false-positive controls)."""
    return FeatureDrift(
        feature=spec.name,
        feature_type=spec.kind,
        method=score.method,
        statistic=score.statistic,
        p_value=score.p_value,
        threshold=score.threshold,
        drifted=score.drifted,
        persistent=False,
        missing_share=missing_share,
        out_of_range_share=out_of_range_share,
        new_categories=new_categories,
        reference_rows=nr,
        current_rows=nc,
        details=details,
        verdict="drift" if score.drifted else "no drift",
        effect_size=score.effect_size,
    )


def _cell_details(row: dict, profile: Profile, method: str) -> dict:
    """How far a statistic computed on cells can be from the exact one, in the statistic's own units."""
    details = {"cell_width": row["cell_width"], "cells": int(row["distinct_values"])}
    if method == "wasserstein":
        details["error_bound"] = row["wasserstein_bound"] / max(float(profile.std), STD_FLOOR)
    elif method == "ks":
        details["error_bound"] = row["ks_bound"]
    elif "straddling" in row:
        details["straddling_share"] = float(row["straddling"])
    else:
        details["mixed_cells"] = int(row["mixed_cells"])
    if int(row["clamped_cells"]):
        details["clamped"] = "values beyond 2^39 cells from the origin were clamped; the error is unbounded"
    return details


def _value_counts(ends: list) -> Counts:
    """Counts per distinct value from the cumulative counts at the end of each run of equal values."""
    ends = sorted(ends)
    values = [float(e[0]) for e in ends]
    reference = [int(e[1]) for e in ends]
    current = [int(e[2]) for e in ends]
    return Counts(
        tuple(repr(v) for v in values),
        tuple(b - a for a, b in zip([0, *reference[:-1]], reference, strict=True)),
        tuple(b - a for a, b in zip([0, *current[:-1]], current, strict=True)),
    )


def _score_categorical(
    spec: FeatureSpec, profile: Profile | None, row: dict | None, settings: DriftSettings, window_rows: int
) -> FeatureDrift:
    nr = profile.values if profile else 0
    nc = int(row["present"]) if row else 0
    missing_share = (window_rows - nc) / window_rows if window_rows else 0.0
    reference = dict(zip(profile.categories, profile.category_counts, strict=True)) if profile else {}
    current = dict(zip(row["categories"], row["counts"], strict=True)) if row else {}
    too_many = (profile is not None and profile.unique_values > settings.max_categories) or (
        row is not None and int(row["distinct_values"]) > settings.max_categories
    )
    keys = sorted(set(reference) | set(current))
    method = spec.method
    if method == "auto":
        method = auto_method("categorical", nr, len(keys), settings.small_reference_rows)
    note = _sample_note(nr, nc, settings)
    if not note and too_many:
        note = f"no verdict: more than max_categories={settings.max_categories} categories"
    if note:
        return _empty(spec, method, note, nr, nc, missing_share, settings)
    threshold = _threshold(spec, method, settings)
    data = Counts(
        tuple(keys), tuple(int(reference.get(k, 0)) for k in keys), tuple(int(current.get(k, 0)) for k in keys)
    )
    new = [k for k in keys if k not in reference]
    score = _method(method, settings).score(data, threshold)
    details = {"reference_missing": profile.missing if profile else 0, **_count_details(data)}
    return _verdict(spec, score, missing_share, sum(int(current[k]) for k in new) / nc, new, nr, nc, details)


def _method(name: str, settings: DriftSettings):
    if name == "chisquare":
        return get_method(name, homogeneity=settings.chisquare_homogeneity)
    return get_method(name)
