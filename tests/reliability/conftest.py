"""Fixtures of the reliability suite (its per-category count of cases is in tests/conftest.py).

The expensive part of most cases is the first production run of the bundled project
(~30 s idle). It happens once per session (`published_template`); every module then
works on its own copy of that $LAKEHOUSE_HOME, so cases never share a warehouse.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from conftest import record_timing

from .helpers import copy_home

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
