"""The Databricks job flow against a stand-in for the Databricks Jobs API 2.1 (respx).

Only Databricks' HTTP API is faked: `runs/submit`, `runs/get`, `runs/get-output` and `runs/cancel`, answering
in their documented shapes and checking every submitted body against the documented request schema.
The flow itself runs for real on the session's Prefect server, with the environment saved as a real block.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from contextlib import nullcontext
from functools import partial
from types import SimpleNamespace
from typing import Any, Optional

import httpx
import jsonschema
import pytest
import respx
from prefect.client.orchestration import get_client
from prefect_databricks import DatabricksCredentials
from prefect_databricks.models.jobs import DbtTask

from pathlib import Path

from blocks.environment import BlueGreenSettings, DbtEnvironment
from conftest import flow_run_logs, saved_block
from flows.core.databricks_jobs import (
    DatabricksRunTimedOut, DbtCliCluster, DbtJobRequest, ServerlessEnvironment, follow_run, submit_payload, submit_run,
    warehouse_id_of,
)
from flows.databricks_job import databricks_job_run

HOST = "dbc-test.cloud.databricks.com"
TOKEN = "dapi-test"
GIT_URL = "https://github.com/example-org/lakehouse.git"
RUN_ID, TASK_RUN_ID = 1001, 2002
RUN_PAGE = f"https://{HOST}/?o=1234567890#job/987/run/{RUN_ID}"

# The `runs/submit` request body as documented for Jobs API 2.1 (docs.databricks.com/api/workspace/jobs/submit),
# narrowed to what a dbt task on a new job cluster may use. Unknown keys are refused: Databricks would
# silently ignore a misspelt one (such as prefect-databricks' `schema_`).
TEXT = {"type": "string", "minLength": 1}
STRICT = {"type": "object", "additionalProperties": False}
GIT_PROVIDERS = ["gitHub", "bitbucketCloud", "azureDevOpsServices", "gitHubEnterprise", "bitbucketServer", "gitLab",
                 "gitLabEnterpriseEdition", "awsCodeCommit"]
DBT_TASK = STRICT | {
    "required": ["commands"],
    "properties": {"commands": {"type": "array", "minItems": 1, "maxItems": 10, "items": {"pattern": "^dbt "}},
                   "warehouse_id": TEXT, "catalog": TEXT, "schema": TEXT, "project_directory": {"type": "string"},
                   "profiles_directory": {"type": "string"}, "source": {"enum": ["WORKSPACE", "GIT"]}},
    # catalog and schema only with a warehouse_id; profiles_directory only without one.
    "dependentRequired": {"catalog": ["warehouse_id"], "schema": ["warehouse_id"]},
    "not": {"required": ["warehouse_id", "profiles_directory"]},
}
NEW_CLUSTER = {"type": "object", "required": ["spark_version"], "properties": {
    "spark_version": TEXT, "node_type_id": TEXT, "num_workers": {"type": "integer", "minimum": 0},
    "spark_conf": {"type": "object", "additionalProperties": {"type": "string"}},
    "custom_tags": {"type": "object", "additionalProperties": {"type": "string"}},
    "data_security_mode": {"enum": ["SINGLE_USER", "USER_ISOLATION", "NONE"]}}}
LIBRARY = STRICT | {"minProperties": 1, "maxProperties": 1, "properties": {
    "pypi": STRICT | {"required": ["package"], "properties": {"package": TEXT, "repo": TEXT}}}}
TASK = STRICT | {"required": ["task_key", "dbt_task"], "properties": {
    "task_key": {"type": "string", "pattern": "^[\\w\\-]+$", "maxLength": 100},
    "timeout_seconds": {"type": "integer", "minimum": 0}, "dbt_task": DBT_TASK, "new_cluster": NEW_CLUSTER,
    "libraries": {"type": "array", "items": LIBRARY}, "environment_key": TEXT},
    # a task runs on a new cluster or (serverless) in one of the run's environments, not both
    "oneOf": [{"required": ["new_cluster"]}, {"required": ["environment_key"]}]}
ENVIRONMENT = STRICT | {"required": ["environment_key", "spec"], "properties": {
    "environment_key": TEXT, "spec": STRICT | {"properties": {
        "environment_version": {"type": "string", "pattern": "^[0-9]+$"}, "client": TEXT,
        "dependencies": {"type": "array", "items": TEXT}}}}}
GIT_SOURCE = STRICT | {
    "required": ["git_url", "git_provider"],
    "properties": {"git_url": {"type": "string", "maxLength": 300}, "git_provider": {"enum": GIT_PROVIDERS},
                   "git_branch": {"type": "string", "maxLength": 255}, "git_tag": {"type": "string", "maxLength": 255},
                   "git_commit": {"type": "string", "maxLength": 64}},
    "oneOf": [{"required": ["git_branch"]}, {"required": ["git_tag"]}, {"required": ["git_commit"]}],
}
RUNS_SUBMIT_SCHEMA = STRICT | {"required": ["tasks"], "properties": {
    "run_name": TEXT, "timeout_seconds": {"type": "integer", "minimum": 0},
    "idempotency_token": {"type": "string", "maxLength": 64}, "git_source": GIT_SOURCE,
    "tasks": {"type": "array", "minItems": 1, "maxItems": 100, "items": TASK},
    "environments": {"type": "array", "items": ENVIRONMENT}}}


def run_body(life_cycle: str, result: Optional[str] = None, message: str = "",
             task_life_cycle: Optional[str] = None, task_result: Optional[str] = None) -> dict[str, Any]:
    """A `runs/get` answer in its documented shape (a one-time run with one dbt task)."""
    def state(life, res, msg):
        return {"life_cycle_state": life, "state_message": msg, "user_cancelled_or_timedout": False,
                **({"result_state": res} if res else {})}
    return {
        "run_id": RUN_ID, "number_in_job": RUN_ID, "run_name": "dbt dev", "run_type": "SUBMIT_RUN",
        "creator_user_name": "sp@example.com", "start_time": 1700000000000, "setup_duration": 0,
        "run_page_url": RUN_PAGE, "state": state(life_cycle, result, message),
        "tasks": [{"run_id": TASK_RUN_ID, "task_key": "dbt", "attempt_number": 0,
                   "run_page_url": f"https://{HOST}/?o=1234567890#job/987/run/{TASK_RUN_ID}",
                   "state": state(task_life_cycle or life_cycle, task_result or result, "")}],
    }


SUCCESS = [run_body("PENDING", message="Waiting for cluster"), run_body("PENDING", message="Waiting for cluster"),
           run_body("RUNNING", message="In run"),
           run_body("TERMINATING", task_life_cycle="TERMINATED", task_result="SUCCESS"), run_body("TERMINATED", "SUCCESS")]


class FakeJobsApi:
    """The four Jobs API endpoints the flow calls, with one scripted run."""

    def __init__(self):
        self.script: list[dict] = SUCCESS
        self.task_error = ""
        self.submitted: list[dict] = []
        self.rejections: list[str] = []
        self.authorizations: set[str] = set()
        self.gets = 0
        self.cancelled: list[int] = []
        self.get_failures = self.submit_failures = 0  # answer this many calls with 503 first

    def __call__(self, endpoint: str, request: httpx.Request) -> httpx.Response:
        self.authorizations.add(request.headers.get("Authorization", ""))
        failures = f"{endpoint}_failures"
        if getattr(self, failures, 0):
            setattr(self, failures, getattr(self, failures) - 1)
            return httpx.Response(503, json={"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try again"})
        return getattr(self, endpoint)(request)

    def submit(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.submitted.append(body)
        errors = [e.message for e in jsonschema.Draft202012Validator(RUNS_SUBMIT_SCHEMA).iter_errors(body)]
        if errors:
            self.rejections += errors
            return httpx.Response(400, json={"error_code": "INVALID_PARAMETER_VALUE", "message": "; ".join(errors)})
        return httpx.Response(200, json={"run_id": RUN_ID})

    def get(self, request: httpx.Request) -> httpx.Response:
        assert request.url.params["run_id"] == str(RUN_ID)
        body = self.script[min(self.gets, len(self.script) - 1)]
        self.gets += 1
        return httpx.Response(200, json=body)

    def get_output(self, request: httpx.Request) -> httpx.Response:
        assert request.url.params["run_id"] == str(TASK_RUN_ID)  # documented: a task run, not the parent
        body = {"metadata": self.script[-1]["tasks"][0], "logs": "…", "logs_truncated": False,
                "dbt_output": {"artifacts_headers": {}, "artifacts_link": f"https://{HOST}/presigned"}}
        return httpx.Response(200, json=body | ({"error": self.task_error} if self.task_error else {}))

    def cancel(self, request: httpx.Request) -> httpx.Response:
        self.cancelled.append(json.loads(request.content)["run_id"])
        return httpx.Response(200, json={})


@pytest.fixture
def jobs_api(prefect_server):
    api = FakeJobsApi()
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()  # the session's Prefect server
        for method, endpoint in [("POST", "submit"), ("GET", "get"), ("GET", "get_output"), ("POST", "cancel")]:
            path = f"/api/2.1/jobs/runs/{endpoint.replace('_', '-')}"
            router.route(method=method, host=HOST, path=path).mock(side_effect=partial(api, endpoint))
        yield api


def databricks_environment(**overrides) -> DbtEnvironment:
    settings = dict(adapter="databricks", schema_name="analytics", catalog="lakehouse_dev",
                    databricks_credentials=DatabricksCredentials(databricks_instance=HOST, token=TOKEN),
                    http_path="/sql/1.0/warehouses/abc123")
    return DbtEnvironment(**(settings | overrides))


@pytest.fixture(scope="module")
def dev_environment(prefect_server) -> None:
    with saved_block(databricks_environment(), "dev"):  # a real block on the session's server
        yield


def run_flow(**parameters):
    parameters = {"environment": "dev", "git_url": GIT_URL, "poll_interval_seconds": 0.01} | parameters
    return databricks_job_run(**parameters, return_state=True)


def run_log_messages(state) -> list[str]:
    """The run's log lines, oldest first; its parameters must not carry the token."""
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        assert TOKEN not in json.dumps(client.read_flow_run(flow_run_id).parameters)
    return [log.message for log in flow_run_logs(flow_run_id)]


