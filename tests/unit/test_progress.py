"""flows/core/progress.py: dbt node events move counters; the Prefect API hears of them at most once a tick."""

from __future__ import annotations

import time
from types import SimpleNamespace
from uuid import UUID, uuid4

from flows.core.layers import Plan, Stage
from flows.core.progress import RunProgress, percent, planned_steps, slug

FINISHED = SimpleNamespace(info=SimpleNamespace(name="NodeFinished"))
STARTED = SimpleNamespace(info=SimpleNamespace(name="NodeStart"))


class RecordingPoster:
    def __init__(self):
        self.calls: list[tuple] = []

    def create(self, key: str, progress: float, description: str) -> UUID:
        self.calls.append(("create", key, progress, description))
        return uuid4()

    def update(self, artifact_id: UUID, progress: float, description: str) -> None:
        self.calls.append(("update", artifact_id, progress, description))


def test_two_thousand_node_events_make_no_api_call_and_a_tick_posts_once():
    poster = RecordingPoster()
    progress = RunProgress("Prod EU", poster)
    progress.expect({"seeds": 0, "build staging": 2_000, "build marts": 500})
    with progress.step("build staging", timer=False) as on_event:
        assert [c[1] for c in poster.calls] == ["dbt-prod-eu-progress-build-staging", "dbt-prod-eu-progress"]
        poster.calls.clear()
        for _ in range(1_500):
            on_event(STARTED)
            on_event(FINISHED)
        assert poster.calls == []  # none per node
        assert progress.tick() and not progress.tick()  # posts when it moved, once
        (_, _, value, description), = poster.calls
        assert value == 75.0 and description == "build staging: 1500 of 2000 nodes finished · whole run: 1500 of 2500"
        for _ in range(500):
            on_event(FINISHED)
        poster.calls.clear()
    # at the step's end: its final count, then the whole run's
    assert [(c[0], c[2]) for c in poster.calls] == [("update", 100.0), ("update", 80.0)]
    assert poster.calls[1][3] == "whole run: 2000 of 2500 nodes finished (build staging 2000/2000, build marts 0/500)"
    assert not progress.tick()  # nothing runs between steps


def test_a_second_command_of_a_step_counts_into_it():
    poster = RecordingPoster()
    progress = RunProgress("prod", poster)
    progress.expect({"build marts": 3})
    with progress.step("build marts", timer=False) as layer:
        layer(FINISHED)
        with progress.step("snapshots after marts", timer=False) as snapshots:
            assert snapshots is layer
            snapshots(FINISHED)
        layer.saw(1)  # a smaller count from the command does not undo events
    assert progress.done == {"build marts": 2} and len([c for c in poster.calls if c[0] == "create"]) == 2


def test_a_timer_thread_posts_while_the_step_runs():
    poster = RecordingPoster()
    progress = RunProgress("prod", poster, interval=0.01)
    progress.expect({"seeds": 1})
    with progress.step("seeds") as on_event:
        on_event(FINISHED)
        while len(poster.calls) < 3:  # the timer's post of the moved count (no wall-clock threshold)
            time.sleep(0.005)
    assert poster.calls[2][2] == 100.0


def test_a_broken_event_never_reaches_dbt():
    progress = RunProgress("prod", RecordingPoster())
    with progress.step("seeds", timer=False) as on_event:
        on_event(object())  # no .info: swallowed, as an error in a dbt callback would abort the command
    assert progress.done == {"seeds": 0}


def test_planned_steps_name_the_build_steps_and_their_nodes():
    plan = Plan({"seed.p.a"}, set(), [Stage("staging", {"model.p.b", "model.p.c"}, {"test.p.t"})], [])
    assert planned_steps(plan) == {"seeds": 1, "snapshots": 0, "build staging": 3}
    assert percent(3, 0) == 100.0 and percent(5, 4) == 100.0 and slug("Build  Staging_1") == "build-staging-1"
