"""Faults: whatever breaks during a run, live is never left partial or unrecorded.

Before the flip, live data stays exactly as it was; a failure after the flip (promoting the saved
state) leaves live on the complete new version, whose state was saved before the flip. Every case
compares a fingerprint of the live rows (plus the live views' SQL, the live version and the saved
state) before and after, not only run states. Each case starts from its own copy of a published
$LAKEHOUSE_HOME, so the freshness gate builds only what the case touches.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import duckdb
import pytest
from land import land_new_data

from blocks.profile import profile_dir_prefix
from flows.production import production_run

from .helpers import (
    CuttableProxy, assert_unchanged, copy_home, failed_with, file_in_place_of, flow_run_state, journal, live_data, pause_before,
    project_copy,
    registry, run_dirs, schemas, snapshot, sql, start_production, statuses, versioned_schemas, view_targets, wait_for,
)


def _new_version_failed_and_dropped(home: Path, before_versions: dict) -> str:
    new = {v: s for v, s in statuses(home).items() if v not in before_versions}
    assert len(new) == 1 and list(new.values()) == ["failed"], new
    (version,) = new
    assert not any(version in s for s in schemas(home)), f"the failed version's schema is still there: {schemas(home)}"
    return version


def _live_is_whole(home: Path) -> None:
    """Live is exactly what the registry says: each live view reads the physical relation its
    live version records, and every live relation can be read (no view over a dropped table)."""
    data = registry(home)
    relations = next(v for v in data["versions"] if v["id"] == data["live"])["relations"]
    views = view_targets(home)
    assert set(views) == set(relations)
    for key, physical in relations.items():
        assert physical.split(".")[0] in views[key], (key, physical, views[key])
    assert len(live_data(home)) >= len(relations)


# --- dbt failures --------------------------------------------------------------------------------

def test_failing_model_runtime_error_leaves_live_untouched(fresh_home, tmp_path):
    project = project_copy(tmp_path / "project", files={
        "models/intermediate/int_broken.sql":
            "select cast('not a number' as integer) as broken, order_id from {{ ref('stg_orders') }}\n",
    })
    before, versions = snapshot(fresh_home), statuses(fresh_home)
    state = production_run(environment="local", project_dir=str(project), return_state=True)
    failed_with(state, "build intermediate failed", "int_broken")
    assert_unchanged(fresh_home, before)
    _new_version_failed_and_dropped(fresh_home, versions)
    done = journal(fresh_home, state.state_details.flow_run_id)["done"]
    assert "build intermediate" not in done and "publish" not in done


def test_failing_test_leaves_live_untouched(fresh_home, tmp_path):
    project = project_copy(
        tmp_path / "project",
        files={"tests/assert_reliability_always_fails.sql":
               "select order_id from {{ ref('stg_orders') }} where order_id is not null\n"},
        append={"models/staging/stg_orders.sql": "\n-- touched by the reliability suite, so it rebuilds\n"},
    )
    before, versions = snapshot(fresh_home), statuses(fresh_home)
    state = production_run(environment="local", project_dir=str(project), return_state=True)
    failed_with(state, "build staging failed", "assert_reliability_always_fails")
    assert_unchanged(fresh_home, before)
    _new_version_failed_and_dropped(fresh_home, versions)


def test_stale_source_fails_naming_source_and_age(tmp_path, landed_template, monkeypatch):
    home = tmp_path / "fresh-home"
    home.mkdir()
    shutil.copy(landed_template, home / "warehouse.duckdb")
    monkeypatch.setenv("LAKEHOUSE_HOME", str(home))
    sql(home, "update raw.payments set _loaded_at = now()::timestamp - interval 10 days")
    before = schemas(home)
    state = production_run(environment="local", return_state=True)
    message = failed_with(state, "source freshness failed", "raw.payments is stale (10.0 days old)")
    assert "raw.orders" not in message  # only the stale source is named
    assert schemas(home) == before and not view_targets(home)  # nothing built, nothing live
    assert not (home / "state" / "local" / "latest").exists() and not statuses(home)
    done = journal(home, state.state_details.flow_run_id)["done"]
    assert "source freshness" not in done and not any(step.startswith("build") for step in done)


@pytest.mark.parametrize("model, needle", [
    ("select * from {{ ref('stg_orders' }}\n", "int_compile_error"),
    ("select * from {{ ref('no_such_model') }}\n", "no_such_model"),
], ids=["bad-jinja", "missing-ref"])
def test_compile_error_fails_at_parse_before_any_dbt_work(fresh_home, tmp_path, model, needle):
    project = project_copy(tmp_path / "project", files={"models/intermediate/int_compile_error.sql": model})
    before, versions = snapshot(fresh_home), statuses(fresh_home)
    state = production_run(environment="local", project_dir=str(project), return_state=True)
    failed_with(state, "dbt parse failed", needle)
    assert_unchanged(fresh_home, before)
    assert statuses(fresh_home) == versions
    assert set(journal(fresh_home, state.state_details.flow_run_id)["done"]) <= {"dbt deps"}


# --- the run process killed -----------------------------------------------------------------

@pytest.fixture(scope="module")
def kill_home(tmp_path_factory, published_template):
    """One home for the SIGKILL sequence: killed mid-layer, killed before the flip, then a normal run."""
    root = tmp_path_factory.mktemp("killed")
    home = copy_home(published_template, root / "home")
    land_new_data(home / "warehouse.duckdb", "orders", rows=10)  # so every run below has something to build
    # A temp dir of its own, for the runs in subprocesses (TMPDIR) and in this process: the profile
    # dirs checked below are then only these runs', and no other test worker's run sweeps them away.
    private_tmp = root / "tmp"
    private_tmp.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAKEHOUSE_HOME", str(home))
        patch.setenv("TMPDIR", str(private_tmp))
        patch.setattr(tempfile, "tempdir", str(private_tmp))
        yield {"home": home, "before": snapshot(home), "killed": [], "pids": [], "tmp": private_tmp}


def _profile_dirs(kill_home: dict, pid: int) -> list[Path]:
    return list(kill_home["tmp"].glob(f"{profile_dir_prefix(pid)}*"))


def _kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)  # our own child's process group, by id
    process.wait(timeout=30)


def _lock(home: Path) -> dict:
    return json.loads((home / "state" / "local" / "publish.lock").read_text())


@pytest.mark.slow
def test_sigkill_mid_layer_leaves_live_untouched(kill_home, tmp_path):
    home, log = kill_home["home"], tmp_path / "killed-mid-layer.log"
    earlier = set(run_dirs(home))
    process = start_production(home, log)
    run_dir = wait_for(lambda: next((d for d in run_dirs(home) if d not in earlier
                                     and "build staging" in journal(home, d.name, missing_ok=True)["done"]), None),
                       timeout=600, what="the staging layer to finish", process=process, log=log, interval=0.01)
    _kill(process)
    kill_home["pids"].append(process.pid)
    assert _profile_dirs(kill_home, process.pid)  # its profile is left
    done = journal(home, run_dir.name)["done"]
    assert "build staging" in done and "build marts" not in done, f"not killed mid-run: {done}"
    flow_run_id = run_dir.name
    kill_home["killed"].append(flow_run_id)

    after = snapshot(home)
    assert after["live"] == kill_home["before"]["live"] and after["views"] == kill_home["before"]["views"]
    assert after["live_id"] == kill_home["before"]["live_id"] and after["latest"] == kill_home["before"]["latest"]
    version = journal(home, flow_run_id)["version"]
    assert statuses(home)[version] == "building"
    assert f"main__{version}" in versioned_schemas(home)  # the orphan a later run must clean up
    lock = _lock(home)
    assert lock["run_id"] == flow_run_id and lock["pid"] == process.pid  # a stale lock is left behind...
    assert flow_run_state(flow_run_id).is_running()  # ...and the API still calls the dead run Running


@pytest.mark.slow
def test_sigkill_between_audit_and_flip_leaves_live_untouched(kill_home, tmp_path):
    """Also: this run is not blocked by the stale lock of the run killed before it, and cleans up its orphan."""
    home, log = kill_home["home"], tmp_path / "killed-before-flip.log"
    (first,) = kill_home["killed"]
    first_version = journal(home, first)["version"]
    process = start_production(home, log, prelude=pause_before("flip"))
    marker = wait_for(lambda: next(iter(home.glob("work/local/runs/*/paused-before-flip")), None),
                      timeout=600, what="the pause before the flip", process=process, log=log)
    _kill(process)
    kill_home["pids"].append(process.pid)
    flow_run_id = marker.parent.name
    kill_home["killed"].append(flow_run_id)
    output = log.read_text()
    assert f"Taking over the publish lock of flow run {first}" in output and "is gone" in output, output[-3000:]
    assert flow_run_state(first).name == "Crashed"  # the lock takeover told the API the first run is dead

    after = snapshot(home)
    assert after["live"] == kill_home["before"]["live"] and after["views"] == kill_home["before"]["views"]
    assert after["live_id"] == kill_home["before"]["live_id"] and after["latest"] == kill_home["before"]["latest"]
    versions = registry(home)["versions"]
    first_record = next(v for v in versions if v["id"] == first_version)
    assert first_record["status"] == "failed" and "abandoned" in first_record["note"]
    assert not any(first_version in s for s in schemas(home)), "the first orphan's schema was not dropped"
    version = journal(home, flow_run_id)["version"]
    assert statuses(home)[version] == "ready"  # audited, never flipped
    done = journal(home, flow_run_id)["done"]
    assert "publish" not in done and "save state" in done  # state staged before the flip, never promoted


@pytest.mark.slow
def test_next_run_after_kills_works_and_cleans_up(kill_home):
    home = kill_home["home"]
    first, second = kill_home["killed"]
    second_version = journal(home, second)["version"]
    orders_before = sql(home, "select count(*) from main.fct_orders")[0][0]
    # The second killed run's render swept the first's profile dir; its own is left for this run.
    assert not _profile_dirs(kill_home, kill_home["pids"][0]) and _profile_dirs(kill_home, kill_home["pids"][1])
    state = production_run(environment="local", return_state=True)
    assert state.is_completed(), state.message
    assert sql(home, "select count(*) from main.fct_orders")[0][0] == orders_before + 10
    record = next(v for v in registry(home)["versions"] if v["id"] == second_version)
    assert record["status"] == "failed" and "abandoned" in record["note"]
    assert not any(second_version in s for s in schemas(home))
    assert flow_run_state(second).name == "Crashed" and flow_run_state(first).name == "Crashed"
    assert not (home / "state" / "local" / "publish.lock").exists()
    assert registry(home)["live"] == journal(home, state.state_details.flow_run_id)["version"]
    _live_is_whole(home)
    killed_profiles = [d for pid in kill_home["pids"] for d in _profile_dirs(kill_home, pid)]
    assert not killed_profiles, "the killed runs' profile dirs were left behind"


# --- the state store unwritable --------------------------------------------------------------

def test_state_store_unwritable_from_the_start_fails_before_dbt(fresh_home):
    """A FILE where the store's folder should be: unwritable even for root."""
    state_dir = fresh_home / "state"
    before = {"live": live_data(fresh_home), "views": view_targets(fresh_home), "schemas": schemas(fresh_home)}
    with file_in_place_of(state_dir):
        state = production_run(environment="local", return_state=True)
        failed_with(state, "state store for 'local' is not writable")
        assert not journal(fresh_home, state.state_details.flow_run_id)["done"]
    assert {"live": live_data(fresh_home), "views": view_targets(fresh_home), "schemas": schemas(fresh_home)} == before


