"""The whole product on a generated project that looks like a real one (bench/project_extras.py):
~300 nodes with every resource type, a local package, hooks, and layers big enough that their
`path:` selectors (which also match exposures and the semantic layer) are what is sent to dbt.

One module-scoped chain: a full blue-green production run, a gated run after one source lands
new rows, slim CI of a one-model change, an ad-hoc build, and an empty warehouse's first run.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import duckdb
import pytest

from flows.adhoc import adhoc_dbt
from flows.production import production_run
from flows.slim_ci import slim_ci
from reliability.helpers import downstream, sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from generate_project import generate_project, land_fresher  # noqa: E402

N = 300


@pytest.fixture(scope="module")
def generated(tmp_path_factory, prefect_server):
    root = tmp_path_factory.mktemp("generated-project")
    home = root / "lakehouse"
    summary = generate_project(N, root / "project", home / "warehouse.duckdb")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAKEHOUSE_HOME", str(home))
        yield summary, home


def _latest(home: Path, name: str) -> dict:
    return json.loads((home / "state" / "local" / "latest" / name).read_text())


def _built(home: Path) -> set[str]:
    return {r["unique_id"] for r in _latest(home, "run_results.json")["results"]
            if r["unique_id"].split(".")[0] in {"model", "seed", "snapshot"} and r["status"] == "success"}


@pytest.fixture(scope="module")
def full_run(generated):
    summary, home = generated
    assert summary["nodes"]["total"] == N and summary["other"]["exposure"] > 0
    state = production_run(environment="local", project_dir=summary["project_dir"], return_state=True)
    assert state.is_completed(), state.message
    return summary, home


def test_full_blue_green_run_publishes_every_resource_type(full_run):
    summary, home = full_run
    manifest = _latest(home, "manifest.json")
    built = _built(home)
    materialised = {u for u, n in manifest["nodes"].items()
                    if n["resource_type"] in {"model", "seed", "snapshot"} and n["config"]["materialized"] != "ephemeral"}
    assert materialised <= built, sorted(materialised - built)[:5]
    live = {name for (name,) in sql(home, "select table_name from information_schema.tables "
                                             "where table_schema = 'main'")}
    for relation in ("dim_entities_v1", "dim_entities_v2", "utils_numbers", "metricflow_time_spine",
                     f"stg_{summary['sources'][1]}__python", f"int_{summary['sources'][1]}__microbatch"):
        assert relation in live
    results = _latest(home, "run_results.json")["results"]
    assert {r["status"] for r in results if r["unique_id"].startswith(("test.", "unit_test."))} == {"pass"}
    assert any(r["unique_id"].startswith("unit_test.") for r in results)
    assert sql(home, "select count(*) from main_snapshots.snap_stg_" + summary["sources"][1])[0][0] > 0


def test_a_gated_run_after_one_source_lands_rebuilds_only_its_downstream(full_run):
    summary, home = full_run
    source = summary["sources"][2]
    land_fresher(home / "warehouse.duckdb", source)
    state = production_run(environment="local", project_dir=summary["project_dir"], return_state=True)
    assert state.is_completed(), state.message
    manifest = _latest(home, "manifest.json")
    expected = {u for u in downstream(manifest, f"source.bench.raw.{source}", include_start=False)
                if manifest["nodes"][u]["config"]["materialized"] != "ephemeral"}
    assert expected and _built(home) == expected
    assert source not in summary["sources"][::5], "this source should configure no freshness: its signal is what changed"


def test_a_night_with_nothing_landed_rebuilds_nothing_though_most_sources_configure_no_freshness(full_run):
    summary, home = full_run
    signals = _latest(home, "source_signals.json")
    assert len(signals) == len(summary["sources"]) - len(summary["sources"][::5]) and all(signals.values())
    built_before = _latest(home, "run_results.json")
    state = production_run(environment="local", project_dir=summary["project_dir"], return_state=True)
    assert state.is_completed() and state.message == "nothing to rebuild", state.message
    assert _latest(home, "run_results.json") == built_before


def test_slim_ci_of_a_one_model_change(full_run, tmp_path):
    summary, home = full_run
    project = tmp_path / "project"
    shutil.copytree(summary["project_dir"], project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    changed = f"stg_{summary['sources'][3]}"
    model = project / "models" / "staging" / f"{changed}.sql"
    model.write_text(model.read_text().replace("    source._loaded_at\n", "    source._loaded_at,\n    1 as pr_column\n"))
    outcome = slim_ci(pr_number=3, environment="local", base_environment="local", project_dir=str(project))
    assert outcome.startswith("passed")
    columns = {c for (c,) in sql(home, "select column_name from information_schema.columns "
                                          f"where table_schema = 'main_pr_3' and table_name = '{changed}'")}
    assert "pr_column" in columns


def test_an_adhoc_build_of_a_mart_and_its_tests(full_run):
    summary, home = full_run
    counts = adhoc_dbt(environment="local", command="build", select=["dim_entities"],
                       project_dir=summary["project_dir"])
    assert counts.get("success", 0) >= 2 and counts.get("pass", 0) >= 2, counts  # both versions and their tests
    assert not {"error", "fail"} & set(counts)


def test_an_empty_warehouse_fails_before_any_build_naming_the_missing_source(tmp_path, monkeypatch, prefect_server):
    """The example data was never landed: freshness cannot check the sources, which set error_after."""
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path / "empty"))
    state = production_run(environment="local", return_state=True)
    assert state.is_failed()
    assert "raw.orders could not be checked" in state.message and "does not exist" in state.message
    with duckdb.connect(str(tmp_path / "empty" / "warehouse.duckdb")) as connection:
        built = connection.execute("select count(*) from information_schema.tables where table_schema <> 'raw'"
                                   " and table_catalog = current_database()").fetchone()[0]
    assert built == 0


def test_a_warn_level_source_that_cannot_be_checked_is_logged_and_the_run_goes_on(tmp_path, monkeypatch, caplog,
                                                                                   prefect_server):
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: warn_only\nversion: '1.0.0'\nconfig-version: 2\nprofile: warn_only\n")
    (project / "models" / "sources.yml").write_text(
        "version: 2\nsources:\n  - name: landing\n    schema: landing\n    config:\n      loaded_at_field: loaded_at\n"
        "      freshness: {warn_after: {count: 1, period: day}}\n    tables: [{name: not_there_yet}]\n")
    (project / "models" / "one.sql").write_text("select 1 as id\n")
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path / "home"))
    with caplog.at_level("WARNING"):
        state = production_run(environment="local", project_dir=str(project), return_state=True)
    assert state.is_completed(), state.message
    assert "landing.not_there_yet could not be checked" in caplog.text and "does not exist" in caplog.text
