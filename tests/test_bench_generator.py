"""bench/generate_project.py: node count near N, deterministic output, and dbt parses it."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
N = 60  # above the generator's floor (MIN_NODES), so the total is exactly N


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "bench_generate_project", ROOT / "bench" / "generate_project.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _project_files(project: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(project)): p.read_bytes()
        for p in sorted(project.rglob("*"))
        if p.is_file() and p.suffix in {".sql", ".yml", ".csv"}
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench_gen")
    first = gen.generate_project(N, base / "a")
    second = gen.generate_project(N, base / "b", warehouse=base / "wh" / "b.duckdb")
    return base, first, second


def test_node_count_within_tolerance(generated):
    base, summary, _ = generated
    project = base / "a"
    assert N >= gen.MIN_NODES
    counts = {kind: count for kind, count in summary["nodes"].items() if kind != "total"}
    assert summary["nodes"]["total"] == sum(counts.values()) == N, counts
    assert all(counts[kind] > 0 for kind in ("model", "test", "seed", "snapshot", "source", "unit_test")), counts
    assert all(count > 0 for count in summary["other"].values()), summary["other"]
    assert summary["profile_name"] == "bench"
    assert summary["project_dir"] == str(project.resolve())
    assert Path(summary["warehouse"]) == (project / "warehouse.duckdb").resolve()
    assert len(summary["sources"]) >= 4
    # Layers: staging / intermediate / marts all present, one YAML per folder.
    for folder, prefixes in {
        "staging": ("stg_",),
        "intermediate": ("int_",),
        "marts": ("fct_", "dim_"),
    }.items():
        path = project / "models" / folder
        sqls = list(path.glob("*.sql"))
        assert any(p.name.startswith(prefixes) for p in sqls)
        assert list(path.glob("*.yml"))
    project_yml = yaml.safe_load((project / "dbt_project.yml").read_text())
    assert project_yml["name"] == "bench" and project_yml["profile"] == "bench"
    assert project_yml["config-version"] == 2


def test_generation_is_deterministic(generated):
    base, first, second = generated
    a, b = _project_files(base / "a"), _project_files(base / "b")
    assert a and a == b
    assert first["nodes"] == second["nodes"]
    assert first["sources"] == second["sources"]


def test_raw_data_is_deterministic_and_fresh(generated):
    base, first, second = generated

    def snapshot(path: str):
        con = duckdb.connect(path, read_only=True)
        try:
            data = {
                t: con.execute(
                    f"select id, entity_key, category, amount, quantity, event_ts "
                    f"from raw.{t} order by id"
                ).fetchall()
                for t in first["sources"]
            }
            age = con.execute(
                "select max(epoch(cast(now() at time zone 'UTC' as timestamp) - _loaded_at)) "
                f"from raw.{first['sources'][0]}"
            ).fetchone()[0]
            return data, age
        finally:
            con.close()

    data_a, age = snapshot(first["warehouse"])
    data_b, _ = snapshot(second["warehouse"])
    assert data_a == data_b
    assert all(50 <= len(rows) <= 200 for rows in data_a.values())
    assert -5 < age < 600  # _loaded_at is now in naive UTC, not shifted by the local zone


def test_land_fresher_appends_a_row(tmp_path):
    summary = gen.generate_project(N, tmp_path / "p")
    table = summary["sources"][1]

    def count():
        con = duckdb.connect(summary["warehouse"], read_only=True)
        try:
            return con.execute(f"select count(*), count(distinct id) from raw.{table}").fetchone()
        finally:
            con.close()

    before = count()
    gen.land_fresher(Path(summary["warehouse"]), table)
    gen.land_fresher(Path(summary["warehouse"]), f"raw.{table}")
    assert count() == (before[0] + 2, before[1] + 2)


def test_dbt_parse_counts_match(generated, tmp_path):
    sibling = Path(sys.executable).with_name("dbt")
    dbt = str(sibling) if sibling.exists() else shutil.which("dbt")
    assert dbt, "the dbt CLI is a hard dependency: neither next to this Python nor on PATH"
    base, summary, _ = generated
    gen.write_profiles(tmp_path / "profiles", Path(summary["warehouse"]))
    target = ["--target-path", str(tmp_path / "target")]
    for verb in (["deps"], ["parse", "--no-partial-parse", *target]):  # the project has a local package
        result = subprocess.run(
            [
                dbt, *verb,
                "--project-dir", summary["project_dir"],
                "--profiles-dir", str(tmp_path / "profiles"),
                "--log-path", str(tmp_path / "logs"),
            ],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    counts: dict[str, int] = {}
    for node in manifest["nodes"].values():
        counts[node["resource_type"]] = counts.get(node["resource_type"], 0) + 1
    counts["source"] = len(manifest["sources"])
    counts["unit_test"] = len(manifest["unit_tests"])
    for key, kind in (("exposures", "exposure"), ("metrics", "metric"), ("semantic_models", "semantic_model"),
                      ("saved_queries", "saved_query")):
        counts[kind] = len(manifest[key])
    expected = {k: v for k, v in summary["nodes"].items() if k != "total"}
    assert counts == {**expected, **summary["other"]}
