"""Bad input: every case fails before any dbt work, with a message naming the problem.

"Before any dbt work" is checked, not assumed: after each case no schema appeared, live data
(fingerprinted), the live views, the live version and the saved state are as they were, no
version was started, nothing was written in the state store, no dbt command left results
(run_results.json, sources.json, catalog.json) anywhere, and the failed flow run's journal, where
it kept one, shows no dbt step past `dbt deps` (which the bundled project skips: it has no packages).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from blocks.environment import DbtEnvironment, UnknownEnvironment, UnsafeIdentifier, load_environment
from blocks.profile import rendered_profile
from deployments import config_check
from flows import slim_ci
from flows.blue_green import prune_versions, rollback
from flows.core.versions import VersionError
from flows.production import main as production_main, production_run

from conftest import flow_run_logs

from .helpers import (
    BUNDLED_PROJECT, REPO, assert_unchanged, copy_home, dbt_results_written, failed_with, files_written, journal,
    snapshot, statuses, subprocess_env,
)


@pytest.fixture(scope="module")
def home(tmp_path_factory, published_template):
    home = copy_home(published_template, tmp_path_factory.mktemp("bad-input") / "home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAKEHOUSE_HOME", str(home))
        yield home


@pytest.fixture
def untouched(home, request):
    """Asserts, after the test, that nothing changed and no dbt work happened: no schema, no version,
    live and state as before, no file written in the state store, no dbt results written anywhere.
    A case that asks for `freshness_may_run` may leave `dbt source freshness` results (sources.json),
    nothing else."""
    before, versions, started = snapshot(home), statuses(home), time.time()
    yield before
    assert_unchanged(home, before)
    assert statuses(home) == versions, "a version was started"
    assert not (home / "state" / "local" / "publish.lock").exists(), "the lock was left behind"
    assert not files_written(home / "state", started), "the state store was written to"
    written = dbt_results_written([home, BUNDLED_PROJECT / "target"], started)
    if "freshness_may_run" in request.fixturenames:
        written = [path for path in written if not path.endswith("/sources.json")]
    assert not written, f"dbt did work: {written}"


def _no_dbt_step_ran(home: Path, state) -> None:
    """The journal, where the run got far enough to keep one, shows no dbt step; where it did not,
    the run never opened (no run dir: parameter validation refused it). The files dbt would have
    left are checked by `untouched` either way."""
    flow_run_id = state.state_details.flow_run_id
    run_dir = home / "work" / "local" / "runs" / str(flow_run_id)
    done = journal(home, flow_run_id, missing_ok=not run_dir.exists())["done"]
    assert set(done) <= {"dbt deps"}, f"dbt steps ran: {done}"


# --- environment ------------------------------------------------------------------------------

def test_unknown_environment_is_refused_by_parameter_validation(home, untouched):
    state = production_run(environment="qa", return_state=True)
    failed_with(state, "environment", "'local'", "'dev'", "'staging'", "'prod'")
    _no_dbt_step_ran(home, state)


def test_unknown_environment_when_loading_lists_the_registered_ones(untouched):
    with pytest.raises(UnknownEnvironment, match=r"unknown environment 'qa'; known environments: .*local"):
        load_environment("qa")


def test_unknown_environment_on_the_command_line(untouched, capsys):
    with pytest.raises(SystemExit) as exit_:
        production_main(["--environment", "qa"])
    assert exit_.value.code == 2
    assert "invalid choice: 'qa'" in capsys.readouterr().err


# --- selectors ----------------------------------------------------------------------------------

@pytest.fixture
def freshness_may_run():
    """A valid run that selects nothing: its freshness check runs (README: a warning and a Completed
    run that built nothing), so `untouched` allows sources.json and nothing else."""


def test_selector_matching_nothing_warns_and_completes_with_nothing_built(home, freshness_may_run, untouched):
    state = production_run(environment="local", select=["tag:no_model_has_this_tag"], return_state=True)
    assert state.is_completed() and state.message == "nothing to rebuild", state.message
    warnings = [log.message for log in flow_run_logs(state.state_details.flow_run_id) if log.level >= 30]
    assert any("matches no model, seed or snapshot" in w and "tag:no_model_has_this_tag" in w for w in warnings), warnings


@pytest.mark.parametrize("parameters, needle", [
    ({"select": ["tag:"]}, "invalid dbt selector 'tag:': nothing follows tag:"),
    ({"select": ["@@bad"]}, "invalid dbt selector '@@bad'"),
    ({"select": ["stg_orders++"]}, "invalid dbt selector 'stg_orders++'"),
    ({"select": ["tags:finance"]}, "'tags' is not a dbt selector method"),
    ({"select": ["stg_orders,"]}, "invalid dbt selector 'stg_orders,' (term ''): it is empty"),
    ({"exclude": ["tag:"]}, "invalid dbt selector 'tag:'"),
    ({"layers": [{"name": "staging", "select": "path:"}]}, "invalid dbt selector 'path:'"),
], ids=["empty-tag", "double-at", "double-plus", "unknown-method", "empty-intersection", "exclude", "layer"])
def test_malformed_selector_fails_before_freshness(home, untouched, parameters, needle):
    state = production_run(environment="local", return_state=True, **parameters)
    failed_with(state, needle)
    _no_dbt_step_ran(home, state)


def test_state_selector_without_state_fails_before_freshness(home, untouched):
    state = production_run(environment="local", select=["state:modified+"], return_state=True)
    failed_with(state, "invalid selection", "Got a state selector method, but no comparison manifest")
    _no_dbt_step_ran(home, state)


# --- vars, threads, keep -------------------------------------------------------------------------

@pytest.mark.parametrize("bad_vars", [[1, 2], "raw_schema=raw", 7])
def test_vars_that_are_not_a_mapping_fail_parameter_validation(home, untouched, bad_vars):
    state = production_run(environment="local", vars=bad_vars, return_state=True)
    failed_with(state, "vars", "valid dictionary")
    _no_dbt_step_ran(home, state)


@pytest.mark.parametrize("text, needle", [
    ("[1,2]", "--vars must be a mapping, got list"),
    ("{raw_schema: [", "--vars is not valid"),
])
def test_vars_on_the_command_line(untouched, capsys, text, needle):
    with pytest.raises(SystemExit) as exit_:
        production_main(["--vars", text])
    assert exit_.value.code == 2 and needle in capsys.readouterr().err


def test_vars_list_as_a_real_process_exits_non_zero(home, untouched):
    result = subprocess.run([sys.executable, "-m", "flows.production", "--vars", "[1,2]"], cwd=REPO,
                            env=subprocess_env(home), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--vars must be a mapping, got list" in result.stderr


@pytest.mark.parametrize("threads", [0, -4])
def test_threads_below_one_fail_parameter_validation(home, untouched, threads):
    state = production_run(environment="local", threads=threads, return_state=True)
    failed_with(state, "threads", "greater than 0")
    _no_dbt_step_ran(home, state)


@pytest.mark.parametrize("keep", [1, 0, -1])
def test_prune_keep_below_two_is_refused(home, untouched, keep):
    state = prune_versions(environment="local", keep=keep, return_state=True)
    failed_with(state, "keep", "greater than or equal to 2")


def test_prune_keep_below_two_is_refused_by_the_library_too(home, untouched):
    from flows.core.state_store import StateStore
    from flows.core.versions import VersionRegistry, prune
    from flows.core.warehouse import warehouse_for

    environment = load_environment("local")
    with pytest.raises(VersionError, match="keep must be at least 2"):
        prune(warehouse_for(environment), VersionRegistry(StateStore.for_environment(environment)), "main", 1)


# --- identifiers -------------------------------------------------------------------------------

@pytest.mark.parametrize("schema", ["ana'lytics", "analytics;drop", "ana lytics", "analytics.x", 'ana"lytics', ""])
def test_unsafe_schema_names_are_refused(untouched, schema):
    with pytest.raises(Exception, match=r"unsafe schema"):
        DbtEnvironment(adapter="duckdb", schema_name=schema)
    if schema:  # an empty override means "the environment's schema"
        with pytest.raises(UnsafeIdentifier, match=r"unsafe schema"):
            with rendered_profile(DbtEnvironment(adapter="duckdb", schema_name="main"), BUNDLED_PROJECT, schema=schema):
                pass


# --- slim CI pull-request numbers ------------------------------------------------------------

@pytest.mark.parametrize("pr_number", [0, -7, "seven", 1.5])
def test_pr_number_must_be_a_positive_integer(home, untouched, pr_number):
    for flow_function in (slim_ci.slim_ci, slim_ci.drop_ci_schema):
        state = flow_function(pr_number=pr_number, environment="local", return_state=True)
        failed_with(state, "pr_number")


@pytest.mark.parametrize("text", ["0", "-3", "seven"])
def test_pr_number_on_the_command_line(untouched, capsys, text):
    with pytest.raises(SystemExit) as exit_:
        slim_ci.main(["--pr-number", text, "--environment", "local"])
    assert exit_.value.code == 2 and "positive integer" in capsys.readouterr().err


# --- operator flows and deployment config ----------------------------------------------------

def test_rollback_to_an_unknown_version_lists_those_that_exist(home, untouched):
    live = statuses(home)
    state = rollback(environment="local", to_version="v20000101000000_nope00", return_state=True)
    message = failed_with(state, "cannot roll back to 'v20000101000000_nope00': it is unknown; versions that exist:")
    assert all(version in message for version, status in live.items() if status == "published")


@pytest.mark.parametrize("cron", ["61 * * * *", "0 2 * *", "every night"])
def test_malformed_cron_is_caught_by_the_config_check(tmp_path, capsys, cron):
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    scheduled = [d for d in spec["deployments"] if d.get("schedules")]
    assert scheduled, "prefect.yaml has no scheduled deployment to break"
    scheduled[0]["schedules"] = [{**scheduled[0]["schedules"][0], "cron": cron}]
    for entry in ("flows", "deployments", "dbt_project"):  # entrypoints resolve next to the file
        os.symlink(REPO / entry, tmp_path / entry)
    broken = tmp_path / "prefect.yaml"
    broken.write_text(yaml.safe_dump(spec, sort_keys=False))
    problems = config_check.check(broken)
    assert problems and all(cron in p for p in problems), problems
    assert config_check.main([str(broken)]) == 1
    assert cron in capsys.readouterr().err
