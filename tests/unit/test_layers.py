"""flows/core/layers.py: ordering a run's nodes into stages from the manifest alone."""

from __future__ import annotations

from .fakes import manifest, node, source

from flows.core.layers import Graph, Plan, Stage, plan_stages

SEED = "seed.shop.raw_customers"
SOURCE = "source.shop.raw.orders"
STG = "model.shop.stg_orders"
UTIL = "model.shop.util_dates"
MART = "model.shop.fct_orders"
LOOSE = "model.shop.loose"
SNAP_SOURCE = "snapshot.shop.orders_snapshot"
SNAP_MODEL = "snapshot.shop.fct_snapshot"


def graph() -> Graph:
    return Graph(manifest(
        nodes=[
            node(SEED, schema="raw"), node(UTIL), node(STG, parents=[SOURCE, UTIL]), node(MART, parents=[STG, SEED]),
            node(LOOSE), node(SNAP_SOURCE, parents=[SOURCE]), node(SNAP_MODEL, parents=[MART]),
            node("test.shop.not_null_stg", parents=[STG]), node("test.shop.rel_mart_stg", parents=[MART, STG]),
            node("test.shop.source_unique", parents=[SOURCE]),
            node("test.shop.seeded_source", parents=["source.shop.raw.raw_customers"]),
        ],
        sources=[source(SOURCE), source("source.shop.raw.raw_customers")],
        unit_tests=[node("unit_test.shop.fct_orders.totals", parents=[MART])],
    ))


def test_graph_knows_every_resource_type_and_ancestors():
    g = graph()
    assert g.of_type("seed") == {SEED}
    assert g.resource_type["unit_test.shop.fct_orders.totals"] == "unit_test"
    assert g.ancestors([MART]) == {STG, SEED, SOURCE, UTIL}
    assert g.loaded_by == {"source.shop.raw.raw_customers": SEED}


def test_layers_take_their_nodes_and_unbuilt_upstream_nodes():
    candidates = {SEED, UTIL, STG, MART, LOOSE, SNAP_SOURCE, SNAP_MODEL}
    plan = plan_stages(graph(), candidates, [("staging", {STG}), ("marts", {MART}), ("empty", set())])
    assert plan.seeds == {SEED} and plan.snapshots == {SNAP_SOURCE}  # a snapshot of a model goes with the layers
    assert [(s.name, s.nodes) for s in plan.layers] == [
        ("staging", {STG, UTIL}), ("marts", {MART}), ("unlayered", {LOOSE, SNAP_MODEL})]
    assert plan.empty_layers == ["empty"]
    assert plan.nodes == candidates


def test_a_test_runs_in_the_stage_of_its_last_parent():
    plan = plan_stages(graph(), {SEED, UTIL, STG, MART}, [("staging", {STG}), ("marts", {MART})])
    staging, marts = plan.layers
    # the seed's stage comes before every layer: a test of the seeded source goes with the first layer
    assert staging.tests == {"test.shop.not_null_stg", "test.shop.seeded_source"}
    assert marts.tests == {"test.shop.rel_mart_stg", "unit_test.shop.fct_orders.totals"}


def test_a_test_of_a_seeded_source_runs_with_the_first_stage_and_source_tests_are_left_out():
    plan = plan_stages(graph(), {SEED, STG}, [("staging", {STG})])
    tests = set().union(*(s.tests for s in plan.layers))
    assert "test.shop.seeded_source" in tests and "test.shop.source_unique" not in tests


def test_tests_of_nodes_not_built_are_not_rerun():
    plan = plan_stages(graph(), {LOOSE}, [("staging", {STG})])
    assert [(s.name, s.tests) for s in plan.layers] == [("unlayered", set())]
    assert plan.empty_layers == ["staging"]


def test_an_empty_plan():
    plan = plan_stages(graph(), set(), [("staging", {STG})])
    assert plan.is_empty() and plan.nodes == set()
    assert not Stage("x") and Stage("x", tests={"t"})
    assert Plan(set(), set(), [Stage("x")], []).is_empty()
    assert not Plan(set(), set(), [Stage("x", {STG})], []).is_empty()
