"""flows/core/databricks_jobs.py: how a `runs/get` answer is read (jobs_payloads.json, documented shapes).

`status` (Jobs API 2.2) is read first and `state` is the fallback; every documented value maps to
running, succeeded or failed. prefect-databricks 0.4.2's `Run` model raises on some of them, which
is why the payloads are not read through it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from databricks.sdk.service import jobs as sdk_jobs
from prefect_databricks.models.jobs import Run

from flows.core.databricks_jobs import ENDED_WITHOUT_RESULT, STILL_GOING, SUCCEEDED, JobRun, RunState

PAYLOADS = json.loads((Path(__file__).with_name("jobs_payloads.json")).read_text())


@pytest.mark.parametrize("name, outcome, shown", [
    ("queued", "running", "QUEUED: Queued due to reaching maximum concurrent runs"),
    ("pending", "running", "PENDING"),
    ("running", "running", "RUNNING"),
    ("terminated_success", "succeeded", "TERMINATED (SUCCESS)"),
    ("terminated_success_with_failures", "failed", "TERMINATED (SUCCESS_WITH_FAILURES): 1 task failed"),
    ("terminated_failed", "failed", "TERMINATED (RUN_EXECUTION_ERROR): Workload failed, see run output for details"),
    ("internal_error", "failed", "INTERNAL_ERROR: Cluster failed to start"),
    ("maximum_concurrent_runs_reached", "failed",
     "TERMINATED (MAX_CONCURRENT_RUNS_EXCEEDED): Skipped: the maximum concurrent runs were reached"),
    ("status_only_running", "running", "RUNNING"),
    ("status_only_success", "succeeded", "TERMINATED (SUCCESS)"),
    ("status_only_failed", "failed", "TERMINATED (CLUSTER_ERROR): Cluster lost"),
])
def test_each_payload_maps_to_its_outcome_with_its_message(name, outcome, shown):
    run = JobRun.of(PAYLOADS[name], run_id=1001)
    assert run.run_id == 1001 and run.state.outcome == outcome and str(run.state) == shown
    assert all(task.task_key == "dbt" and task.run_id == 2002 for task in run.tasks)


def test_prefect_databricks_model_raises_on_a_queued_run():
    # Why the payloads are read leniently. If this starts passing, upstream added QUEUED.
    with pytest.raises(ValueError):
        Run.model_validate(PAYLOADS["queued"])


def test_every_documented_state_has_an_outcome():
    """Life-cycle (2.1), status (2.2) and result states as databricks-sdk lists them (from the API spec)."""
    life_cycles = {m.value for m in sdk_jobs.RunLifeCycleState} | {m.value for m in sdk_jobs.RunLifecycleStateV2State}
    assert life_cycles <= STILL_GOING | ENDED_WITHOUT_RESULT | {"TERMINATED"}
    for life in life_cycles:
        expected = "running" if life in STILL_GOING else "failed"
        if life != "TERMINATED":
            assert RunState.of({"state": {"life_cycle_state": life}}).outcome == expected, life
            if life in {m.value for m in sdk_jobs.RunLifecycleStateV2State}:
                assert RunState.of({"status": {"state": life}}).outcome == expected, life
    for result in sdk_jobs.RunResultState:
        state = RunState.of({"state": {"life_cycle_state": "TERMINATED", "result_state": result.value}})
        assert state.outcome == ("succeeded" if result.value in SUCCEEDED else "failed"), result
    for code in sdk_jobs.TerminationCodeCode:
        state = RunState.of({"status": {"state": "TERMINATED", "termination_details": {"code": code.value}}})
        assert state.outcome == ("succeeded" if code.value == "SUCCESS" else "failed"), code


def test_unknown_or_missing_fields_do_not_raise():
    assert RunState.of({"state": {"life_cycle_state": "SOMETHING_NEW"}}).outcome == "running"  # followed, not cancelled
    assert RunState.of({"state": {"life_cycle_state": "TERMINATED", "result_state": "SOMETHING_NEW"}}).outcome == "failed"
    assert RunState.of({}).life_cycle_state == "UNKNOWN" and RunState.of(None).outcome == "running"
    assert JobRun.of({"tasks": [None, {"status": {"state": "RUNNING"}}]}, run_id=7).tasks[0].task_key == "?"
