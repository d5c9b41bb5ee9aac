"""Transient failures rescued inside the step; a step timeout or a cancel stops the step's queries.

Real dbt-duckdb, real DuckDB, a real Prefect server. The flaky node is a dbt-duckdb Python model
that raises a connection error on its first attempt only (a marker file says it already failed);
the long query is a DuckDB cross join that would run for hours.

"Within 10 s" below is the issue's correctness bound (issue 18: the run's process ends within
10 s of its timeout, or of SIGTERM), not a performance threshold.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from conftest import artifacts_of
from flows.production import production_run

from .helpers import flow_run_state, journal, project_copy, run_dirs, start_production, wait_for

STOP_BOUND_SECONDS = 10  # issue 18's bound on stopping a run's work: correctness, not speed

FLAKY_MODEL = '''
import os
from pathlib import Path


def model(dbt, session):
    dbt.config(materialized="table")
    marker = Path(os.environ["LAKEHOUSE_TEST_FLAKY_MARKER"])
    if not marker.exists():
        marker.write_text("failed once")
        raise ConnectionResetError("Connection reset by peer (the reliability suite's flaky model, first attempt)")
    return session.sql("select 1 as id")
'''
FAILING_TEST = "select order_id from {{ ref('fct_orders') }} where order_id is not null\n"
# A cross join of 10^8 x 10^6 rows: hours of DuckDB work, on every core it may use.
LONG_QUERY = ("{{ config(materialized='table') }}\n"
              "select sum(hash(a.range + b.range)) as h from range(100000000) a cross join range(1000000) b\n")
# Run first in the production process: the built-in local environment, with step_timeout_seconds=5.
# Only the step of the long query is held to it: on a shared 2-core machine even the source tests
# can take more than 5 s, and the case is about the step that runs the long query.
FIVE_SECOND_STEPS = (
    "import blocks.environment as environment, flows.core.stop as stop\n"
    "_builtin, _deadline = environment.builtin_local, stop.step_deadline\n"
    "def _five_seconds():\n"
    "    local = _builtin()\n"
    "    local.step_timeout_seconds = 5\n"
    "    return local\n"
    "environment.builtin_local = _five_seconds\n"
    "stop.step_deadline = lambda step, seconds: _deadline(step, seconds if step == 'build staging' else 600)"
)


def _summary(flow_run_id) -> str:
    return next(a.data for a in artifacts_of(flow_run_id) if a.key == "dbt-local-run-summary")


def test_transient_failure_is_rescued_and_a_failing_test_is_not_retried(fresh_home, tmp_path, monkeypatch):
    marker = tmp_path / "flaky-failed-once"
    monkeypatch.setenv("LAKEHOUSE_TEST_FLAKY_MARKER", str(marker))
    project = project_copy(tmp_path / "project", files={
        "models/staging/stg_flaky.py": FLAKY_MODEL,
        "tests/assert_reliability_always_fails.sql": FAILING_TEST,
    }, append={"models/marts/fct_orders.sql": "\n-- touched by the reliability suite, so it rebuilds with its new test\n"})
    state = production_run(environment="local", project_dir=str(project), return_state=True)
    assert state.is_failed(), state.message
    assert "build marts failed" in str(state.message) and "assert_reliability_always_fails" in str(state.message)
    flow_run_id = state.state_details.flow_run_id
    done = journal(fresh_home, flow_run_id)
    assert "build staging" in done["done"] and done["failed"] == "build marts"  # staging completed, rescued
    summary = _summary(flow_run_id)
    rescues = summary.split("## Transient failures rescued")[1].split("##")[0]
    assert "model.lakehouse.stg_flaky" in rescues and "Connection reset by peer" in rescues, rescues
    assert "| 1 | success |" in rescues, rescues  # attempt 1 of the rescue, and the node then succeeded
    assert "assert_reliability_always_fails" not in rescues  # the failing test was never retried...
    retries = fresh_home / "work" / "local" / "runs" / str(flow_run_id) / "retry"
    assert not list((retries / "build-marts").glob("transient-*")), "a real failure was retried"
    # ...and what a flow-level retry would re-run is only the marts layer's failure and what it skipped.
    retry_state = json.loads((retries / "build-marts" / "run_results.json").read_text())
    failed = {r["unique_id"]: str(r.get("message") or "") for r in retry_state["results"] if r["status"] in {"error", "fail"}}
    assert any("assert_reliability_always_fails" in u for u in failed), failed
    # fail-fast interrupts what was running beside the failing test (DuckDB "INTERRUPT Error"): those are
    # re-run too, as dbt retry does; nothing else failed
    others = {u: m for u, m in failed.items() if "assert_reliability_always_fails" not in u}
    assert all("interrupt" in m.lower() or "cancel" in m.lower() for m in others.values()), others

    # The same flaky model, alone, with the failing test gone: the run completes, the rescue listed.
    marker.unlink()
    (project / "tests" / "assert_reliability_always_fails.sql").unlink()
    state = production_run(environment="local", project_dir=str(project), select=["stg_flaky"], return_state=True)
    assert state.is_completed(), state.message
    assert "model.lakehouse.stg_flaky" in _summary(state.state_details.flow_run_id).split("## Transient")[1]


def _long_query_run(home: Path, tmp_path: Path, name: str, prelude: str = ""):
    project = project_copy(tmp_path / "project", files={"models/staging/stg_long_query.sql": LONG_QUERY})
    log = tmp_path / f"{name}.log"
    earlier = set(run_dirs(home))
    process = start_production(home, log, "--project-dir", str(project), "--no-docs", prelude=prelude)
    wait_for(lambda: "START sql table model" in log.read_text() and "stg_long_query" in log.read_text(),
             timeout=600, what="the long query to start", process=process, log=log)
    run_dir = next(d for d in run_dirs(home) if d not in earlier)
    return process, log, run_dir


def _stop_or_kill(process: subprocess.Popen, seconds: float) -> bool:
    try:
        process.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # our own child's process group, by id
        process.wait(timeout=30)
        return False


def _warehouse_writable(home: Path) -> None:
    with duckdb.connect(str(home / "warehouse.duckdb")) as connection:  # another process than the run's
        connection.execute("create or replace table main.reliability_probe as select 1 as x")
        connection.execute("drop table main.reliability_probe")


@pytest.mark.slow
def test_step_timeout_interrupts_the_long_query(fresh_home, tmp_path):
    process, log, run_dir = _long_query_run(fresh_home, tmp_path, "timeout", prelude=FIVE_SECOND_STEPS)
    timed_out = wait_for(lambda: "reached step_timeout_seconds=5" in log.read_text(), timeout=60,
                         what="the step timeout", process=process, log=log)
    assert timed_out
    stopped = _stop_or_kill(process, STOP_BOUND_SECONDS)
    output = log.read_text()
    assert stopped, f"the run was still running {STOP_BOUND_SECONDS} s after its step timeout:\n{output[-3000:]}"
    assert "build staging timed out after 5 s (step_timeout_seconds=5)" in output, output[-3000:]
    _warehouse_writable(fresh_home)
    assert not (fresh_home / "state" / "local" / "publish.lock").exists(), "the publish lock was left"
    assert journal(fresh_home, run_dir.name)["failed"] == "build staging"
    state = flow_run_state(run_dir.name)
    assert state.is_failed() and "build staging timed out after 5 s" in str(state.message), state.message


@pytest.mark.slow
def test_sigterm_during_the_long_query_ends_the_run(fresh_home, tmp_path):
    process, log, run_dir = _long_query_run(fresh_home, tmp_path, "sigterm")
    time.sleep(1)  # the query is running now, in dbt's worker thread
    os.kill(process.pid, signal.SIGTERM)  # what a worker sends when the run is cancelled from the UI
    stopped = _stop_or_kill(process, STOP_BOUND_SECONDS)
    output = log.read_text()
    assert stopped, f"the run was still running {STOP_BOUND_SECONDS} s after SIGTERM:\n{output[-3000:]}"
    assert "SIGTERM during build staging: cancelling its dbt queries" in output, output[-3000:]
    state = flow_run_state(run_dir.name)
    assert state.name in {"Cancelled", "Crashed"}, f"{state.name}: {state.message}"
    _warehouse_writable(fresh_home)
    assert not (fresh_home / "state" / "local" / "publish.lock").exists(), "the publish lock was left"
