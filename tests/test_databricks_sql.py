"""What the blue-green flows would send to a Databricks SQL warehouse, checked offline.

Every statement from `DatabricksDialect` and `flip_statements` must parse as Databricks SQL
(sqlglot) and print back the same; the statement set of a flip must be exactly the expected one;
and `DatabricksWarehouse.execute_all` must run a set in the right phases. The SQL warehouse
itself is stood in for by canned answers: `CannedDatabricks` answers queries by reading the
(parsed) statement, and records DDL instead of sending it.
"""

from __future__ import annotations

import itertools
import re
import threading

import pytest
import sqlglot
from prefect.filesystems import LocalFileSystem
from prefect_databricks import DatabricksCredentials
from sqlglot import exp

from blocks.environment import DbtEnvironment, UnsafeIdentifier
from flows.core.state_store import StateStore
from flows.core.versions import Version, VersionRegistry, drop_unreferenced_schemas, flip_statements
from flows.core.warehouse import DatabricksDialect, DatabricksWarehouse, Relation, UnknownObjectAtLiveName

CATALOG = "lakehouse"
NEW, OLD = "analytics__v20240102030405_abc123", "analytics__v20240101000000_0ld000"


def parse(sql: str) -> exp.Expression:
    """Databricks SQL per sqlglot: a parse error raises, and a pass-through Command is a failure too."""
    expression = sqlglot.parse_one(sql, read="databricks")
    assert not isinstance(expression, exp.Command), f"sqlglot only passed this through, unparsed: {sql}"
    return expression


def assert_round_trips(sql: str) -> exp.Expression:
    expression = parse(sql)
    assert " ".join(expression.sql(dialect="databricks").split()) == " ".join(sql.split())
    return expression


def string_literals(expression: exp.Expression) -> list[str]:
    return [literal.this for literal in expression.find_all(exp.Literal) if literal.is_string]


class CannedDatabricks(DatabricksWarehouse):
    """A DatabricksWarehouse whose SQL warehouse answers are canned, and whose DDL is recorded, not sent."""

    def __init__(self, relations: dict[tuple[str, str], str] = {}, schemas: list[str] = [], max_workers: int = 8,  # noqa: B006 - only read
                 failing: set[str] = frozenset(), rendezvous: dict[int, int] = {}):  # noqa: B006 - only read
        super().__init__(DbtEnvironment(
            adapter="databricks", schema_name="analytics", catalog=CATALOG, http_path="/sql/1.0/warehouses/abc123",
            databricks_credentials=DatabricksCredentials(databricks_instance="dbc-test.cloud.databricks.com",
                                                         token="dapi-test")), max_workers)
        self.relations, self.schemas, self.failing = relations, schemas, failing
        self.queries: list[str] = []
        # (start tick, end tick, statements) per batch: ticks order events, with no clock involved.
        self.batches: list[tuple[int, int, list[str]]] = []
        self.ticks = itertools.count()
        self.lock = threading.Lock()
        # phase -> a barrier its batches must all reach while running: proof they run at once.
        self.barriers = {phase: threading.Barrier(parties) for phase, parties in rendezvous.items()}

    def query(self, sql: str) -> list[tuple]:
        self.queries.append(sql)
        tree = assert_round_trips(sql)
        source = tree.find(exp.Table)
        if source.name == "tables":  # information_schema.tables, filtered on table_schema IN (...)
            wanted = set(string_literals(tree.find(exp.In)))
            return [(s, n, kind) for (s, n), kind in self.relations.items() if s in wanted]
        if source.name == "schemata":  # filtered on schema_name LIKE <pattern> ESCAPE '\'
            like = like_regex(tree)
            return [(s,) for s in self.schemas if like.fullmatch(s)]
        if isinstance(tree, exp.Union) or "row_count" in tree.named_selects:  # count_rows
            return [(key, 42) for key in string_literals(tree)]
        raise AssertionError(f"no canned answer for {sql}")

    def _execute(self, statements) -> None:
        with self.lock:
            started = next(self.ticks)
        barrier = self.barriers.get(phase_of(statements[0]))
        if barrier is not None:
            barrier.wait(timeout=60)  # BrokenBarrierError: the phase's batches did not all run at once
        for statement in statements:
            parse(statement)
            if statement in self.failing:
                raise RuntimeError(f"{statement} -- failed: [TABLE_OR_VIEW_ALREADY_EXISTS]")
        with self.lock:
            self.batches.append((started, next(self.ticks), list(statements)))


