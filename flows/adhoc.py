"""One dbt command, with selectors, for operators: the "run this now" button in the Prefect UI.

Everything an operator can get wrong fails before dbt does any work: prod without
`confirm_prod`, flags the command does not take, a selector dbt cannot parse. A
selector that matches nothing is a warning and a Completed run, not a failure.

Commands that write (build, run, seed, snapshot, retry) hold the environment's publish
lock, so they never write while a production run publishes. On a blue-green
environment they write tables straight into the live schema, standing in for the
published views of the nodes they build until the next publish or rollback.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal, Optional

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed

from blocks.environment import EnvironmentName, load_environment
from blocks.local import local_paths
from blocks.profile import rendered_profile
from flows.core.artifacts import RunReport, artifact_key, failures_markdown, markdown_table
from flows.core.dbt import DbtCommandError, DbtProject, StepResult
from flows.core.lock import PublishLock
from flows.core.run import project_folder
from flows.core.state_store import StateStore
from flows.core.steps import StepFailed, install_packages
from flows.errors import InputError

AdhocCommand = Literal[
    "build", "run", "test", "seed", "snapshot", "source freshness", "docs generate", "retry", "ls"
]
WRITES = {"build", "run", "seed", "snapshot", "retry"}
TAKES_FULL_REFRESH = {"build", "run", "seed"}
TAKES_NO_SELECTION = {"retry"}  # dbt retry re-runs exactly what failed last time


def check_request(environment: str, command: str, select: list[str], exclude: list[str],
                  full_refresh: bool, confirm_prod: bool, project_dir: Optional[str]) -> Path:
    """Every check that needs no environment and no dbt; returns the project folder."""
    if environment == "prod" and not confirm_prod:
        raise InputError(
            f"refusing to run `dbt {command}` against prod without confirm_prod=True: "
            "tick 'confirm_prod' to confirm you mean prod"
        )
    if full_refresh and command not in TAKES_FULL_REFRESH:
        raise InputError(f"full_refresh applies to {sorted(TAKES_FULL_REFRESH)}, not to `dbt {command}`")
    if command in TAKES_NO_SELECTION and (select or exclude):
        raise InputError(f"`dbt {command}` takes no select/exclude: it re-runs what failed in the last run")
    return project_folder(project_dir)


@task(name="check selection", cache_policy=NO_CACHE)
def check_selection(project: DbtProject, select: list[str], exclude: list[str]) -> int:
    """Parse once, then resolve the selection with dbt ls: a bad selector fails here, not mid-run."""
    install_packages(project)  # a fresh checkout cannot parse before `dbt deps`
    project.parse()
    try:
        return len(project.list_ids(select or None, exclude or None))
    except DbtCommandError as error:
        raise InputError(str(error)) from None


@task(name="dbt command", cache_policy=NO_CACHE)
def run_command(project: DbtProject, argv: list[str]) -> StepResult:
    if argv[0] == "ls":  # ls returns names, not node results: log them instead
        result = project.raw_invoke(argv)
        if not result.success:
            raise DbtCommandError(f"dbt ls failed: {result.exception or 'see the dbt log above'}")
        lines = list(result.result or [])
        get_run_logger().info("dbt ls: %d node(s)\n%s", len(lines), "\n".join(lines))
        return StepResult("ls", True, 0.0)
    return project.run(argv)


def dbt_argv(command: str, select: list[str], exclude: list[str], full_refresh: bool) -> list[str]:
    argv = command.split()
    if select:
        argv += ["--select", *select]
    if exclude:
        argv += ["--exclude", *exclude]
    if full_refresh:
        argv.append("--full-refresh")
    return argv


def summary(environment: str, argv: list[str], result: StepResult) -> str:
    report = RunReport(environment=environment)
    report.record(argv[0], result)
    parts = [f"# dbt {' '.join(argv)} — `{environment}`: {'ok' if result.success else 'failed'}",
             f"{result.seconds:.1f} s; " + (", ".join(f"{k}={v}" for k, v in sorted(result.counts().items())) or "no nodes")]
    if result.nodes:
        parts.append("## Nodes\n" + markdown_table(
            ["node", "type", "status", "seconds", "message"],
            [[n.name, n.resource_type, n.status, f"{n.execution_time:.2f}", n.message[:200]] for n in result.nodes],
        ))
    if report.failures:
        parts.append("## Failures\n" + failures_markdown(report))
    return "\n\n".join(parts)


@flow(name="adhoc-dbt", log_prints=True)
def adhoc_dbt(
    environment: EnvironmentName,
    command: AdhocCommand,
    select: list[str] = [],
    exclude: list[str] = [],
    vars: dict[str, Any] = {},
    full_refresh: bool = False,
    confirm_prod: bool = False,
    project_dir: Optional[str] = None,
):
    """Run one dbt command against an environment, e.g. `build` of `stg_customers+`.

    Args:
        environment: Which environment to run against (local is DuckDB, built in).
        command: The dbt command.
        select: dbt selectors (empty: everything the command covers).
        exclude: dbt selectors to leave out.
        vars: dbt vars, as a mapping.
        full_refresh: Rebuild incremental models and seeds from scratch (build, run, seed).
        confirm_prod: Must be ticked to run against prod.
        project_dir: dbt project folder. Empty: the bundled dbt_project/.
    """
    logger = get_run_logger()
    path = check_request(environment, command, select, exclude, full_refresh, confirm_prod, project_dir)
    env = load_environment(environment)
    run_id = str(flow_run.id or "local")
    with ExitStack() as stack:
        if command in WRITES:
            stack.enter_context(PublishLock(StateStore.for_environment(env), run_id))
            if env.blue_green.enabled:
                logger.warning("%s publishes blue-green: `dbt %s` writes straight into live schema %r "
                               "until the next publish or rollback.", environment, command, env.schema_name)
        profile = stack.enter_context(rendered_profile(env, path))
        # One target folder per environment, kept between runs so `dbt retry` finds the last results.
        target = local_paths().work / env.name / "adhoc-target"
        project = DbtProject(path, profile, target, vars)
        if command not in TAKES_NO_SELECTION and check_selection(project, select, exclude) == 0:
            logger.warning("The selection select=%s exclude=%s matches no node: nothing to do.", select, exclude)
            return Completed(message="the selection matches no node")
        argv = dbt_argv(command, select, exclude, full_refresh)
        result = run_command(project, argv)
    create_markdown_artifact(summary(environment, argv, result), key=artifact_key(environment, "adhoc"),
                             description=f"dbt {command} (adhoc)")
    if not result.success:
        raise StepFailed(f"dbt {command}", result)
    return result.counts()