def test_submitted_payload_is_a_documented_dbt_task():
    request = DbtJobRequest(git_url=GIT_URL, commands=["dbt deps", "dbt build --select tag:nightly"])
    payload = submit_payload(request, databricks_environment(), run_name="dbt dev", idempotency_token="t-1")
    jsonschema.validate(payload, RUNS_SUBMIT_SCHEMA)
    (task,) = payload["tasks"]
    assert task["dbt_task"] == {
        "commands": ["dbt deps", "dbt build --select tag:nightly"], "warehouse_id": "abc123",
        "catalog": "lakehouse_dev", "schema": "analytics", "project_directory": "dbt_project", "source": "GIT",
    }
    assert payload["git_source"] == {"git_url": GIT_URL, "git_provider": "gitHub", "git_branch": "main"}
    assert task["libraries"] == [{"pypi": {"package": "dbt-databricks>=1.12,<1.13"}}]
    assert task["new_cluster"] == {
        "spark_version": "16.4.x-scala2.12", "node_type_id": "i3.xlarge", "num_workers": 0,
        "spark_conf": {"spark.master": "local[*, 4]", "spark.databricks.cluster.profile": "singleNode"},
        "custom_tags": {"ResourceClass": "SingleNode"}, "data_security_mode": "SINGLE_USER",
    }
    assert payload["timeout_seconds"] == 3 * 3600 and payload["idempotency_token"] == "t-1"
    assert TOKEN not in json.dumps(payload)
    cluster = DbtCliCluster()  # the node type follows the workspace's cloud, unless given
    assert cluster.node_type_for("adb-123.4.azuredatabricks.net") == "Standard_D3_v2"
    assert cluster.node_type_for("123.4.gcp.databricks.com") == "n1-standard-4"
    assert DbtCliCluster(node_type_id="m5d.large").node_type_for(HOST) == "m5d.large"


