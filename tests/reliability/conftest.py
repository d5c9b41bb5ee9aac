"""Fixtures of the reliability suite, and the count of cases it tried per category.

The expensive part of most cases is the first production run of the bundled project
(~30 s idle). It happens once per session (`published_template`); every module then
works on its own copy of that $LAKEHOUSE_HOME, so cases never share a warehouse.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from .helpers import copy_home

CATEGORIES = {
    "test_bad_input": "bad input", "test_faults": "faults", "test_secrets": "secrets",
    "test_concurrency": "concurrency", "test_soak": "soak",
}
_outcomes: dict[str, Counter] = {name: Counter() for name in CATEGORIES.values()}
_timings: dict[str, str] = {}
captured_output: list[str] = []  # stdout/stderr pytest captured for each reliability test phase


def _category(nodeid: str):
    if "reliability/" not in nodeid:
        return None
    module = nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
    return CATEGORIES.get(module)


def pytest_runtest_logreport(report):
    category = _category(report.nodeid)
    if category is None:
        return
    captured_output.append(report.capstdout + report.capstderr)
    if report.when == "call":
        _outcomes[category][report.outcome] += 1
    elif report.when == "setup" and report.outcome in {"skipped", "failed"}:
        _outcomes[category]["skipped" if report.skipped else "error"] += 1


def record_timing(name: str, value: str) -> None:
    """A measurement worth reporting at the end of the session (soak per-run time, ...)."""
    _timings[name] = value


def pytest_terminal_summary(terminalreporter):
    if not any(_outcomes[c] for c in _outcomes):
        return
    counts = ", ".join(f"{c} {sum(o.values())}" for c, o in _outcomes.items())
    terminalreporter.write_line(f"reliability cases: {counts}")
    details = "; ".join(
        f"{c}: " + ", ".join(f"{n} {k}" for k, n in sorted(o.items())) for c, o in _outcomes.items() if o
    )
    terminalreporter.write_line(f"reliability outcomes: {details}")
    for name, value in _timings.items():
        terminalreporter.write_line(f"reliability timing: {name}: {value}")


@pytest.fixture(scope="session")
def published_template(tmp_path_factory, landed_template, prefect_server) -> Path:
    """A $LAKEHOUSE_HOME after one full, published production run of the bundled project."""
    from flows.production import production_run

    home = tmp_path_factory.mktemp("reliability-template") / "home"
    home.mkdir()
    shutil.copy(landed_template, home / "warehouse.duckdb")
    started = time.perf_counter()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAKEHOUSE_HOME", str(home))
        state = production_run(environment="local", return_state=True)
    assert state.is_completed(), state.message
    record_timing("first full production run (session template)", f"{time.perf_counter() - started:.1f}s")
    # A copy must not inherit a lock or a half-written run directory.
    assert not (home / "state" / "local" / "publish.lock").exists()
    return home


@pytest.fixture
def fresh_home(tmp_path, published_template, monkeypatch) -> Path:
    """A private copy of the published home for one test; LAKEHOUSE_HOME points at it."""
    home = copy_home(published_template, tmp_path / "home")
    monkeypatch.setenv("LAKEHOUSE_HOME", str(home))
    return home
