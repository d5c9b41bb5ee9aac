"""flows/core/dry_run.py: why a plan-only run says each node would be built; the Plan's journal form."""

from __future__ import annotations

from .fakes import manifest, node, source

from flows.core.dry_run import explain, plan_markdown
from flows.core.freshness import GateDecision
from flows.core.layers import Graph, Plan, plan_stages

ORDERS, PEOPLE = "source.shop.raw.orders", "source.shop.raw.people"
STG_ORDERS, STG_PEOPLE = "model.shop.stg_orders", "model.shop.stg_people"
MART = "model.shop.fct_orders"


def _manifest():
    nodes = [node(STG_ORDERS, parents=[ORDERS]), node(STG_PEOPLE, parents=[PEOPLE]),
             node(MART, parents=[STG_ORDERS, STG_PEOPLE]), node("test.shop.not_null_mart", parents=[MART])]
    for n in nodes:
        n.original_file_path = f"models/{n.name}.sql"
    return manifest(nodes=nodes, sources=[source(ORDERS), source(PEOPLE)])


def _plan(shop, candidates: set[str]) -> Plan:
    return plan_stages(Graph(shop), candidates, [("staging", {STG_ORDERS, STG_PEOPLE}), ("marts", {MART})])


def test_each_node_names_the_fresher_source_the_changed_file_or_the_change_upstream():
    shop = _manifest()
    decision = GateDecision(frozenset({STG_ORDERS, STG_PEOPLE, MART}), 3, fresher=frozenset({ORDERS}),
                            modified=frozenset({STG_PEOPLE}))
    why = {n.unique_id: (n.stage, n.why) for n in explain(decision, _plan(shop, set(decision.candidates)), shop)}
    assert why == {
        STG_ORDERS: ("staging", "downstream of fresher source raw.orders"),
        STG_PEOPLE: ("staging", "changed since the last build: models/stg_people.sql"),
        MART: ("marts", "downstream of fresher source raw.orders; downstream of changed stg_people"),
    }


def test_a_gate_that_is_off_says_so_for_every_node_and_the_markdown_counts_per_stage():
    shop = _manifest()
    decision = GateDecision(frozenset({STG_ORDERS, MART}), 3, off_reason="freshness_gate=False",
                            changed=frozenset({PEOPLE}))
    plan = _plan(shop, set(decision.candidates))
    nodes = explain(decision, plan, shop)
    assert {n.why for n in nodes} == {"gate off: freshness_gate=False"}
    text = plan_markdown("local", decision, plan, nodes)
    assert "would build 2 node(s) and run 1 test(s)" in text and "| staging | 1 | 0 |" in text
    assert "| marts | 1 | 1 |" in text and f"| `{MART}` | model | marts |" in text


def test_nothing_new_plans_nothing():
    shop = _manifest()
    decision = GateDecision(frozenset(), 3, nothing_new=True)
    plan = _plan(shop, set())
    assert explain(decision, plan, shop) == [] and "nothing to rebuild" in plan_markdown("local", decision, plan, [])


def test_a_plan_survives_the_journal():
    shop = _manifest()
    plan = _plan(shop, {STG_ORDERS, STG_PEOPLE, MART})
    assert Plan.from_json(plan.to_json()) == plan
    plan.tested_sources = {"source.shop.raw.orders"}  # a gated run's
    assert Plan.from_json(plan.to_json()) == plan