def test_a_serverless_payload_pins_dbt_databricks_in_its_environment():
    request = DbtJobRequest(git_url=GIT_URL, serverless=ServerlessEnvironment())
    payload = submit_payload(request, databricks_environment(), run_name="dbt dev")
    jsonschema.validate(payload, RUNS_SUBMIT_SCHEMA)
    (task,) = payload["tasks"]
    assert "new_cluster" not in task and "libraries" not in task and task["environment_key"] == "dbt"
    assert payload["environments"] == [{"environment_key": "dbt", "spec": {
        "environment_version": "2", "dependencies": ["dbt-databricks>=1.12,<1.13"]}}]


# runs/get answers in the documented shapes (tests/unit/jobs_payloads.json, which says where from).
PAYLOADS = json.loads((Path(__file__).parent / "unit" / "jobs_payloads.json").read_text())


@pytest.mark.parametrize("script, completes", [
    (["queued", "queued", "pending", "running", "terminated_success"], True),
    (["queued", "running", "terminated_success_with_failures"], False),
    (["pending", "running", "terminated_failed"], False),
    (["queued", "internal_error"], False),
    (["queued", "maximum_concurrent_runs_reached"], False),
    (["status_only_running", "status_only_success"], True),
], ids=lambda value: value[-1] if isinstance(value, list) else str(value))
def test_each_payload_is_followed_to_its_flow_outcome_and_a_queued_run_is_not_cancelled(
        jobs_api, dev_environment, script, completes):
    jobs_api.script = [PAYLOADS[name] | {"run_page_url": RUN_PAGE} for name in script]
    state = run_flow()
    assert state.is_completed() == completes, state.message
    assert jobs_api.cancelled == []  # queued or not, it was followed to its own end
    if not completes:
        assert f"Run page: {RUN_PAGE}" in str(state.result(raise_on_failure=False))


