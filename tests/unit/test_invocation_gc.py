"""A dbt command runs with what was alive before it frozen out of the garbage collector
(flows/core/invocation.py), and leaves the collector as it found it, even when commands overlap."""

from __future__ import annotations

import gc
import threading

from flows.core.invocation import FULL_COLLECTION_EVERY, invoke


class _Recording:
    """A stand-in for dbtRunner: records the collector's state while "dbt" runs."""

    def __init__(self, barrier: threading.Barrier | None = None):
        self.barrier, self.seen = barrier, None

    def invoke(self, argv):
        if self.barrier:
            self.barrier.wait(timeout=10)  # both commands are running now
        self.seen = (gc.get_freeze_count(), gc.get_threshold())
        if self.barrier:
            self.barrier.wait(timeout=10)
        return argv


def test_a_command_runs_with_the_heap_frozen_and_leaves_the_collector_as_it_was():
    before, kept = gc.get_threshold(), [object() for _ in range(1000)]  # noqa: F841 (alive before the command)
    runner = _Recording()
    assert invoke(runner, ["ls"]) == ["ls"]
    frozen, thresholds = runner.seen
    assert frozen >= 1000
    assert thresholds == (before[0], before[1], FULL_COLLECTION_EVERY)
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


def test_overlapping_commands_restore_the_collector_once_both_end():
    before = gc.get_threshold()
    barrier = threading.Barrier(2)
    runners = [_Recording(barrier), _Recording(barrier)]
    threads = [threading.Thread(target=invoke, args=(runner, ["ls"])) for runner in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert all(runner.seen[1][2] == FULL_COLLECTION_EVERY for runner in runners)
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