def phase_of(statement: str) -> int:
    return statement.phase  # type: ignore[attr-defined] - a Statement the dialect rendered


def like_regex(tree: exp.Expression) -> re.Pattern:
    """The regex equivalent of the query's `LIKE … ESCAPE …`, as Databricks evaluates it."""
    escape = tree.find(exp.Escape)
    pattern, escape_char = escape.this.expression.this, escape.expression.this
    regex, chars = "", iter(pattern)
    for char in chars:
        if char == escape_char:
            regex += re.escape(next(chars))
        else:
            regex += {"%": ".*", "_": "."}.get(char, re.escape(char))
    return re.compile(regex)


dialect = DatabricksDialect(CATALOG)
SAMPLE_STATEMENTS = [
    dialect.create_schema(NEW),
    dialect.drop_schema(NEW),
    dialect.drop_view(Relation("analytics", "orders")),
    dialect.drop_table(Relation("analytics", "orders")),
    dialect.drop_relation(Relation("analytics", "orders"), "MATERIALIZED_VIEW"),
    dialect.point_view(Relation("analytics", "orders"), Relation(NEW, "orders"), exists=True),
    dialect.point_view(Relation("analytics", "orders"), Relation(NEW, "orders"), exists=False),
    dialect.copy_table(Relation(OLD, "events"), Relation(NEW, "events")),
    dialect.count_rows([Relation(NEW, "orders"), Relation("analytics", "o'brien\\report")]),
    dialect.list_schemas("analytics__v"),
    dialect.list_relations(["analytics", "analytics_finance"]),
]


@pytest.mark.parametrize("sql", SAMPLE_STATEMENTS, ids=lambda sql: sql.split("`")[0].strip())
def test_every_dialect_statement_is_databricks_sql(sql):
    assert_round_trips(sql)


def test_flip_is_exactly_the_expected_statements_and_each_is_databricks_sql():
    warehouse = CannedDatabricks(relations={
        ("analytics", "orders"): "VIEW", ("analytics", "unchanged"): "VIEW", ("analytics", "stale_report"): "VIEW",
        ("analytics_finance", "revenue"): "MANAGED",  # a table a run without blue-green left at a live name
    })
    target = {
        "analytics.orders": f"{NEW}.orders",                      # existing view, repointed
        "analytics.customers": f"{NEW}.customers",                # new
        "analytics.unchanged": f"{OLD}.unchanged",                # already live: untouched
        "analytics_finance.revenue": f"{NEW}_finance.revenue",    # a table, replaced by a view
    }
    current = {"analytics.orders": f"{OLD}.orders", "analytics.unchanged": f"{OLD}.unchanged",
               "analytics.stale_report": f"{OLD}.stale_report"}  # no longer published: dropped
    statements = flip_statements(warehouse, target, current)
    assert statements == [
        "CREATE SCHEMA IF NOT EXISTS `lakehouse`.`analytics`",
        "CREATE SCHEMA IF NOT EXISTS `lakehouse`.`analytics_finance`",
        f"CREATE VIEW `lakehouse`.`analytics`.`customers` AS SELECT * FROM `lakehouse`.`{NEW}`.`customers`",
        f"ALTER VIEW `lakehouse`.`analytics`.`orders` AS SELECT * FROM `lakehouse`.`{NEW}`.`orders`",
        "DROP TABLE IF EXISTS `lakehouse`.`analytics_finance`.`revenue`",
        f"CREATE VIEW `lakehouse`.`analytics_finance`.`revenue` AS SELECT * FROM `lakehouse`.`{NEW}_finance`.`revenue`",
        "DROP VIEW IF EXISTS `lakehouse`.`analytics`.`stale_report`",
    ]
    for sql in statements:
        tree = assert_round_trips(sql)
        assert all(identifier.quoted for identifier in tree.find_all(exp.Identifier)), sql
    assert warehouse.queries == [
        "SELECT table_schema, table_name, table_type FROM `lakehouse`.information_schema.tables "
        "WHERE table_schema IN ('analytics', 'analytics_finance')"
    ]


