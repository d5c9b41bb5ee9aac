"""flows/core/versions.py: schema names, the registry, audit, flip statements and prune, on a canned warehouse."""

from __future__ import annotations

import pytest
from .fakes import CannedWarehouse, MemoryStore, manifest, node

from flows.core.versions import (
    VERSION_ID, AuditRefused, Version, VersionError, VersionRegistry, abandon_unfinished, audit, flip_statements,
    live_schema_of, new_version_id, prune, published_relations, version_of_schema, versioned_schema,
)
from flows.core.warehouse import DatabricksDialect, Relation

V1, V2, V3, V4 = (f"v2024010{i}000000_abc123" for i in range(1, 5))


def test_a_version_id_is_a_timestamp_and_the_run_id():
    version = new_version_id("7F3A-9c1e-...")
    assert VERSION_ID.fullmatch(version) and version.endswith("_7f3a9c")
    assert new_version_id("ab").endswith("_ab0000")


def test_versioned_schema_round_trips_with_custom_schemas():
    assert versioned_schema("main", V1) == f"main__{V1}"
    assert live_schema_of(f"main__{V1}", "main") == "main"
    assert live_schema_of(f"main__{V1}_finance", "main") == "main_finance"
    assert version_of_schema(f"main__{V1}_finance", "main") == V1
    assert live_schema_of("main_finance", "main") is None and version_of_schema("other__" + V1, "main") is None


def test_published_relations_map_live_to_physical_for_models_and_seeds_only():
    shop = manifest(nodes=[
        node("model.s.orders", schema=f"main__{V1}"), node("seed.s.codes", schema=f"main__{V1}_ref", alias="Codes"),
        node("model.s.eph", schema=f"main__{V1}", materialized="ephemeral"), node("model.s.abs", schema="audit"),
        node("snapshot.s.snap", schema=f"main__{V1}"),
    ])
    built = {"model.s.orders", "seed.s.codes", "model.s.eph", "model.s.abs", "snapshot.s.snap", "model.s.gone"}
    assert published_relations(shop, built, "main") == {
        "main.orders": f"main__{V1}.orders", "main_ref.Codes": f"main__{V1}_ref.Codes"}


def registry(*versions: Version, live: str | None = None) -> VersionRegistry:
    store = MemoryStore()
    store.write_json("versions.json", {"live": live, "versions": [vars(v) for v in versions]})
    return VersionRegistry(store)  # type: ignore[arg-type]


def published(version_id: str, **relations: str) -> Version:
    return Version(version_id, "2024-01-01T00:00:00+00:00", None, "published", relations=dict(relations))


def test_the_registry_starts_a_version_from_live_and_saves_it():
    reg = registry(published(V1, **{"main.orders": f"main__{V1}.orders"}), live=V1)
    started = reg.start(V2, "run-1")
    assert started.status == "building" and started.relations == {"main.orders": f"main__{V1}.orders"}
    reg.mark(V2, "failed", "tests failed")
    again = VersionRegistry(reg.store)
    assert again.versions[V2].status == "failed" and again.versions[V2].note == "tests failed"
    assert [row["version"] for row in again.listing()] == [V2, V1] and again.listing()[1]["live"]


def test_rollback_goes_to_the_published_version_before_live():
    reg = registry(published(V1), published(V2), published(V3), live=V3)
    assert reg.rollback_target(None).id == V2
    assert reg.rollback_target(V1).id == V1
    reg.versions[V1].status = "pruned"
    with pytest.raises(VersionError, match="was pruned"):
        reg.rollback_target(V1)
    with pytest.raises(VersionError, match="no earlier published version"):
        registry(published(V1), live=V1).rollback_target(None)