def test_prefect_databricks_models_alone_would_drop_the_schema():
    # Why submit_payload dumps by alias: prefect-databricks 0.4.2 serializes by field name.
    # If this starts failing, upstream fixed it.
    assert "schema_" in DbtTask(commands=["dbt run"], schema="analytics").model_dump(mode="json")


def test_warehouse_id_from_http_path():
    assert warehouse_id_of("/sql/1.0/warehouses/abc123") == warehouse_id_of("/sql/1.0/endpoints/abc123") == "abc123"
    assert warehouse_id_of("sql/1.0/warehouses/0a1b2c3d4e5f6789/") == "0a1b2c3d4e5f6789"
    with pytest.raises(ValueError, match="not a SQL warehouse"):  # an all-purpose cluster's http_path
        warehouse_id_of("sql/protocolv1/o/1234567890/0123-456789-abcdefgh")


def test_a_successful_run_completes_the_flow_and_logs_each_state(jobs_api, dev_environment):
    state = run_flow()
    assert state.is_completed(), state.message
    assert jobs_api.rejections == []
    (body,) = jobs_api.submitted
    assert body["tasks"][0]["dbt_task"]["commands"] == [
        "dbt deps", "dbt source freshness", "dbt build --exclude source:* --fail-fast", "dbt docs generate"]
    assert jobs_api.authorizations == {f"Bearer {TOKEN}"}  # credentials from the block, not parameters
    assert jobs_api.cancelled == []
    logs = run_log_messages(state)
    run_changes = [m for m in logs if m.startswith(f"Databricks run {RUN_ID} is ")]
    assert run_changes == [
        f"Databricks run {RUN_ID} is PENDING: Waiting for cluster",
        f"Databricks run {RUN_ID} is RUNNING: In run",
        f"Databricks run {RUN_ID} is TERMINATING",
        f"Databricks run {RUN_ID} is TERMINATED (SUCCESS)",
    ]
    assert f"Databricks run {RUN_ID}, task dbt, is TERMINATED (SUCCESS)" in logs
    assert any(RUN_PAGE in m for m in logs)
    assert not any(TOKEN in m for m in logs)


@pytest.mark.parametrize("life_cycle, result, message", [
    ("TERMINATED", "FAILED", "Workload failed, see run output for details"), ("TERMINATED", "TIMEDOUT", "Timed out"),
    ("TERMINATED", "CANCELED", "Run cancelled by user"), ("INTERNAL_ERROR", None, "Cluster failed to start"),
    ("SKIPPED", None, "Run skipped"),
])
def test_a_run_that_does_not_succeed_fails_the_flow(jobs_api, dev_environment, life_cycle, result, message):
    jobs_api.script = [run_body("PENDING"), run_body("RUNNING"), run_body(life_cycle, result, message)]
    jobs_api.task_error = "Failure in test not_null_orders_order_id (models/marts/schema.yml)\nGot 3 results"
    state = run_flow()
    assert state.is_failed()
    error = str(state.result(raise_on_failure=False))
    assert f"ended {life_cycle}" + (f" ({result})" if result else "") + f": {message}" in error
    assert f"Run page: {RUN_PAGE}" in error
    assert "task dbt:" in error and "not_null_orders_order_id" in error
    assert jobs_api.cancelled == []  # it ended on its own


