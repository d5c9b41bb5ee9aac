"""The runbook's stages as values, and the one evaluator that runs them.

A flow lists its stages (`Stage`: a name and what it does); `evaluate` runs each as a named Prefect
task, once per flow run, and is the only writer of a stage's report line and journal entry:
- a stage the journal says is done (an earlier attempt of this flow run) is skipped and noted;
- a stage runs under its step timeout (flows/core/stop.py: it cancels the stage's dbt queries);
- its StepResult goes into the report; a failure is recorded, journaled and raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.core.results import StepResult
from flows.core.run import ProductionRun
from flows.core.steps import StepFailed
from flows.core.stop import step_deadline


@dataclass(frozen=True)
class Stage:
    """One step of a runbook: its name (the Prefect task's, the journal's, the report's) and its action."""

    name: str
    action: Callable[[ProductionRun], Any]


@task(cache_policy=NO_CACHE)
def _run_stage(run: ProductionRun, stage: Stage) -> Any:
    if stage.name in run.journal.done:
        run.report.note(stage.name, "skipped", "done in an earlier attempt of this run")
        return None
    try:
        with step_deadline(stage.name, run.environment.step_timeout_seconds):
            result = stage.action(run)
    except StepFailed as failure:
        run.report.record(stage.name, failure.result)
        run.journal.fail(stage.name)
        raise
    except BaseException as error:
        run.report.note(stage.name, "failed", str(error).splitlines()[0][:300] if str(error) else type(error).__name__)
        run.journal.fail(stage.name)
        raise
    if isinstance(result, StepResult):
        run.report.record(stage.name, result)
    run.journal.complete(stage.name)
    return result


def evaluate(run: ProductionRun, stage: Stage) -> Any:
    """Run one stage as the Prefect task named after it; its value is the stage's result."""
    return _run_stage.with_options(name=stage.name)(run, stage)


def evaluate_all(run: ProductionRun, stages: Sequence[Stage]) -> dict[str, Any]:
    """Run the stages in order, stopping at the first that fails; each one's result by name."""
    return {stage.name: evaluate(run, stage) for stage in stages}
