"""Blue-green on DuckDB for real: versions, snapshots and incrementals across them, rollback, prune,
failed builds and audits that leave live untouched, and an atomic flip under a concurrent reader."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import duckdb
import pytest

from blocks.environment import BlueGreenSettings, DbtEnvironment
from conftest import BUNDLED_PROJECT, artifacts_of, chromium_or_skip, saved_block
from flows.core.artifacts import artifact_key
from flows.blue_green import list_versions, prune_versions, rollback
from flows.core.state_store import StateStore
from flows.core.versions import Version, VersionError, VersionRegistry, make_live
from flows.core.warehouse import DuckDBWarehouse
from flows.production import production_run
from land import land_new_data
from prefect.filesystems import LocalFileSystem
from reliability.helpers import live_data, sql, view_targets


@pytest.fixture(scope="module")
def home(published_module_home):
    """Published once (the session's template): the first of three_versions."""
    return published_module_home


def _live_data(home: Path) -> dict:
    """What readers see: every live relation's rows (snapshots included) and which version each
    live view reads (the reliability suite's fingerprint, so "live untouched" means the same here)."""
    return {"rows": live_data(home), "views": view_targets(home)}


def _change_customer(home: Path, email: str) -> None:
    sql(home, f"update raw.customers set email = '{email}', updated_at = now()::timestamp + interval 1 second, "
               "_loaded_at = now()::timestamp where customer_id = 1")


def _live_id(home: Path) -> str:
    return json.loads((home / "state" / "local" / "versions.json").read_text())["live"]


def _run(**parameters):
    state = production_run(environment="local", return_state=True, **parameters)
    return state


@pytest.fixture(scope="module")
def three_versions(home):
    versions = [_live_id(home)]
    for step in (1, 2):
        _change_customer(home, f"changed-{step}@example.com")
        land_new_data(home / "warehouse.duckdb", "orders", rows=25)
        state = _run()
        assert state.is_completed(), state.message
        versions.append(_live_id(home))
    return versions


def test_snapshot_keeps_history_and_incremental_keeps_rows_across_versions(home, three_versions):
    assert len(set(three_versions)) == 3
    history = sql(home, "select email from main_snapshots.snap_customers where customer_id = 1 order by dbt_valid_from")
    assert len(history) == 3 and history[-1][0] == "changed-2@example.com"
    assert sql(home, "select count(*) from main.fct_orders")[0][0] == 2050
    first_version_schema = f"main__{three_versions[0]}"
    kept = sql(home, f"select count(*) from main.fct_orders where order_id in "
                      f"(select order_id from {first_version_schema}.fct_orders)")[0][0]
    assert kept == 2000


def test_kept_docs_name_live_relations_and_every_kept_page_opens_in_chromium(home, three_versions):
    docs = home / "state" / "local" / "latest" / "docs"
    assert sorted(p.name for p in docs.iterdir()) == ["catalog.json", "static_index.html"]  # no index.html
    page = (docs / "static_index.html").read_text()
    start = re.search(r'\{"metadata":\s*\{"dbt_schema_version":\s*"https://schemas.getdbt.com/dbt/manifest/', page)
    manifest, _ = json.JSONDecoder().raw_decode(page, start.start())
    live = json.loads((home / "state" / "local" / "versions.json").read_text())
    published = next(v for v in live["versions"] if v["id"] == live["live"])["relations"]
    documented = {f"{n['schema']}.{n['alias'] or n['name']}": n["relation_name"] for n in manifest["nodes"].values()
                  if n["resource_type"] in ("model", "seed") and n["config"]["materialized"] != "ephemeral"}
    assert set(published) <= set(documented), set(published) - set(documented)
    for key in published:
        schema, name = key.split(".")
        assert documented[key].replace('"', "").endswith(f"{schema}.{name}"), documented[key]
    assert "__v" not in json.dumps(manifest["nodes"])  # no versioned name anywhere a reader could copy it
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"])
        try:
            for html in sorted(docs.glob("*.html")):
                tab = browser.new_page()
                errors: list = []
                tab.on("pageerror", lambda error, seen=errors: seen.append(error))
                tab.goto(html.as_uri())
                tab.get_by_text("fct_orders").first.wait_for(state="attached", timeout=60_000)  # the project tree rendered (collapsed)
                assert not errors, errors
        finally:
            browser.close()


def test_rollback_and_prune(home, three_versions):
    v1, v2, v3 = three_versions
    rollback(environment="local")
    assert _live_id(home) == v2 and sql(home, "select count(*) from main.fct_orders")[0][0] == 2025
    assert len(sql(home, "select * from main_snapshots.snap_customers where customer_id = 1")) == 3
    rollback(environment="local", to_version=v3)
    assert _live_id(home) == v3 and sql(home, "select count(*) from main.fct_orders")[0][0] == 2050

    assert prune_versions(environment="local", keep=2) == [v1]
    listing = {v["version"]: v["status"] for v in list_versions(environment="local")}
    assert listing == {v1: "pruned", v2: "published", v3: "published"}
    with pytest.raises(VersionError, match=rf"{v1}.*was pruned; versions that exist: {v2}, {v3} \(live\)"):
        rollback(environment="local", to_version=v1)
    with pytest.raises(VersionError, match=r"'v-nope'.*is unknown; versions that exist"):
        rollback(environment="local", to_version="v-nope")
    assert sql(home, "select count(*) from main.fct_orders")[0][0] == 2050


def test_failing_test_in_new_version_leaves_live_untouched(home, three_versions):
    before, live_before = _live_data(home), _live_id(home)
    sql(home, "insert into raw.orders select * replace (null as customer_id, order_id + 1000000 as order_id, "
               "now()::timestamp as _loaded_at) from raw.orders limit 1")
    try:
        state = _run()
        # The failing test is named even when dbt raises after its fail-fast stop (dbt._FailedNodes).
        assert state.is_failed() and "not_null" in state.message, state.message
    finally:
        sql(home, "delete from raw.orders where order_id > 1000000")
    assert _live_data(home) == before and _live_id(home) == live_before
    registry = json.loads((home / "state" / "local" / "versions.json").read_text())
    failed = [v for v in registry["versions"] if v["status"] == "failed"]
    assert failed and not sql(home, f"select schema_name from information_schema.schemata "
                                     f"where schema_name like 'main__{failed[-1]['id']}%'")


def test_publish_off_builds_and_tests_a_version_but_leaves_live_and_state_alone(home, three_versions):
    before, live_before = _live_data(home), _live_id(home)
    latest = home / "state" / "local" / "latest" / "manifest.json"
    saved_at = latest.stat().st_mtime
    land_new_data(home / "warehouse.duckdb", "orders", rows=5)
    state = _run(publish=False)
    assert state.is_completed() and "kept unpublished" in state.result(), state.message
    assert _live_data(home) == before and _live_id(home) == live_before
    assert latest.stat().st_mtime == saved_at  # the next run still compares with what live has
    registry = json.loads((home / "state" / "local" / "versions.json").read_text())
    kept = registry["versions"][-1]
    assert kept["status"] == "kept" and "publish=False" in kept["note"]
    assert sql(home, f"select count(*) from information_schema.tables where table_schema = 'main__{kept['id']}'")[0][0]
    # the next published run rebuilds what is fresher than live, not than the unpublished build
    state = _run()
    assert state.is_completed() and state.message != "nothing to rebuild", state.message


SNAPSHOT_OF_A_MODEL = """snapshots:
  - name: snap_order_items
    relation: ref('stg_order_items')
    config:
      schema: snapshots
      unique_key: order_item_id
      strategy: check
      check_cols: [quantity, unit_price]
      hard_deletes: invalidate
"""


def _project_with_a_snapshot_of_a_model(tmp_path: Path) -> Path:
    project = tmp_path / "with-model-snapshot"
    shutil.copytree(BUNDLED_PROJECT, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    (project / "snapshots" / "snap_order_items.yml").write_text(SNAPSHOT_OF_A_MODEL)
    return project


def test_audit_refuses_a_shrinking_relation_and_a_snapshot_of_a_model_keeps_its_history(home, three_versions, tmp_path):
    project = str(_project_with_a_snapshot_of_a_model(tmp_path))
    state = _run(project_dir=project, freshness_gate=False)
    assert state.is_completed(), state.message
    snapshot_sql = "select * from main_snapshots.snap_order_items order by all"
    history = sql(home, snapshot_sql)  # taken after the flip, from the published version
    assert len(history) == sql(home, "select count(*) from main.stg_order_items")[0][0] > 0
    before, live_before = _live_data(home), _live_id(home)
    sql(home, "create table raw.order_items_backup as select * from raw.order_items")
    sql(home, "delete from raw.order_items where order_item_id % 5 <> 0")
    try:
        state = _run(project_dir=project, freshness_gate=False)
        assert state.is_failed() and "audit refused the flip" in state.message and "shrank" in state.message
        assert _live_data(home) == before and _live_id(home) == live_before
        # the refused version closed no row of the snapshot's history (hard_deletes would have)
        assert sql(home, snapshot_sql) == history
        # the run summary shows the count table, with the refused relation's live and new counts
        (summary,) = [a for a in artifacts_of(state.state_details.flow_run_id) if a.key == artifact_key("local", "run-summary")]
        assert "## Publish audit (row counts, live → new)" in summary.data
        assert any("order_items" in line and "shrank" in line for line in summary.data.splitlines()), summary.data
        # allow_shrink: the same shrink is published when the run says it is expected
        state = _run(freshness_gate=False, allow_shrink=True)
        assert state.is_completed(), state.message
        assert _live_id(home) != live_before and _live_data(home) != before
    finally:
        sql(home, "delete from raw.order_items; insert into raw.order_items select * from raw.order_items_backup; "
                   "drop table raw.order_items_backup")


def test_flip_of_200_views_is_atomic_for_a_concurrent_reader(tmp_path):
    path = str(tmp_path / "flip.duckdb")
    warehouse = DuckDBWarehouse(path)
    names = [f"model_{i:03d}" for i in range(200)]
    setup = ["create schema live", "create schema live__v1", "create schema live__v2"]
    for name in names:
        setup += [f"create table live__v1.{name} as select 1 as version", f"create table live__v2.{name} as select 2 as version"]
    warehouse.execute_all(setup)
    registry = VersionRegistry(StateStore(LocalFileSystem(basepath=str(tmp_path / "state")), "flip"))
    versions = {
        v: Version(v, "now", None, "ready", relations={f"live.{n}": f"live__{v}.{n}" for n in names}) for v in ("v1", "v2")
    }
    make_live(warehouse, registry, versions["v1"])
    probe = " union all ".join(f"select version from live.{name}" for name in names)
    # Each reader query is recorded with when it started and ended (monotonic clock, used for
    # order only): the check means something only if some query was running while a flip was.
    seen, errors, stop = [], [], threading.Event()

    def reader():
        connection = duckdb.connect(path)
        while not stop.is_set():
            began = time.monotonic_ns()
            try:
                answer = frozenset(v for (v,) in connection.execute(probe).fetchall())
            except Exception as error:  # noqa: BLE001 - any error is a failure of the flip
                errors.append(error)
                continue
            seen.append((began, time.monotonic_ns(), answer))
        connection.close()

    def queries_after(moment: int) -> int:
        return sum(began > moment for began, _, _ in list(seen))

    thread = threading.Thread(target=reader)
    thread.start()
    flips, overlapped = [], False
    try:
        # Flip back and forth until a reader query overlapped one (a flip takes a few ms; the
        # reader's query about as long, so this takes a flip or two, rarely more).
        for attempt in range(200):
            mark = time.monotonic_ns()
            while not queries_after(mark) and not errors:
                time.sleep(0.001)
            began = time.monotonic_ns()
            make_live(warehouse, registry, versions["v2" if attempt % 2 == 0 else "v1"])
            flips.append((began, time.monotonic_ns()))
            overlapped = any(q_began < f_end and q_end > f_began
                             for q_began, q_end, _ in list(seen) for f_began, f_end in flips)
            if overlapped and attempt % 2 == 0:  # stop with v2 live
                break
        mark = time.monotonic_ns()
        while not queries_after(mark) and not errors:
            time.sleep(0.001)
    finally:
        stop.set()
        thread.join()
    answers = [answer for _, _, answer in seen]
    print(f"\nflips of {len(names)} views: {len(flips)}; reader queries: {len(seen)}")
    assert not errors, errors[:3]
    assert overlapped, f"no reader query overlapped any of {len(flips)} flips"
    assert all(len(versions_seen) == 1 for versions_seen in answers), "a reader saw two versions at once"
    assert frozenset({1}) in answers and frozenset({2}) in answers


FOR_ENV_MACRO = """{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ generate_schema_name_for_env(custom_schema_name, node) }}
{%- endmacro %}
"""


def test_generate_schema_name_for_env_on_prod_is_refused_before_any_dbt_work(home, tmp_path):
    """dbt's generate_schema_name_for_env uses a custom schema as-is on a target named `prod`: the
    finance models would be built in place, in `finance`. The run refuses after parsing the version."""
    project = tmp_path / "project"
    shutil.copytree(BUNDLED_PROJECT, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    (project / "macros" / "generate_schema_name.sql").write_text(FOR_ENV_MACRO)
    schemas_before = sql(home, "select schema_name from information_schema.schemata order by 1")
    live_before = _live_data(home)
    prod = DbtEnvironment(adapter="duckdb", schema_name="main", blue_green=BlueGreenSettings(enabled=True))
    with saved_block(prod, "prod"):
        state = production_run(environment="prod", project_dir=str(project), return_state=True)
    assert state.is_failed()
    message = state.message
    assert "resolve outside version schema main__v" in message, message
    assert "model.lakehouse.fct_revenue → schema finance" in message and "fct_payments_daily" in message
    assert "generate_schema_name" in message and "target named `prod`" in message
    # no dbt work touched the warehouse, and no version was started
    assert sql(home, "select schema_name from information_schema.schemata order by 1") == schemas_before
    assert _live_data(home) == live_before
    assert not (home / "state" / "prod" / "versions.json").exists()
