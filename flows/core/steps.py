"""The mechanics of each production step, on top of a ProductionRun.

flows/production.py wraps each of these in a named Prefect task; here they are plain
functions so that the flow file reads like the runbook.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.logging import get_run_logger

from flows.core.artifacts import code_checksums, find_regressions, slowest_trends, timing_samples
from flows.core.command import DbtCommand
from flows.core.dbt import BUILDABLE, EXECUTED, DbtCommandError, DbtProject, StepResult, resource_type_of
from flows.core.results import Rescue, rescued
from flows.core.transient import rescuable, transient_cause
from flows.core.freshness import (
    GateDecision, decide_gate, gate_state_files, sources_file, raise_if_stale, read_report, sources_with_freshness, undatable_sources,
)
from flows.core.layers import Graph, Plan, Stage, plan_stages
from flows.core.run import ProductionRun
from flows.errors import RunFailure, cause_line



@dataclass
class Selection:
    candidates: set[str]  # models, seeds and snapshots the run's select/exclude pick


class StepFailed(RunFailure):
    def __init__(self, step: str, result: StepResult):
        failures = result.failures
        listing = "; ".join(f"{f.name}: {cause_line(f.message) or f.status}" for f in failures[:5])
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{step} failed: {listing or 'dbt reported failure'}{more}")
        self.step = step
        self.result = result


def _checked(step: str, result: StepResult) -> StepResult:
    if not result.success:
        raise StepFailed(step, result)
    return result


def install_packages(project: DbtProject) -> StepResult:
    """`dbt deps` where the project declares packages; a failure fails the step, naming it."""
    return _checked("dbt deps", project.install_packages())


def dbt_deps(run: ProductionRun) -> StepResult:
    return install_packages(run.live)


def source_freshness(run: ProductionRun) -> StepResult:
    logger = get_run_logger()
    manifest = run.live.parsed_manifest
    if not sources_with_freshness(manifest):
        undatable = undatable_sources(manifest)
        if undatable:  # dbt would fail each of them: "no 'loaded_at_field' provided and <adapter> ..."
            logger.warning("No source can be dated: %s set a freshness threshold but no loaded_at_field or "
                           "loaded_at_query, and %s cannot date tables from metadata; skipping source freshness.",
                           ", ".join(undatable), manifest.metadata.adapter_type)
        else:
            logger.info("No source has freshness configured: skipping source freshness.")
        return StepResult.skipped("source freshness", "no source has freshness configured")
    # Freshness queries each source itself: listing every schema's relations first (dbt's cache)
    # only costs time (0.35 s at 2,000 nodes on DuckDB; a round trip per schema on Databricks).
    result = run.live.run(run.live.command("source freshness", extra=("--no-populate-cache",)))
    # This run's own copy, in its run dir (a flow retry that skips this step still reads it): the gate
    # and save_state read it there, never what a command left in the shared target dir.
    if result.sources is not None:
        sources_file(run).write_text(json.dumps(result.sources))
    run.report.freshness = read_report(result.sources, manifest, result.nodes)
    for warning in raise_if_stale(run.report.freshness):
        if warning.loaded_by_seed:
            logger.info("Source %s is %s.", warning.source, warning.outcome)
        elif warning.not_checked:
            logger.warning("Source %s could not be checked (%s); it sets no error_after, so the run goes on.",
                           warning.source, warning.error or "freshness check failed")
        else:
            logger.warning("Source %s is getting stale (%s old); the run goes on.", warning.source, warning.age)
    # What could not be checked is in the freshness report; it is not a failed node of the run.
    return StepResult(result.command, True, result.seconds, [n for n in result.nodes if not n.failed],
                      sources=result.sources)


def parse_and_select(run: ProductionRun) -> Selection:
    """Parse once, and resolve the run's selection now, so a selector that fails fails before any dbt work.

    (Selector syntax, the layers' included, was checked when the options were made; what each
    layer matches is listed only when the gate leaves something to build.)
    """
    logger = get_run_logger()
    options, live = run.options, run.live
    live.parse()  # the versioned build project parses later, only if there is something to build
    if options.select or options.exclude:
        candidates = live.list_ids(options.select or None, [*options.exclude, "source:*"], BUILDABLE)
    else:  # what `dbt ls --resource-type model seed snapshot` lists, without a second of dbt to list it
        candidates = {u for u, node in live.parsed_manifest.nodes.items() if node.resource_type.value in BUILDABLE}
    if options.select and not candidates:
        logger.warning("The selection %s matches no model, seed or snapshot: nothing to build.", options.select)
    return Selection(candidates)


def apply_gate(run: ProductionRun, selection: Selection) -> Plan:
    """The gate's decision (freshness.py), split into layers."""
    return plan_layers(run, decide_gate(run, set(selection.candidates)))