def test_state_store_failing_before_the_flip_leaves_live_untouched_then_after_it_keeps_the_new_version(fresh_home):
    """The state is saved (staged) BEFORE the flip: a store that refuses it stops the run with live
    untouched. A store that fails only after the flip (promoting the staged state) fails the run,
    but live then is the new version, complete, with its state saved under runs/<run id>/."""
    land_new_data(fresh_home / "warehouse.duckdb", "orders", rows=10)
    before, versions = snapshot(fresh_home), statuses(fresh_home)
    with file_in_place_of(fresh_home / "state" / "local" / "runs"):
        state = production_run(environment="local", return_state=True)
        failed_with(state, "state store for 'local' is not writable")
        assert journal(fresh_home, state.state_details.flow_run_id)["failed"] == "save state"
    assert_unchanged(fresh_home, before)
    _new_version_failed_and_dropped(fresh_home, versions)

    with file_in_place_of(fresh_home / "state" / "local" / "latest" / "docs"):
        state = production_run(environment="local", return_state=True)
        failed_with(state, "state store for 'local' is not writable")
        assert journal(fresh_home, state.state_details.flow_run_id)["failed"] == "promote state"
    version = journal(fresh_home, state.state_details.flow_run_id)["version"]
    assert registry(fresh_home)["live"] == version and statuses(fresh_home)[version] == "published"
    assert sql(fresh_home, "select count(*) from main.fct_orders")[0][0] == \
        before["live"]["main.fct_orders"][1] + 10  # (kind, rows, hash, view SQL)
    staged = fresh_home / "state" / "local" / "runs" / str(state.state_details.flow_run_id)
    assert {p.name for p in staged.iterdir()} >= {"manifest.json", "run_results.json", "sources.json"}
    _live_is_whole(fresh_home)


