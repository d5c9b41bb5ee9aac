"""flows/core/source_signals.py: change signals of sources without freshness, on a canned warehouse."""

from __future__ import annotations

from .fakes import CannedWarehouse, manifest, source

from flows.core.source_signals import (
    SourceTable, changed_sources, databricks_signal_sql, read_signals, source_tables,
)
from flows.core.warehouse import DatabricksDialect, Warehouse

ITEMS = SourceTable("source.shop.raw.items", "raw.items", "Lake", "RAW", "Items", "`lake`.`raw`.`items`")


def test_changed_sources_are_those_whose_signal_moved_or_cannot_be_read():
    previous = {"a": "rows=1", "b": "rows=2", "c": "rows=3"}
    assert changed_sources({"a": "rows=1", "b": "rows=5", "c": None, "d": "rows=1"}, previous) == {"b", "c", "d"}


def test_source_tables_name_each_source_as_operators_know_it():
    shop = manifest(sources=[source("source.shop.raw.items")])
    shop.sources["source.shop.raw.items"].database = None
    shop.sources["source.shop.raw.items"].relation_name = '"raw"."items"'
    assert source_tables(shop, ["source.shop.raw.items"]) == [
        SourceTable("source.shop.raw.items", "raw.items", None, "raw", "items", '"raw"."items"')]


def test_databricks_signal_sql_folds_names_to_lower_case():
    sql = databricks_signal_sql("lake", [ITEMS])
    assert "FROM `lake`.information_schema.tables" in sql
    assert "(table_schema = 'raw' AND table_name = 'items')" in sql


class AlteredWarehouse(Warehouse):
    def __init__(self, catalog: str, rows: list[tuple]):
        self.dialect = DatabricksDialect(catalog)
        self.rows, self.queries = rows, []

    def query(self, sql: str) -> list[tuple]:
        self.queries.append(sql)
        return self.rows


def test_databricks_signals_read_last_altered_per_catalog():
    warehouse = AlteredWarehouse("lake", [("raw", "items", "2024-01-01 00:00:00")])
    signals = read_signals(warehouse, [ITEMS])
    assert len(warehouse.queries) == 1 and set(signals) == {ITEMS.unique_id}
    assert signals[ITEMS.unique_id] is not None and "2024-01-01" in signals[ITEMS.unique_id]


def test_hive_metastore_sources_cannot_be_dated():
    assert read_signals(AlteredWarehouse("hive_metastore", []), [ITEMS]) == {ITEMS.unique_id: None}
    assert read_signals(CannedWarehouse(), []) == {}
