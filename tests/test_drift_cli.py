"""``driftwarden drift``: table and JSON output on real data, and one-line errors.

The command runs in a subprocess with an embedded store of its own (a store directory
belongs to one process), filled with Capital Bikeshare 2011 by another subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, run_cli

JANUARY = "2011-01-01..2011-02-01"
FEB_WEEK = "2011-02-01T00:00:00Z..2011-02-08T00:00:00Z"
LOAD = textwrap.dedent(
    """
    import sys
    from driftwarden import storage
    from tests.drift_data import bikeshare, insert
    client = storage.connect(sys.argv[1], create_database=True)
    storage.migrate(client, retention_days=20000)
    bikes = bikeshare()
    insert(client, "bikes", [t.to_pydatetime() for t in bikes["ts"]],
           {c: bikes[c].astype(float) for c in ["temp", "atemp", "hum", "windspeed"]},
           {c: bikes[c].astype(str) for c in ["season", "weathersit", "workingday"]},
           prediction=bikes["bikers"].astype(float))
    """
)


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    url = f"chdb://{tmp_path_factory.mktemp('drift_cli')}/store"
    subprocess.run([sys.executable, "-c", LOAD, url], check=True, cwd=ROOT, timeout=120)
    return url


@pytest.mark.timeout(120)
def test_table_lists_each_feature_with_method_statistic_threshold_and_verdict(store_url):
    result = run_cli("drift", "--store", store_url, "--model", "bikes", "--reference", JANUARY, "--current", FEB_WEEK)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("feature"))
    assert header.split() == [
        "feature", "type", "method", "statistic", "p_value", "threshold", "verdict", "missing", "ref_n", "cur_n"
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[lines.index(header) + 1 :] if line.strip()}
    for feature, method in [("temp", "ks"), ("hum", "ks"), ("season", "ztest"), ("weathersit", "chisquare")]:
        assert rows[feature][2] == method
        assert rows[feature][5] == "0.05"
        assert rows[feature][6] in ("DRIFT", "no")
    assert any(line.startswith("dataset: ") for line in lines)
    assert any(line.startswith("input_hash ") for line in lines)


@pytest.mark.timeout(120)
def test_json_is_stable_documented_and_identical_on_a_rerun(store_url):
    args = ("drift", "--store", store_url, "--model", "bikes", "--reference", JANUARY, "--current", FEB_WEEK)
    both = ("--multivariate", "pca_reconstruction,domain_classifier")
    first = run_cli(*args, *both, "--format", "json")
    second = run_cli(*args, *both, "--format", "json", "--save")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    doc = json.loads(first.stdout)
    assert list(doc) == [
        "schema", "model", "model_version", "target", "reference", "current", "reference_rows", "current_rows",
        "dataset", "features", "settings", "provenance", "multivariate",
    ]  # fmt: skip
    assert [m["method"] for m in doc["multivariate"]] == ["pca_reconstruction", "domain_classifier"]
    assert doc["schema"] == "driftwarden.drift/1"
    assert doc["reference"] == {"start": "2011-01-01T00:00:00Z", "end": "2011-02-01T00:00:00Z"}
    assert [f["feature"] for f in doc["features"]] == [
        "atemp", "hum", "temp", "windspeed", "season", "weathersit", "workingday"
    ]  # fmt: skip
    feature = doc["features"][0]
    assert list(feature) == [
        "feature", "feature_type", "method", "statistic", "p_value", "threshold", "verdict", "drifted", "persistent",
        "effect_size", "missing_share", "out_of_range_share", "new_categories", "reference_rows", "current_rows",
        "note", "details",
    ]  # fmt: skip
    assert feature["verdict"] == ("drift" if feature["drifted"] else "no drift")
    drifted = [f["feature"] for f in doc["features"] if f["drifted"]]
    assert doc["dataset"]["drifted_features"] == drifted
    assert doc["dataset"]["drift_share"] == pytest.approx(len(drifted) / 7)
    assert len(doc["provenance"]["input_hash"]) == 64


@pytest.mark.timeout(120)
def test_prediction_target_and_single_feature_choice(store_url):
    result = run_cli(
        "drift", "--store", store_url, "--model", "bikes", "--reference", JANUARY, "--current", FEB_WEEK,
        "--target", "prediction", "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [(f["feature"], f["method"]) for f in json.loads(result.stdout)["features"]] == [("prediction", "ks")]
    result = run_cli(
        "drift", "--store", store_url, "--model", "bikes", "--reference", JANUARY, "--current", FEB_WEEK,
        "--feature", "temp:numeric:wasserstein:0.2", "--format", "json",
    )  # fmt: skip
    (feature,) = json.loads(result.stdout)["features"]
    assert (feature["feature"], feature["method"], feature["threshold"]) == ("temp", "wasserstein", 0.2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "nope", "--reference", JANUARY, "--current", FEB_WEEK), "unknown model 'nope'"),
        (("--model", "bikes", "--reference", JANUARY, "--current", "2012-01-01..2012-02-01"), "has no inferences"),
        (("--model", "bikes", "--reference", "2011-01-01", "--current", FEB_WEEK), "is not START..END"),
        (("--model", "bikes", "--reference", JANUARY, "--current", FEB_WEEK, "--feature", "temp:image"), "kind"),
    ],
)
def test_user_mistakes_print_one_clear_line_and_exit_2(store_url, args, message):
    result = run_cli("drift", "--store", store_url, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("driftwarden drift: error: ") and message in lines[0], lines


@pytest.mark.timeout(120)
def test_an_embedded_store_without_the_schema_is_migrated_first(tmp_path):
    store = f"chdb://{tmp_path}/empty"
    result = run_cli("drift", "--store", store, "--model", "bikes", "--reference", JANUARY, "--current", FEB_WEEK)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'bikes'" in lines[0], lines
    migrated = run_cli("migrate", "--store", store)
    assert migrated.returncode == 0 and "nothing to apply" in migrated.stdout, migrated.stdout + migrated.stderr


@pytest.mark.timeout(120)
def test_large_window_options_put_an_error_bound_beside_each_statistic_on_cells(store_url):
    args = ("drift", "--store", store_url, "--model", "bikes", "--reference", JANUARY, "--current", FEB_WEEK)
    result = run_cli(*args, "--exact-max-values", "0", "--feature", "temp", "--feature", "hum:numeric:wasserstein")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("feature"))
    assert header.split()[:5] == ["feature", "type", "method", "statistic", "±"]
    rows = {line.split()[0]: line.split() for line in lines[lines.index(header) + 1 :] if line.strip()}
    assert rows["temp"][2] == "ks" and rows["hum"][2] == "wasserstein"
    exact = run_cli(*args, "--format", "json", "--feature", "temp", "--feature", "hum:numeric:wasserstein")
    truth = {f["feature"]: f["statistic"] for f in json.loads(exact.stdout)["features"]}
    for name in ("temp", "hum"):  # the exact statistic lies within the printed bound (4 significant digits)
        statistic, bound = float(rows[name][3]), float(rows[name][4])
        assert abs(truth[name] - statistic) <= bound + 1e-3 * abs(truth[name]) + 1e-9, name
    assert float(rows["hum"][4]) < 0.01
    assert any("compared on cells" in line for line in lines)
    refused = run_cli(*args, "--cell-resolution", "5")
    assert refused.returncode == 2
    assert "--cell-resolution: cell_resolution must be in (0, 0.1]" in refused.stderr