def test_audit_refuses_a_relation_that_shrank_or_emptied():
    warehouse = CannedWarehouse(
        relations={Relation("main", "a"): "VIEW", Relation("main", "b"): "VIEW", Relation("main", "c"): "VIEW"},
        rows={f"main__{V2}.a": 90, f"main__{V2}.b": 10, f"main__{V2}.c": 0, f"main__{V2}.d": 5,
              "main.a": 100, "main.b": 100, "main.c": 100})
    changes = {f"main.{n}": f"main__{V2}.{n}" for n in "abcd"}
    current = {f"main.{n}": f"main__{V1}.{n}" for n in "abc"}
    rows = audit(warehouse, changes, current, max_shrink=0.5)
    assert [(r.relation, r.live_rows, r.new_rows, r.verdict) for r in rows] == [
        ("main.a", 100, 90, "ok"), ("main.b", 100, 10, "shrank"), ("main.c", 100, 0, "empty"), ("main.d", None, 5, "new")]
    assert [r.refused for r in rows] == [False, True, True, False]
    assert issubclass(AuditRefused, VersionError)


def test_flip_statements_repoint_changed_views_replace_tables_and_drop_unpublished_views():
    warehouse = CannedWarehouse(relations={
        Relation("main", "same"): "VIEW", Relation("main", "moved"): "VIEW", Relation("main", "was_table"): "BASE TABLE",
        Relation("main", "dropped"): "VIEW"})
    current = {"main.same": f"main__{V1}.same", "main.moved": f"main__{V1}.moved", "main.dropped": f"main__{V1}.dropped"}
    target = {"main.same": f"main__{V1}.same", "main.moved": f"main__{V2}.moved",
              "main.was_table": f"main__{V2}.was_table", "main_new.fresh": f"main__{V2}_new.fresh"}
    assert flip_statements(warehouse, target, current) == [
        'CREATE SCHEMA IF NOT EXISTS "main"',
        'CREATE SCHEMA IF NOT EXISTS "main_new"',
        f'CREATE OR REPLACE VIEW "main"."moved" AS SELECT * FROM "main__{V2}"."moved"',
        'DROP TABLE IF EXISTS "main"."was_table"',
        f'CREATE OR REPLACE VIEW "main"."was_table" AS SELECT * FROM "main__{V2}"."was_table"',
        f'CREATE OR REPLACE VIEW "main_new"."fresh" AS SELECT * FROM "main__{V2}_new"."fresh"',
        'DROP VIEW IF EXISTS "main"."dropped"',
    ]


def test_flip_statements_on_databricks_alter_existing_views_by_their_folded_name():
    warehouse = CannedWarehouse(DatabricksDialect("lake"), relations={Relation("main", "orders"): "VIEW"})
    statements = flip_statements(warehouse, {"main.Orders": f"main__{V2}.Orders"}, {})
    assert statements[-1] == f"ALTER VIEW `lake`.`main`.`Orders` AS SELECT * FROM `lake`.`main__{V2}`.`Orders`"


def test_prune_keeps_live_and_the_one_before_and_drops_unreferenced_schemas():
    reg = registry(*(published(v, **{"main.t": f"main__{v}.t"}) for v in (V1, V2, V3, V4)), live=V3)
    warehouse = CannedWarehouse(schemas=[f"main__{v}" for v in (V1, V2, V3, V4)])
    assert prune(warehouse, reg, "main", keep=2) == [V1]
    assert reg.versions[V1].status == "pruned"
    assert warehouse.executed == [f'DROP SCHEMA IF EXISTS "main__{V1}" CASCADE']
    with pytest.raises(VersionError, match="at least 2"):
        prune(warehouse, reg, "main", keep=1)


def test_abandon_unfinished_fails_building_versions_and_spares_ready_ones_without_a_warehouse():
    building = Version(V2, "t", None, "building")
    ready = Version(V3, "t", None, "ready")
    reg = registry(published(V1), building, ready, live=V1)
    assert abandon_unfinished(reg) == [V2]
    assert reg.versions[V2].status == "failed" and reg.versions[V3].status == "ready"
