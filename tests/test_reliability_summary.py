"""The reliability summary (tests/conftest.py) counts each case once, by how it really ended."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import conftest


def _report(nodeid: str, when: str, outcome: str) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, when=when, outcome=outcome, passed=outcome == "passed",
                           failed=outcome == "failed", skipped=outcome == "skipped",
                           capstdout="", capstderr="", user_properties=[])


@pytest.fixture
def fresh_cases(monkeypatch):
    """The hook's own record, emptied for the test and put back after (the session's summary needs it)."""
    monkeypatch.setattr(conftest, "_cases", {})
    monkeypatch.setattr(conftest, "captured_output", [])


def test_a_guarantee_broken_in_teardown_is_a_failed_case(fresh_cases):
    phases = {
        "passes": [("setup", "passed"), ("call", "passed"), ("teardown", "passed")],
        "breaks-in-teardown": [("setup", "passed"), ("call", "passed"), ("teardown", "failed")],
        "fails-then-teardown-fails": [("setup", "passed"), ("call", "failed"), ("teardown", "failed")],
        "setup-error": [("setup", "failed"), ("teardown", "passed")],
        "setup-error-and-teardown": [("setup", "failed"), ("teardown", "failed")],
        "skipped": [("setup", "skipped"), ("teardown", "passed")],
    }
    for name, steps in phases.items():
        for when, outcome in steps:
            conftest.pytest_runtest_logreport(_report(f"tests/reliability/test_bad_input.py::{name}", when, outcome))
    conftest.pytest_runtest_logreport(_report("tests/test_production.py::not_reliability", "teardown", "failed"))
    assert conftest._outcomes()["bad input"] == {"passed": 1, "failed in teardown": 1, "failed": 1, "error": 2,
                                                  "skipped": 1}
    assert sum(sum(counts.values()) for counts in conftest._outcomes().values()) == len(phases)
