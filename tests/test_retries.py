"""A failing fixture project: the failing test is named, nothing downstream is built, and a flow retry
re-runs only what failed, in the same version or, once that version was dropped, a new one."""

from __future__ import annotations

import json

from prefect.client.orchestration import get_client

from fixture_projects import FIXTURE_PROJECT, artifacts_by_key, land_fixture, write_project
from flows.core.artifacts import artifact_key
from flows.production import production_run
from reliability.helpers import sql


def _retry_same_flow_run(flow_run_id):
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Scheduled(), force=True)
        flow_run = client.read_flow_run(flow_run_id)
    return run_flow(production_run, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")


def test_failing_staging_test_stops_before_intermediate_and_retry_reruns_only_failures(lakehouse_home, tmp_path):
    project = write_project(tmp_path / "fixture", FIXTURE_PROJECT)
    warehouse = lakehouse_home / "warehouse.duckdb"
    land_fixture(warehouse, broken=True)
    # The failed version is kept (as a flow with retries left would), so the retry resumes it.
    state = production_run(environment="local", project_dir=str(project), keep_failed_version=True,
                           return_state=True)
    assert state.is_failed() and "not_null_stg_people_place_id" in state.message
    tables = {t for (t,) in sql(lakehouse_home, "select table_name from information_schema.tables")}
    assert "int_people_places" not in tables and "fct_people" not in tables
    artifacts = artifacts_by_key(state)
    (summary,) = artifacts[artifact_key("local", "run-summary")]
    (failures,) = artifacts[artifact_key("local", "failures")]
    assert "not_null_stg_people_place_id" in summary.data and "compiled" in failures.data
    # keep_failed_version: the failed version's schema is still there, with what its staging layer built
    kept = json.loads((lakehouse_home / "state" / "local" / "versions.json").read_text())["versions"][-1]["id"]
    assert ("stg_people",) in sql(lakehouse_home, "select table_name from information_schema.tables "
                                                      f"where table_schema = 'main__{kept}'")

    land_fixture(warehouse, broken=False)
    flow_run_id = state.state_details.flow_run_id
    retried = _retry_same_flow_run(flow_run_id)
    assert retried.is_completed(), retried.message
    run_dir = lakehouse_home / "work" / "local" / "runs" / str(flow_run_id)
    first = json.loads((run_dir / "steps" / "build-staging.attempt-1.json").read_text())
    second = json.loads((run_dir / "steps" / "build-staging.attempt-2.json").read_text())
    redo = {r["unique_id"] for r in first["results"] if r["status"] in {"error", "fail", "skipped"}}
    assert {r["unique_id"] for r in second["results"]} == redo
    assert any("not_null_stg_people_place_id" in u for u in redo)
    assert sql(lakehouse_home, "select people from main.fct_people") == [(2,)]


def test_a_retry_whose_failed_version_was_dropped_starts_over_in_a_new_version(lakehouse_home, tmp_path):
    project = write_project(tmp_path / "fixture", FIXTURE_PROJECT)
    warehouse = lakehouse_home / "warehouse.duckdb"
    land_fixture(warehouse, broken=True)
    state = production_run(environment="local", project_dir=str(project), return_state=True)
    assert state.is_failed()
    registry = json.loads((lakehouse_home / "state" / "local" / "versions.json").read_text())
    (dropped,) = [v["id"] for v in registry["versions"] if v["status"] == "failed"]
    assert not sql(lakehouse_home, f"select schema_name from information_schema.schemata "
                                      f"where schema_name like 'main__{dropped}%'"), "the failed version was kept"

    land_fixture(warehouse, broken=False)
    retried = _retry_same_flow_run(state.state_details.flow_run_id)
    assert retried.is_completed(), retried.message
    registry = json.loads((lakehouse_home / "state" / "local" / "versions.json").read_text())
    assert registry["live"] != dropped
    assert sql(lakehouse_home, "select people from main.fct_people") == [(2,)]


# --- a second stock project: its own layout, no intermediate folder, no sources ----------------
