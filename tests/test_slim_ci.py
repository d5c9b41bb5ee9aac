"""Slim CI on DuckDB against a real production run: only what changed is built, parents come
from prod through defer, prod is untouched, and a closed PR leaves nothing behind."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import duckdb
import pytest
from prefect.artifacts import Artifact

from flows.core.slim_ci import ci_work_dir, is_pr_schema, pr_schema
from flows.production import production_run
from flows.slim_ci import build_parser, drop_ci_schema, slim_ci
from blocks.environment import builtin_local
from conftest import relation_fingerprint

BUNDLED_PROJECT = Path(__file__).resolve().parents[1] / "dbt_project"
PR = 7
CHANGED = "model.lakehouse.stg_customers"
PAYMENTS_DAILY = "model.lakehouse.fct_payments_daily"
PROD_SCHEMAS = "table_schema in ('main', 'main_finance', 'main_snapshots') or table_schema like 'main\\_\\_v%' escape '\\'"


def _sql(warehouse: Path, statement: str) -> list[tuple]:
    with duckdb.connect(str(warehouse)) as connection:
        return connection.execute(statement).fetchall()


def prod_fingerprint(warehouse: Path) -> dict[str, tuple]:
    """Every prod relation (live, snapshots, versions): its kind, row count, a hash of its rows and, for views, their SQL."""
    return relation_fingerprint(warehouse, PROD_SCHEMAS)


def schemas(warehouse: Path) -> set[str]:
    return {row[0] for row in _sql(warehouse, "select schema_name from information_schema.schemata")}


def downstream_models(manifest: dict, start: str) -> set[str]:
    """`start` and everything built from it, from the manifest's child map (independently of dbt's selectors)."""
    seen, stack = {start}, [start]
    while stack:
        for child in manifest["child_map"].get(stack.pop(), []):
            if child.split(".")[0] in {"model", "seed"} and child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def _edit(path: Path, *replacements: tuple[str, str]) -> None:
    text = path.read_text()
    for old, new in replacements:
        assert old in text, f"{path.name} no longer contains {old!r}"
        text = text.replace(old, new, 1)
    path.write_text(text)


@pytest.fixture(scope="module")
def prod_home(module_home):
    """One production run of the bundled project: live views, versioned schemas, saved state."""
    state = production_run(environment="local", return_state=True)
    assert state.is_completed(), state.message
    return module_home


@pytest.fixture(scope="module")
def pr_run(prod_home, tmp_path_factory):
    """PR #7 changes three models; its slim CI runs once for the tests below.

    stg_customers gets a column and renames customer 1 (one changed row, downstream in dim_customers
    too); dim_customers_masked moves customer 2 to id 100002 (one row removed, one added);
    fct_payments_daily (no key) gets a comment.
    """
    project = tmp_path_factory.mktemp("pr") / "dbt_project"
    shutil.copytree(BUNDLED_PROJECT, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    models = project / "models"
    _edit(models / "staging" / "stg_customers.sql",
          ("        _loaded_at\n", "        _loaded_at,\n        length(email) as email_length\n"),
          ("        first_name,\n", "        case when customer_id = 1 then first_name || ' (pr)' else first_name end"
                                   " as first_name,\n"))
    _edit(models / "marts" / "dim_customers_masked.sql",
          ("    customer_id,\n", "    case when customer_id = 2 then 100002 else customer_id end as customer_id,\n"))
    _edit(models / "marts" / "finance" / "fct_payments_daily.sql", ("with payments as", "/* PR 7 */ with payments as"))
    warehouse = prod_home / "warehouse.duckdb"
    # A stale copy of an unchanged parent, as an earlier push of the PR could leave:
    # --favor-state must still read prod's live relation, never this.
    _sql(warehouse, f"create schema {pr_schema('main', PR)}; "
                    f"create table {pr_schema('main', PR)}.int_customer_orders as select 1 as stale")
    before = prod_fingerprint(warehouse)
    outcome = slim_ci(pr_number=PR, environment="local", base_environment="local", project_dir=str(project))
    target = ci_work_dir(builtin_local(), PR) / "target"
    return {"outcome": outcome, "before": before, "after": prod_fingerprint(warehouse), "target": target,
            "warehouse": warehouse, "run_results": json.loads((target / "run_results.json").read_text()),
            "prod_manifest": json.loads((prod_home / "state" / "local" / "latest" / "manifest.json").read_text())}


def test_builds_exactly_the_change_and_downstream(pr_run):
    built = {r["unique_id"] for r in pr_run["run_results"]["results"]
             if r["unique_id"].split(".")[0] in {"model", "seed", "snapshot"}}
    assert built == downstream_models(pr_run["prod_manifest"], CHANGED) | {PAYMENTS_DAILY}
    assert built == {CHANGED, "model.lakehouse.dim_customers", "model.lakehouse.dim_customers_masked", PAYMENTS_DAILY}
    assert {r["status"] for r in pr_run["run_results"]["results"]} <= {"success", "pass", "no-op"}  # no-op: the exposure
    assert any(r["unique_id"].startswith("test.") for r in pr_run["run_results"]["results"])
    assert pr_run["outcome"].startswith("passed: 4 built")


def test_unchanged_parents_resolve_to_prod_live(pr_run):
    compiled = (pr_run["target"] / "compiled" / "lakehouse" / "models" / "marts" / "dim_customers.sql").read_text()
    assert '"main_pr_7"."stg_customers"' in compiled  # the changed model, as the PR built it
    assert '"main"."int_customer_orders"' in compiled  # unchanged: prod live view, not the stale PR copy
    assert '"main"."country_codes"' in compiled
    columns = {r[0] for r in _sql(pr_run["warehouse"], "select column_name from information_schema.columns "
                                  "where table_schema = 'main_pr_7' and table_name = 'stg_customers'")}
    assert "email_length" in columns
    assert "main_pr_7_snapshots" not in schemas(pr_run["warehouse"])  # snapshots never run in CI


def test_prod_is_untouched(pr_run):
    assert pr_run["before"], "the production run left no prod relations to compare"
    assert pr_run["after"] == pr_run["before"]


def test_report_lists_changed_built_and_deferred(pr_run):
    artifact = Artifact.get(f"dbt-local-slim-ci-pr-{PR}")
    report = artifact.data
    changed, deferred = report.split("## Changed")[1].split("## Built downstream")[0], report.split("## Deferred")[1]
    deferred = deferred.split("## Data diff")[0]
    assert "| stg_customers |" in changed and "| dim_customers |" not in changed
    assert "| dim_customers |" in report.split("## Built downstream")[1].split("## Deferred")[0]
    for parent, relation in [("int_customer_orders", '"main"."int_customer_orders"'),
                             ("country_codes", '"main"."country_codes"'), ("fct_orders", '"main"."fct_orders"')]:
        assert parent in deferred and relation in deferred
    assert "passed" in changed  # test results next to each model


def _diff_rows(report: str) -> dict[str, list[str]]:
    """The data diff table: model name → its cells."""
    table = report.split("## Data diff against `local`")[1].split("\n## ")[0]
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in table.splitlines() if line.startswith("| ")]
    return {cells[0]: cells[1:] for cells in rows[1:]}


def test_data_diff_shows_added_removed_changed_and_counts_only_without_a_key(pr_run):
    report = Artifact.get(f"dbt-local-slim-ci-pr-{PR}").data
    rows = _diff_rows(report)
    # rows in base, rows in PR, Δ, key, added, removed, changed, columns changed
    customers = _sql(pr_run["warehouse"], "select count(*) from main.stg_customers")[0][0]
    assert rows["stg_customers"] == [f"{customers:,}", f"{customers:,}", "+0", "`customer_id`", "0", "0", "1",
                                     "`first_name` (1), `email_length` (new)"]
    assert rows["dim_customers"] == [f"{customers:,}", f"{customers:,}", "+0", "`customer_id`", "0", "0", "1",
                                     "`first_name` (1)"]
    assert rows["dim_customers_masked"][3:] == ["`customer_id`", "1", "1", "0", "none"]
    payments = _sql(pr_run["warehouse"], "select count(*) from main_finance.fct_payments_daily")[0][0]
    assert rows["fct_payments_daily"][:4] == [f"{payments:,}", f"{payments:,}", "+0", "no key: counts only"]
    # the same report, as the markdown file ci.yml posts as the PR comment
    assert (ci_work_dir(builtin_local(), PR) / "report.md").read_text().strip() == report.strip()


def test_drop_ci_schema_removes_only_the_pr_and_is_idempotent(pr_run, caplog):
    warehouse = pr_run["warehouse"]
    # An earlier push built another finance model; PR #71 shares the digits but is another PR.
    _sql(warehouse, "create schema if not exists main_pr_7_finance; "
                    "create table main_pr_7_finance.fct_revenue as select 1 as x; "
                    "create schema main_pr_71; create table main_pr_71.keep_me as select 1 as x")
    assert drop_ci_schema(pr_number=PR, environment="local") == ["main_pr_7", "main_pr_7_finance"]
    left = schemas(warehouse)
    assert not {s for s in left if is_pr_schema(s, "main", PR)}
    assert "main_pr_71" in left
    assert prod_fingerprint(warehouse) == pr_run["before"]
    with caplog.at_level(logging.INFO, logger="prefect"):
        assert drop_ci_schema(pr_number=PR, environment="local") == []
    assert "nothing to drop" in caplog.text


def test_no_base_state_falls_back_to_a_full_build(landed_home, caplog):
    with caplog.at_level(logging.INFO, logger="prefect"):
        outcome = slim_ci(pr_number=8, environment="local", base_environment="local")
    assert "falling back to a FULL BUILD" in caplog.text
    assert outcome.startswith("passed")
    built = {r[0] for r in _sql(landed_home / "warehouse.duckdb",
                                "select table_name from information_schema.tables where table_schema = 'main_pr_8'")}
    assert {"stg_customers", "fct_orders", "dim_customers_masked"} <= built
    assert "dim_customers_history" not in built  # reads a snapshot, which CI never takes


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_pr_number_fails_before_any_work(bad, lakehouse_home):
    with pytest.raises(Exception, match="greater than 0"):
        slim_ci(pr_number=bad, environment="local", base_environment="local")
    assert not (lakehouse_home / "warehouse.duckdb").exists()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--pr-number", str(bad)])


def test_pr_schema_prefixes_do_not_collide():
    assert is_pr_schema("main_pr_1", "main", 1) and is_pr_schema("main_pr_1_finance", "main", 1)
    assert not is_pr_schema("main_pr_12", "main", 1) and not is_pr_schema("main_pr_12_finance", "main", 1)
    with pytest.raises(ValueError, match="positive integer"):
        pr_schema("main", 0)


def test_a_failing_test_fails_the_check_and_is_reported(prod_home, tmp_path):
    project = tmp_path / "dbt_project"
    shutil.copytree(BUNDLED_PROJECT, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    model = project / "models" / "staging" / "stg_customers.sql"
    model.write_text(model.read_text().replace("        customer_id,\n", "        null::integer as customer_id,\n", 1))
    before = prod_fingerprint(prod_home / "warehouse.duckdb")
    state = slim_ci(pr_number=9, environment="local", base_environment="local", project_dir=str(project),
                    return_state=True)
    assert state.is_failed() and "not_null_stg_customers_customer_id" in state.message
    failures = Artifact.get("dbt-local-slim-ci-pr-9").data.split("## Failures")[1]
    assert "not_null_stg_customers_customer_id" in failures and "compiled SQL" in failures
    assert prod_fingerprint(prod_home / "warehouse.duckdb") == before


EPHEMERAL_PROJECT = {
    "dbt_project.yml": "name: inlined\nversion: '1.0'\nprofile: inlined\n",
    "models/base_items.sql": "{{ config(materialized='table') }} select 1 as id union all select 2",
    "models/items_clean.sql": "{{ config(materialized='ephemeral') }} select id from {{ ref('base_items') }} where id > 0",
    "models/items_report.sql": "{{ config(materialized='table') }} select count(*) as items from {{ ref('items_clean') }}",
}


def test_a_changed_ephemeral_model_is_reported_changed_and_its_parents_deferred(lakehouse_home, tmp_path):
    project = tmp_path / "inlined"
    for name, text in EPHEMERAL_PROJECT.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    state = production_run(environment="local", project_dir=str(project), return_state=True)
    assert state.is_completed(), state.message
    (project / "models" / "items_clean.sql").write_text(EPHEMERAL_PROJECT["models/items_clean.sql"].replace("> 0", "> 1"))
    outcome = slim_ci(pr_number=PR, environment="local", base_environment="local", project_dir=str(project))
    assert outcome.startswith("passed: 1 built, 1 deferred")  # items_report built; base_items deferred
    report = Artifact.get(f"dbt-local-slim-ci-pr-{PR}").data
    changed, deferred = report.split("## Changed")[1].split("## Built downstream")[0], report.split("## Deferred")[1]
    assert "items_clean" in changed and "ephemeral" in changed
    assert "base_items" in deferred and '"main"."base_items"' in deferred
    assert "items_clean" not in deferred and "not in the base state" not in report
    assert _sql(lakehouse_home / "warehouse.duckdb", f"select items from {pr_schema('main', PR)}.items_report") == [(1,)]