def test_bad_commands_fail_before_anything_is_submitted(jobs_api, dev_environment):
    state = run_flow(commands=["dbt deps", "rm -rf /"])
    assert state.is_failed(), state.message
    # Refused by parameter validation, naming the bad command (the second one) and the rule it breaks.
    message = str(state.message)
    assert "Validation of flow parameters failed" in message, message
    assert "commands.1" in message and "^dbt" in message, message
    assert jobs_api.submitted == []


@pytest.mark.parametrize("name, environment, reason", [
    ("staging", databricks_environment(blue_green=BlueGreenSettings(enabled=True)), "blue-green"),
    ("local", None, "runs on duckdb"),
])
def test_environments_a_job_must_not_run_in(jobs_api, prefect_server, name, environment, reason):
    with saved_block(environment, name) if environment is not None else nullcontext():
        state = run_flow(environment=name)
    assert state.is_failed() and reason in str(state.result(raise_on_failure=False))
    assert jobs_api.submitted == []


def test_following_rides_out_transient_errors_and_cancels_what_it_gives_up_on(jobs_api, monkeypatch):
    # The follower's clock advances one second per reading, so the wait runs out after a known
    # number of polls however slow this machine is: 2 failed reads, then 2 RUNNING, then it gives up.
    import flows.core.databricks_jobs as databricks_jobs

    seconds = itertools.count()
    monkeypatch.setattr(databricks_jobs, "time", SimpleNamespace(monotonic=lambda: float(next(seconds))))
    credentials = DatabricksCredentials(databricks_instance=HOST, token=TOKEN)
    jobs_api.script, jobs_api.get_failures = [run_body("RUNNING")], 2
    lines: list[str] = []
    with pytest.raises(DatabricksRunTimedOut, match=r"did not finish within 4 s.*" + RUN_PAGE.replace("?", r"\?")):
        asyncio.run(follow_run(credentials, RUN_ID, poll_interval=0, max_wait=4, log=lines.append))
    assert sum("could not read its state" in line for line in lines) == 2
    assert jobs_api.gets == 2  # the two RUNNING answers (the 503s are answered before the script)
    assert jobs_api.cancelled == [RUN_ID]


def test_submission_is_retried_on_transient_errors_only(jobs_api):
    credentials = DatabricksCredentials(databricks_instance=HOST, token=TOKEN)
    payload = submit_payload(DbtJobRequest(git_url=GIT_URL), databricks_environment(), "dbt dev", "token-1")
    jobs_api.submit_failures = 2
    assert asyncio.run(submit_run(credentials, payload, retry_delay=0)) == RUN_ID
    jobs_api.submit_failures = 3
    with pytest.raises(httpx.HTTPStatusError):
        asyncio.run(submit_run(credentials, payload, retry_delay=0))
    with pytest.raises(httpx.HTTPStatusError, match="INVALID_PARAMETER_VALUE"):
        asyncio.run(submit_run(credentials, {**payload, "tasks": []}, retry_delay=0))
    assert jobs_api.submit_failures == 0 and len(jobs_api.submitted) == 2  # the 400 was sent once, not retried


def test_a_block_saved_for_a_test_leaves_the_name_as_it_found_it(prefect_server):
    """The blocks this module registers ("dev", "staging") are put back: other modules see the server's own."""
    name = "saved-block-probe"
    with saved_block(DatabricksCredentials(databricks_instance=HOST, token="dapi-during"), name):
        assert DatabricksCredentials.load(name).token.get_secret_value() == "dapi-during"
    with pytest.raises(ValueError, match="Unable to find block document"):
        DatabricksCredentials.load(name)  # no document held the name before: none does after
    with saved_block(DatabricksCredentials(databricks_instance=HOST, token="dapi-before"), name):
        with saved_block(DatabricksCredentials(databricks_instance=HOST, token="dapi-during"), name):
            pass
        assert DatabricksCredentials.load(name).token.get_secret_value() == "dapi-before"
