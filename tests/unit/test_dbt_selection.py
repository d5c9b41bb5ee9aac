"""flows/core/dbt.py: selectors, resource types and combined step results (no dbt invocation)."""

from __future__ import annotations

import pytest
from .fakes import manifest, node

from flows.core.dbt import (
    BUILDABLE, EXECUTED, NodeResult, StepResult, combined, exact_selector, fqn_selector, resource_type_of,
)


def result(unique_id: str, status: str = "success", seconds: float = 1.0) -> NodeResult:
    return NodeResult(unique_id, resource_type_of(unique_id), unique_id.rsplit(".", 1)[-1], status, "", seconds,
                      None, None)


def test_resource_type_is_the_first_part_of_a_unique_id():
    assert resource_type_of("model.shop.orders") == "model"
    assert resource_type_of("semantic_model.shop.orders") == "semantic_model"
    assert resource_type_of("unit_test.shop.orders.test_x") == "unit_test"


def test_executed_types_are_the_buildable_ones_and_tests():
    assert set(BUILDABLE) < set(EXECUTED) and {"test", "unit_test"} <= set(EXECUTED)


def test_exact_selector_is_the_fqn_intersected_with_the_type():
    shop = manifest(nodes=[node("model.shop.staging.stg_orders")])
    assert fqn_selector(shop, "model.shop.staging.stg_orders") == "fqn:shop.staging.stg_orders"
    assert exact_selector(shop, "model.shop.staging.stg_orders") == "fqn:shop.staging.stg_orders,resource_type:model"


def test_a_unit_test_is_selectable_by_its_fqn():
    shop = manifest(unit_tests=[node("unit_test.shop.orders.test_totals")])
    assert exact_selector(shop, "unit_test.shop.orders.test_totals") == "fqn:shop.orders.test_totals,resource_type:unit_test"


@pytest.mark.parametrize("unique_id", ["model.shop.missing", "analysis.shop.adhoc"])
def test_only_nodes_dbt_builds_can_be_selected(unique_id):
    shop = manifest(nodes=[node("analysis.shop.adhoc")])
    with pytest.raises(ValueError, match="not a node dbt builds"):
        fqn_selector(shop, unique_id)


def test_step_result_counts_and_failures():
    step = StepResult("build", False, 3.0, [result("model.s.a"), result("test.s.t", "fail"), result("model.s.b", "error")])
    assert step.counts() == {"success": 1, "fail": 1, "error": 1}
    assert [n.unique_id for n in step.failures] == ["test.s.t", "model.s.b"]
    assert "failed" in repr(step) and "3 nodes" in repr(step)


def test_a_skipped_step_succeeds_with_its_reason():
    step = StepResult.skipped("build", "nothing fresher")
    assert step.success and step.nodes == [] and step.skipped_reason == "nothing fresher"
    assert step == StepResult.skipped("build", "nothing fresher")


def test_combined_keeps_both_commands_nodes_and_run_results():
    first = StepResult("build", True, 2.0, [result("model.s.a")],
                       run_results={"metadata": {"m": 1}, "results": [{"unique_id": "model.s.a"}], "elapsed_time": 2.0})
    then = StepResult("snapshot", False, 1.0, [result("snapshot.s.x", "error")],
                      run_results={"results": [{"unique_id": "snapshot.s.x"}], "elapsed_time": 1.5})
    both = combined(first, then)
    assert (both.command, both.success, both.seconds) == ("build", False, 3.0)
    assert [n.unique_id for n in both.nodes] == ["model.s.a", "snapshot.s.x"]
    assert [r["unique_id"] for r in both.run_results["results"]] == ["model.s.a", "snapshot.s.x"]
    assert both.run_results["metadata"] == {"m": 1} and both.run_results["elapsed_time"] == 3.5


def test_combined_with_one_side_without_run_results():
    first = StepResult("build", True, 1.0, run_results=None)
    then = StepResult("snapshot", True, 1.0, run_results={"results": [{"unique_id": "x"}], "elapsed_time": 1.0})
    assert combined(first, then).run_results["results"] == [{"unique_id": "x"}]
    assert combined(then, StepResult("noop", True, 0.0)).run_results == then.run_results
