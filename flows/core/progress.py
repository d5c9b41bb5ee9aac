"""Live progress of a run's build steps: Prefect progress artifacts fed by dbt's node events.

dbt calls `StepProgress` (a dbtRunner callback) for every event; a node finishing only bumps a
counter under a lock. Nothing talks to the Prefect API from dbt's threads: a timer thread posts
the current step's progress at most once every `interval` seconds, and only when it moved. A
step's start (create its artifact) and end (its final count, and the whole run's) post once each.

    dbt-<env>-progress-<step>   one per build step: nodes finished of nodes to run, and the run's
    dbt-<env>-progress          the whole run, updated as each step ends
"""

from __future__ import annotations

import contextvars
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Protocol
from uuid import UUID

POST_INTERVAL_SECONDS = 5.0
NODE_FINISHED = "NodeFinished"

logger = logging.getLogger(__name__)


class ProgressPoster(Protocol):
    def create(self, key: str, progress: float, description: str) -> Optional[UUID]: ...

    def update(self, artifact_id: UUID, progress: float, description: str) -> None: ...


class PrefectPoster:
    """Posts to the Prefect API. Progress is reporting only: an API error is logged, never raised."""

    def create(self, key: str, progress: float, description: str) -> Optional[UUID]:
        from prefect.artifacts import create_progress_artifact

        try:
            return create_progress_artifact(progress, key=key, description=description)  # type: ignore[return-value]  # sync_compatible: a UUID when called sync
        except Exception as error:  # noqa: BLE001 - a run must not fail because its progress bar did
            logger.warning("Could not create progress artifact %s: %s", key, error)
            return None

    def update(self, artifact_id: UUID, progress: float, description: str) -> None:
        from prefect.artifacts import update_progress_artifact

        try:
            update_progress_artifact(artifact_id, progress, description=description)
        except Exception as error:  # noqa: BLE001
            logger.warning("Could not update progress artifact %s: %s", artifact_id, error)


def percent(finished: int, to_run: int) -> float:
    if to_run <= 0:
        return 100.0
    return round(100.0 * min(finished, to_run) / to_run, 1)


def slug(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


@dataclass
class StepProgress:
    """One build step's counter: the dbt callback (dbt runs it in its worker threads)."""

    name: str
    to_run: int
    finished: int = 0
    artifact_id: Optional[UUID] = None
    posted: int = -1  # the count last posted: the timer posts only when it moved
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, event: Any) -> None:
        try:
            if event.info.name == NODE_FINISHED:
                with self._lock:
                    self.finished += 1
        except Exception:  # noqa: BLE001 - an error in a dbt callback would abort the command
            pass

    def saw(self, nodes: int) -> None:
        """The command's own count of nodes with a result, where no event reached the callback."""
        with self._lock:
            self.finished = max(self.finished, nodes)


class RunProgress:
    """The run's build steps and their nodes to run (from the plan), and the artifacts showing them."""

    def __init__(self, environment: str, poster: Optional[ProgressPoster] = None,
                 interval: float = POST_INTERVAL_SECONDS):
        self.key = f"dbt-{slug(environment)}-progress"
        self.poster: ProgressPoster = poster or PrefectPoster()
        self.interval = interval
        self.expected: dict[str, int] = {}  # step name -> nodes to run
        self.done: dict[str, int] = {}  # step name -> nodes finished, for steps that ended
        self.current: Optional[StepProgress] = None
        self.run_artifact: Optional[UUID] = None

    def expect(self, steps: dict[str, int]) -> None:
        """The build steps the plan will run, each with its nodes to run."""
        self.expected = {name: count for name, count in steps.items() if count > 0}

    def drop(self, name: str) -> None:
        """A planned step was skipped (run_snapshots=False, say): the run no longer waits for its nodes."""
        self.expected.pop(name, None)

    @property
    def run_to_run(self) -> int:
        return sum(self.expected.values())

    def run_finished(self) -> int:
        running = self.current.finished if self.current and self.current.name not in self.done else 0
        return sum(min(count, self.expected.get(name, count)) for name, count in self.done.items()) + running

    def describe(self, step: StepProgress) -> str:
        return (f"{step.name}: {min(step.finished, step.to_run)} of {step.to_run} nodes finished · "
                f"whole run: {min(self.run_finished(), self.run_to_run)} of {self.run_to_run}")

    @contextmanager
    def step(self, name: str, timer: bool = True) -> Iterator[StepProgress]:
        """The dbt callback of one step, posting its progress while it runs and once as it ends.

        A step made of several dbt commands (a layer, then the snapshots of its models) calls
        this again inside: the inner command counts into the step already running."""
        if self.current is not None and self.current.name not in self.done:
            yield self.current
            return
        progress = StepProgress(name, self.expected.get(name, 0))
        self.current = progress
        progress.artifact_id = self.poster.create(f"{self.key}-{slug(name)}", 0.0, self.describe(progress))
        progress.posted = 0
        if self.run_artifact is None:
            self.run_artifact = self.poster.create(self.key, percent(self.run_finished(), self.run_to_run),
                                                   self._run_description())
        stop = threading.Event()
        ticker = None
        if timer:  # context copied: the timer thread posts with the flow run's Prefect settings
            ticker = threading.Thread(target=contextvars.copy_context().run, args=(self._tick_until, stop),
                                      name=f"progress {name}", daemon=True)
            ticker.start()
        try:
            yield progress
        finally:
            stop.set()
            if ticker is not None:
                ticker.join()
            self.done[name] = progress.finished
            self._post(progress)
            if self.run_artifact is not None:
                self.poster.update(self.run_artifact, percent(self.run_finished(), self.run_to_run),
                                   self._run_description())

    def tick(self) -> bool:
        """Post the running step's progress if it moved since the last post. True when it posted."""
        progress = self.current
        if progress is None or progress.name in self.done or progress.finished == progress.posted:
            return False
        self._post(progress)
        return True

    def _tick_until(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.tick()

    def _post(self, progress: StepProgress) -> None:
        with progress._lock:
            finished = progress.finished
        if progress.artifact_id is not None:
            self.poster.update(progress.artifact_id, percent(finished, progress.to_run), self.describe(progress))
        progress.posted = finished

    def _run_description(self) -> str:
        steps = ", ".join(f"{name} {min(self.done.get(name, 0), count)}/{count}" for name, count in self.expected.items())
        return f"whole run: {min(self.run_finished(), self.run_to_run)} of {self.run_to_run} nodes finished ({steps})"


def planned_steps(plan: Any) -> dict[str, int]:
    """Nodes to run per build step of a `layers.Plan`, by the step names flows/production.py uses."""
    steps = {"seeds": len(plan.seeds), "snapshots": len(plan.snapshots)}
    for stage in plan.layers:
        steps[f"build {stage.name}"] = len(stage.nodes | stage.tests)
    return steps


__all__ = ["POST_INTERVAL_SECONDS", "PrefectPoster", "RunProgress", "StepProgress", "percent", "planned_steps"]
