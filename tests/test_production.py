"""The production runbook on the bundled project, a failing fixture project, and a second stock project."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import duckdb
import pytest
from prefect.client.orchestration import get_client

from conftest import artifacts_of, flow_run_logs
from flows.core.artifacts import artifact_key
from flows.production import production_run
from land import land_new_data
from reliability.helpers import sql, view_targets


@pytest.fixture(scope="module")
def home(module_home):
    return module_home


@pytest.fixture(scope="module")
def full_run(home):
    state = production_run(environment="local", return_state=True)
    assert state.is_completed(), state.message
    return state


def _latest(home: Path, name: str) -> dict:
    return json.loads((home / "state" / "local" / "latest" / name).read_text())


def _rebuilt(home: Path) -> set[str]:
    return {
        r["unique_id"] for r in _latest(home, "run_results.json")["results"]
        if r["unique_id"].split(".")[0] in {"model", "seed", "snapshot"} and r["status"] == "success"
    }


def test_full_run_leaves_tables_snapshots_docs_state_and_artifacts(home, full_run):
    manifest = _latest(home, "manifest.json")
    models = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    live = {name for (name,) in sql(home, "select table_name from information_schema.tables "
                                             "where table_schema in ('main', 'main_finance')")}
    assert models <= live
    assert sql(home, "select count(*) from main.fct_orders")[0][0] == 2000
    assert sql(home, "select count(*) from main_snapshots.snap_customers")[0][0] == 300
    docs_page = (home / "state" / "local" / "latest" / "docs" / "static_index.html").read_text()
    assert len(docs_page) > 10_000 and '"compiled": true' in docs_page  # compiled SQL kept from the builds
    for name in ("manifest.json", "sources.json", "run_results.json"):
        assert (home / "state" / "local" / "latest" / name).exists()
    # This run's artifacts, not the latest under each key: other runs on the server write the same keys.
    artifacts = _artifacts_by_key(full_run)
    for what in ("run-summary", "model-timings", "docs"):
        assert len(artifacts.get(artifact_key("local", what), [])) == 1, {k: len(v) for k, v in artifacts.items()}
    (summary,) = artifacts[artifact_key("local", "run-summary")]
    assert "build staging" in summary.data and "raw.orders" in summary.data
    assert "## Slowest 10 models over their last runs" in summary.data  # the trend chart, from this first run
    # Live progress: one artifact per build step and one for the run, each at 100% once it ended.
    (progress,) = artifacts[artifact_key("local", "progress")]
    assert progress.type == "progress" and progress.data == 100.0, progress.description
    (staging,) = artifacts[artifact_key("local", "progress-build-staging")]
    assert staging.data == 100.0 and staging.description.startswith("build staging: ")
    # The timeline: an SVG inline, one row per dbt thread, the critical path named.
    (timeline,) = artifacts[artifact_key("local", "timeline")]
    svg = _embedded_svg(timeline.data, "run timeline")
    assert "thread 1" in svg and "build staging" in svg and "Critical path" in timeline.data


def _embedded_svg(markdown: str, alt: str) -> str:
    import base64
    import re

    match = re.search(rf"!\[{alt}\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, markdown[:500]
    return base64.b64decode(match.group(1)).decode()


def _artifacts_by_key(state) -> dict[str, list]:
    by_key: dict[str, list] = {}
    for artifact in artifacts_of(state.state_details.flow_run_id):
        by_key.setdefault(artifact.key, []).append(artifact)
    return by_key


def test_nothing_fresher_builds_nothing(home, full_run):
    state = production_run(environment="local", return_state=True)
    assert state.is_completed() and state.message == "nothing to rebuild"


def test_full_refresh_bypasses_the_gate_and_a_warn_level_stale_source_is_logged(home, full_run):
    """Nothing is fresher, yet full_refresh rebuilds every model and seed; raw.payments, 30 hours old
    (warn_after 24 h, error_after 72 h), is logged as a warning and the run goes on."""
    sql(home, "update raw.payments set _loaded_at = now()::timestamp - interval 30 hours")
    state = production_run(environment="local", full_refresh=True, return_state=True)
    assert state.is_completed() and state.message != "nothing to rebuild", state.message
    manifest = _latest(home, "manifest.json")
    built = {u for u, n in manifest["nodes"].items() if n["resource_type"] in {"model", "seed"}
             and n["config"]["materialized"] != "ephemeral"}
    assert built <= _rebuilt(home), built - _rebuilt(home)
    warnings = [log.message for log in flow_run_logs(state.state_details.flow_run_id) if log.level == 30]
    assert any("Source raw.payments is getting stale" in w and "the run goes on" in w for w in warnings), warnings


def test_landing_one_source_rebuilds_exactly_its_downstream(home, full_run):
    land_new_data(home / "warehouse.duckdb", "orders", rows=10)
    views_before = view_targets(home)
    state = production_run(environment="local", return_state=True)
    assert state.is_completed(), state.message
    manifest = _latest(home, "manifest.json")
    downstream, frontier = set(), ["source.lakehouse.raw.orders"]
    while frontier:
        for child in manifest["child_map"].get(frontier.pop(), []):
            if child not in downstream:
                downstream.add(child)
                frontier.append(child)
    expected = {u for u in downstream if u.split(".")[0] in {"model", "seed", "snapshot"}}
    assert _rebuilt(home) == expected
    assert sql(home, "select count(*) from main.fct_orders")[0][0] == 2010
    # per-relation pointers: exactly the rebuilt relations' live views moved to the new version;
    # every other live view still reads the version it read before
    views_after = view_targets(home)
    rebuilt_views = {f"{manifest['nodes'][u]['schema']}.{manifest['nodes'][u]['alias']}"
                     for u in expected if not u.startswith("snapshot.")}
    moved = {view for view, text in views_after.items() if views_before.get(view) != text}
    assert moved and moved == rebuilt_views & views_after.keys(), (moved, rebuilt_views)
    assert len(views_after) > len(moved) and views_after.keys() == views_before.keys()


# --- a project whose staging test fails, then is fixed and retried ------------------------------

FIXTURE_PROJECT = {
    "dbt_project.yml": """
        name: fixture
        version: "1.0"
        profile: fixture
        models:
          fixture:
            +materialized: table
            staging:
              +materialized: view  # so fixing the landed data fixes what the staging test reads
    """,
    "models/staging/_staging.yml": """
        version: 2
        sources:
          - name: landing
            schema: landing
            tables: [{name: people}, {name: places}]
        models:
          - name: stg_people
            columns: [{name: place_id, data_tests: [not_null]}]
          - name: stg_places
            columns: [{name: place_id, data_tests: [unique]}]
    """,
    "models/staging/stg_people.sql": "select * from {{ source('landing', 'people') }}",
    "models/staging/stg_places.sql": "select * from {{ source('landing', 'places') }}",
    "models/intermediate/int_people_places.sql":
        "select p.person_id, l.name from {{ ref('stg_people') }} p join {{ ref('stg_places') }} l using (place_id)",
    "models/marts/fct_people.sql": "select count(*) as people from {{ ref('int_people_places') }}",
}


def _write_project(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content).lstrip())
    return root


def _land_fixture(warehouse: Path, broken: bool) -> None:
    with duckdb.connect(str(warehouse)) as connection:
        connection.execute("create schema if not exists landing")
        connection.execute("create or replace table landing.places as select * from (values (1, 'Utrecht'), (2, 'Gent')) t(place_id, name)")
        connection.execute(f"create or replace table landing.people as select * from (values (1, 1), (2, {'null' if broken else 2})) t(person_id, place_id)")


def _retry_same_flow_run(flow_run_id):
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Scheduled(), force=True)
        flow_run = client.read_flow_run(flow_run_id)
    return run_flow(production_run, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")


def test_failing_staging_test_stops_before_intermediate_and_retry_reruns_only_failures(lakehouse_home, tmp_path):
    project = _write_project(tmp_path / "fixture", FIXTURE_PROJECT)
    warehouse = lakehouse_home / "warehouse.duckdb"
    _land_fixture(warehouse, broken=True)
    # The failed version is kept (as a flow with retries left would), so the retry resumes it.
    state = production_run(environment="local", project_dir=str(project), keep_failed_version=True,
                           return_state=True)
    assert state.is_failed() and "not_null_stg_people_place_id" in state.message
    tables = {t for (t,) in sql(lakehouse_home, "select table_name from information_schema.tables")}
    assert "int_people_places" not in tables and "fct_people" not in tables
    artifacts = _artifacts_by_key(state)
    (summary,) = artifacts[artifact_key("local", "run-summary")]
    (failures,) = artifacts[artifact_key("local", "failures")]
    assert "not_null_stg_people_place_id" in summary.data and "compiled" in failures.data
    # keep_failed_version: the failed version's schema is still there, with what its staging layer built
    kept = json.loads((lakehouse_home / "state" / "local" / "versions.json").read_text())["versions"][-1]["id"]
    assert ("stg_people",) in sql(lakehouse_home, "select table_name from information_schema.tables "
                                                      f"where table_schema = 'main__{kept}'")

    _land_fixture(warehouse, broken=False)
    flow_run_id = state.state_details.flow_run_id
    retried = _retry_same_flow_run(flow_run_id)
    assert retried.is_completed(), retried.message
    run_dir = lakehouse_home / "work" / "local" / "runs" / str(flow_run_id)
    first = json.loads((run_dir / "steps" / "build-staging.attempt-1.json").read_text())
    second = json.loads((run_dir / "steps" / "build-staging.attempt-2.json").read_text())
    redo = {r["unique_id"] for r in first["results"] if r["status"] in {"error", "fail", "skipped"}}
    assert {r["unique_id"] for r in second["results"]} == redo
    assert any("not_null_stg_people_place_id" in u for u in redo)
    assert sql(lakehouse_home, "select people from main.fct_people") == [(2,)]


def test_a_retry_whose_failed_version_was_dropped_starts_over_in_a_new_version(lakehouse_home, tmp_path):
    project = _write_project(tmp_path / "fixture", FIXTURE_PROJECT)
    warehouse = lakehouse_home / "warehouse.duckdb"
    _land_fixture(warehouse, broken=True)
    state = production_run(environment="local", project_dir=str(project), return_state=True)
    assert state.is_failed()
    registry = json.loads((lakehouse_home / "state" / "local" / "versions.json").read_text())
    (dropped,) = [v["id"] for v in registry["versions"] if v["status"] == "failed"]
    assert not sql(lakehouse_home, f"select schema_name from information_schema.schemata "
                                      f"where schema_name like 'main__{dropped}%'"), "the failed version was kept"

    _land_fixture(warehouse, broken=False)
    retried = _retry_same_flow_run(state.state_details.flow_run_id)
    assert retried.is_completed(), retried.message
    registry = json.loads((lakehouse_home / "state" / "local" / "versions.json").read_text())
    assert registry["live"] != dropped
    assert sql(lakehouse_home, "select people from main.fct_people") == [(2,)]


# --- a second stock project: its own layout, no intermediate folder, no sources ----------------

STOCK_PROJECT = {
    "dbt_project.yml": """
        name: shop
        version: "1.0"
        profile: shop
    """,
    "seeds/currencies.csv": "code,rate\nEUR,1.0\nUSD,0.9\n",
    "models/base/base_sales.sql": "select 1 as sale_id, 'EUR' as code, 10.0 as amount union all select 2, 'USD', 20.0",
    "models/base/schema.yml": """
        version: 2
        models:
          - name: base_sales
            columns: [{name: sale_id, data_tests: [unique, not_null]}]
    """,
    "snapshots/sales_history.yml": """
        snapshots:
          - name: sales_history
            relation: ref('base_sales')
            config: {schema: snapshots, unique_key: sale_id, strategy: check, check_cols: all}
    """,
    "models/reporting/sales_in_eur.sql": """
        select s.sale_id, s.amount * c.rate as amount_eur
        from {{ ref('base_sales') }} s join {{ ref('currencies') }} c using (code)
    """,
}


def test_runs_unchanged_on_another_stock_project(lakehouse_home, tmp_path):
    project = _write_project(tmp_path / "shop", STOCK_PROJECT)
    state = production_run(environment="local", project_dir=str(project), return_state=True)
    assert state.is_completed(), state.message
    assert sql(lakehouse_home, "select sum(amount_eur) from main.sales_in_eur") == [(28.0,)]
    # a snapshot of a model keeps its history outside the versions, like every snapshot
    assert sql(lakehouse_home, "select count(*) from main_snapshots.sales_history") == [(2,)]
    assert not sql(lakehouse_home, "select 1 from information_schema.tables where table_name = 'sales_history' "
                                      "and table_schema <> 'main_snapshots'")


# --- the gate without a fresher source: only a code change rebuilds -----------------------------

GATED_PROJECT = {
    "dbt_project.yml": """
        name: gated
        version: "1.0"
        profile: gated
    """,
    "models/_sources.yml": """
        version: 2
        sources:
          - name: landing
            schema: landing
            loaded_at_field: loaded_at
            freshness: {warn_after: {count: 100, period: day}}
            tables: [{name: people}]
    """,
    "models/people.sql": "select person_id from {{ source('landing', 'people') }}",
    "models/people_count.sql": "select count(*) as people from {{ ref('people') }}",
    "models/constant.sql": "select 1 as one",
}


def _gated_run(lakehouse_home: Path, project: Path) -> set[str]:
    """A production run of `project` that must complete: what it rebuilt (nothing, if the gate said so)."""
    state = production_run(environment="local", project_dir=str(project), return_state=True)
    assert state.is_completed(), state.message
    return set() if state.message == "nothing to rebuild" else _rebuilt(lakehouse_home)


def _untouched(lakehouse_home: Path) -> dict:
    """What a plan-only run must leave as it was: every file of the state store (the publish lock's
    included) and every row of every warehouse table."""
    store = lakehouse_home / "state" / "local"
    files = {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    tables = sql(lakehouse_home, "select table_schema, table_name from information_schema.tables")
    rows = {(schema, name): sorted(map(str, sql(lakehouse_home, f'select * from "{schema}"."{name}"')))
            for schema, name in tables}
    return {"files": files, "rows": rows}


def _plan_only(lakehouse_home: Path, project: Path, monkeypatch) -> dict[str, str]:
    """A plan-only run of `project` that leaves state, warehouse and lock untouched: its plan, node -> why."""
    import re

    import flows.core.run

    class NoLock:
        def __init__(self, *args):
            raise AssertionError("a plan-only run took the publish lock")

    before = _untouched(lakehouse_home)
    with monkeypatch.context() as patched:
        patched.setattr(flows.core.run, "PublishLock", NoLock)
        state = production_run(environment="local", project_dir=str(project), plan_only=True, return_state=True)
    assert state.is_completed() and state.message.startswith("plan only"), state.message
    assert _untouched(lakehouse_home) == before
    (plan,) = _artifacts_by_key(state)[artifact_key("local", "plan")]
    return dict(re.findall(r"^\| `([^`]+)` \| \w+ \| \w+ \| (.+?) \|$", plan.data, flags=re.M))


def test_a_code_change_rebuilds_its_downstream_when_no_source_is_fresher(lakehouse_home, tmp_path, caplog, monkeypatch):
    project = _write_project(tmp_path / "gated", GATED_PROJECT)
    with duckdb.connect(str(lakehouse_home / "warehouse.duckdb")) as connection:
        connection.execute("create schema landing")
        connection.execute("create table landing.people as select 1 as person_id, now() as loaded_at")

    def run() -> set[str]:
        return _gated_run(lakehouse_home, project)

    assert run() == {"model.gated.people", "model.gated.people_count", "model.gated.constant"}
    assert run() == set()
    assert "the project is unchanged since the last build" in caplog.text  # decided without dbt ls
    (project / "models" / "people.sql").write_text("select person_id, 'x' as tag from {{ source('landing', 'people') }}")
    planned = _plan_only(lakehouse_home, project, monkeypatch)
    assert planned == {"model.gated.people": "changed since the last build: models/people.sql",
                       "model.gated.people_count": "downstream of changed people"}
    assert run() == set(planned)  # the plan is what the next real run builds
    assert sql(lakehouse_home, "select tag from main.people") == [("x",)]
    assert run() == set()


# --- a source dated by loaded_at_query is gated like one with loaded_at_field ---------------------

QUERY_DATED_PROJECT = {
    "dbt_project.yml": """
        name: query_dated
        version: "1.0"
        profile: query_dated
    """,
    "models/_sources.yml": """
        version: 2
        sources:
          - name: landing
            schema: landing
            config: {freshness: {warn_after: {count: 100, period: day}}}
            tables:
              - name: events
                config: {loaded_at_query: "select max(received_at) from landing.events"}
              - name: labels
                config: {loaded_at_query: "select max(received_at) from landing.labels"}
    """,
    "models/events_daily.sql": "select count(*) as events from {{ source('landing', 'events') }}",
    "models/labels_named.sql": "select label from {{ source('landing', 'labels') }}",
}


def test_a_source_dated_by_loaded_at_query_rebuilds_only_its_downstream(lakehouse_home, tmp_path, caplog, monkeypatch):
    project = _write_project(tmp_path / "query_dated", QUERY_DATED_PROJECT)
    with duckdb.connect(str(lakehouse_home / "warehouse.duckdb")) as connection:
        connection.execute("create schema landing")
        connection.execute("create table landing.events as select 1 as event_id, now() - interval 1 hour as received_at")
        connection.execute("create table landing.labels as select 'a' as label, now() - interval 1 hour as received_at")

    def run() -> set[str]:
        return _gated_run(lakehouse_home, project)

    assert run() == {"model.query_dated.events_daily", "model.query_dated.labels_named"}
    assert run() == set()  # both sources dated and not fresher: nothing downstream is rebuilt
    with duckdb.connect(str(lakehouse_home / "warehouse.duckdb")) as connection:
        connection.execute("insert into landing.events select 2, now()")
    planned = _plan_only(lakehouse_home, project, monkeypatch)
    assert planned == {"model.query_dated.events_daily": "downstream of fresher source landing.events"}
    assert run() == set(planned)
    assert sql(lakehouse_home, "select events from main.events_daily") == [(2,)]


def test_a_source_without_loaded_at_field_is_dated_only_where_the_adapter_reads_table_metadata():
    from types import SimpleNamespace as NS

    from flows.core.freshness import sources_with_freshness, undatable_sources

    threshold = NS(warn_after=NS(count=12), error_after=NS(count=None))
    sources = {"source.p.s.by_metadata": NS(freshness=threshold, loaded_at_field=None, loaded_at_query=None),
               "source.p.s.no_threshold": NS(freshness=None, loaded_at_field="at", loaded_at_query=None)}

    for source in sources.values():
        source.source_name, source.name = "s", "table"

    def manifest(adapter: str):
        return NS(metadata=NS(adapter_type=adapter), sources=sources)

    def dated(adapter: str) -> set[str]:
        return sources_with_freshness(manifest(adapter))

    assert dated("databricks") == {"source.p.s.by_metadata"}  # dbt dates it from the table's last change
    assert dated("duckdb") == set()  # dbt cannot date it: it stays "without freshness", always rebuilt
    assert undatable_sources(manifest("duckdb")) == ["s.table"]  # named in the run's warning
    assert undatable_sources(manifest("databricks")) == []
