"""dbt as a Databricks one-time job run: the `runs/submit` payload, and following the run to its end.

Payload (Jobs API 2.1 `POST /api/2.1/jobs/runs/submit`): one task holding a `dbt_task`. dbt's SQL
runs on the environment's SQL warehouse (`warehouse_id`, so Databricks generates the profile and
injects the token of the run's principal: no secret is in the payload); the dbt CLI itself runs
either on a single-node job cluster with dbt-databricks pinned as a PyPI library (the classic
compute shape of Databricks' own dbt-sql bundle template), or serverless: a top-level
`environments` spec with dbt-databricks pinned in its dependencies, which the task names by
`environment_key`. prefect-databricks' `jobs_runs_submit` cannot send `environments`, so the body
is POSTed as it is through its generic `execute_endpoint`.

Run states are read leniently, not through prefect-databricks 0.4.2's `Run` model: it lacks
QUEUED and newer result states and raises on them. `status` (Jobs API 2.2) is followed first,
`state` is the fallback; every documented value maps to running, succeeded or failed.

Each part is validated through prefect-databricks' typed Jobs models, then dumped *by alias*:
prefect-databricks 0.4.2 serializes models by field name, which would send `DbtTask.schema_`
as "schema_" and so drop the target schema.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Optional

import httpx
from prefect_databricks import DatabricksCredentials
from prefect_databricks.jobs import jobs_runs_cancel, jobs_runs_get, jobs_runs_get_output
from prefect_databricks.models.jobs import (
    ClusterTag, DbtTask, GitSource, Library, NewCluster, PythonPyPiLibrary, RunSubmitTaskSettings, SparkConfPair,
)
from prefect_databricks.rest import HTTPMethod, execute_endpoint
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from blocks.environment import DbtEnvironment, EnvironmentConfigError
from flows.errors import InputError, RunFailure

DbtCommand = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^dbt\s+\S")]
# Jobs API: "All commands must start with `dbt`. This parameter must not be empty. A maximum of up to 10."
DbtCommands = Annotated[list[DbtCommand], Field(min_length=1, max_length=10)]
GitUrl = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^https://\S+$", max_length=300)]
GitBranch = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


def _inside_repository(path: str) -> str:
    if path.startswith("/") or ".." in path.split("/"):
        raise InputError(f"project_directory must be a path inside the repository, got {path!r}")
    return path


ProjectDirectory = Annotated[str, StringConstraints(pattern=r"^[\w./-]*$"), AfterValidator(_inside_repository)]
GitProvider = Literal["gitHub", "bitbucketCloud", "azureDevOpsServices", "gitHubEnterprise", "bitbucketServer",
                      "gitLab", "gitLabEnterpriseEdition", "awsCodeCommit"]

PRODUCTION_COMMANDS = [
    "dbt deps",
    "dbt source freshness",
    "dbt build --exclude source:* --fail-fast",
    "dbt docs generate",
]
TASK_KEY = "dbt"
SERVERLESS_ENVIRONMENT_KEY = "dbt"
WAREHOUSE_HTTP_PATH = re.compile(r"^/?sql/1\.0/(?:warehouses|endpoints)/([0-9A-Za-z]+)/?$")


class DbtCliCluster(BaseModel):
    """The single-node job cluster that runs the dbt CLI (dbt's SQL runs on the SQL warehouse)."""

    model_config = ConfigDict(extra="forbid")

    spark_version: str = Field("16.4.x-scala2.12", description="Databricks Runtime of the cluster (an LTS).")
    node_type_id: Optional[str] = Field(
        None, description="Instance type. Empty: the smallest general-purpose type of the workspace's cloud.")
    dbt_databricks: str = Field("dbt-databricks>=1.12,<1.13", description="PyPI requirement installed for dbt (the minor version tested with this package).")

    def node_type_for(self, host: str) -> str:
        # The defaults Databricks' own bundle templates use per cloud.
        if self.node_type_id:
            return self.node_type_id
        if host.endswith(".azuredatabricks.net"):
            return "Standard_D3_v2"
        if host.endswith(".gcp.databricks.com"):
            return "n1-standard-4"
        return "i3.xlarge"


class ServerlessEnvironment(BaseModel):
    """Serverless compute for the dbt CLI: a job environment (Jobs API `environments[].spec`)."""

    model_config = ConfigDict(extra="forbid")

    environment_version: str = Field("2", pattern=r"^\d+$", description="Serverless environment version.")
    dbt_databricks: str = Field("dbt-databricks>=1.12,<1.13", description="PyPI requirement installed for dbt.")


class DbtJobRequest(BaseModel):
    """What to run and from where; where it writes comes from the environment block."""

    model_config = ConfigDict(extra="forbid")

    commands: DbtCommands = Field(default_factory=lambda: list(PRODUCTION_COMMANDS))
    git_url: GitUrl
    git_provider: GitProvider = "gitHub"
    git_branch: GitBranch = "main"
    project_directory: ProjectDirectory = "dbt_project"
    timeout_seconds: int = Field(3 * 3600, ge=60)
    cluster: DbtCliCluster = Field(default_factory=DbtCliCluster)
    serverless: Optional[ServerlessEnvironment] = Field(
        None, description="Run the dbt CLI on serverless compute instead of the job cluster.")


def warehouse_id_of(http_path: str) -> str:
    """`/sql/1.0/warehouses/<id>` → `<id>`: a dbt task runs its SQL on a SQL warehouse, not a cluster."""
    match = WAREHOUSE_HTTP_PATH.match(http_path.strip())
    if not match:
        raise EnvironmentConfigError(
            f"http_path {http_path!r} is not a SQL warehouse (expected /sql/1.0/warehouses/<id>): "
            "a Databricks dbt task needs a SQL warehouse")
    return match.group(1)


def _json(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def submit_payload(request: DbtJobRequest, environment: DbtEnvironment, run_name: str,
                   idempotency_token: Optional[str] = None) -> dict[str, Any]:
    """The JSON body of `runs/submit` for `request` against `environment`'s warehouse, catalog and schema."""
    auth, http_path = environment.require_databricks()
    dbt_task = DbtTask(commands=request.commands, warehouse_id=warehouse_id_of(http_path),
                       catalog=environment.catalog, schema=environment.schema_name,
                       project_directory=request.project_directory or None, source="GIT")
    environments = None
    if request.serverless is not None:
        task = _json(RunSubmitTaskSettings(task_key=TASK_KEY, dbt_task=dbt_task)) | {
            "environment_key": SERVERLESS_ENVIRONMENT_KEY}
        environments = [{"environment_key": SERVERLESS_ENVIRONMENT_KEY,
                         "spec": {"environment_version": request.serverless.environment_version,
                                  "dependencies": [request.serverless.dbt_databricks]}}]
    else:
        cluster = NewCluster(
            spark_version=request.cluster.spark_version,
            node_type_id=request.cluster.node_type_for(auth.host),
            num_workers=0,
            spark_conf=SparkConfPair.model_validate(
                {"spark.master": "local[*, 4]", "spark.databricks.cluster.profile": "singleNode"}),
            custom_tags=ClusterTag.model_validate({"ResourceClass": "SingleNode"}),
            data_security_mode="SINGLE_USER",
        )
        task = _json(RunSubmitTaskSettings(
            task_key=TASK_KEY, dbt_task=dbt_task, new_cluster=cluster,
            libraries=[Library(pypi=PythonPyPiLibrary(package=request.cluster.dbt_databricks))]))
    git = GitSource(git_url=request.git_url, git_provider=request.git_provider, git_branch=request.git_branch)
    payload = {"run_name": run_name, "tasks": [task], "git_source": _json(git), "environments": environments,
               "timeout_seconds": request.timeout_seconds, "idempotency_token": idempotency_token}
    return {key: value for key, value in payload.items() if value is not None}


Outcome = Literal["running", "succeeded", "failed"]
# The documented values (Jobs API runs/get; databricks-sdk 0.117 service/jobs.py, generated from
# the API spec). Jobs API 2.1 `state.life_cycle_state`, and 2.2 `status.state`, that are not terminal:
STILL_GOING = {"QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING_FOR_RETRY", "WAITING"}
# 2.1 life-cycle states that end a run without a result: it did not succeed.
ENDED_WITHOUT_RESULT = {"SKIPPED", "INTERNAL_ERROR"}
# `state.result_state` / `status.termination_details.code` of a run that did what it was asked.
# SUCCESS_WITH_FAILURES is not among them: some task failed, so some dbt work did not succeed.
SUCCEEDED = {"SUCCESS"}


@dataclass(frozen=True)
class RunState:
    """One observation of a run (or of one of its tasks) from `runs/get`."""

    life_cycle_state: str
    result_state: Optional[str]  # the result state, or with `status` the termination code
    state_message: str
    outcome: Outcome = "running"

    @classmethod
    def of(cls, run: Any) -> "RunState":
        """Read from a run or task payload: `status` when present, else `state`; unknown values are kept."""
        run = run if isinstance(run, dict) else {}
        status = run.get("status") if isinstance(run.get("status"), dict) else {}
        if status.get("state"):
            life = str(status["state"])
            details = status.get("termination_details") or {}
            queue = status.get("queue_details") or {}
            code = details.get("code")
            message = details.get("message") or queue.get("message") or ""
            succeeded = code in SUCCEEDED or (code is None and details.get("type") == "SUCCESS")
        else:
            state = run.get("state") if isinstance(run.get("state"), dict) else {}
            life = str(state.get("life_cycle_state") or "UNKNOWN")
            code = state.get("result_state")
            message = state.get("state_message") or ""
            succeeded = code in SUCCEEDED
            if life in ENDED_WITHOUT_RESULT:
                return cls(life, code, message, "failed")
        if life != "TERMINATED":
            # QUEUED, PENDING ... and any state added later: keep following (the wait is bounded)
            return cls(life, code, message, "running")
        return cls(life, code, message, "succeeded" if succeeded else "failed")

    @property
    def terminal(self) -> bool:
        return self.outcome != "running"

    @property
    def succeeded(self) -> bool:
        return self.outcome == "succeeded"

    def __str__(self) -> str:
        text = self.life_cycle_state + (f" ({self.result_state})" if self.result_state else "")
        return text + (f": {self.state_message}" if self.state_message else "")


@dataclass(frozen=True)
class TaskRun:
    task_key: str
    run_id: Optional[int]
    state: RunState


@dataclass(frozen=True)
class JobRun:
    """What `runs/get` says about a run, read leniently: missing or unknown fields do not raise."""

    run_id: int
    run_page_url: Optional[str]
    state: RunState
    tasks: tuple[TaskRun, ...]

    @classmethod
    def of(cls, payload: Any, run_id: int) -> "JobRun":
        payload = payload if isinstance(payload, dict) else {}
        tasks = tuple(
            TaskRun(str(task.get("task_key") or "?"), task.get("run_id"), RunState.of(task))
            for task in payload.get("tasks") or [] if isinstance(task, dict))
        return cls(int(payload.get("run_id") or run_id), payload.get("run_page_url"), RunState.of(payload), tasks)


class DatabricksRunFailed(RunFailure):
    """The Databricks job run ended in a failed state."""


class DatabricksRunTimedOut(DatabricksRunFailed):
    pass


def is_transient(error: BaseException) -> bool:
    """Network trouble, throttling or a server error: worth asking again."""
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code == 429 or error.response.status_code >= 500
    return isinstance(error, httpx.TransportError)


async def _post_submit(credentials: DatabricksCredentials, payload: dict[str, Any]) -> dict[str, Any]:
    response = await execute_endpoint.fn("/2.1/jobs/runs/submit", credentials, http_method=HTTPMethod.POST,
                                         json=payload)
    try:
        response.raise_for_status()
    except httpx.HTTPStatusError as error:  # Databricks' own error_code and message say why
        raise httpx.HTTPStatusError(f"{error}: {response.text[:2000]}", request=error.request,
                                    response=error.response) from None
    return response.json()


async def submit_run(credentials: DatabricksCredentials, payload: dict[str, Any], attempts: int = 3,
                     retry_delay: float = 10) -> int:
    """`runs/submit`; a transient failure is retried, which the payload's idempotency token makes safe."""
    attempt = 1
    while True:
        try:
            response = await _post_submit(credentials, payload)
            return int(response["run_id"])
        except Exception as error:
            if attempt >= attempts or not is_transient(error):
                raise
        attempt += 1
        await asyncio.sleep(retry_delay)


class StateLog:
    """The last seen state of a run and of each of its tasks: logs a line only when one changes."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.run_page_url: Optional[str] = None
        self.states: dict[str, RunState] = {}

    def record(self, run: JobRun) -> RunState:
        if self.run_page_url is None and run.run_page_url:
            self.run_page_url = run.run_page_url
            self.log(f"Databricks run {run.run_id}: {run.run_page_url}")
        observed = [(f"Databricks run {run.run_id}", run.state)]
        observed += [(f"Databricks run {run.run_id}, task {t.task_key},", t.state) for t in run.tasks]
        for label, state in observed:
            if self.states.get(label) != state:
                self.states[label] = state
                self.log(f"{label} is {state}")
        return observed[0][1]


async def follow_run(credentials: DatabricksCredentials, run_id: int, poll_interval: float, max_wait: float,
                     log: Callable[[str], None], max_transient_errors: int = 5) -> JobRun:
    """Poll `runs/get` until the run ends, logging every change of state of the run and of its tasks.

    Cancels the run if we stop following it before it ends (wait exceeded, error, flow cancelled).
    A state we do not know is followed, not taken for an error: a queued run is not cancelled for it.
    """
    deadline = time.monotonic() + max_wait
    states = StateLog(log)
    transient_errors = 0
    finished = False
    try:
        while True:
            try:
                run = JobRun.of(await jobs_runs_get.fn(run_id=run_id, databricks_credentials=credentials), run_id)
                transient_errors = 0
            except Exception as error:
                transient_errors += 1
                if not is_transient(error) or transient_errors > max_transient_errors:
                    raise
                log(f"Databricks run {run_id}: could not read its state ({error}); asking again.")
            else:
                if states.record(run).terminal:
                    finished = True
                    return run
            if time.monotonic() >= deadline:
                raise DatabricksRunTimedOut(
                    f"Databricks run {run_id} did not finish within {max_wait:.0f} s, so it was cancelled. "
                    f"Run page: {states.run_page_url or '(unknown)'}")
            await asyncio.sleep(poll_interval)
    finally:
        if not finished:
            await _cancel_quietly(credentials, run_id, log)


async def _cancel_quietly(credentials: DatabricksCredentials, run_id: int, log: Callable[[str], None]) -> None:
    try:
        await jobs_runs_cancel.fn(databricks_credentials=credentials, run_id=run_id)
        log(f"Databricks run {run_id}: cancel requested.")
    except Exception as error:  # the original failure matters more than this one
        log(f"Databricks run {run_id}: could not cancel it ({error}); cancel it from its run page.")


async def failure_message(credentials: DatabricksCredentials, run: JobRun, what: str) -> str:
    """Why `run` failed: its state, each failed task's error from `runs/get-output`, and the run page."""
    lines = [f"{what} (Databricks run {run.run_id}) ended {run.state}"]
    for task in run.tasks:
        state = task.state
        if state.succeeded or task.run_id is None:
            continue
        try:
            output = await jobs_runs_get_output.fn(run_id=task.run_id, databricks_credentials=credentials)
        except Exception:  # the run's own state is still worth reporting
            output = {}
        error = " ".join(str(output.get("error") or "").split())[:500]
        lines.append(f"task {task.task_key}: {state}" + (f" — {error}" if error else ""))
    lines.append(f"Run page: {run.run_page_url or '(not given by Databricks)'}")
    return "\n".join(lines)