def test_a_materialized_view_or_streaming_table_at_a_live_name_gets_its_own_drop_before_the_view():
    warehouse = CannedDatabricks(relations={("analytics", "daily"): "MATERIALIZED_VIEW",
                                            ("analytics", "events"): "STREAMING_TABLE"})
    statements = flip_statements(warehouse, {"analytics.daily": f"{NEW}.daily", "analytics.events": f"{NEW}.events"}, {})
    assert DatabricksWarehouse.phases(statements) == [
        ["CREATE SCHEMA IF NOT EXISTS `lakehouse`.`analytics`"],
        ["DROP MATERIALIZED VIEW IF EXISTS `lakehouse`.`analytics`.`daily`",
         "DROP TABLE IF EXISTS `lakehouse`.`analytics`.`events`"],  # DROP TABLE also drops a streaming table
        [f"CREATE VIEW `lakehouse`.`analytics`.`daily` AS SELECT * FROM `lakehouse`.`{NEW}`.`daily`",
         f"CREATE VIEW `lakehouse`.`analytics`.`events` AS SELECT * FROM `lakehouse`.`{NEW}`.`events`"],
    ]
    drop = parse(statements[1])
    assert drop.args["kind"] == "VIEW" and drop.args.get("materialized") and drop.args.get("exists")


@pytest.mark.parametrize("kind", ["METRIC_VIEW", "FOREIGN", "SOMETHING_NEW"])
def test_an_unknown_object_at_a_live_name_fails_the_flip_before_any_change(kind):
    """information_schema.tables.table_type may name objects a flip must not drop and replace."""
    warehouse = CannedDatabricks(relations={("analytics", "orders"): "VIEW", ("analytics", "revenue"): kind})
    target = {"analytics.orders": f"{NEW}.orders", "analytics.revenue": f"{NEW}.revenue"}
    with pytest.raises(UnknownObjectAtLiveName, match=rf"`lakehouse`.`analytics`.`revenue` is a {kind}.*nothing was changed"):
        statements = flip_statements(warehouse, target, {})
        warehouse.execute_all(statements)
    assert warehouse.batches == []  # refused while the statements were built: nothing was sent


def test_mixed_case_names_are_matched_as_databricks_stores_them_in_lower_case():
    """A model `Dim_Customers` in schema `Analytics` is `analytics`.`dim_customers` in information_schema."""
    warehouse = CannedDatabricks(relations={("analytics", "dim_customers"): "VIEW", ("analytics", "old_report"): "VIEW"})
    statements = flip_statements(warehouse, {"Analytics.Dim_Customers": f"{NEW}.Dim_Customers"},
                                 {"Analytics.Dim_Customers": f"{OLD}.Dim_Customers",
                                  "Analytics.Old_Report": f"{OLD}.Old_Report"})
    assert statements == [
        "CREATE SCHEMA IF NOT EXISTS `lakehouse`.`Analytics`",
        f"ALTER VIEW `lakehouse`.`Analytics`.`Dim_Customers` AS SELECT * FROM `lakehouse`.`{NEW}`.`Dim_Customers`",
        "DROP VIEW IF EXISTS `lakehouse`.`Analytics`.`Old_Report`",
    ]
    assert warehouse.queries[0].endswith("WHERE table_schema IN ('analytics')")


def test_prune_with_a_mixed_case_schema_keeps_what_live_reads(tmp_path):
    live_id, old_id = "v20240102030405_abc123", "v20240101000000_0ld000"
    registry = VersionRegistry(StateStore(LocalFileSystem(basepath=str(tmp_path / "state")), "mixed"))
    registry.versions = {
        live_id: Version(live_id, "now", None, "published", relations={"Analytics.orders": f"Analytics__{live_id}.orders"}),
        old_id: Version(old_id, "then", None, "pruned", relations={"Analytics.orders": f"Analytics__{old_id}.orders"}),
    }
    registry.live_id = live_id
    warehouse = CannedDatabricks(schemas=[f"analytics__{live_id}", f"analytics__{old_id}", "analytics"])
    assert warehouse.schemas_with_prefix("Analytics__v") == [f"analytics__{old_id}", f"analytics__{live_id}"]
    assert drop_unreferenced_schemas(warehouse, registry, "Analytics") == [f"analytics__{old_id}"]


