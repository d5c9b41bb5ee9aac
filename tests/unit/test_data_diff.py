"""flows/core/data_diff.py: the keyed comparison's SQL (run on DuckDB, parsed as Databricks SQL by
sqlglot), key detection from a manifest, and the report section."""

from __future__ import annotations

from types import SimpleNamespace as NS

import duckdb
import sqlglot

from blocks.environment import DbtEnvironment
from flows.core.data_diff import (
    DiffTarget, compare_keyed, diff_markdown, diff_models, list_columns, primary_key,
)
from flows.core.slim_ci import CiNode, diff_targets
from flows.core.warehouse import DatabricksDialect, DuckDBWarehouse, Relation, count_key

PR, BASE = Relation("main_pr_7", "customers"), Relation("main", "customers")


def _warehouse(tmp_path) -> DuckDBWarehouse:
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as c:
        c.execute("""
            create schema main_pr_7;
            create table main.customers as
                select * from (values (1, 'ann', 'nl'), (2, 'bob', 'de'), (3, 'cy', null), (4, 'di', 'fr'))
                t(id, name, country);
            -- PR: 2 removed, 5 added, 1 renamed, 3's NULL country set, 4 unchanged; one new column
            create table main_pr_7.customers as
                select * from (values (1, 'ANN', 'nl', 1), (3, 'cy', 'be', 2), (4, 'di', 'fr', 3), (5, 'ed', 'nl', 4))
                t(id, name, country, score);
            create table main.events as select range as n from range(10);
            create table main_pr_7.events as select range as n from range(12);
        """)
    return DuckDBWarehouse(str(path))


def test_keyed_and_unkeyed_models_on_duckdb(tmp_path):
    found = diff_models(_warehouse(tmp_path), [
        DiffTarget("customers", PR, BASE, ("id",)),
        DiffTarget("events", Relation("main_pr_7", "events"), Relation("main", "events"), ()),
        DiffTarget("gone", Relation("main_pr_7", "gone"), Relation("main", "gone"), ("id",)),
    ])
    customers, events, gone = found.models
    assert (customers.base_rows, customers.pr_rows) == (4, 4)
    assert (customers.added, customers.removed, customers.changed) == (1, 1, 2)
    assert customers.changed_by_column == {"name": 1, "country": 1}  # NULL → value counts as a change
    assert customers.columns_added == ["score"] and customers.columns_removed == []
    assert (events.base_rows, events.pr_rows, events.added, events.changed) == (10, 12, None, None)
    assert gone.error == "relation not found in the warehouse"
    section = diff_markdown(found, "prod")
    assert "| customers | 4 | 4 | +0 | `id` | 1 | 1 | 2 | `name` (1), `country` (1), `score` (new) |" in section
    assert "| events | 10 | 12 | +2 | no key: counts only |" in section


def test_a_failing_comparison_is_reported_not_raised(tmp_path):
    warehouse = _warehouse(tmp_path)
    with duckdb.connect(warehouse.path) as c:  # the key's type changed: the join cannot compare them
        c.execute("create or replace table main_pr_7.customers as select [1] as id, 'x' as name")
    (diff,) = diff_models(warehouse, [DiffTarget("customers", PR, BASE, ("id",))]).models
    assert diff.error and diff.added is None and diff.pr_rows == 1


def test_the_sql_is_valid_databricks_sql():
    dialect = DatabricksDialect("analytics")
    keyed = compare_keyed(dialect, Relation("main_pr_7", "Customers"), BASE, ["id", "region"], ["name", "2nd col"])
    parsed = sqlglot.parse_one(keyed, read="databricks")
    assert "FULL OUTER JOIN" in parsed.sql(dialect="databricks")
    assert "`analytics`.`main_pr_7`.`Customers`" in keyed and "xxhash64(`2nd col`)" in keyed
    assert "pr.k_0 = base.k_0 AND pr.k_1 = base.k_1" in keyed
    columns = list_columns(dialect, [PR, Relation("main", "Customers")])
    sqlglot.parse_one(columns, read="databricks")
    assert "`analytics`.information_schema.columns" in columns and "'customers'" in columns  # folded
    assert "'Customers'" not in columns
    no_columns = compare_keyed(dialect, PR, BASE, ["id"], [])  # only the key: nothing can change
    sqlglot.parse_one(no_columns, read="databricks")


def _test(name: str, column: str, attached: str, where=None):
    return NS(resource_type=NS(value="test"), test_metadata=NS(name=name), attached_node=attached,
              column_name=column, config=NS(where=where))


