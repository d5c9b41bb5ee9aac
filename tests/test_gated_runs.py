"""The gate on other stock projects: a second stock project runs unchanged, a code change rebuilds its
downstream, plan_only changes nothing and lists what the next run builds, and sources dated by
`loaded_at_query` or by nothing at all."""

from __future__ import annotations

from pathlib import Path

import duckdb

from fixture_projects import artifacts_by_key, rebuilt, write_project
from flows.core.artifacts import artifact_key
from flows.production import production_run
from reliability.helpers import sql
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
    project = write_project(tmp_path / "shop", STOCK_PROJECT)
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
    return set() if state.message == "nothing to rebuild" else rebuilt(lakehouse_home)


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
    (plan,) = artifacts_by_key(state)[artifact_key("local", "plan")]
    return dict(re.findall(r"^\| `([^`]+)` \| \w+ \| \w+ \| (.+?) \|$", plan.data, flags=re.M))


def test_a_code_change_rebuilds_its_downstream_when_no_source_is_fresher(lakehouse_home, tmp_path, caplog, monkeypatch):
    project = write_project(tmp_path / "gated", GATED_PROJECT)
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
    project = write_project(tmp_path / "query_dated", QUERY_DATED_PROJECT)
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