def test_view_statements_keep_grants_on_existing_views_and_fail_loudly_on_a_surprise():
    alter = parse(dialect.point_view(Relation("analytics", "a"), Relation(NEW, "a"), exists=True))
    assert isinstance(alter, exp.Alter) and alter.args["kind"] == "VIEW"  # ALTER keeps grants and tags
    create = parse(dialect.point_view(Relation("analytics", "a"), Relation(NEW, "a"), exists=False))
    # Plain CREATE VIEW: a view that exists after all makes the flip fail instead of being skipped.
    assert create.args["kind"] == "VIEW" and not create.args.get("exists") and not create.args.get("replace")


def test_incremental_copy_is_a_shallow_clone():
    sql = dialect.copy_table(Relation(OLD, "events"), Relation(NEW, "events"))
    assert sql == f"CREATE OR REPLACE TABLE `lakehouse`.`{NEW}`.`events` SHALLOW CLONE `lakehouse`.`{OLD}`.`events`"
    clone = parse(sql).find(exp.Clone)
    assert clone is not None and clone.args.get("shallow") and clone.this.name == "events"


def test_schema_statements():
    assert dialect.create_schema(NEW) == f"CREATE SCHEMA IF NOT EXISTS `lakehouse`.`{NEW}`"
    drop = parse(dialect.drop_schema(NEW))
    assert dialect.drop_schema(NEW) == f"DROP SCHEMA IF EXISTS `lakehouse`.`{NEW}` CASCADE"
    assert drop.args["kind"] == "SCHEMA" and drop.args.get("cascade") and drop.args.get("exists")


def test_schema_listing_matches_versions_only():
    warehouse = CannedDatabricks(schemas=[NEW, f"{NEW}_finance", OLD, "analytics", "analyticsXXv1", "analytics_pr_7"])
    assert warehouse.dialect.list_schemas("analytics__v") == (
        "SELECT schema_name FROM `lakehouse`.information_schema.schemata "
        "WHERE schema_name LIKE 'analytics\\\\_\\\\_v%' ESCAPE '\\\\'")
    assert warehouse.schemas_with_prefix("analytics__v") == sorted([NEW, f"{NEW}_finance", OLD])


def test_row_counts_survive_quotes_and_backslashes_in_names():
    odd = Relation("analytics", "o'brien\\report")
    assert dialect.string_literal("o'brien\\report") == "'o\\'brien\\\\report'"
    assert CannedDatabricks().row_counts([Relation(NEW, "orders"), odd]) == {Relation(NEW, "orders"): 42, odd: 42}


def test_identifiers_are_backtick_quoted_and_backticks_escaped_or_refused():
    assert dialect.ref(Relation("analytics", "orders")) == "`lakehouse`.`analytics`.`orders`"
    quoted = dialect.quote("we`ird")
    assert quoted == "`we``ird`"
    assert parse(f"SELECT * FROM {quoted}").find(exp.Table).name == "we`ird"
    with pytest.raises(ValueError, match="unsafe relation name"):
        Relation("analytics", "we`ird")
    with pytest.raises(UnsafeIdentifier):
        Relation("analytics`; DROP SCHEMA x; --", "orders")
    with pytest.raises(UnsafeIdentifier):
        DatabricksDialect("main`")


def test_phases_create_schemas_first_and_free_a_name_before_a_view_takes_it():
    statements = flip_statements(CannedDatabricks(relations={("analytics", "orders"): "MANAGED"}),
                                 {"analytics.orders": f"{NEW}.orders", "analytics.new": f"{NEW}.new"}, {})
    assert DatabricksWarehouse.phases([*statements, dialect.drop_schema(OLD)]) == [
        ["CREATE SCHEMA IF NOT EXISTS `lakehouse`.`analytics`"],
        ["DROP TABLE IF EXISTS `lakehouse`.`analytics`.`orders`"],
        [f"CREATE VIEW `lakehouse`.`analytics`.`new` AS SELECT * FROM `lakehouse`.`{NEW}`.`new`",
         f"CREATE VIEW `lakehouse`.`analytics`.`orders` AS SELECT * FROM `lakehouse`.`{NEW}`.`orders`"],
        [f"DROP SCHEMA IF EXISTS `lakehouse`.`{OLD}` CASCADE"],
    ]


