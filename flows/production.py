"""The nightly production run of a dbt project: the runbook, a list of named stages (flows/core/runbook.py).

    deps → source freshness → freshness gate → source tests → prepare version → seeds → snapshots
    → one build per layer (tested before the next) → docs → save state → publish → promote state
    → snapshots of models (blue-green: only after the flip, reading what was published)

`python -m flows.production --help` runs it locally.
"""

from __future__ import annotations

import sys
from functools import partial
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
from flows.core.layers import LayerMode, Plan
from flows.core.progress import planned_steps
from flows.core.runbook import Stage, evaluate, evaluate_all
from blocks.environment import EnvironmentName
from flows.core.run import DEFAULT_LAYERS, Layer, ProductionRun, RunOptions, open_run



@task(name="parse and select", cache_policy=NO_CACHE)
def parse_and_select(run):
    selection = steps.parse_and_select(run)
    publishing.check_version_placement(run)  # blue-green: what the version would build outside itself
    return selection


@task(name="freshness gate", cache_policy=NO_CACHE)
def freshness_gate(run, selection) -> Plan:
    plan = _journaled_plan(run, lambda: steps.apply_gate(run, selection))
    run.report.progress.expect(planned_steps(plan))  # the nodes the build steps' progress counts to
    return plan


@task(name="plan only", cache_policy=NO_CACHE)
def plan_only_report(run, selection) -> str:
    return dry_run.post_plan(run, selection)


def _docs(run):
    result = steps.docs(run)
    publishing.show_live_names_in_docs(run)  # live relation names; only pages that work
    return result


def build_and_publish(run: ProductionRun, plan: Plan) -> list[Stage]:
    """The runbook once the gate has decided what to build: each stage runs once per flow run."""
    stages = [
        Stage("source tests", lambda run: steps.source_tests(run, plan)),
        # blue-green: record the version, clean up orphans, copy incremental models
        Stage("prepare version", lambda run: publishing.prepare_version(run, plan)),
        Stage("seeds", lambda run: steps.seeds(run, plan)),
        Stage("snapshots", lambda run: steps.snapshots(run, plan)),
        *(Stage(f"build {layer.name}", partial(steps.build_layer, stage=layer)) for layer in plan.layers),
        Stage("docs", _docs),
        # staged before the flip: live never points at a version whose state was not saved
        Stage("save state", steps.save_state),
        Stage("publish", lambda run: publishing.publish(run, plan)),
        # also compares this run's model timings with their history (regressions, trends)
        Stage("promote state", steps.promote_state),
    ]
    if run.blue_green and any(u.startswith("snapshot.") for layer in plan.layers for u in layer.nodes):
        stages.append(Stage("snapshots of models", lambda run: steps.model_snapshots(run, plan)))  # of what was published
    return stages


def _journaled_plan(run: ProductionRun, make_plan) -> Plan:
    """The plan of the first attempt, so a flow retry builds the same nodes."""
    if run.journal.plan:
        return run.journal.plan
    plan = make_plan()
    run.journal.plan = plan
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
    layer_mode: LayerMode = "layers",
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
        layer_mode: layers: one build per layer, each waits for the whole layer before it. dag: one build
            of all layers; each model is still tested before anything downstream of it runs, without
            waiting for the rest of its layer (faster where models wait on the warehouse).
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
        full_refresh=full_refresh, vars=vars, layers=layers, layer_mode=layer_mode, freshness_gate=freshness_gate,
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
    evaluate(run, Stage("dbt deps", steps.dbt_deps))
    selection = parse_and_select(run)
    evaluate(run, Stage("source freshness", steps.source_freshness))
    if run.options.plan_only:
        run.report.outcome = plan_only_report(run, selection)
        return
    plan = freshness_gate(run, selection)
    if plan.is_empty():
        run.report.outcome = "nothing to rebuild"
        return
    results = evaluate_all(run, build_and_publish(run, plan))
    run.report.outcome = f"completed: {results['publish']}"


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
