"""The example dbt project parses on DuckDB and Databricks and builds green on DuckDB."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

PROJECT = Path(__file__).resolve().parents[1] / "dbt_project"

_spec = importlib.util.spec_from_file_location("lakehouse_land", PROJECT / "landing" / "land.py")
land = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(land)

PROFILES = {
    "duckdb": """lakehouse:
  target: local
  outputs:
    local: {{type: duckdb, path: "{warehouse}", schema: main, threads: 4}}
    dev: {{type: duckdb, path: "{warehouse}", schema: dev, threads: 4}}
""",
    "databricks": """lakehouse:
  target: prod
  outputs:
    prod: {{type: databricks, host: dummy.cloud.databricks.com, http_path: /sql/1.0/warehouses/abc,
            token: dapi-dummy, catalog: main, schema: analytics, threads: 4}}
""",
}


def dbt(tmp_path: Path, adapter: str, *args: str) -> subprocess.CompletedProcess:
    """Run the dbt CLI in a subprocess against a throw-away profile, target and log dir."""
    profiles = tmp_path / f"profiles-{adapter}"
    profiles.mkdir(exist_ok=True)
    (profiles / "profiles.yml").write_text(PROFILES[adapter].format(warehouse=tmp_path / "warehouse.duckdb"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_")}
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    cmd = [sys.executable, "-c", "from dbt.cli.main import cli; cli()", *args,
           "--project-dir", str(PROJECT), "--profiles-dir", str(profiles),
           "--target-path", str(tmp_path / f"target-{adapter}"), "--log-path", str(tmp_path / "logs")]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"dbt {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    return result


def test_lander_is_deterministic_and_appends(tmp_path):
    first, second = tmp_path / "a" / "w.duckdb", tmp_path / "b" / "w.duckdb"
    assert not land.is_landed(first)
    land.land_initial(first)
    land.land_initial(second)
    assert land.is_landed(first)
    query = "select count(*), sum(amount_cents) from raw.payments"
    with duckdb.connect(str(first), read_only=True) as a, duckdb.connect(str(second), read_only=True) as b:
        assert a.execute(query).fetchone() == b.execute(query).fetchone()
    assert land.land_new_data(first, "orders", 25) == 25
    with duckdb.connect(str(first), read_only=True) as con:
        assert con.execute("select count(*), count(distinct order_id) from raw.orders").fetchone() == (2025, 2025)


# DuckDB's default target is parsed (and built) by the build test below; `dev` covers limit_in_dev.
@pytest.mark.parametrize(("adapter", "target"), [("duckdb", "dev"), ("databricks", "prod")])
def test_parses(tmp_path, adapter, target):
    land.land_initial(tmp_path / "warehouse.duckdb")
    dbt(tmp_path, adapter, "parse", "--target", target)
    manifest = json.loads((tmp_path / f"target-{adapter}" / "manifest.json").read_text())
    nodes = manifest["nodes"].values()
    assert sum(n["resource_type"] == "model" for n in nodes) >= 15
    assert len(manifest["sources"]) >= 4 and manifest["unit_tests"]
    fct_orders = manifest["nodes"]["model.lakehouse.fct_orders"]["config"]
    on_databricks = adapter == "databricks"
    assert fct_orders["persist_docs"] == {"relation": on_databricks, "columns": on_databricks}
    assert fct_orders["incremental_strategy"] == ("merge" if on_databricks else "delete+insert")


def test_build_freshness_and_incremental_on_duckdb(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    land.land_initial(warehouse)
    dbt(tmp_path, "duckdb", "build")
    dbt(tmp_path, "duckdb", "source", "freshness")
    sources = json.loads((tmp_path / "target-duckdb" / "sources.json").read_text())["results"]
    assert {r["status"] for r in sources} == {"pass"}
    assert all(0 <= r["max_loaded_at_time_ago_in_s"] < 3600 for r in sources)  # no time-zone skew

    assert land.land_new_data(warehouse, "orders", 25) == 25
    dbt(tmp_path, "duckdb", "run", "--select", "+fct_orders")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*) from main.fct_orders").fetchone()[0] == 2025
