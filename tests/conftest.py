"""Shared test fixtures: one real local Prefect server for the whole session, and a landed warehouse.

The server is `prefect server start` on a free port with its own SQLite database, so
flows, `prefect deploy`, automations and the UI are all exercised for real.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLED_PROJECT = REPO / "dbt_project"
sys.path.insert(0, str(BUNDLED_PROJECT / "landing"))
sys.path.insert(0, str(REPO / "bench"))

import _harness  # noqa: E402  (the local Prefect server the bench starts too)


# The longest test files, longest first (`make test` prints its slowest tests). `make test` hands
# files to its two workers in collection order, so these start first and the many short files
# fill in at the end; in xdist's default order (most tests first) the soak, one test of three
# minutes, started last and the other worker sat idle for two of them.
HEAVIEST_FIRST = (
    "tests/test_blue_green.py",
    "tests/reliability/test_faults.py",
    "tests/reliability/test_soak.py",
    "tests/test_generated_project.py",
    "tests/reliability/test_transient.py",
    "tests/test_bench_harness.py",
    "tests/test_automations.py",
    "tests/reliability/test_bad_input.py",
    "tests/test_gated_runs.py",
    "tests/test_production.py",
    "tests/test_dbt_invocation.py",
    "tests/test_make_ui.py",
    "tests/test_slim_ci.py",
)


def pytest_collection_modifyitems(items):
    rank = {path: position for position, path in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory):
    """A real Prefect server (API, UI, automations) for the session; PREFECT_API_URL points at it."""
    home = tmp_path_factory.mktemp("prefect-home")
    with _harness.prefect_server(home) as api_url:
        saved = {k: os.environ.get(k) for k in ("PREFECT_HOME", "PREFECT_API_URL")}
        os.environ.update(PREFECT_HOME=str(home), PREFECT_API_URL=api_url)
        from prefect.context import refresh_global_settings_context
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

        # Threads Prefect's context does not reach (dbt's worker threads, logging from them
        # through prefect-dbt) read the global settings, fixed at import: without this they
        # start a temporary server of their own.
        refresh_global_settings_context()
        with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_HOME: str(home)}):
            yield api_url
            _harness.flush_prefect_logs()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def restored_block(block_class, name: str):
    """Whatever is saved as `name` (a `block_class`) while inside, on exit the document that held the
    name before is back, or none is. Other modules find the server's blocks as they left them."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        previous = block_class.load(name)
    except ValueError:  # "Unable to find block document named ..."
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            previous.save(name, overwrite=True)
        else:
            with get_client(sync_client=True) as client:
                try:
                    document = client.read_block_document_by_name(name, block_class.get_block_type_slug())
                except ObjectNotFound:  # nothing was saved under the name after all
                    pass
                else:
                    client.delete_block_document(document.id)


@contextmanager
def saved_block(block, name: str):
    """`block` saved as `name` on the session's server while inside; then, as restored_block, the
    document that held the name before is back, or none is."""
    with restored_block(type(block), name):
        block.save(name, overwrite=True)
        yield


@contextmanager
def saved_variable(name: str, value):
    """The Prefect variable `name` holds `value` while inside; then its previous value and tags are
    back, or it is gone again. Other modules find the server's variables as they left them."""
    from prefect.client.orchestration import get_client
    from prefect.variables import Variable

    with get_client(sync_client=True) as client:
        previous = client.read_variable_by_name(name)
    Variable.set(name, value, overwrite=True)
    try:
        yield
    finally:
        if previous is None:
            Variable.unset(name)
        else:
            Variable.set(name, previous.value, tags=previous.tags, overwrite=True)


API_PAGE = 200  # the most the Prefect API answers in one read (PREFECT_API_DEFAULT_LIMIT)


def read_all(read_page, **filters) -> list:
    """Everything a client's read_* method matches, page by page: one read stops at API_PAGE."""
    items: list = []
    while True:
        page = read_page(**filters, limit=API_PAGE, offset=len(items))
        items += page
        if len(page) < API_PAGE:
            return items


def artifacts_of(*flow_run_ids) -> list:
    """Every artifact the given flow runs made (all versions of each key), none of other runs'."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return read_all(client.read_artifacts,
                        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=list(flow_run_ids))))


def flow_run_logs(*flow_run_ids) -> list:
    """Every log line of the given flow runs (all pages), oldest first, once the log worker sent them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        logs = read_all(client.read_logs, log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(flow_run_ids))))
    return sorted(logs, key=lambda log: log.timestamp)


