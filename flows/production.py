"""The nightly production run of a dbt project: the runbook, one named task per step.

    deps → source freshness → freshness gate → source tests → prepare version → seeds → snapshots
    → one build per layer (tested before the next) → docs → save state → publish → promote state
    → snapshots of models (blue-green: only after the flip, reading what was published)

`python -m flows.production --help` runs it locally.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed
from pydantic import PositiveInt

from flows.core import dry_run, publishing, steps
from flows.core.artifacts import publish_artifacts
from flows.core.cli import flow_parser, run_from_shell
from flows.core.dbt import StepResult
from flows.core.layers import Plan
from flows.core.progress import planned_steps
from flows.core.stop import step_deadline
from blocks.environment import EnvironmentName
from flows.core.run import DEFAULT_LAYERS, Layer, ProductionRun, RunOptions, open_run



def _step(name: str):
    """A production step: a named task that runs once per flow run, even across flow retries."""
    def wrap(function):
        @task(name=name, cache_policy=NO_CACHE)
        def run_step(run: ProductionRun, *args):
            if name in run.journal.done:
                run.report.note(name, "skipped", "done in an earlier attempt of this run")
                return None
            try:
                # The step's timeout: it cancels the step's dbt queries, then fails naming the step (stop.py)
                with step_deadline(name, run.environment.step_timeout_seconds):
                    result = function(run, *args)
            except steps.StepFailed as failure:
                run.report.record(name, failure.result)
                run.journal.fail(name)
                raise
            except BaseException as error:
                run.report.note(name, "failed", str(error).splitlines()[0][:300] if str(error) else type(error).__name__)
                run.journal.fail(name)
                raise
            if isinstance(result, StepResult):
                run.report.record(name, result)
            run.journal.complete(name)
            return result

        return run_step
    return wrap


@_step("dbt deps")
def dbt_deps(run):
    return steps.dbt_deps(run)


@task(name="parse and select", cache_policy=NO_CACHE)
def parse_and_select(run):
    selection = steps.parse_and_select(run)
    publishing.check_version_placement(run)  # blue-green: what the version would build outside itself
    return selection


@_step("source freshness")
def source_freshness(run):
    return steps.source_freshness(run)


@task(name="freshness gate", cache_policy=NO_CACHE)
def freshness_gate(run, selection) -> Plan:
    plan = _journaled_plan(run, lambda: steps.apply_gate(run, selection))
    run.report.progress.expect(planned_steps(plan))  # the nodes the build steps' progress counts to
    return plan


@task(name="plan only", cache_policy=NO_CACHE)
def plan_only_report(run, selection) -> str:
    return dry_run.post_plan(run, selection)


@_step("source tests")
def source_tests(run):
    return steps.source_tests(run)


@_step("prepare version")
def prepare_version(run, plan: Plan):
    return publishing.prepare_version(run, plan)


@_step("seeds")
def seeds(run, plan: Plan):
    return steps.seeds(run, plan)


@_step("snapshots")
def snapshots(run, plan: Plan):
    return steps.snapshots(run, plan)


def build_layer(run, stage):
    return _step(f"build {stage.name}")(steps.build_layer)(run, stage)


@_step("docs")
def docs(run):
    result = steps.docs(run)
    publishing.show_live_names_in_docs(run)  # live relation names; only pages that work
    return result


@_step("publish")
def publish(run, plan: Plan) -> str:
    return publishing.publish(run, plan)


@_step("save state")
def save_state(run):
    return steps.save_state(run)


@_step("snapshots of models")
def model_snapshots(run, plan: Plan):
    return steps.model_snapshots(run, plan)


@_step("promote state")
def promote_state(run):
    return steps.promote_state(run)


def _journaled_plan(run: ProductionRun, make_plan) -> Plan:
    """The plan of the first attempt, so a flow retry builds the same nodes."""
    saved = run.journal.data.get("plan")
    if saved:
        return Plan.from_json(saved)
    plan = make_plan()
    run.journal.data["plan"] = plan.to_json()
    run.journal.save()
    return plan


@flow(name="production-run", log_prints=True)
def production_run(
    environment: EnvironmentName = "local",
    project_dir: Optional[str] = None,
    select: list[str] = [],
    exclude: list[str] = [],
    full_refresh: bool = False,
    vars: dict[str, Any] = {},
    layers: list[Layer] = DEFAULT_LAYERS,
    freshness_gate: bool = True,
    run_snapshots: bool = True,
    generate_docs: bool = True,
    publish: bool = True,
    fail_fast: bool = True,
    threads: Optional[PositiveInt] = None,
    node_tasks: bool = False,
    allow_shrink: bool = False,
    keep_failed_version: bool = False,
    plan_only: bool = False,
):
    """Run the dbt project in production: fresh sources only, layer by layer, tested, then published.

    Args:
        environment: Which environment block to run against (local is DuckDB, built in).
        project_dir: dbt project folder. Empty: the bundled dbt_project/.
        select: dbt selectors limiting the run (empty: everything).
        exclude: dbt selectors to leave out.
        full_refresh: Rebuild incremental models and seeds from scratch; bypasses the freshness gate.
        vars: dbt vars, as a mapping.
        layers: Ordered layers, each built and tested before the next. Nodes in no layer go last.
        freshness_gate: Build only what is downstream of fresher sources or changed code.
        run_snapshots: Take snapshots.
        generate_docs: Generate the static docs site and keep it in the state store.
        publish: Publish the build (blue-green flip where the environment enables it).
        fail_fast: Stop a layer at its first failure.
        threads: dbt threads (empty: the environment's).
        node_tasks: One Prefect task run per dbt node (prefect-dbt's runner). Slower; off by default.
        allow_shrink: Publish even when the audit sees a relation shrink or empty.
        keep_failed_version: Keep a failed version's schema for debugging instead of dropping it.
        plan_only: Only say what a run would build now, and why: parse, check freshness, apply the gate,
            post the plan. Builds nothing, takes no lock, writes no state.
    """
    options = RunOptions(
        environment=environment, project_dir=project_dir, select=select, exclude=exclude,
        full_refresh=full_refresh, vars=vars, layers=layers, freshness_gate=freshness_gate,
        run_snapshots=run_snapshots, generate_docs=generate_docs, publish=publish, fail_fast=fail_fast,
        threads=threads, node_tasks=node_tasks, allow_shrink=allow_shrink, keep_failed_version=keep_failed_version,
        plan_only=plan_only,
    )
    logger = get_run_logger()
    with open_run(options, str(flow_run.id or "local")) as run:
        try:
            _run_book(run)
        except BaseException as error:
            run.report.outcome = f"failed: {error}"
            publishing.discard_version(run, str(error))
            _report(run.report, manifest=run.live.manifest)
            raise
        _report(run.report, docs_url=_docs_url(run), manifest=run.live.manifest)
        logger.info("Outcome: %s.", run.report.outcome)
        if run.report.outcome == "nothing to rebuild" or plan_only:
            return Completed(message=run.report.outcome)
        return run.report.outcome


def _report(report, docs_url: Optional[str] = None, manifest=None) -> None:
    """Post the run's artifacts. They are reporting only: when the Prefect API cannot take them
    (it went away mid-run), say so and carry on, rather than fail a run that already published
    or hide the error a failing run is raising."""
    try:
        publish_artifacts(report, docs_url=docs_url, manifest=manifest)
    except Exception as error:  # noqa: BLE001
        get_run_logger().error("Could not post the run's artifacts (%s: %s); outcome: %s.",
                               type(error).__name__, error, report.outcome)


def _run_book(run: ProductionRun) -> None:
    dbt_deps(run)
    selection = parse_and_select(run)
    source_freshness(run)
    if run.options.plan_only:
        run.report.outcome = plan_only_report(run, selection)
        return
    plan = freshness_gate(run, selection)
    if plan.is_empty():
        run.report.outcome = "nothing to rebuild"
        return
    source_tests(run)
    prepare_version(run, plan)  # blue-green: record the version, clean up orphans, copy incremental models
    seeds(run, plan)
    snapshots(run, plan)
    for stage in plan.layers:
        build_layer(run, stage)
    docs(run)
    save_state(run)  # staged before the flip: live never points at a version whose state was not saved
    outcome = publish(run, plan)
    promote_state(run)  # also compares this run's model timings with their history (regressions, trends)
    if run.blue_green and any(u.startswith("snapshot.") for stage in plan.layers for u in stage.nodes):
        model_snapshots(run, plan)  # SCD history only of what was published
    run.report.outcome = f"completed: {outcome}"


def _docs_url(run: ProductionRun) -> Optional[str]:
    if not run.options.generate_docs or "docs" not in run.journal.done:
        return None
    location = run.store.docs_location()
    return location if "://" in location else f"file://{location}"


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m flows.production`: the flow from a shell, one option per parameter (flows/core/cli.py)."""
    parser = flow_parser(production_run, prog="python -m flows.production",
                         aliases={"run_snapshots": "snapshots", "generate_docs": "docs"})
    return run_from_shell(production_run, vars(parser.parse_args(argv)), "production_run")


if __name__ == "__main__":
    sys.exit(main())