def _model(constraints=(), columns=None):
    return NS(resource_type=NS(value="model"), constraints=list(constraints), columns=columns or {})


def test_primary_key_from_tests_or_constraints():
    m = "model.p.m"
    tests = {"t1": _test("unique", "id", m), "t2": _test("not_null", "id", m), "t3": _test("not_null", "name", m),
             "t4": _test("unique", "email", m), "t5": _test("not_null", "email", m, where="email <> ''"),
             "t6": _test("unique", "id", "model.p.other")}
    assert primary_key(NS(nodes={m: _model(), **tests}), m) == ("id",)
    assert primary_key(NS(nodes={m: _model(), "t3": tests["t3"]}), m) == ()
    composite = _model([NS(type=NS(value="primary_key"), columns=["a", "b"])])
    assert primary_key(NS(nodes={m: composite}), m) == ("a", "b")
    column_level = _model(columns={"code": NS(constraints=[NS(type="primary_key")])})
    assert primary_key(NS(nodes={m: column_level}), m) == ("code",)


class _WithProdAttached(DuckDBWarehouse):
    """The CI environment's warehouse that also reaches a `prod` catalog, as staging's principal reads prod's on
    Unity Catalog."""

    def __init__(self, path: str, prod: str):
        super().__init__(path)
        self.prod = prod

    def _connect(self):
        connection = super()._connect()
        connection.execute(f"attach '{self.prod}' as prod (read_only)")
        return connection


def test_a_base_in_another_catalog_is_compared_there_not_with_the_ci_catalogs_namesake(tmp_path):
    with duckdb.connect(str(tmp_path / "prod.duckdb")) as c:
        c.execute("create schema analytics; create table analytics.customers as "
                  "select * from (values (1, 'ann'), (2, 'bob'), (3, 'cy')) t(id, name)")
    with duckdb.connect(str(tmp_path / "staging.duckdb")) as c:  # staging's own live: a namesake with other rows
        c.execute("create schema analytics; create table analytics.customers as select 9 as id, 'zed' as name; "
                  "create schema analytics_pr_7; create table analytics_pr_7.customers as "
                  "select * from (values (1, 'ANN'), (2, 'bob'), (4, 'di')) t(id, name)")
    warehouse = _WithProdAttached(str(tmp_path / "staging.duckdb"), str(tmp_path / "prod.duckdb"))
    base = Relation("analytics", "customers", "prod")
    (diff,) = diff_models(warehouse, [DiffTarget("customers", Relation("analytics_pr_7", "customers"), base, ("id",))]).models
    assert (diff.base_rows, diff.pr_rows, diff.added, diff.removed, diff.changed) == (3, 3, 1, 1, 1), diff.error


def test_a_base_in_another_catalog_is_named_with_it_in_databricks_sql():
    dialect = DatabricksDialect("staging")
    pr, base = Relation("analytics_pr_7", "customers"), Relation("analytics", "customers", "prod")
    keyed = compare_keyed(dialect, pr, base, ["id"], ["name"])
    sqlglot.parse_one(keyed, read="databricks")
    assert "FROM `staging`.`analytics_pr_7`.`customers`" in keyed and "FROM `prod`.`analytics`.`customers`" in keyed
    columns = list_columns(dialect, [base])
    sqlglot.parse_one(columns, read="databricks")
    assert "FROM `prod`.information_schema.columns" in columns
    counts = dialect.count_rows([pr, base])
    sqlglot.parse_one(counts, read="databricks")
    assert f"'{count_key(base)}' AS relation_name" in counts and count_key(base) == "prod.analytics.customers"


def test_slim_ci_diffs_staging_against_prods_catalog():
    model = NS(resource_type=NS(value="model"), schema="analytics_pr_7", alias="customers", name="customers",
               database="staging", constraints=[], columns={})
    session = NS(project=NS(parsed_manifest=NS(nodes={"model.p.customers": model})),
                 environment=DbtEnvironment(adapter="databricks", schema_name="analytics", catalog="staging"))
    report = NS(of_role=lambda role: [CiNode("model.p.customers", "customers", "model", "changed", "success",
                                             "`staging`.`analytics_pr_7`.`customers`")] if role == "changed" else [])
    base_manifest = {"nodes": {"model.p.customers": {
        "schema": "analytics", "name": "customers", "alias": "customers", "database": "prod",
        "relation_name": "`prod`.`analytics`.`customers`"}}}
    (target,) = diff_targets(session, report, base_manifest)
    assert target.pr == Relation("analytics_pr_7", "customers")  # the CI environment's own catalog
    assert target.base == Relation("analytics", "customers", "prod")
