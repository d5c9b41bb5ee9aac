"""The production runbook on the bundled project: a full run, then gated runs (nothing fresher, a full
refresh, one source landed)."""

from __future__ import annotations

import pytest

from conftest import flow_run_logs
from fixture_projects import artifacts_by_key, latest, rebuilt
from flows.core.artifacts import artifact_key
from flows.production import production_run
from land import land_new_data
from reliability.helpers import sql, view_targets


@pytest.fixture(scope="module")
def home(module_home):
    return module_home


@pytest.fixture(scope="module")
def full_run(home):
    state = production_run(environment="local", return_state=True)
    assert state.is_completed(), state.message
    return state


def test_full_run_leaves_tables_snapshots_docs_state_and_artifacts(home, full_run):
    manifest = latest(home, "manifest.json")
    models = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    live = {name for (name,) in sql(home, "select table_name from information_schema.tables "
                                             "where table_schema in ('main', 'main_finance')")}
    assert models <= live
    assert sql(home, "select count(*) from main.fct_orders")[0][0] == 2000
    assert sql(home, "select count(*) from main_snapshots.snap_customers")[0][0] == 300
    docs_page = (home / "state" / "local" / "latest" / "docs" / "static_index.html").read_text()
    assert len(docs_page) > 10_000 and '"compiled": true' in docs_page  # compiled SQL kept from the builds
    for name in ("manifest.json", "sources.json", "run_results.json"):
        assert (home / "state" / "local" / "latest" / name).exists()
    # This run's artifacts, not the latest under each key: other runs on the server write the same keys.
    artifacts = artifacts_by_key(full_run)
    for what in ("run-summary", "model-timings", "docs"):
        assert len(artifacts.get(artifact_key("local", what), [])) == 1, {k: len(v) for k, v in artifacts.items()}
    (summary,) = artifacts[artifact_key("local", "run-summary")]
    assert "build staging" in summary.data and "raw.orders" in summary.data
    assert "## Slowest 10 models over their last runs" in summary.data  # the trend chart, from this first run
    # Live progress: one artifact per build step and one for the run, each at 100% once it ended.
    (progress,) = artifacts[artifact_key("local", "progress")]
    assert progress.type == "progress" and progress.data == 100.0, progress.description
    (staging,) = artifacts[artifact_key("local", "progress-build-staging")]
    assert staging.data == 100.0 and staging.description.startswith("build staging: ")
    # The timeline: an SVG inline, one row per dbt thread, the critical path named.
    (timeline,) = artifacts[artifact_key("local", "timeline")]
    svg = _embedded_svg(timeline.data, "run timeline")
    assert "thread 1" in svg and "build staging" in svg and "Critical path" in timeline.data


def _embedded_svg(markdown: str, alt: str) -> str:
    import base64
    import re

    match = re.search(rf"!\[{alt}\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, markdown[:500]
    return base64.b64decode(match.group(1)).decode()


def test_nothing_fresher_builds_nothing(home, full_run):
    state = production_run(environment="local", return_state=True)
    assert state.is_completed() and state.message == "nothing to rebuild"


def test_full_refresh_bypasses_the_gate_and_a_warn_level_stale_source_is_logged(home, full_run):
    """Nothing is fresher, yet full_refresh rebuilds every model and seed; raw.payments, 30 hours old
    (warn_after 24 h, error_after 72 h), is logged as a warning and the run goes on."""
    sql(home, "update raw.payments set _loaded_at = now()::timestamp - interval 30 hours")
    state = production_run(environment="local", full_refresh=True, return_state=True)
    assert state.is_completed() and state.message != "nothing to rebuild", state.message
    manifest = latest(home, "manifest.json")
    built = {u for u, n in manifest["nodes"].items() if n["resource_type"] in {"model", "seed"}
             and n["config"]["materialized"] != "ephemeral"}
    assert built <= rebuilt(home), built - rebuilt(home)
    warnings = [log.message for log in flow_run_logs(state.state_details.flow_run_id) if log.level == 30]
    assert any("Source raw.payments is getting stale" in w and "the run goes on" in w for w in warnings), warnings


def test_landing_one_source_rebuilds_exactly_its_downstream(home, full_run):
    land_new_data(home / "warehouse.duckdb", "orders", rows=10)
    views_before = view_targets(home)
    state = production_run(environment="local", return_state=True)
    assert state.is_completed(), state.message
    manifest = latest(home, "manifest.json")
    downstream, frontier = set(), ["source.lakehouse.raw.orders"]
    while frontier:
        for child in manifest["child_map"].get(frontier.pop(), []):
            if child not in downstream:
                downstream.add(child)
                frontier.append(child)
    expected = {u for u in downstream if u.split(".")[0] in {"model", "seed", "snapshot"}}
    assert rebuilt(home) == expected
    # the source tests of what this run reads and of what landed; not those of untouched sources
    source_tests = {u: set(n["depends_on"]["nodes"]) for u, n in manifest["nodes"].items()
                    if n["resource_type"] == "test" and n["depends_on"]["nodes"]
                    and all(p.startswith("source.") for p in n["depends_on"]["nodes"])}
    tested = {r["unique_id"] for r in latest(home, "run_results.json")["results"] if r["unique_id"] in source_tests}
    of_orders = {t for t, parents in source_tests.items() if "source.lakehouse.raw.orders" in parents}
    assert of_orders and tested == of_orders, (tested, of_orders)
    assert sql(home, "select count(*) from main.fct_orders")[0][0] == 2010
    # per-relation pointers: exactly the rebuilt relations' live views moved to the new version;
    # every other live view still reads the version it read before
    views_after = view_targets(home)
    rebuilt_views = {f"{manifest['nodes'][u]['schema']}.{manifest['nodes'][u]['alias']}"
                     for u in expected if not u.startswith("snapshot.")}
    moved = {view for view, text in views_after.items() if views_before.get(view) != text}
    assert moved and moved == rebuilt_views & views_after.keys(), (moved, rebuilt_views)
    assert len(views_after) > len(moved) and views_after.keys() == views_before.keys()


# --- a project whose staging test fails, then is fixed and retried ------------------------------