def test_execute_all_runs_phases_in_order_and_each_phase_concurrently():
    warehouse = CannedDatabricks(max_workers=4, rendezvous={DatabricksWarehouse.OTHER_PHASE: 4})
    views = [dialect.point_view(Relation("analytics", f"m{i}"), Relation(NEW, f"m{i}"), exists=i % 2 == 0)
             for i in range(10)]
    clone = [dialect.create_schema(NEW), dialect.copy_table(Relation(OLD, "events"), Relation(NEW, "events"))]
    warehouse.execute_all([*views, *clone])
    schema_batch, *rest = sorted(warehouse.batches)
    assert schema_batch[2] == [dialect.create_schema(NEW)]
    assert all(start >= schema_batch[1] for start, _, _ in rest)  # nothing started before the schema existed
    assert len(rest) == 4 and sorted(s for _, _, batch in rest for s in batch) == sorted([*views, clone[1]])
    # The 4 batches met at the phase's barrier (or execute_all had failed), and so overlapped:
    assert max(start for start, _, _ in rest) < min(end for _, end, _ in rest)


def test_a_failed_statement_stops_later_phases_and_names_itself():
    failing = dialect.point_view(Relation("analytics", "b"), Relation(NEW, "b"), exists=False)
    warehouse = CannedDatabricks(failing={failing})
    with pytest.raises(RuntimeError, match=r"applied only in part.*`analytics`\.`b`.*ALREADY_EXISTS"):
        warehouse.execute_all([
            dialect.point_view(Relation("analytics", "a"), Relation(NEW, "a"), exists=True), failing,
            dialect.drop_schema(OLD),
        ])
    ran = [s for _, _, batch in warehouse.batches for s in batch]
    assert ran == [dialect.point_view(Relation("analytics", "a"), Relation(NEW, "a"), exists=True)]


def test_source_signals_are_one_information_schema_query_per_catalog_read_as_dbt_databricks_does():
    """Sources without freshness: `last_altered` (what dbt-databricks' metadata freshness reads), one
    query per catalog, names folded; a source the catalog does not list, or in the Hive metastore, has none."""
    from flows.core.source_signals import SourceTable, databricks_signal_sql, read_signals

    sources = [SourceTable("source.p.raw.Orders", "raw.Orders", "lakehouse", "Raw", "Orders", "`lakehouse`.`raw`.`orders`"),
               SourceTable("source.p.raw.gone", "raw.gone", "lakehouse", "raw", "gone", "`lakehouse`.`raw`.`gone`"),
               SourceTable("source.p.crm.accounts", "crm.accounts", "sales", "crm", "accounts", "`sales`.`crm`.`accounts`"),
               SourceTable("source.p.old.legacy", "old.legacy", "hive_metastore", "old", "legacy", "`old`.`legacy`")]
    sql = databricks_signal_sql("lakehouse", sources[:2])
    tree = assert_round_trips(sql)
    assert tree.find(exp.Table).name == "tables" and "'raw'" in sql and "'orders'" in sql and "Orders" not in sql

    class Catalogs(CannedDatabricks):
        def query(self, sql: str) -> list[tuple]:
            self.queries.append(sql)
            tree = assert_round_trips(sql)
            catalog = tree.find(exp.Table).catalog
            return {"lakehouse": [("raw", "orders", "2026-12-01 02:00:00")],
                    "sales": [("crm", "accounts", "2026-11-30 23:00:00")]}[catalog]

    warehouse = Catalogs()
    signals = read_signals(warehouse, sources)
    assert signals == {"source.p.raw.Orders": "last_altered=2026-12-01 02:00:00", "source.p.raw.gone": None,
                       "source.p.crm.accounts": "last_altered=2026-11-30 23:00:00", "source.p.old.legacy": None}
    assert len(warehouse.queries) == 2  # one per Unity Catalog catalog; the Hive metastore is not asked