def plan_layers(run: ProductionRun, decision: GateDecision) -> Plan:
    """What the gate lets through, split into seeds, snapshots and the run's layers."""
    candidates = set(decision.candidates)
    layers = [(layer.name, run.live.list_ids([layer.select], None, BUILDABLE) if candidates else set())
              for layer in run.options.layers]
    graph = Graph(run.live.parsed_manifest)
    plan = plan_stages(graph, candidates, layers)
    if run.options.layer_mode == "dag":
        plan = plan.in_one_build()
    if not decision.off_reason:  # gated: the sources read, and those fresher or changed since the last build
        plan.tested_sources = graph.sources_read_by(plan.nodes) | decision.fresher | decision.changed
    for name in plan.empty_layers:
        get_run_logger().info("Layer %r has nothing to build: skipped.", name)
    run.report.empty_layers = plan.empty_layers
    return plan


def source_tests(run: ProductionRun, plan: Plan) -> StepResult:
    """Tests of the sources, before anything reads them (tests of sources that the project's own seeds
    load run with the first layer instead, once the seeds are loaded: see layers.py). A gated run
    tests the sources it reads and those whose data is new (plan.tested_sources)."""
    graph = Graph(run.live.parsed_manifest)
    tests = graph.source_tests()
    if not tests:
        return StepResult.skipped("source tests", "no tests on sources")
    if plan.tested_sources is not None:
        tests = {t for t in tests if plan.tested_sources & set(graph.parents[t])}
        if not tests:
            return StepResult.skipped("source tests", "no source this run reads or found changed has tests")
    return _checked("source tests", run.live.run(run.live.command("test", **_exactly(tests))))


def _exactly(ids: set[str]) -> dict[str, Any]:
    """DbtCommand fields selecting exactly `ids`, and only what dbt executes of them."""
    return {"nodes": frozenset(u for u in ids if resource_type_of(u) in EXECUTED)}


def _deferral(run: ProductionRun) -> dict[str, Any]:
    # Nodes this run does not build (snapshots, gated-out models) resolve to live, read from the
    # live parse this process holds rather than a manifest.json written and read back per command.
    return {"defer": True, "defer_state": str(run.live.memory_state())} if run.blue_green else {}


BACKOFF_SECONDS = 2.0  # before the first in-step `dbt retry`; doubled before each next one


def _dbt_step(run: ProductionRun, step: str, project: DbtProject, command: DbtCommand) -> StepResult:
    """Run a dbt command, rescuing its transient failures; on a flow retry of the step that
    failed, `dbt retry` it instead."""
    slug = step.replace(" ", "-")
    retry_state = run.run_dir / "retry" / slug
    if run.journal.failed == step and (retry_state / "run_results.json").exists():
        get_run_logger().info("Retrying only the failed and skipped nodes of %r with dbt retry.", step)
        # dbt retry does not carry the deferral over: command.retry keeps it
        with run.report.progress.step(step) as progress:
            result = project.run(command.retry(str(retry_state)), callbacks=[progress])
            result = _rescue_transient_failures(run, step, project, command, result)
    else:
        with run.report.progress.step(step) as progress:
            result = project.run(command, node_tasks=run.options.node_tasks and command.verb == "build",
                                 callbacks=[progress])
            # prefect-dbt's runner (node_tasks) does not call our callback; hooks (operations) are no nodes to run
            progress.saw(sum(1 for node in result.nodes if node.resource_type != "operation"))
            result = _rescue_transient_failures(run, step, project, command, result)
    if result.run_results:
        attempt = run.run_dir / "steps" / f"{slug}.attempt-{_attempt()}.json"
        attempt.parent.mkdir(exist_ok=True)
        attempt.write_text(json.dumps(result.run_results))
    if not result.success:
        if result.run_results:  # what a flow retry hands to `dbt retry`: every node as it last ran
            retry_state.mkdir(parents=True, exist_ok=True)
            (retry_state / "run_results.json").write_text(json.dumps(result.run_results))
        raise StepFailed(step, result)
    return result


