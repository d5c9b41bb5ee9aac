"""flows/core/live_docs.py: a model's grants and persisted descriptions land on its live view at the flip
(Databricks syntax, parsed by sqlglot, run on the Delta double); a flip lacking ownership changes nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import sqlglot
from sqlglot import exp

from flows.core.live_docs import MissingPrivilege, docs_of
from flows.core.versions import Version, VersionRegistry, flip_statements, make_live
from flows.core.warehouse import Phase

from .delta_double import DeltaWarehouse
from .fakes import CannedWarehouse, MemoryStore, kind

V1, V2 = "v20240101000000_abc123", "v20240102000000_abc123"


def model(schema: str) -> SimpleNamespace:
    return SimpleNamespace(
        unique_id="model.shop.fct_orders", name="fct_orders", alias=None, schema=schema, resource_type=kind("model"),
        description="One row per order.", columns={"order_id": SimpleNamespace(description="The order's id."),
                                                   "note": SimpleNamespace(description="")},
        config=SimpleNamespace(materialized="table", grants={"select": ["bi_readers"]},
                               persist_docs={"relation": True, "columns": True}))


def version(version_id: str) -> Version:
    physical = f"main__{version_id}.fct_orders"
    docs = docs_of(SimpleNamespace(nodes={"m": model(f"main__{version_id}")}), "main")
    return Version(version_id, "t", None, "ready", relations={"main.fct_orders": physical}, docs=docs)


def test_docs_of_reads_grants_and_persisted_descriptions():
    assert docs_of(SimpleNamespace(nodes={"m": model(f"main__{V1}")}), "main") == {"main.fct_orders": {
        "grants": {"select": ["bi_readers"]}, "description": "One row per order.",
        "columns": {"order_id": "The order's id."}}}


def test_the_flip_grants_and_comments_on_the_live_view_in_databricks_sql_and_again_after_a_repoint():
    warehouse = DeltaWarehouse()
    warehouse.write_table(f"main__{V1}", "fct_orders", rows=3)
    warehouse.write_table(f"main__{V2}", "fct_orders", rows=4)
    registry = VersionRegistry(MemoryStore())  # type: ignore[arg-type]
    first = version(V1)
    registry.versions[V1] = first
    make_live(warehouse, registry, first)
    described = [s for s in warehouse.executed if s.phase == Phase.DESCRIBE_VIEWS]  # type: ignore[attr-defined]
    assert described == [
        "GRANT SELECT ON TABLE `lake`.`main`.`fct_orders` TO `bi_readers`",
        "COMMENT ON TABLE `lake`.`main`.`fct_orders` IS 'One row per order.'",
        "COMMENT ON COLUMN `lake`.`main`.`fct_orders`.`order_id` IS 'The order\\'s id.'",
    ]
    for statement in described:
        parsed = sqlglot.parse_one(statement, read="databricks")
        assert isinstance(parsed, (exp.Grant, exp.Comment)) and parsed.sql(dialect="databricks") == statement
    view = warehouse.views[("main", "fct_orders")]
    assert view.grants == {("SELECT", "bi_readers")} and view.comment == "One row per order."
    second = version(V2)
    registry.versions[V2] = second
    make_live(warehouse, registry, second)  # ALTER VIEW … AS drops column comments: they are applied again
    assert view.target == (f"main__{V2}".lower(), "fct_orders") and view.column_comments == {"order_id": "The order\\'s id."}
    assert warehouse.read("main", "fct_orders") == 4


def test_a_flip_without_ownership_of_a_live_view_fails_before_any_change_naming_the_privilege():
    warehouse = DeltaWarehouse()
    warehouse.write_table(f"main__{V1}", "fct_orders", rows=3)
    warehouse.write_table(f"main__{V2}", "fct_orders", rows=4)
    registry = VersionRegistry(MemoryStore())  # type: ignore[arg-type]
    registry.versions[V1] = first = version(V1)
    make_live(warehouse, registry, first)
    warehouse.views[("main", "fct_orders")].owner = "someone_else"
    executed = list(warehouse.executed)
    registry.versions[V2] = second = version(V2)
    with pytest.raises(MissingPrivilege, match=r"ownership \(or MANAGE\).*main\.fct_orders \(owner someone_else\)"):
        make_live(warehouse, registry, second)
    assert warehouse.executed == executed and registry.live_id == V1 and not registry.flip_incomplete
    assert warehouse.read("main", "fct_orders") == 3


def test_duckdb_flips_send_no_grants_or_comments():
    statements = flip_statements(CannedWarehouse(), {"main.fct_orders": f"main__{V1}.fct_orders"}, {},
                                 version(V1).docs)
    assert not [s for s in statements if s.startswith(("GRANT", "COMMENT"))]
