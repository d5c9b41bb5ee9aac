"""flows/core/freshness.py: the gate's pure parts."""

from __future__ import annotations

import pytest
from .fakes import manifest, node, source

from flows.core.dbt import NodeResult
from flows.core.freshness import (
    SourceFreshness, StaleSources, fresher_sources, gate_selectors, raise_if_stale, read_report,
    seed_loaded_sources, sources_with_freshness, sources_without_freshness, undatable_sources,
)
from flows.errors import RunFailure

ORDERS = "source.shop.raw.orders"
CUSTOMERS = "source.shop.raw.customers"


def report(*rows: tuple[str, str]) -> dict:
    return {"results": [{"unique_id": u, "max_loaded_at": at} for u, at in rows]}


def test_fresher_sources_is_none_without_both_reports():
    assert fresher_sources(None, report((ORDERS, "2024-01-01T00:00:00"))) is None
    assert fresher_sources(report((ORDERS, "2024-01-01T00:00:00")), {}) is None


def test_fresher_sources_names_newer_and_new_sources_only():
    previous = report((ORDERS, "2024-01-01T00:00:00"), (CUSTOMERS, "2024-01-01T00:00:00"))
    current = report((ORDERS, "2024-01-02T00:00:00"), (CUSTOMERS, "2024-01-01T00:00:00"),
                     ("source.shop.raw.items", "2023-01-01T00:00:00"))
    assert fresher_sources(current, previous) == {ORDERS, "source.shop.raw.items"}


def test_fresher_sources_compares_across_time_zones():
    previous = report((ORDERS, "2024-01-01T12:00:00+00:00"))
    assert fresher_sources(report((ORDERS, "2024-01-01T13:00:00+02:00")), previous) == set()  # 11:00 UTC
    assert fresher_sources(report((ORDERS, "2024-01-01T13:00:00+00:00")), previous) == {ORDERS}


def test_fresher_sources_ignores_results_without_a_timestamp():
    previous = report((ORDERS, "2024-01-01T00:00:00"))
    current = {"results": [{"unique_id": ORDERS, "max_loaded_at": None}]}
    assert fresher_sources(current, previous) == set()


def test_age_reads_in_hours_then_days():
    row = SourceFreshness("raw.orders", "pass", 3 * 3600, None)
    assert row.age == "3.0 h"
    assert SourceFreshness("raw.orders", "pass", 72 * 3600, None).age == "3.0 days"
    assert SourceFreshness("raw.orders", "pass", None, None).age == "unknown age"


def test_outcome_of_an_unchecked_source_says_why():
    assert SourceFreshness("raw.orders", "warn", 1.0, None).outcome == "warn"
    assert SourceFreshness("raw.o", "runtime error", None, None, error="no table").outcome == "not checked: no table"
    seeded = SourceFreshness("raw.o", "runtime error", None, None, loaded_by_seed="orders")
    assert seeded.outcome == "not checked: loaded by seed orders in this run"


def project():
    return manifest(
        nodes=[node("seed.shop.customers", schema="raw"), node("model.shop.stg_orders", parents=[ORDERS])],
        sources=[source(ORDERS, loaded_at_field="_loaded_at", warn_after=24, error_after=72),
                 source(CUSTOMERS, loaded_at_field="_loaded_at", warn_after=24),
                 source("source.shop.raw.items")],
    )


def test_sources_with_and_without_freshness():
    assert sources_with_freshness(project()) == {ORDERS, CUSTOMERS}
    assert sources_without_freshness(project()) == ["source.shop.raw.items"]
    assert gate_selectors(project(), ["source.shop.raw.items"]) == [
        "source_status:fresher+", "state:modified+", "source:raw.items+"]


def test_a_threshold_without_a_way_to_date_it_is_undatable_on_duckdb_only():
    shop = manifest(sources=[source(ORDERS, warn_after=24)])
    assert sources_with_freshness(shop) == set() and undatable_sources(shop) == ["raw.orders"]
    on_databricks = manifest(sources=[source(ORDERS, warn_after=24)], adapter_type="databricks")
    assert sources_with_freshness(on_databricks) == {ORDERS} and undatable_sources(on_databricks) == []


def test_without_any_source_freshness_the_gate_asks_no_source_status():
    unchecked = manifest(sources=[source("source.shop.raw.items")])
    assert gate_selectors(unchecked, []) == ["state:modified+"]


def test_a_seed_loading_a_source_is_found_case_insensitively():
    shop = manifest(nodes=[node("seed.shop.Customers", schema="RAW")], sources=[source(CUSTOMERS)])
    assert seed_loaded_sources(shop) == {CUSTOMERS: "Customers"}


def test_read_report_dates_sources_and_adds_those_dbt_could_not_check():
    sources_json = {"results": [{"unique_id": ORDERS, "status": "error", "max_loaded_at_time_ago_in_s": 90000.0,
                                 "max_loaded_at": "2024-01-01T00:00:00"}]}
    failed = NodeResult(CUSTOMERS, "source", "customers", "runtime error",
                        "Runtime Error in source customers (x.yml)\n  Catalog Error: Table raw.customers does not exist",
                        0.0, None, None)
    passed = NodeResult("source.shop.raw.items", "source", "items", "pass", "", 0.0, None, None)
    rows = read_report(sources_json, project(), [failed, passed])
    assert [(r.source, r.status, r.severity) for r in rows] == [
        ("raw.customers", "runtime error", "warn"), ("raw.orders", "error", "error")]
    assert rows[0].error == "Catalog Error: Table raw.customers does not exist"
    assert rows[0].loaded_by_seed == "customers"


def test_read_report_without_sources_json_is_empty():
    assert read_report(None, project()) == []


def test_raise_if_stale_returns_what_to_warn_about():
    rows = [SourceFreshness("raw.a", "pass", 1.0, None), SourceFreshness("raw.b", "warn", 1.0, None),
            SourceFreshness("raw.c", "runtime error", None, None, error="denied", severity="warn")]
    assert [r.source for r in raise_if_stale(rows)] == ["raw.b", "raw.c"]


def test_raise_if_stale_stops_on_error_level_staleness_naming_each_source():
    rows = [SourceFreshness("raw.a", "error", 4 * 86400, None),
            SourceFreshness("raw.b", "runtime error", None, None, error="permission denied", severity="error")]
    with pytest.raises(StaleSources) as raised:
        raise_if_stale(rows)
    assert isinstance(raised.value, RunFailure)
    assert "raw.a is stale (4.0 days old)" in str(raised.value)
    assert "raw.b could not be checked: permission denied" in str(raised.value)


def test_an_error_level_source_loaded_by_a_seed_does_not_stop_the_run():
    row = SourceFreshness("raw.c", "runtime error", None, None, severity="error", loaded_by_seed="customers")
    assert raise_if_stale([row]) == [row]