def _rescue_transient_failures(run: ProductionRun, step: str, project: DbtProject, command: DbtCommand,
                               result: StepResult) -> StepResult:
    """`dbt retry` the step while every failure is transient (flows/core/transient.py), at most
    `transient_retries` times, waiting longer before each. A real failure is never retried: with
    one among the failures, the step fails as it is."""
    logger = get_run_logger()
    retries = run.environment.transient_retries
    for attempt in range(1, retries + 1):
        transient = rescuable(result.failures, run.environment.adapter) if not result.success else []
        if not transient or not result.run_results:
            break
        wait = BACKOFF_SECONDS * 2 ** (attempt - 1)
        logger.warning("%s: %d node(s) failed transiently (%s): dbt retry %d of %d in %g s.", step, len(transient),
                       "; ".join(f"{n.name}: {transient_cause(n, run.environment.adapter)}" for n in transient[:3]), attempt, retries, wait)
        time.sleep(wait)
        state = run.run_dir / "retry" / step.replace(" ", "-") / f"transient-{attempt}"
        state.mkdir(parents=True, exist_ok=True)
        (state / "run_results.json").write_text(json.dumps(result.run_results))
        again = project.run(command.retry(str(state)))
        result = rescued(result, again, tuple(Rescue(n.unique_id, transient_cause(n, run.environment.adapter), attempt)
                                           for n in transient))
    return result


def _attempt() -> int:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context.flow_run.run_count if context and context.flow_run else 1


def seeds(run: ProductionRun, plan: Plan) -> StepResult:
    if not plan.seeds:
        return StepResult.skipped("seeds", "no seeds to load")
    return _dbt_step(run, "seeds", run.build, run.build.command(
        "seed", **_exactly(plan.seeds), full_refresh=run.options.full_refresh))


def snapshots(run: ProductionRun, plan: Plan) -> StepResult:
    if not run.options.run_snapshots:
        return StepResult.skipped("snapshots", "run_snapshots=False")
    if not plan.snapshots:
        return StepResult.skipped("snapshots", "no snapshots of sources or seeds to take")
    # Snapshots always run against the unversioned schema: their history cannot be rebuilt.
    return _dbt_step(run, "snapshots", run.live, run.live.command(
        "snapshot", **_exactly(plan.snapshots)))


def build_layer(run: ProductionRun, stage: Stage) -> StepResult:
    ids = stage.nodes | stage.tests
    if run.blue_green or not run.options.run_snapshots:
        ids = {u for u in ids if resource_type_of(u) != "snapshot"}
    command = run.build.command("build", **_exactly(ids), full_refresh=run.options.full_refresh,
                                fail_fast=run.options.fail_fast, **_deferral(run))
    # blue-green: snapshots of models are taken after the flip (model_snapshots), not with their layer
    return _dbt_step(run, f"build {stage.name}", run.build, command)


