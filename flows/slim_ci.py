"""Pull-request checks against production state, and the clean-up when the PR closes.

    slim_ci:        fetch base state → select state:modified+ → build and test it in <schema>_pr_<n>,
                    unchanged parents deferred to the base environment → diff the rebuilt models'
                    data against the base's live relations → post what changed (artifact and
                    a markdown file for the PR comment)
    drop_ci_schema: drop <schema>_pr_<n> and <schema>_pr_<n>_* (idempotent)

`python -m flows.slim_ci --pr-number 7 --report-file comment.md` runs the check; add `--drop` to clean up.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
from pathlib import Path
from typing import Optional

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import PositiveInt

from blocks.environment import DbtEnvironment, EnvironmentName, load_environment
from flows.core.artifacts import artifact_key
from flows.core.cli import flow_parser, run_from_shell
from flows.core.dbt import StepResult
from flows.core.data_diff import DataDiff, diff_models
from flows.core.slim_ci import (
    CiPlan, CiReport, CiSession, ci_work_dir, diff_targets, open_ci, plan, pr_schemas, report_markdown, summarize,
)
from flows.core import steps
from flows.core.warehouse import warehouse_for
from flows.errors import RunFailure


class SlimCiFailed(RunFailure):
    """A model or test of the PR failed; the report artifact lists which."""


@task(name="dbt deps", cache_policy=NO_CACHE)
def install_packages(session: CiSession) -> StepResult:
    """A PR's fresh checkout has no dbt_packages/: it cannot parse before `dbt deps`."""
    return steps.install_packages(session.project)


@task(name="select changes", cache_policy=NO_CACHE)
def select_changes(session: CiSession) -> CiPlan:
    logger = get_run_logger()
    ci_plan = plan(session)
    if ci_plan.mode == "full":
        logger.warning(
            "No saved state for base environment %r yet: falling back to a FULL BUILD of the project "
            "into %s (nothing to compare with or defer to).", session.base.name, session.schema)
        if ci_plan.left_out:
            logger.info("Left out, since CI never runs snapshots and nothing could resolve them: %s.",
                        ", ".join(sorted(ci_plan.left_out)))
    else:
        logger.info("%d node(s) differ from %r's state: %s.", len(ci_plan.changed), session.base.name,
                    ", ".join(sorted(ci_plan.changed)) or "none")
        for snapshot in sorted(ci_plan.left_out):
            logger.warning("Snapshot %s changed, but CI never runs snapshots: its readers use %r's snapshot.",
                           snapshot, session.base.name)
    return ci_plan


@task(name="build and test", cache_policy=NO_CACHE)
def build_and_test(session: CiSession, ci_plan: CiPlan) -> StepResult:
    return session.project.run(ci_plan.command)


@task(name="data diff", cache_policy=NO_CACHE)
def data_diff(session: CiSession, report: CiReport, base_manifest: dict) -> DataDiff:
    """Counts, and rows added/removed/changed where there is a key: aggregates in the warehouse."""
    targets = diff_targets(session, report, base_manifest)
    found = diff_models(warehouse_for(session.environment), targets)
    get_run_logger().info("Data diff of %d rebuilt model(s) against %r in %.2f s.", len(found.models),
                          session.base.name, found.seconds)
    return found


def report_file(environment: DbtEnvironment, pr_number: int) -> Path:
    """Where the report's markdown is written for the PR comment (`--report-file` copies it)."""
    return ci_work_dir(environment, pr_number) / "report.md"


@task(name="post report", cache_policy=NO_CACHE)
def post_report(session: CiSession, ci_plan: CiPlan, result: StepResult) -> CiReport:
    base_manifest = None
    if session.state_dir is not None:
        base_manifest = json.loads((session.state_dir / "manifest.json").read_text())
    report = summarize(session, ci_plan, result, base_manifest)
    if base_manifest is not None:
        report.data_diff = data_diff(session, report, base_manifest)
    markdown = report_markdown(report)
    create_markdown_artifact(
        markdown, key=artifact_key(session.environment.name, f"slim-ci-pr-{session.pr_number}"),
        description=f"Slim CI of PR #{session.pr_number}: changed, built and deferred nodes with their tests "
                    "and the data diff against the base environment",
    )
    path = report_file(session.environment, session.pr_number)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown + "\n")
    return report


