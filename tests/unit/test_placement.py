"""flows/core/placement.py: what a blue-green version may build outside its schemas, decided on the parsed manifest."""

from __future__ import annotations

import pytest

from flows.core.placement import OutsideVersion, check_placement
from flows.errors import InputError

from .fakes import manifest, node

V = "v20240101000000_abc123"


def test_nodes_in_the_version_pass_and_seeds_outside_it_are_listed():
    shop = manifest(nodes=[node("model.s.orders", schema=f"main__{V}"), node("model.s.fin", schema=f"main__{V}_finance"),
                           node("seed.s.codes", schema="reference"), node("model.s.eph", schema="x", materialized="ephemeral"),
                           node("test.s.not_null", schema="x")])
    assert check_placement(shop, "main", V, str) == ["seed.s.codes → schema reference"]


def test_models_and_snapshots_outside_the_version_are_refused_by_name_with_the_ways_out():
    shop = manifest(nodes=[node("model.s.orders", schema=f"main__{V}"), node("model.s.revenue", schema="finance"),
                           node("snapshot.s.snap", schema="snapshots"), node("model.s.older", schema="main__v20230101000000_abc123")])
    with pytest.raises(OutsideVersion) as refused:
        check_placement(shop, "main", V, str)
    message = str(refused.value)
    assert "model.s.revenue → schema finance" in message and "snapshot.s.snap → schema snapshots" in message
    assert "model.s.older" in message and "model.s.orders" not in message
    assert "generate_schema_name" in message and "target named `prod`" in message
    assert isinstance(refused.value, InputError)


def test_databricks_compares_folded_names():
    shop = manifest(nodes=[node("model.s.orders", schema=f"Main__{V}")])
    assert check_placement(shop, "MAIN", V, str.lower) == []


@pytest.mark.parametrize("materialized", ["materialized_view", "streaming_table"])
def test_materialized_views_and_streaming_tables_are_refused(materialized):
    shop = manifest(nodes=[node("model.s.daily", schema=f"main__{V}", materialized=materialized)])
    with pytest.raises(OutsideVersion, match=rf"model.s.daily \({materialized}\).*recomputed from scratch|"
                                             rf"recomputed from scratch.*model.s.daily \({materialized}\)"):
        check_placement(shop, "main", V, str)
