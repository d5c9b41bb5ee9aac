"""The production dbt commands as a Databricks job run, followed from Prefect.

The dbt commands of the runbook are submitted as a one-time Databricks run with a dbt task
(Jobs API 2.1 `runs/submit`, through prefect-databricks). Every change of state of the run
and of its task is logged here; the flow fails when the run does not succeed, with the state
message, the task's error and the run page URL. Credentials come from the environment block,
never from parameters.

Unlike `production_run`, this runs dbt as Databricks runs it: one dbt invocation per command,
no freshness gate, no layers, no blue-green publish.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Optional

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect_databricks import DatabricksCredentials
from pydantic import Field

from blocks.environment import EnvironmentConfigError, EnvironmentName, load_environment
from flows.core.databricks_jobs import (
    PRODUCTION_COMMANDS, DatabricksRunFailed, DbtCliCluster, DbtCommands, DbtJobRequest, GitBranch, GitProvider,
    GitUrl, ProjectDirectory, ServerlessEnvironment, failure_message, follow_run, submit_payload, submit_run,
)

# Databricks enforces the run's timeout_seconds; waiting a little longer lets it report TIMEDOUT itself.
WAIT_GRACE_SECONDS = 15 * 60


# prefect-databricks' calls are async; each task runs them on its own event loop, so the flow stays
# sync like the others (and loads its environment block the sync way).
@task(name="submit dbt job run", cache_policy=NO_CACHE)
def submit_dbt_run(credentials: DatabricksCredentials, payload: dict[str, Any]) -> int:
    logger = get_run_logger()
    run_id = asyncio.run(submit_run(credentials, payload))
    logger.info("Submitted Databricks run %s (%s).", run_id, payload["run_name"])
    return run_id


@task(name="follow dbt job run", cache_policy=NO_CACHE)
def follow_dbt_run(credentials: DatabricksCredentials, run_id: int, poll_interval_seconds: float,
                   max_wait_seconds: float, what: str) -> dict[str, Any]:
    logger = get_run_logger()
    run = asyncio.run(follow_run(credentials, run_id, poll_interval_seconds, max_wait_seconds, logger.info))
    state = run.state
    if not state.succeeded:
        raise DatabricksRunFailed(asyncio.run(failure_message(credentials, run, what)))
    return {"run_id": run_id, "run_page_url": run.run_page_url, "result_state": state.result_state}


@flow(name="databricks-dbt-job")
def databricks_job_run(
    environment: EnvironmentName = "prod",
    commands: DbtCommands = PRODUCTION_COMMANDS,
    *,
    git_url: GitUrl,
    git_provider: GitProvider = "gitHub",
    git_branch: GitBranch = "main",
    project_directory: ProjectDirectory = "dbt_project",
    timeout_seconds: Annotated[int, Field(ge=60)] = 3 * 3600,
    cluster: DbtCliCluster = DbtCliCluster(),
    serverless: Optional[ServerlessEnvironment] = None,
    poll_interval_seconds: Annotated[float, Field(gt=0)] = 30,
    build_into_live_schema: bool = False,
) -> dict[str, Any]:
    """Run dbt commands as a Databricks one-time job run with a dbt task, and wait for it.

    Args:
        environment: Databricks environment block: SQL warehouse, catalog, schema and credentials.
        commands: dbt commands, run in order by Databricks (1 to 10, each starting with `dbt`).
        git_url: HTTPS URL of the Git repository holding the dbt project.
        git_provider: Git provider of that repository, as the Jobs API names it.
        git_branch: Branch to run.
        project_directory: The dbt project's folder inside the repository.
        timeout_seconds: Databricks cancels the run after this long (TIMEDOUT).
        cluster: The single-node job cluster that runs the dbt CLI.
        serverless: Run the dbt CLI on serverless compute instead (dbt-databricks pinned in its
            environment spec); the cluster is then not used.
        poll_interval_seconds: How often to read the run's state.
        build_into_live_schema: Run even though the environment publishes through blue-green views:
            this run builds straight into the live schema.
    """
    logger = get_run_logger()
    env = load_environment(environment)
    if env.adapter != "databricks":
        raise EnvironmentConfigError(f"environment {env.name!r} runs on {env.adapter}; a Databricks job needs "
                                     "a Databricks environment")
    if env.blue_green.enabled and not build_into_live_schema:
        raise EnvironmentConfigError(
            f"environment {env.name!r} publishes through blue-green views, and a Databricks job run would build "
            f"straight into the live schema {env.schema_name!r}; use production_run, or set "
            "build_into_live_schema=True to accept that")
    auth, _ = env.require_databricks()
    credentials = auth.jobs_credentials()  # the environment's one identity, as dbt and our SQL use it
    request = DbtJobRequest(commands=commands, git_url=git_url, git_provider=git_provider, git_branch=git_branch,
                            project_directory=project_directory, timeout_seconds=timeout_seconds, cluster=cluster,
                            serverless=serverless)
    # A new token per attempt: a flow retry submits a new run, an HTTP retry finds the same one.
    token = f"prefect-{flow_run.id or 'local'}-{flow_run.run_count or 1}"
    payload = submit_payload(request, env, run_name=f"dbt {env.name}: {flow_run.name or 'local'}",
                             idempotency_token=token)
    task_spec = payload["tasks"][0]["dbt_task"]
    logger.info("Running %d dbt command(s) on Databricks in %s.%s (warehouse %s) from %s@%s/%s.",
                len(request.commands), task_spec.get("catalog", "<default catalog>"), task_spec["schema"],
                task_spec["warehouse_id"], request.git_url, request.git_branch, request.project_directory)
    run_id = submit_dbt_run(credentials, payload)
    return follow_dbt_run(credentials, run_id, poll_interval_seconds,
                          timeout_seconds + WAIT_GRACE_SECONDS, f"dbt in environment {env.name!r}")
