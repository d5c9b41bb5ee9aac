"""flows/core/warehouse.py: the statements each dialect renders, and how Databricks phases them."""

from __future__ import annotations

import pytest

from blocks.environment import UnsafeIdentifier
from flows.core.warehouse import DatabricksDialect, DatabricksWarehouse, DuckDBDialect, Relation

LIVE, PHYSICAL = Relation("main", "orders"), Relation("main__v1", "orders")


def test_relation_names_are_checked():
    with pytest.raises(UnsafeIdentifier):
        Relation("main; drop", "x")
    with pytest.raises(ValueError, match="unsafe relation name"):
        Relation("main", 'a"b')


def test_duckdb_statements():
    d = DuckDBDialect()
    assert d.point_view(LIVE, PHYSICAL, exists=True) == \
        'CREATE OR REPLACE VIEW "main"."orders" AS SELECT * FROM "main__v1"."orders"'
    assert d.drop_relation(LIVE, "BASE TABLE") == 'DROP TABLE IF EXISTS "main"."orders"'
    assert d.drop_schema("main__v1") == 'DROP SCHEMA IF EXISTS "main__v1" CASCADE'
    assert "LIKE 'main\\_\\_v%' ESCAPE '\\'" in d.list_schemas("main__v")
    assert "table_schema IN ('main', 'ref')" in d.list_relations(["main", "ref"])
    assert d.fold("Orders") == "Orders"


def test_databricks_statements_fold_quote_and_escape():
    d = DatabricksDialect("lake")
    assert d.point_view(LIVE, PHYSICAL, exists=False) == \
        "CREATE VIEW `lake`.`main`.`orders` AS SELECT * FROM `lake`.`main__v1`.`orders`"
    assert d.drop_relation(LIVE, "MATERIALIZED_VIEW") == "DROP MATERIALIZED VIEW IF EXISTS `lake`.`main`.`orders`"
    assert d.copy_table(PHYSICAL, LIVE).endswith("SHALLOW CLONE `lake`.`main__v1`.`orders`")
    assert d.string_literal("it's a \\ b") == "'it\\'s a \\\\ b'"
    assert d.folded(Relation("Main", "Orders")) == Relation("main", "orders")
    assert "IN ('main')" in d.list_relations(["MAIN"])


def test_string_literals_and_row_counts():
    assert DuckDBDialect.string_literal("it's") == "'it''s'"
    sql = DuckDBDialect().count_rows([LIVE, PHYSICAL])
    assert sql.count("UNION ALL") == 1 and "'main__v1.orders' AS relation_name" in sql


def test_an_unsafe_catalog_is_refused():
    with pytest.raises(UnsafeIdentifier):
        DatabricksDialect("lake`; drop")


def test_databricks_phases_create_schemas_then_drop_tables_then_flip_views_then_drop_schemas():
    d = DatabricksDialect("lake")
    view, old_view = d.point_view(LIVE, PHYSICAL, exists=True), d.drop_view(Relation("main", "old"))
    schema, table, old_schema = d.create_schema("main"), d.drop_relation(Relation("main", "t"), "MANAGED"), \
        d.drop_schema("main__v0")
    assert DatabricksWarehouse.phases([old_schema, view, old_view, schema, table]) == [
        [schema], [table], [view, old_view], [old_schema]]
