"""layer_mode="dag": every layer in one `dbt build`, each model still tested before anything
downstream of it runs; nothing waits for the rest of its layer. Real dbt, DuckDB and Prefect."""

from __future__ import annotations

import json

from flows.core.layers import ALL_LAYERS
from flows.production import production_run
from reliability.helpers import sql
from fixture_projects import FIXTURE_PROJECT, land_fixture, write_project

# A mart that reads only stg_places: in "dag" mode it does not wait for stg_people's test.
PROJECT = {**FIXTURE_PROJECT, "models/marts/fct_places.sql": "select count(*) as places from {{ ref('stg_places') }}"}


def _version_tables(home, version: str) -> set[str]:
    return {t for (t,) in sql(home, "select table_name from information_schema.tables "
                                       f"where table_schema = 'main__{version}'")}


def test_dag_mode_tests_each_model_before_its_downstream_in_one_build(lakehouse_home, tmp_path):
    project = write_project(tmp_path / "fixture", PROJECT)
    warehouse = lakehouse_home / "warehouse.duckdb"
    land_fixture(warehouse, broken=True)
    state = production_run(environment="local", project_dir=str(project), layer_mode="dag", fail_fast=False,
                           keep_failed_version=True, return_state=True)
    assert state.is_failed() and "not_null_stg_people_place_id" in state.message
    kept = json.loads((lakehouse_home / "state" / "local" / "versions.json").read_text())["versions"][-1]["id"]
    built = _version_tables(lakehouse_home, kept)
    # what reads the failing model waits for its test, and is skipped; the rest of the marts does not wait
    assert "int_people_places" not in built and "fct_people" not in built
    assert "fct_places" in built
    run_dir = lakehouse_home / "work" / "local" / "runs" / str(state.state_details.flow_run_id)
    steps = {path.name for path in (run_dir / "steps").iterdir()}
    assert steps == {f"build-{ALL_LAYERS.replace(' ', '-')}.attempt-1.json"}, steps  # one build, not three
    statuses = {r["unique_id"].split(".")[-1]: r["status"]
                for r in json.loads((run_dir / "steps" / next(iter(steps))).read_text())["results"]}
    assert statuses["int_people_places"] == "skipped" and statuses["fct_places"] == "success"
    assert not sql(lakehouse_home, "select table_name from information_schema.tables "
                                      "where table_schema = 'main' and table_name = 'fct_places'")  # live untouched

    land_fixture(warehouse, broken=False)
    state = production_run(environment="local", project_dir=str(project), layer_mode="dag", return_state=True)
    assert state.is_completed(), state.message
    assert sql(lakehouse_home, "select people from main.fct_people") == [(2,)]
    assert sql(lakehouse_home, "select places from main.fct_places")[0][0] > 0