@flow(name="slim-ci", log_prints=True)
def slim_ci(
    pr_number: PositiveInt,
    environment: EnvironmentName = "staging",
    base_environment: EnvironmentName = "prod",
    project_dir: Optional[str] = None,
    threads: Optional[PositiveInt] = None,
) -> str:
    """Build and test only what a pull request changed, reading everything else from production.

    Args:
        pr_number: The pull request's number; its relations go to `<schema>_pr_<number>`.
        environment: Where the PR is built (its schema name is the PR schema's prefix).
        base_environment: Whose saved state is compared against and deferred to (live relations).
        project_dir: dbt project folder, i.e. the PR's checkout. Empty: the bundled dbt_project/.
        threads: dbt threads (empty: the environment's).
    """
    logger = get_run_logger()
    with open_ci(pr_number, environment, base_environment, project_dir, threads) as session:
        install_packages(session)
        ci_plan = select_changes(session)
        result = build_and_test(session, ci_plan)
        report = post_report(session, ci_plan, result)
    logger.info("Slim CI of PR #%d: %s.", pr_number, report.outcome)
    if report.failures:
        raise SlimCiFailed(f"PR #{pr_number}: {report.outcome}: " + "; ".join(
            f"{f.name} ({f.status})" for f in report.failures[:10]))
    return report.outcome


@flow(name="drop-ci-schema", log_prints=True)
def drop_ci_schema(pr_number: PositiveInt, environment: EnvironmentName = "staging") -> list[str]:
    """Drop every schema a pull request's CI created (`<schema>_pr_<n>`, `<schema>_pr_<n>_*`). Idempotent.

    Args:
        pr_number: The closed pull request's number.
        environment: Where its CI built.
    """
    logger = get_run_logger()
    env = load_environment(environment)
    if env.adapter == "duckdb" and not env.warehouse_path().exists():
        logger.info("No DuckDB warehouse at %s: nothing to drop.", env.warehouse_path())
        return []  # connecting would create an empty warehouse file
    warehouse = warehouse_for(env)
    schemas = pr_schemas(warehouse, env.schema_name, pr_number)
    if schemas:
        warehouse.execute_all([warehouse.dialect.drop_schema(s) for s in schemas])
        logger.info("Dropped PR #%d's schemas in %r: %s.", pr_number, env.name, ", ".join(schemas))
    else:
        logger.info("PR #%d left no schema in %r: nothing to drop.", pr_number, env.name)
    shutil.rmtree(ci_work_dir(env, pr_number), ignore_errors=True)
    return schemas


def build_parser() -> argparse.ArgumentParser:
    """slim_ci's parameters (flows/core/cli.py), and `--drop` to run drop_ci_schema with those it takes."""
    parser = flow_parser(slim_ci, prog="python -m flows.slim_ci", description=__doc__.split("\n\n")[0])
    parser.add_argument("--report-file", type=Path, default=None, metavar="PATH",
                        help="also write the report (with the data diff) here, as markdown for a PR comment")
    parser.add_argument("--drop", action="store_true", help="drop the PR's schemas instead (on PR close)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parameters = vars(build_parser().parse_args(argv))
    if parameters.pop("drop"):
        takes = inspect.signature(drop_ci_schema.fn).parameters
        return run_from_shell(drop_ci_schema, {k: v for k, v in parameters.items() if k in takes}, "drop_ci_schema")
    wanted = parameters.pop("report_file")
    written = report_file(load_environment(parameters["environment"]), parameters["pr_number"]) if wanted else None
    if written is not None:
        written.unlink(missing_ok=True)  # never post an earlier run's report
    code = run_from_shell(slim_ci, parameters, "slim_ci")
    if wanted is not None and written is not None and written.exists():  # a run refused before the build writes none
        wanted.write_text(written.read_text())
    return code


if __name__ == "__main__":
    sys.exit(main())