def model_snapshots(run: ProductionRun, plan: Plan) -> StepResult:
    """Blue-green: snapshots of models, once the flip succeeded, reading what was published.

    SCD history cannot be rolled back: taken before the audit, a version the audit then refused
    would already have closed rows in live history. So they run last, against the live target,
    where each ref is the live view the flip just pointed at the published version.
    """
    ids = {u for stage in plan.layers for u in stage.nodes if u.startswith("snapshot.")}
    if not run.blue_green:
        return StepResult.skipped("snapshots of models", "taken with their layer (no blue-green)")
    if not run.options.run_snapshots:
        return StepResult.skipped("snapshots of models", "run_snapshots=False")
    if not run.options.publish:
        return StepResult.skipped("snapshots of models", "publish=False: nothing was published")
    if not ids:
        return StepResult.skipped("snapshots of models", "no snapshots of models to take")
    result = _dbt_step(run, "snapshots of models", run.live, run.live.command(
        "snapshot", **_exactly(ids)))
    # Taken after the state's promotion: they join the run results it saved, so the state holds
    # every node this run built (slim CI and the next gate read it).
    merged = _merged_run_results(run, result).encode()
    run.store.write(f"runs/{run.run_id}/run_results.json", merged)
    run.store.write("latest/run_results.json", merged)
    return result


def docs(run: ProductionRun) -> StepResult:
    if not run.options.generate_docs:
        return StepResult.skipped("docs", "generate_docs=False")
    # The layers' builds compiled every node they built into the manifest this process holds: written
    # out, it gives the docs their compiled SQL, and `--no-compile` spares dbt compiling the whole
    # project again (20 s of a 25 s docs step at 2,000 nodes). Nodes a gated run did not rebuild
    # show their source SQL.
    run.build.as_state(rewrite=True)
    # A blue-green run makes the static page itself, with live names (publishing.show_live_names_in_docs).
    static = () if run.blue_green else ("--static",)
    return _checked("docs", run.build.run(run.build.command("docs generate", extra=(*static, "--no-compile"),
                                                            **_deferral(run))))


def save_state(run: ProductionRun) -> Path:
    """Stage this run's state in the store (runs/<run id>/): manifest (live locations), sources.json,
    merged run results. Runs BEFORE the flip, so live never points at a version whose state was
    not saved; an unwritable store fails the run here, with live untouched.

    A build that live will not read (publish=False, blue-green) keeps its merged run results in its
    run dir only: the next run must compare with what live has, not with a version nobody reads."""
    merged = run.run_dir / "run_results.json"
    merged.write_text(_merged_run_results(run))
    if not run.changes_live:
        get_run_logger().info("State not saved: this build is not published, live is unchanged.")
        return merged
    files = {"manifest.json": run.live.as_state() / "manifest.json", "run_results.json": merged}
    if sources_file(run).exists():
        files["sources.json"] = sources_file(run)
    files.update(gate_state_files(run))  # what the next run's gate compares with
    run.store.stage_run(run.run_id, files)
    return merged


def promote_state(run: ProductionRun) -> None:
    """After the flip: the staged state becomes latest (what the freshness gate and slim CI read), with docs;
    this run's model timings join their history, once compared with it (regressions, trends)."""
    history, checksums = run.store.timings(), code_checksums(run.live.parsed_manifest)
    run.report.regressions = find_regressions(run.report, history, checksums)
    run.report.trends = slowest_trends(run.report, history, checksums=checksums)
    if not run.changes_live:
        return
    docs_dir = run.build.target_path if run.options.generate_docs else None
    run.store.promote_run(run.run_id, docs_dir)
    run.store.record_timings(timing_samples(run.report, checksums))


def _merged_run_results(run: ProductionRun, *more: StepResult) -> str:
    """All steps' results (and `more`'s) in one file, in dbt's own run_results schema, so `--state` can read it."""
    steps = [r.run_results for r in (*run.report.results, *more) if r.run_results]
    if not steps:
        return json.dumps({"metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json"},
                           "results": [], "elapsed_time": 0, "args": {}})
    merged = dict(steps[-1])
    merged["results"] = [result for step in steps for result in step["results"]]
    merged["elapsed_time"] = sum(step.get("elapsed_time", 0) for step in steps)
    return json.dumps(merged)


__all__ = [
    "DbtCommandError", "StepFailed", "dbt_deps", "parse_and_select", "source_freshness", "apply_gate", "source_tests", "seeds",
    "snapshots", "build_layer", "docs", "save_state", "promote_state",
]