# --- the Prefect API unreachable mid-run -------------------------------------------------------

# Run before the CLI in its process: events it cannot deliver are dropped after one attempt each.
EVENTS_WITHOUT_RECONNECTION = (
    "from prefect.events.clients import PrefectEventsClient\n"
    "from prefect.events.worker import EventsWorker\n"
    "EventsWorker.set_client_override(PrefectEventsClient, reconnection_attempts=0)"
)

@pytest.mark.slow
def test_prefect_api_unreachable_mid_run(fresh_home, tmp_path, prefect_server):
    """The Prefect API goes away after the staging layer (a relay to it is cut: connections reset,
    new ones refused), in a `python -m flows.production` process.

    Observed with Prefect 3.8, for a flow called locally: task runs are orchestrated client-side
    (their states go out as events), so the run does not notice: every step runs, live flips in
    one DuckDB transaction to the complete new version, its state is saved and the lock released.
    Only reporting fails: logs are dropped ("Error logging to API"), each API call (artifacts,
    then the final flow run state) fails after the client's retries (5 by default, ~1 min per
    call; shortened here with PREFECT_CLIENT_MAX_RETRIES=0), and the flow run stays Running in
    the API. Before the fix, the failed artifact call made the flow body raise after it had
    published, and the process died in a traceback from the engine. Now artifacts are
    best-effort (an error is logged), the flow body ends normally, the engine logs its ConnectError
    recording the final state, and the CLI prints one clear line and returns 1. At exit,
    Prefect's events worker still tries every undelivered event, each with the events client's 10
    reconnection attempts (~8 s per event; no setting changes it): left so, the process lingers
    ~2 min. Here the subprocess installs an events client with no reconnection attempts
    (EventsWorker.set_client_override, before the CLI runs), so it exits within seconds of its last
    line, and the test waits for that exit and its code. The next run, with the API back, works
    normally.
    """
    land_new_data(fresh_home / "warehouse.duckdb", "orders", rows=10)
    before = snapshot(fresh_home)
    proxy = CuttableProxy(prefect_server)
    log = tmp_path / "api-gone.log"
    earlier = set(run_dirs(fresh_home))
    process = start_production(fresh_home, log, prelude=EVENTS_WITHOUT_RECONNECTION,
                               PREFECT_API_URL=proxy.url, PREFECT_CLIENT_MAX_RETRIES="0")
    run_dir = wait_for(lambda: next((d for d in run_dirs(fresh_home) if d not in earlier
                                     and "build staging" in journal(fresh_home, d.name, missing_ok=True)["done"]), None),
                       timeout=600, what="the staging layer to finish", process=process, log=log)
    proxy.cut()
    outcome = "production_run: its final state could not be recorded in the Prefect API"
    try:
        wait_for(lambda: outcome in log.read_text(), timeout=600, what="the run's last line", process=process, log=log)
        try:  # then the events worker tries each undelivered event once, and the process exits
            code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = log.read_text()
    assert code is not None, f"the CLI had not exited 2 min after its last line:\n{output[-3000:]}"
    assert code == 1, output[-3000:]
    assert "Could not post the run's artifacts" in output
    # The flow body ended normally: the only traceback is the engine's own, failing to record the end.
    assert "Outcome: completed: version" in output and "Encountered exception during execution: ConnectError" in output

    done = journal(fresh_home, run_dir.name)
    version = done["version"]
    assert done["done"][-3:] == ["save state", "publish", "promote state"] and done["failed"] is None
    assert registry(fresh_home)["live"] == version and statuses(fresh_home)[version] == "published"
    _live_is_whole(fresh_home)  # the one flip happened entirely
    assert sql(fresh_home, "select count(*) from main.fct_orders")[0][0] == \
        before["live"]["main.fct_orders"][1] + 10  # (kind, rows, hash, view SQL)
    assert not (fresh_home / "state" / "local" / "publish.lock").exists()
    assert flow_run_state(run_dir.name).is_running()  # what the API believes; nothing client-side can fix it

    state = production_run(environment="local", return_state=True)  # the API is back: the next run is normal
    assert state.is_completed() and state.message == "nothing to rebuild", state.message


