"""Slim CI on DuckDB against a real production run: only what changed is built, parents come
from prod through defer, prod is untouched, and a closed PR leaves nothing behind; the same from a
CI environment of its own (schema, state store) against prod as the base."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from prefect.filesystems import RemoteFileSystem

from flows.core.slim_ci import ci_work_dir, is_pr_schema, pr_schema
from flows.production import production_run
from flows.slim_ci import build_parser, drop_ci_schema, slim_ci
from blocks.environment import DbtEnvironment, builtin_local, load_environment
from conftest import artifacts_of, saved_block
from reliability.helpers import downstream, prod_data, schemas, sql

BUNDLED_PROJECT = Path(__file__).resolve().parents[1] / "dbt_project"
PR = 7
CHANGED = "model.lakehouse.stg_customers"
PAYMENTS_DAILY = "model.lakehouse.fct_payments_daily"


def report_of(state, key: str) -> str:
    """The report `key` that the flow run behind `state` posted. Matched by that run, not the latest
    artifact under the key: other runs of the same PR number on the shared server write that key too."""
    reports = [artifact.data for artifact in artifacts_of(state.state_details.flow_run_id) if artifact.key == key]
    assert len(reports) == 1, f"the run posted {len(reports)} artifacts under {key}"
    return reports[0]


def _edit(path: Path, *replacements: tuple[str, str]) -> None:
    text = path.read_text()
    for old, new in replacements:
        assert old in text, f"{path.name} no longer contains {old!r}"
        text = text.replace(old, new, 1)
    path.write_text(text)


@pytest.fixture(scope="module")
def prod_home(published_module_home):
    """After one production run of the bundled project (the session's template): live views,
    versioned schemas, saved state."""
    return published_module_home


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
    # A stale copy of an unchanged parent, as an earlier push of the PR could leave:
    # --favor-state must still read prod's live relation, never this.
    sql(prod_home, f"create schema {pr_schema('main', PR)}; "
                    f"create table {pr_schema('main', PR)}.int_customer_orders as select 1 as stale")
    before = prod_data(prod_home)
    state = slim_ci(pr_number=PR, environment="local", base_environment="local", project_dir=str(project),
                    return_state=True)
    target = ci_work_dir(builtin_local(), PR) / "target"
    return {"outcome": state.result(), "report": report_of(state, f"dbt-local-slim-ci-pr-{PR}"),
            "before": before, "after": prod_data(prod_home), "target": target, "home": prod_home,
            "run_results": json.loads((target / "run_results.json").read_text()),
            "prod_manifest": json.loads((prod_home / "state" / "local" / "latest" / "manifest.json").read_text())}


def test_builds_exactly_the_change_and_downstream(pr_run):
    built = {r["unique_id"] for r in pr_run["run_results"]["results"]
             if r["unique_id"].split(".")[0] in {"model", "seed", "snapshot"}}
    assert built == downstream(pr_run["prod_manifest"], CHANGED, include_start=True) | {PAYMENTS_DAILY}
    assert built == {CHANGED, "model.lakehouse.dim_customers", "model.lakehouse.dim_customers_masked", PAYMENTS_DAILY}
    assert {r["status"] for r in pr_run["run_results"]["results"]} <= {"success", "pass", "no-op"}  # no-op: the exposure
    assert any(r["unique_id"].startswith("test.") for r in pr_run["run_results"]["results"])
    assert pr_run["outcome"].startswith("passed: 4 built")


def test_unchanged_parents_resolve_to_prod_live(pr_run):
    compiled = (pr_run["target"] / "compiled" / "lakehouse" / "models" / "marts" / "dim_customers.sql").read_text()
    assert '"main_pr_7"."stg_customers"' in compiled  # the changed model, as the PR built it
    assert '"main"."int_customer_orders"' in compiled  # unchanged: prod live view, not the stale PR copy
    assert '"main"."country_codes"' in compiled
    columns = {r[0] for r in sql(pr_run["home"], "select column_name from information_schema.columns "
                                  "where table_schema = 'main_pr_7' and table_name = 'stg_customers'")}
    assert "email_length" in columns
    assert "main_pr_7_snapshots" not in schemas(pr_run["home"])  # snapshots never run in CI


def tables(home: Path, schema: str) -> dict[str, str]:
    """The relations of one schema: name → table_type."""
    return dict(sql(home, "select table_name, table_type from information_schema.tables "
                                f"where table_schema = '{schema}'"))


def test_a_changed_custom_schema_model_is_built_into_the_prs_custom_schema(pr_run):
    # fct_payments_daily has `+schema: finance` (prod: main_finance): the PR builds it into main_pr_7_finance.
    home = pr_run["home"]
    result = next(r for r in pr_run["run_results"]["results"] if r["unique_id"] == PAYMENTS_DAILY)
    assert result["relation_name"].endswith('"main_pr_7_finance"."fct_payments_daily"')
    assert tables(home, "main_pr_7_finance") == {"fct_payments_daily": "BASE TABLE"}
    assert "fct_payments_daily" not in tables(home, "main_pr_7")
    assert {s for s in schemas(home) if is_pr_schema(s, "main", PR)} == {"main_pr_7", "main_pr_7_finance"}
    # Prod's is still the production run's view onto its version (test_prod_is_untouched: every prod relation).
    assert pr_run["after"]["main_finance.fct_payments_daily"] == pr_run["before"]["main_finance.fct_payments_daily"]
    assert pr_run["before"]["main_finance.fct_payments_daily"][0] == "VIEW"


def test_prod_is_untouched(pr_run):
    assert pr_run["before"], "the production run left no prod relations to compare"
    assert pr_run["after"] == pr_run["before"]


def test_report_lists_changed_built_and_deferred(pr_run):
    report = pr_run["report"]
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
    report = pr_run["report"]
    rows = _diff_rows(report)
    # rows in base, rows in PR, Δ, key, added, removed, changed, columns changed
    customers = sql(pr_run["home"], "select count(*) from main.stg_customers")[0][0]
    assert rows["stg_customers"] == [f"{customers:,}", f"{customers:,}", "+0", "`customer_id`", "0", "0", "1",
                                     "`first_name` (1), `email_length` (new)"]
    assert rows["dim_customers"] == [f"{customers:,}", f"{customers:,}", "+0", "`customer_id`", "0", "0", "1",
                                     "`first_name` (1)"]
    assert rows["dim_customers_masked"][3:] == ["`customer_id`", "1", "1", "0", "none"]
    payments = sql(pr_run["home"], "select count(*) from main_finance.fct_payments_daily")[0][0]
    assert rows["fct_payments_daily"][:4] == [f"{payments:,}", f"{payments:,}", "+0", "no key: counts only"]
    # the same report, as the markdown file ci.yml posts as the PR comment
    assert (ci_work_dir(builtin_local(), PR) / "report.md").read_text().strip() == report.strip()


def test_drop_ci_schema_removes_only_the_pr_and_is_idempotent(pr_run, caplog):
    home = pr_run["home"]
    # An earlier push built another finance model; PR #71 shares the digits but is another PR.
    sql(home, "create schema if not exists main_pr_7_finance; "
                    "create table main_pr_7_finance.fct_revenue as select 1 as x; "
                    "create schema main_pr_71; create table main_pr_71.keep_me as select 1 as x")
    assert drop_ci_schema(pr_number=PR, environment="local") == ["main_pr_7", "main_pr_7_finance"]
    left = schemas(home)
    assert not {s for s in left if is_pr_schema(s, "main", PR)}
    assert "main_pr_71" in left
    assert prod_data(pr_run["home"]) == pr_run["before"]
    with caplog.at_level(logging.INFO, logger="prefect"):
        assert drop_ci_schema(pr_number=PR, environment="local") == []
    assert "nothing to drop" in caplog.text


CI_PR = 11
HISTORY = "model.lakehouse.dim_customers_history"
SNAPSHOT = "snapshot.lakehouse.snap_customers"


def _state_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def separate_base_run(prod_home, tmp_path_factory):
    """PR #11 checked on an environment of its own, `staging` (schema `ci`, its own state store, the same
    DuckDB file as a Databricks staging catalog shares prod's metastore), against `local` as the base.

    It changes fct_payments_daily (custom schema finance), dim_customers_history (reads the snapshot)
    and the snapshot's config. `staging`'s own live schemas hold decoys of those relations, with one
    row each, so reading or comparing against them instead of the base's shows up.
    """
    project = tmp_path_factory.mktemp("pr-11") / "dbt_project"
    shutil.copytree(BUNDLED_PROJECT, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    _edit(project / "models" / "marts" / "finance" / "fct_payments_daily.sql", ("with payments as", "/* PR 11 */ with payments as"))
    _edit(project / "models" / "marts" / "dim_customers_history.sql", ("with snapshot as", "/* PR 11 */ with snapshot as"))
    _edit(project / "snapshots" / "snap_customers.yml", ("      strategy: timestamp\n", "      strategy: timestamp\n      meta: {pr: 11}\n"))
    warehouse = prod_home / "warehouse.duckdb"
    sql(prod_home, "create schema ci; create schema ci_finance; create schema ci_snapshots; "
                    "create table ci_finance.fct_payments_daily as select * from main_finance.fct_payments_daily limit 1; "
                    "create table ci_snapshots.snap_customers as select * from main_snapshots.snap_customers limit 1; "
                    "create table ci.stg_payments as select * from main.stg_payments limit 1")
    # Prefect refuses file:// for a RemoteFileSystem; fsspec's in-process memory filesystem stands in for s3://.
    own_store, base_store = RemoteFileSystem(basepath=f"memory://staging-state-{CI_PR}"), prod_home / "state"
    staging = DbtEnvironment(adapter="duckdb", schema_name="ci", duckdb_path=str(warehouse), state_store=own_store)
    before = {"prod": prod_data(prod_home), "base_state": _state_files(base_store), "schemas": schemas(prod_home)}
    with saved_block(staging, "staging"):
        state = slim_ci(pr_number=CI_PR, environment="staging", base_environment="local", project_dir=str(project),
                        return_state=True)
        target = ci_work_dir(load_environment("staging"), CI_PR) / "target"
    yield {"outcome": state.result(), "before": before, "target": target, "home": prod_home, "own_store": own_store,
           "after": {"prod": prod_data(prod_home), "base_state": _state_files(base_store), "schemas": schemas(prod_home)},
           "run_results": json.loads((target / "run_results.json").read_text()),
           "report": report_of(state, f"dbt-staging-slim-ci-pr-{CI_PR}")}
    sql(prod_home, "drop schema ci cascade; drop schema ci_finance cascade; drop schema ci_snapshots cascade")


def test_a_separate_base_environment_is_compared_and_deferred_to(separate_base_run):
    run = separate_base_run
    built = {r["unique_id"] for r in run["run_results"]["results"]
             if r["unique_id"].split(".")[0] in {"model", "seed", "snapshot"}}
    # Exactly the change: the base's state was compared (staging's own store is empty: that would be a full build).
    assert built == {PAYMENTS_DAILY, HISTORY}
    assert run["outcome"].startswith("passed: 2 built") and run["outcome"].endswith("in ci_pr_11")
    assert not run["own_store"].filesystem.find(run["own_store"].basepath)
    compiled = (run["target"] / "compiled" / "lakehouse" / "models" / "marts" / "finance" / "fct_payments_daily.sql").read_text()
    assert '"main"."stg_payments"' in compiled and '"main"."fct_orders"' in compiled  # the base's live views
    assert '"ci".' not in compiled
    assert tables(run["home"], "ci_pr_11_finance") == {"fct_payments_daily": "BASE TABLE"}
    assert tables(run["home"], "ci_pr_11") == {"dim_customers_history": "BASE TABLE"}
    # The data diff compares with the base's live relations, not staging's one-row decoys.
    table = run["report"].split("## Data diff against `local`")[1].split("\n## ")[0]
    payments = sql(run["home"], "select count(*) from main_finance.fct_payments_daily")[0][0]
    assert f"| fct_payments_daily | {payments:,} | {payments:,} | +0 |" in table
    assert payments > 1


def test_a_separate_base_environment_is_untouched(separate_base_run):
    run = separate_base_run
    assert run["before"]["prod"] and run["before"]["base_state"]
    assert run["after"]["prod"] == run["before"]["prod"]
    assert run["after"]["base_state"] == run["before"]["base_state"]  # every file of the base's state store
    created = run["after"]["schemas"] - run["before"]["schemas"]
    assert created == {"ci_pr_11", "ci_pr_11_finance"} and run["after"]["schemas"] >= run["before"]["schemas"]


def test_a_ref_to_a_snapshot_resolves_to_the_base_snapshot(separate_base_run):
    run = separate_base_run
    compiled = (run["target"] / "compiled" / "lakehouse" / "models" / "marts" / "dim_customers_history.sql").read_text()
    assert '"main_snapshots"."snap_customers"' in compiled
    assert '"ci_snapshots"' not in compiled and "_pr_11" not in compiled
    # The snapshot changed in the PR, yet it was not run: nothing of it in the PR's schemas.
    assert SNAPSHOT not in {r["unique_id"] for r in run["run_results"]["results"]}
    assert f"`{SNAPSHOT}`" in run["report"].split("## Not run in CI")[1]
    assert '| snap_customers | snapshot | deferred | — | `"warehouse"."main_snapshots"."snap_customers"` |' in run["report"]
    assert not any("snap_customers" in tables(run["home"], s) for s in run["after"]["schemas"]
                   if is_pr_schema(s, "ci", CI_PR))
    # Built from prod's full history (not the decoy's one row): the same rows as prod's.
    assert sql(run["home"], "select count(*) from (select * from ci_pr_11.dim_customers_history "
                                  "except select * from main.dim_customers_history)") == [(0,)]
    history = sql(run["home"], "select count(*) from main.dim_customers_history")[0][0]
    assert sql(run["home"], "select count(*) from ci_pr_11.dim_customers_history")[0][0] == history > 1


def test_a_duckdb_base_in_another_file_is_refused_before_any_work(lakehouse_home, tmp_path):
    # Deferred refs name the base's relations by the DuckDB file's name: another file cannot serve them.
    elsewhere = DbtEnvironment(adapter="duckdb", schema_name="ci", duckdb_path=str(tmp_path / "warehouse.duckdb"))
    with saved_block(elsewhere, "staging"):
        state = slim_ci(pr_number=CI_PR, environment="staging", base_environment="local", return_state=True)
    assert state.is_failed() and "same warehouse file" in str(state.message)
    assert not (tmp_path / "warehouse.duckdb").exists() and not (lakehouse_home / "warehouse.duckdb").exists()
    assert not (lakehouse_home / "work").exists()


def test_no_base_state_falls_back_to_a_full_build(landed_home, caplog):
    with caplog.at_level(logging.INFO, logger="prefect"):
        outcome = slim_ci(pr_number=8, environment="local", base_environment="local")
    assert "falling back to a FULL BUILD" in caplog.text
    assert outcome.startswith("passed")
    built = {r[0] for r in sql(landed_home,
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
    before = prod_data(prod_home)
    state = slim_ci(pr_number=9, environment="local", base_environment="local", project_dir=str(project),
                    return_state=True)
    assert state.is_failed() and "not_null_stg_customers_customer_id" in state.message
    failures = report_of(state, "dbt-local-slim-ci-pr-9").split("## Failures")[1]
    assert "not_null_stg_customers_customer_id" in failures and "compiled SQL" in failures
    assert prod_data(prod_home) == before


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
    state = slim_ci(pr_number=PR, environment="local", base_environment="local", project_dir=str(project),
                    return_state=True)
    assert state.result().startswith("passed: 1 built, 1 deferred")  # items_report built; base_items deferred
    report = report_of(state, f"dbt-local-slim-ci-pr-{PR}")
    changed, deferred = report.split("## Changed")[1].split("## Built downstream")[0], report.split("## Deferred")[1]
    assert "items_clean" in changed and "ephemeral" in changed
    assert "base_items" in deferred and '"main"."base_items"' in deferred
    assert "items_clean" not in deferred and "not in the base state" not in report
    assert sql(lakehouse_home, f"select items from {pr_schema('main', PR)}.items_report") == [(1,)]
