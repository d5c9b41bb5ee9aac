"""Fixtures of the reliability suite (its per-category count of cases is in tests/conftest.py).

The expensive part of most cases is the first production run of the bundled project
(~30 s idle). It happens once per session (`published_template`, tests/conftest.py); every
module then works on its own copy of that $LAKEHOUSE_HOME, so cases never share a warehouse.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import copy_home


@pytest.fixture
def fresh_home(tmp_path, published_template, monkeypatch) -> Path:
    """A private copy of the published home for one test; LAKEHOUSE_HOME points at it."""
    home = copy_home(published_template, tmp_path / "home")
    monkeypatch.setenv("LAKEHOUSE_HOME", str(home))
    return home
