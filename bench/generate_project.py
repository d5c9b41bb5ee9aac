"""Generate a synthetic dbt project of about N nodes, for benchmarks.

    python bench/generate_project.py N --out DIR [--warehouse PATH]

writes a dbt project (name/profile ``bench``) into DIR and lands its raw data into
a DuckDB file (default ``DIR/warehouse.duckdb``). Nodes counted are
models + tests + seeds + snapshots + sources; the count comes out at exactly N for
N >= 26 (the smallest project the layout allows).

Layout::

    dbt_project.yml
    seeds/segments.csv, seeds/_seeds.yml
    snapshots/_snapshots.yml           one YAML snapshot of raw.<first table>
    models/staging/stg_*.sql           one per raw table, plus variants; _staging.yml
                                       also declares the ``raw`` source
    models/intermediate/int_*.sql      joins / aggregations of 1-3 upstream models
    models/marts/{fct,dim}_*.sql       over intermediates

The files depend only on N (seeded random, no timestamps), so the same N gives
byte-identical files. The raw data is deterministic too, except ``_loaded_at``,
which is the landing time (naive UTC) so ``dbt source freshness`` passes.

Profile to use (not written by the generator; see :func:`write_profiles`)::

    bench:
      target: local
      outputs:
        local: {type: duckdb, path: <warehouse>, schema: main, threads: 4}
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its two halves, also when loaded by path

from project_data import SOURCE_NAME, land, land_fresher  # noqa: E402
import project_extras as extras  # noqa: E402
from project_templates import (  # noqa: E402
    DBT_PROJECT, FRESHNESS_EVERY, PROFILE_NAME, SEED_NAME, aggregate_sql, enrich_sql, models_yaml, seed_files, snapshot_yaml,
    staging_sql, staging_yaml,
)

__all__ = ["MIN_NODES", "PROFILE_NAME", "SOURCE_NAME", "generate_project", "land_fresher", "write_profiles"]

MIN_NODES = 26 + extras.EXTRA_NODES

_TABLE_NAMES = [
    "orders", "customers", "payments", "products", "shipments", "invoices",
    "sessions", "refunds", "subscriptions", "events", "accounts", "carts",
    "returns", "reviews", "suppliers", "inventory", "campaigns", "clicks",
    "tickets", "contracts", "employees", "stores", "deliveries", "promotions",
    "leads", "opportunities", "transfers", "ledgers", "devices", "visits",
]
_GENERATED_DIRS = ("models", "seeds", "snapshots", "macros", "analyses", "packages")


# --------------------------------------------------------------------------- plan


def _source_tables(n_nodes: int) -> list[str]:
    count = max(4, n_nodes // 100)
    names = []
    for i in range(count):
        base = _TABLE_NAMES[i % len(_TABLE_NAMES)]
        names.append(base if i < len(_TABLE_NAMES) else f"{base}_{i // len(_TABLE_NAMES) + 1}")
    return names


def _plan_counts(n_nodes: int) -> dict:
    """How many of each node type; the total is exactly max(n_nodes, MIN_NODES)."""
    n = max(n_nodes, MIN_NODES)
    tables = _source_tables(n)
    s = len(tables)
    fixed = s + 2 * s + 1 + 1 + extras.EXTRA_NODES  # sources, source tests (not_null+unique), seed, snapshot
    rest = n - fixed
    models = max(s + 2, round(rest / 2.2))
    model_tests = rest - models  # between models and 2*models: 1-2 tests per model
    assert models <= model_tests <= 2 * models, (n, models, model_tests)
    staging = max(s, round(0.40 * models))
    intermediate = max(2, round(0.35 * models))
    marts = models - staging - intermediate
    if marts < 1:
        intermediate -= 1 - marts
        marts = 1
    return {
        "tables": tables,
        "staging": staging,
        "intermediate": intermediate,
        "marts": marts,
        "model_tests": model_tests,
        "source_tests": 2 * s,
    }


def _pick_parents(rng: random.Random, unused: list[str], pool: list[str], k: int) -> list[str]:
    """k distinct parents, draining ``unused`` first so every upstream gets a child."""
    parents: list[str] = []
    while unused and len(parents) < k:
        parents.append(unused.pop(0))
    candidates = [p for p in pool if p not in parents]
    rng.shuffle(candidates)
    parents.extend(candidates[: k - len(parents)])
    return parents


# --------------------------------------------------------------------------- main


def _prepare_out(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    project = out / "dbt_project.yml"
    is_bench = project.exists() and project.read_text().startswith("name: bench\n")
    for sub in _GENERATED_DIRS:
        path = out / sub
        if not path.exists():
            continue
        if not is_bench and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and {out} is not a generated bench project")
        shutil.rmtree(path)


def generate_project(n_nodes: int, out: Path, warehouse: Path | None = None) -> dict:
    """Write a ~n_nodes dbt project into ``out`` and land its raw data into ``warehouse``
    (default ``out/warehouse.duckdb``). Returns a summary of what was generated."""
    out = Path(out).resolve()
    warehouse = Path(warehouse).resolve() if warehouse else out / "warehouse.duckdb"
    n = max(int(n_nodes), MIN_NODES)
    plan = _plan_counts(n)
    tables = plan["tables"]
    rng = random.Random(f"bench-project-{n}")

    files: dict[str, str] = {"dbt_project.yml": DBT_PROJECT + extras.project_yml_extras()}
    csv, seeds_yml = seed_files()
    files[f"seeds/{SEED_NAME}.csv"] = csv
    files["seeds/_seeds.yml"] = seeds_yml
    files["snapshots/_snapshots.yml"] = snapshot_yaml(tables[0])

    # Staging: one per raw table (the first one joins the seed), then variants.
    staging: list[str] = []
    for i in range(plan["staging"]):
        table = tables[i % len(tables)]
        variant = i // len(tables)
        name = f"stg_{table}" if variant == 0 else f"stg_{table}_v{variant}"
        files[f"models/staging/{name}.sql"] = staging_sql(table, variant, with_seed=(i == 0))
        staging.append(name)

    # Intermediate: 1-3 parents from staging (unused first) or earlier intermediates.
    intermediate: list[str] = []
    unused_stg = list(staging)
    for i in range(plan["intermediate"]):
        k = rng.choice([1, 2, 2, 3])
        if i == plan["intermediate"] - 1:
            k = max(k, len(unused_stg))  # the last one adopts any staging model still unused
        pool = staging + intermediate if intermediate and rng.random() < 0.5 else staging
        parents = _pick_parents(rng, unused_stg, pool, k)
        if intermediate and len(parents) < 3 and rng.random() < 0.3:
            extra = intermediate[rng.randrange(len(intermediate))]
            if extra not in parents:
                parents.append(extra)
        aggregate = rng.random() < 0.35
        stem = parents[0].removeprefix("stg_").removeprefix("int_").split("__")[0]
        name = f"int_{stem}__{'agg' if aggregate else 'enriched'}_{i + 1:04d}"
        sql = aggregate_sql(parents) if aggregate else enrich_sql(parents, rng.randint(8, 12))
        files[f"models/intermediate/{name}.sql"] = sql
        intermediate.append(name)

    # Marts: fct (row-preserving) and dim (one row per key) over intermediates.
    marts: list[str] = []
    unused_int = list(intermediate)
    for i in range(plan["marts"]):
        k = rng.choice([1, 2, 2, 3])
        if i == plan["marts"] - 1:
            k = max(k, len(unused_int))
        parents = _pick_parents(rng, unused_int, intermediate, k)
        dim = i % 5 in (1, 3)
        stem = parents[0].removeprefix("int_").split("__")[0]
        name = f"{'dim' if dim else 'fct'}_{stem}_{i + 1:04d}"
        sql = aggregate_sql(parents) if dim else enrich_sql(parents, rng.randint(8, 12))
        files[f"models/marts/{name}.sql"] = sql
        marts.append(name)

    # Tests: not_null on every model's id, unique on a seeded subset.
    all_models = staging + intermediate + marts
    two_tests = set(rng.sample(all_models, plan["model_tests"] - len(all_models)))
    tests = {m: 2 if m in two_tests else 1 for m in all_models}

    def described(names: list[str], what: str) -> list[tuple[str, str, int]]:
        return [(m, f"{what} model {m}", tests[m]) for m in names]

    files["models/staging/_staging.yml"] = staging_yaml(tables, described(staging, "Staging"))
    files["models/intermediate/_intermediate.yml"] = models_yaml(
        described(intermediate, "Intermediate")
    )
    files["models/marts/_marts.yml"] = models_yaml(described(marts, "Mart"))

    dims = [m for m in marts if m.startswith("dim_")]
    fact = next(m for m in marts if m.startswith("fct_"))
    files.update(extras.extra_files(tables[1], f"stg_{tables[1]}", fact, dims))

    _prepare_out(out)
    for rel, text in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))

    land(warehouse, n, tables)

    nodes = {
        "source": len(tables),
        "seed": 1,
        "snapshot": 1 + extras.EXTRA_SNAPSHOTS,
        "model": len(all_models) + extras.EXTRA_MODELS,
        "test": plan["source_tests"] + sum(tests.values()) + extras.EXTRA_TESTS,
        "unit_test": extras.EXTRA_UNIT_TESTS,
    }
    return {
        "nodes": {**nodes, "total": sum(nodes.values())},
        "models": {
            "staging": len(staging),
            "intermediate": len(intermediate),
            "marts": len(marts),
        },
        # Not counted as nodes: dbt builds none of them, but layers' selectors match them.
        "other": {"exposure": extras.EXPOSURES, "metric": extras.METRICS, "semantic_model": extras.SEMANTIC_MODELS,
                  "saved_query": extras.SAVED_QUERIES, "analysis": extras.ANALYSES, "operation": extras.HOOKS},
        "project_dir": str(out),
        "warehouse": str(warehouse),
        "sources": list(tables),
        "dated_sources": [t for i, t in enumerate(tables) if i % FRESHNESS_EVERY == 0],  # loaded_at_field
        "profile_name": PROFILE_NAME,
    }


def write_profiles(profiles_dir: Path, warehouse: Path, threads: int = 4) -> Path:
    """Write a profiles.yml for the ``bench`` profile pointing at ``warehouse``."""
    profiles_dir = Path(profiles_dir)
    profiles_dir.mkdir(parents=True, exist_ok=True)
    path = profiles_dir / "profiles.yml"
    path.write_text(
        f"{PROFILE_NAME}:\n"
        "  target: local\n"
        "  outputs:\n"
        "    local:\n"
        "      type: duckdb\n"
        f"      path: {json.dumps(str(Path(warehouse).resolve()))}\n"
        "      schema: main\n"
        f"      threads: {threads}\n"
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nodes", type=int, help=f"target node count (>= {MIN_NODES})")
    parser.add_argument("--out", type=Path, required=True, help="project directory to write")
    parser.add_argument(
        "--warehouse", type=Path, default=None,
        help="DuckDB file for the raw data (default OUT/warehouse.duckdb)",
    )
    parser.add_argument(
        "--profiles-dir", type=Path, default=None,
        help="also write a profiles.yml for the bench profile here",
    )
    args = parser.parse_args(argv)
    summary = generate_project(args.nodes, args.out, args.warehouse)
    if args.profiles_dir:
        summary["profiles_yml"] = str(write_profiles(args.profiles_dir, Path(summary["warehouse"])))
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
