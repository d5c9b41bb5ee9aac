"""flows/core/stop.py: a step's deadline stops what the step is doing and names the step.

(The real thing, a long DuckDB query interrupted by the timeout or by SIGTERM, is in
tests/reliability/test_transient.py.)
"""

from __future__ import annotations

import signal
import time

import pytest

from flows.core.stop import StepTimedOut, dbt_invocation, step_deadline


def test_the_deadline_stops_a_step_outside_dbt():
    with pytest.raises(StepTimedOut, match=r"publish timed out after 0.2 s \(step_timeout_seconds=0.2\)"):
        with step_deadline("publish", 0.2):
            time.sleep(30)  # woken by the deadline's signal, not left to finish


def test_the_deadline_inside_a_dbt_command_is_told_after_it_returns():
    with pytest.raises(StepTimedOut, match="build staging timed out"):
        with step_deadline("build staging", 0.2):
            with dbt_invocation():
                time.sleep(30)  # dbtRunner stands here: it sees SystemExit, which dbt stops on


def test_a_step_within_its_deadline_is_untouched_and_the_handlers_are_put_back():
    before = signal.getsignal(signal.SIGTERM)
    with step_deadline("seeds", 30):
        with dbt_invocation():
            pass
    assert signal.getsignal(signal.SIGTERM) is before