def test_flip_done_but_not_recorded_is_undone_before_its_schemas_are_dropped(tmp_path):
    """The narrowest window: killed after the flip's transaction committed but before versions.json
    recorded it (the version is still "ready"). Live then reads a version the registry does not
    call live. The next run must put live back to the recorded version before dropping the
    orphan's schemas, never leave live views over dropped tables."""
    from prefect.filesystems import LocalFileSystem

    from flows.core.state_store import StateStore
    from flows.core.versions import Version, VersionRegistry, abandon_unfinished, drop_unreferenced_schemas, \
        flip_statements, make_live
    from flows.core.warehouse import DuckDBWarehouse

    path = tmp_path / "window.duckdb"
    warehouse = DuckDBWarehouse(str(path))
    names = [f"model_{i}" for i in range(20)]
    setup = ["create schema live", "create schema live__v20000101000000_first0", "create schema live__v20000102000000_secnd0"]
    for name in names:
        setup += [f"create table live__v20000101000000_first0.{name} as select 1 as version",
                  f"create table live__v20000102000000_secnd0.{name} as select 2 as version"]
    warehouse.execute_all(setup)
    registry = VersionRegistry(StateStore(LocalFileSystem(basepath=str(tmp_path / "state")), "window"))
    first, second = (Version(v, "now", None, "ready", relations={f"live.{n}": f"live__{v}.{n}" for n in names})
                     for v in ("v20000101000000_first0", "v20000102000000_secnd0"))
    registry.versions = {first.id: first, second.id: second}
    make_live(warehouse, registry, first)
    registry.mark(second.id, "ready")
    warehouse.execute_all(flip_statements(warehouse, second.relations, first.relations))  # ...and the run dies here

    def live_versions():
        with duckdb.connect(str(path)) as connection:
            return {v for name in names for (v,) in connection.execute(f"select version from live.{name}").fetchall()}

    assert live_versions() == {2}
    registry = VersionRegistry(registry.store)  # the next run reads what was recorded
    assert abandon_unfinished(registry, warehouse=warehouse) == [second.id]
    dropped = drop_unreferenced_schemas(warehouse, registry, "live")
    assert dropped == ["live__v20000102000000_secnd0"]
    assert live_versions() == {1}  # live is what the registry says, and every view still reads
    assert statuses_of(registry) == {first.id: "published", second.id: "failed"}


def statuses_of(registry) -> dict[str, str]:
    return {v.id: v.status for v in registry.versions.values()}
