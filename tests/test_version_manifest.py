"""flows/core/version_manifest.py: a blue-green version's manifest moved from the live parse equals
a real parse of the version's profile, node for node; and whatever could make them differ takes
the safe path (a real parse), naming why."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from dbt.cli.main import dbtRunner

from flows.core.version_manifest import MustParse, check_project_files, version_manifest

ROOT = Path(__file__).resolve().parents[1]
LIVE, VERSION = "analytics", "analytics__v20261203000000_abc123"


def _generator():
    spec = importlib.util.spec_from_file_location("bench_generate_project", ROOT / "bench" / "generate_project.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TARGETS = {
    "duckdb": "type: duckdb\n      path: {tmp}/warehouse.duckdb",
    # dbt-databricks parses offline: nothing connects until a command runs SQL
    "databricks": "type: databricks\n      host: dummy.cloud.databricks.com\n      http_path: /sql/1.0/warehouses/abc\n"
                  "      token: dapi-dummy\n      catalog: main",
}


def parse(project: Path, schema: str, profile_name: str, tmp: Path, deps: bool = False, adapter: str = "duckdb"):
    profiles = tmp / f"profiles-{adapter}-{schema}"
    profiles.mkdir(exist_ok=True)
    (profiles / "profiles.yml").write_text(
        f"{profile_name}:\n  target: local\n  outputs:\n    local:\n      {TARGETS[adapter].format(tmp=tmp)}\n"
        f"      schema: {schema}\n      threads: 1\n")
    common = ["--project-dir", str(project), "--profiles-dir", str(profiles), "--quiet"]
    if deps:
        assert dbtRunner().invoke(["deps", *common]).success
    result = dbtRunner().invoke(["parse", "--no-write-json", *common,
                                 "--target-path", str(tmp / f"target-{adapter}-{schema}")])
    assert result.success, result.exception
    return result.result


def comparable(node) -> dict:
    as_dict = node.to_dict()
    as_dict.pop("created_at", None)  # the parse's own clock
    return as_dict


def assert_same_manifest(moved, parsed) -> None:
    # jinja's `graph`, which packages' macros read (dbt builds it after every parse)
    for kind, nodes in parsed.flat_graph.items():
        ours = {key: {k: v for k, v in node.items() if k != "created_at"} for key, node in moved.flat_graph[kind].items()}
        dbts = {key: {k: v for k, v in node.items() if k != "created_at"} for key, node in nodes.items()}
        assert ours == dbts, f"flat graph {kind} differs from a real parse"
    for collection in ("nodes", "unit_tests", "sources", "semantic_models", "saved_queries", "exposures", "metrics"):
        ours, dbts = getattr(moved, collection), getattr(parsed, collection)
        assert set(ours) == set(dbts), collection
        differing = [key for key in ours if comparable(ours[key]) != comparable(dbts[key])]
        assert not differing, f"{collection} differ from a real parse: {differing[:5]}"


@pytest.fixture(scope="module")
def generated_project(tmp_path_factory) -> Path:
    """A generated project with every resource type the bench has: seeds, snapshots, unit tests,
    a local package, semantic models, metrics, a saved query, exposures, an analysis, hooks."""
    out = tmp_path_factory.mktemp("generated") / "project"
    _generator().generate_project(300, out)
    return out


def test_the_moved_manifest_equals_a_real_parse_of_the_version_on_a_generated_project(generated_project, tmp_path):
    live = parse(generated_project, LIVE, "bench", tmp_path, deps=True)
    moved = version_manifest(live, LIVE, VERSION, "duckdb")
    assert_same_manifest(moved, parse(generated_project, VERSION, "bench", tmp_path))
    assert VERSION in {node.schema for node in moved.nodes.values()}
    assert all(node.schema.startswith(LIVE) and not node.schema.startswith(VERSION) for node in live.nodes.values()), \
        "the live manifest itself is left as it was"


@pytest.mark.parametrize("adapter", ["duckdb", "databricks"])
def test_the_moved_manifest_equals_a_real_parse_of_the_version_on_the_bundled_project(tmp_path, adapter):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    check_project_files(project)
    live = parse(project, LIVE, "lakehouse", tmp_path, adapter=adapter)
    moved = version_manifest(live, LIVE, VERSION, adapter)
    assert_same_manifest(moved, parse(project, VERSION, "lakehouse", tmp_path, adapter=adapter))
    if adapter == "databricks":  # backtick-quoted relation names, in the catalog
        assert moved.nodes["model.lakehouse.fct_orders"].relation_name == f"`main`.`{VERSION}`.`fct_orders`"


SMALL_PROJECT = {
    "dbt_project.yml": "name: shop\nversion: '1.0.0'\nprofile: shop\nconfig-version: 2\n",
    "models/orders.sql": "select 1 as id",
    "models/revenue.sql": "{{ config(schema='finance') }} select * from {{ ref('orders') }}",
}


@pytest.mark.parametrize("files, cause", [
    ({"macros/schemas.sql": "{% macro generate_schema_name(custom, node) %}{{ custom or target.schema }}{% endmacro %}"},
     "shop defines generate_schema_name"),
    ({"macros/alias.sql": "{% macro default__generate_alias_name(custom, node) %}{{ node.name }}{% endmacro %}"},
     "shop defines default__generate_alias_name"),
    ({"models/orders.sql": "{{ config(alias='orders_' ~ target.schema) }} select 1 as id"},
     "orders.sql reads the target at parse time"),
    ({"models/_sources.yml": "version: 2\nsources:\n  - name: raw\n    schema: \"{{ target['schema'] }}_raw\"\n"
                             "    tables: [{name: events}]\n"},
     "_sources.yml reads the target at parse time"),
    ({"models/revenue.sql": "{{ config(schema=helper(target)) }} select 1 as id",
      "macros/helper.sql": "{% macro helper(t) %}x{% endmacro %}"},
     "revenue.sql reads the target at parse time"),
    ({"snapshots/snap.sql": "{% snapshot snap %}{{ config(target_schema='history', unique_key='id', "
                            "strategy='check', check_cols='all') }} select 1 as id {% endsnapshot %}"},
     "sets a legacy target_schema"),
], ids=["custom-schema-macro", "dispatched-alias-macro", "config-reads-target-schema", "source-schema-from-target",
        "target-handed-to-a-macro", "legacy-snapshot-target-schema"])
def test_anything_that_could_place_nodes_otherwise_takes_the_safe_path_naming_why(tmp_path, files, cause):
    project = tmp_path / "shop"
    for name, text in {**SMALL_PROJECT, **files}.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    live = parse(project, LIVE, "shop", tmp_path)
    with pytest.raises(MustParse, match=cause):
        version_manifest(live, LIVE, VERSION, "duckdb")
    if "legacy" not in cause:  # the files alone tell too: slim CI then parses once, for the PR's schema
        with pytest.raises(MustParse):
            check_project_files(project)


def test_reading_what_both_profiles_share_still_moves_the_parse(tmp_path):
    project = tmp_path / "shop"
    files = {**SMALL_PROJECT, "models/orders.sql": "{{ config(materialized='table' if target.type == 'duckdb' "
                                                   "and target.name == 'local' else 'view') }} select 1 as id"}
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    check_project_files(project)
    live = parse(project, LIVE, "shop", tmp_path)
    moved = version_manifest(live, LIVE, VERSION, "duckdb")
    assert moved.nodes["model.shop.revenue"].schema == f"{VERSION}_finance"
    assert moved.nodes["model.shop.revenue"].relation_name == f'"warehouse"."{VERSION}_finance"."revenue"'
    # dbt resolves refs through the manifest's lookups: they must find the moved nodes, not live's
    assert moved.ref_lookup.find("orders", None, None, moved).schema == VERSION
    assert live.ref_lookup.find("orders", None, None, live).schema == LIVE
    assert_same_manifest(moved, parse(project, VERSION, "shop", tmp_path))