def paths_holding(value, needles, path=()):
    """Where in a nested document (dicts, lists) any of `needles` appears: each path as a tuple of keys."""
    needles = (needles,) if isinstance(needles, str) else tuple(needles)
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_holding(item, needles, (*path, str(key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from paths_holding(item, needles, (*path, str(index)))
    elif any(needle in str(value) for needle in needles):
        yield path


def relation_fingerprint(warehouse: Path, where: str) -> dict[str, tuple]:
    """Every relation of a DuckDB warehouse that `where` (over information_schema.tables) selects:
    its kind, row count, a hash of its rows and, for a view, its SQL (which version it reads)."""
    import duckdb

    with duckdb.connect(str(warehouse)) as connection:
        relations = connection.execute(
            f"select table_schema, table_name, table_type from information_schema.tables "
            f"where table_catalog = current_database() and ({where}) order by 1, 2").fetchall()
        views = dict(connection.execute(
            "select schema_name || '.' || view_name, sql from duckdb_views() where not internal").fetchall())
        prints = {}
        for schema, name, kind in relations:
            count, digest = connection.execute(
                f'select count(*), coalesce(sum(hash(t::varchar)), 0)::varchar from "{schema}"."{name}" as t').fetchone()
            prints[f"{schema}.{name}"] = (kind, count, digest, views.get(f"{schema}.{name}"))
    return prints


@pytest.fixture(scope="session")
def landed_template(tmp_path_factory) -> Path:
    """A warehouse with the bundled project's raw data landed once; tests copy it."""
    from land import land_initial

    warehouse = tmp_path_factory.mktemp("landed") / "warehouse.duckdb"
    land_initial(warehouse)
    return warehouse


@pytest.fixture(scope="module")
def module_home(tmp_path_factory, landed_template, prefect_server) -> Path:
    """$LAKEHOUSE_HOME with raw data landed, shared by one test module's chain of runs."""
    home = tmp_path_factory.mktemp("lakehouse-module")
    shutil.copy(landed_template, home / "warehouse.duckdb")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAKEHOUSE_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def published_template(tmp_path_factory, landed_template, prefect_server) -> Path:
    """A $LAKEHOUSE_HOME after one full, published production run of the bundled project."""
    from flows.production import production_run

    home = tmp_path_factory.mktemp("published-template") / "home"
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


@pytest.fixture(scope="module")
def published_module_home(tmp_path_factory, published_template) -> Path:
    """module_home after one full, published run: a copy of the session's template, so a module
    whose chain of runs starts from a published live does not pay its own first run (~20 s)."""
    home = tmp_path_factory.mktemp("lakehouse-published") / "home"
    shutil.copytree(published_template, home, symlinks=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAKEHOUSE_HOME", str(home))
        yield home


@pytest.fixture
def lakehouse_home(tmp_path, monkeypatch) -> Path:
    """An empty $LAKEHOUSE_HOME for one test."""
    home = tmp_path / "lakehouse"
    home.mkdir()
    monkeypatch.setenv("LAKEHOUSE_HOME", str(home))
    return home


@pytest.fixture
def landed_home(lakehouse_home, landed_template) -> Path:
    """$LAKEHOUSE_HOME with the bundled project's raw data already landed."""
    shutil.copy(landed_template, lakehouse_home / "warehouse.duckdb")
    return lakehouse_home


# --- the reliability suite's report: cases tried per category, and what it measured ------------
# Here, not in tests/reliability/conftest.py: with pytest-xdist the controller, which prints the
# summary, never collects tests and so never loads a subdirectory's conftest.

CATEGORIES = {
    "test_bad_input": "bad input", "test_faults": "faults", "test_secrets": "secrets",
    "test_concurrency": "concurrency", "test_soak": "soak",
    "test_transient": "transient failures and stops",
}
_cases: dict[str, tuple[str, str]] = {}  # test id -> (category, outcome)
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
    _timings.update(dict(value for key, value in report.user_properties if key == TIMING_PROPERTY))
    if report.when == "call":
        _cases[report.nodeid] = category, report.outcome
    elif report.when == "setup" and report.outcome in {"skipped", "failed"}:
        _cases[report.nodeid] = category, "skipped" if report.skipped else "error"
    elif report.when == "teardown" and report.failed and _cases.get(report.nodeid, (None, "passed"))[1] == "passed":
        # A guarantee asserted in a fixture's teardown (bad input: "nothing changed") broke: the
        # case failed, though its call passed.
        _cases[report.nodeid] = category, "failed in teardown"


def _outcomes() -> dict[str, Counter]:
    outcomes = {name: Counter() for name in CATEGORIES.values()}
    for category, outcome in _cases.values():
        outcomes[category][outcome] += 1
    return outcomes


def record_timing(name: str, value: str) -> None:
    """A measurement worth reporting at the end of the session (soak per-run time, ...).

    It travels on the test's report, so it reaches the summary from a pytest-xdist worker too."""
    _pending[name] = value


_pending: dict[str, str] = {}
TIMING_PROPERTY = "reliability timing"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.user_properties += [(TIMING_PROPERTY, pair) for pair in _pending.items()]
    _pending.clear()


def pytest_terminal_summary(terminalreporter):
    outcomes = _outcomes()
    if not any(outcomes.values()):
        return
    counts = ", ".join(f"{c} {sum(o.values())}" for c, o in outcomes.items())
    terminalreporter.write_line(f"reliability cases: {counts}")
    details = "; ".join(
        f"{c}: " + ", ".join(f"{n} {k}" for k, n in sorted(o.items())) for c, o in outcomes.items() if o
    )
    terminalreporter.write_line(f"reliability outcomes: {details}")
    for name, value in _timings.items():
        terminalreporter.write_line(f"reliability timing: {name}: {value}")


def chromium_or_skip() -> str:
    """chromium on PATH (the rule of .ci/run and ci.yml). Without it a test is skipped on a developer's
    machine, but fails in CI (CI=true), where a missing browser must not turn into a green run."""
    import shutil

    found = shutil.which("chromium")
    if found is None:
        reason = "chromium is not on PATH (`command -v chromium`): apt-get install -y chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true, so a browser test may not be skipped")
        pytest.skip(reason)
    return found
