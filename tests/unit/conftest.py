"""Unit tests: pure functions and small objects, no Prefect server, no dbt invocation.

The top conftest starts a real Prefect server for every session (an autouse fixture); these
tests need none, so the fixture of the same name here, the nearest one, provides nothing.
Tests elsewhere in the same session still get the real server.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prefect_server():
    yield None
