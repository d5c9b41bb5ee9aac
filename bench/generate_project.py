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
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

PROFILE_NAME = "bench"
SOURCE_NAME = "raw"
SOURCE_SCHEMA = "raw"
SEED_NAME = "segments"
MIN_NODES = 26

_TABLE_NAMES = [
    "orders", "customers", "payments", "products", "shipments", "invoices",
    "sessions", "refunds", "subscriptions", "events", "accounts", "carts",
    "returns", "reviews", "suppliers", "inventory", "campaigns", "clicks",
    "tickets", "contracts", "employees", "stores", "deliveries", "promotions",
    "leads", "opportunities", "transfers", "ledgers", "devices", "visits",
]
_CATEGORIES = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
_SEGMENTS = ["enterprise", "mid_market", "smb", "consumer", "enterprise", "smb"]
_ENTITY_KEYS = 40
_GENERATED_DIRS = ("models", "seeds", "snapshots")


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
    fixed = s + 2 * s + 1 + 1  # sources, source tests (not_null+unique), seed, snapshot
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


# --------------------------------------------------------------------------- SQL

_COLUMNS = "id, entity_key, category, amount, quantity, event_date"


def _staging_sql(table: str, variant: int, with_seed: bool) -> str:
    where = "where source.id is not null"
    amount = "cast(source.amount as decimal(18, 2))"
    if variant:
        where += f"\n  and source.quantity % {2 + variant % 5} <> 0"
        amount = f"cast(source.amount * {1 + variant % 7 / 10:.1f} as decimal(18, 2))"
    lines = [
        "with source as (",
        f"    select * from {{{{ source('{SOURCE_NAME}', '{table}') }}}}",
        ")",
    ]
    if with_seed:
        lines += [
            ", segments as (",
            f"    select category, segment from {{{{ ref('{SEED_NAME}') }}}}",
            ")",
        ]
    lines += [
        "select",
        "    source.id,",
        "    source.entity_key,",
        "    lower(trim(source.category)) as category,",
        f"    {amount} as amount,",
        "    source.quantity,",
        "    cast(source.event_ts as date) as event_date,",
    ]
    if with_seed:
        lines.append("    coalesce(segments.segment, 'unknown') as segment,")
    lines.append("    source._loaded_at")
    lines.append("from source")
    if with_seed:
        lines.append("left join segments on lower(trim(source.category)) = segments.category")
    lines.append(where)
    return "\n".join(lines) + "\n"


def _side_ctes(parents: list[str]) -> tuple[list[str], list[str]]:
    """CTEs aggregating each side parent per entity_key, plus their join clauses."""
    ctes, joins = [], []
    for j, parent in enumerate(parents, start=1):
        ctes += [
            f", p{j} as (",
            "    select",
            "        entity_key,",
            "        sum(amount) as amount,",
            "        count(*) as n_rows,",
            "        max(event_date) as event_date",
            f"    from {{{{ ref('{parent}') }}}}",
            "    group by entity_key",
            ")",
        ]
        joins.append(f"left join p{j} on base.entity_key = p{j}.entity_key")
    return ctes, joins


def _enrich_sql(parents: list[str], factor: int) -> str:
    """Row-preserving: the first parent enriched with per-key aggregates of the others."""
    base, side = parents[0], parents[1:]
    ctes, joins = _side_ctes(side)
    amount = "base.amount" + "".join(f" + coalesce(p{j}.amount, 0)" for j in range(1, len(side) + 1))
    quantity = "base.quantity" + "".join(f" + coalesce(p{j}.n_rows, 0)" for j in range(1, len(side) + 1))
    event_date = "base.event_date"
    for j in range(1, len(side) + 1):
        event_date = f"greatest({event_date}, coalesce(p{j}.event_date, base.event_date))"
    lines = [
        "with base as (",
        f"    select {_COLUMNS}",
        f"    from {{{{ ref('{base}') }}}}",
        ")",
        *ctes,
        "select",
        "    base.id,",
        "    base.entity_key,",
        "    base.category,",
        f"    cast(({amount}) * {factor} / 10 as decimal(18, 2)) as amount,",
        f"    {quantity} as quantity,",
        f"    {event_date} as event_date",
        "from base",
        *joins,
    ]
    return "\n".join(lines) + "\n"


def _aggregate_sql(parents: list[str]) -> str:
    """One row per entity_key (id = entity_key) over the first parent joined to the others."""
    base, side = parents[0], parents[1:]
    ctes, joins = _side_ctes(side)
    side_amount = "".join(f" + coalesce(max(p{j}.amount), 0)" for j in range(1, len(side) + 1))
    lines = [
        "with base as (",
        f"    select {_COLUMNS}",
        f"    from {{{{ ref('{base}') }}}}",
        ")",
        *ctes,
        "select",
        "    base.entity_key as id,",
        "    base.entity_key,",
        "    min(base.category) as category,",
        f"    cast(sum(base.amount){side_amount} as decimal(18, 2)) as amount,",
        "    sum(base.quantity) as quantity,",
        "    max(base.event_date) as event_date",
        "from base",
        *joins,
        "group by base.entity_key",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- YAML


def _model_yaml(name: str, description: str, tests: int) -> list[str]:
    lines = [
        f"  - name: {name}",
        f"    description: {json.dumps(description)}",
        "    columns:",
        "      - name: id",
        "        data_tests:",
        "          - not_null",
    ]
    if tests >= 2:
        lines.append("          - unique")
    return lines


def _staging_yaml(tables: list[str], models: list[tuple[str, str, int]]) -> str:
    lines = [
        "version: 2",
        "",
        "sources:",
        f"  - name: {SOURCE_NAME}",
        f"    schema: {SOURCE_SCHEMA}",
        "    description: \"Raw tables landed by bench/generate_project.py\"",
        "    config:",
        "      loaded_at_field: _loaded_at",
        "      freshness:",
        "        warn_after: {count: 24, period: hour}",
        "        error_after: {count: 72, period: hour}",
        "    tables:",
    ]
    for table in tables:
        lines += [
            f"      - name: {table}",
            "        columns:",
            "          - name: id",
            "            data_tests:",
            "              - not_null",
            "              - unique",
        ]
    lines += ["", "models:"]
    for name, description, tests in models:
        lines += _model_yaml(name, description, tests)
    return "\n".join(lines) + "\n"


def _models_yaml(models: list[tuple[str, str, int]]) -> str:
    lines = ["version: 2", "", "models:"]
    for name, description, tests in models:
        lines += _model_yaml(name, description, tests)
    return "\n".join(lines) + "\n"


_DBT_PROJECT = """\
name: bench
version: "1.0.0"
config-version: 2
profile: bench

model-paths: ["models"]
seed-paths: ["seeds"]
snapshot-paths: ["snapshots"]
test-paths: ["tests"]
macro-paths: ["macros"]
clean-targets: ["target"]

models:
  bench:
    +materialized: table
"""


def _seed_files() -> tuple[str, str]:
    csv = "category,segment\n" + "".join(
        f"{c},{s}\n" for c, s in zip(_CATEGORIES, _SEGMENTS)
    )
    yml = "\n".join([
        "version: 2",
        "",
        "seeds:",
        f"  - name: {SEED_NAME}",
        "    description: \"Category to customer segment mapping\"",
        "    config:",
        "      column_types:",
        "        category: varchar",
        "        segment: varchar",
    ]) + "\n"
    return csv, yml


def _snapshot_yaml(table: str) -> str:
    return "\n".join([
        "snapshots:",
        f"  - name: snap_{table}",
        f"    relation: source('{SOURCE_NAME}', '{table}')",
        "    config:",
        "      schema: snapshots",
        "      unique_key: id",
        "      strategy: timestamp",
        "      updated_at: _loaded_at",
    ]) + "\n"


# --------------------------------------------------------------------------- data


def _now_utc_naive() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def _table_rows(n_nodes: int, table_index: int) -> list[tuple]:
    rng = random.Random(f"bench-data-{n_nodes}-{table_index}")
    count = rng.randint(50, 200)
    start = date(2024, 1, 1)
    rows = []
    for i in range(1, count + 1):
        rows.append((
            i,
            rng.randint(1, _ENTITY_KEYS),
            rng.choice(_CATEGORIES).upper() if rng.random() < 0.2 else rng.choice(_CATEGORIES),
            round(rng.uniform(1, 500), 2),
            rng.randint(1, 12),
            datetime.combine(start + timedelta(days=rng.randint(0, 364)), datetime.min.time())
            + timedelta(seconds=rng.randint(0, 86399)),
        ))
    return rows


_RAW_DDL = """
create or replace table {schema}.{table} (
    id integer,
    entity_key integer,
    category varchar,
    amount double,
    quantity integer,
    event_ts timestamp,
    _loaded_at timestamp
)
"""


def _land(warehouse: Path, n_nodes: int, tables: list[str]) -> None:
    import duckdb

    now = _now_utc_naive()
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(f"create schema if not exists {SOURCE_SCHEMA}")
        for index, table in enumerate(tables):
            con.execute(_RAW_DDL.format(schema=SOURCE_SCHEMA, table=table))
            rows = [row + (now,) for row in _table_rows(n_nodes, index)]
            con.executemany(
                f"insert into {SOURCE_SCHEMA}.{table} values (?, ?, ?, ?, ?, ?, ?)", rows
            )
    finally:
        con.close()


def land_fresher(warehouse: Path, source: str) -> None:
    """Append one row to raw table ``source`` (``orders`` or ``raw.orders``) with
    ``_loaded_at`` = now (naive UTC)."""
    import duckdb

    table = source.split(".")[-1]
    if not table.replace("_", "").isalnum():
        raise ValueError(f"bad source table name: {source!r}")
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(
            f"""
            insert into {SOURCE_SCHEMA}.{table}
            select coalesce(max(id), 0) + 1, 1, 'alpha', 10.0, 1, ?, ?
            from {SOURCE_SCHEMA}.{table}
            """,
            [_now_utc_naive(), _now_utc_naive()],
        )
    finally:
        con.close()


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

    files: dict[str, str] = {"dbt_project.yml": _DBT_PROJECT}
    csv, seeds_yml = _seed_files()
    files[f"seeds/{SEED_NAME}.csv"] = csv
    files["seeds/_seeds.yml"] = seeds_yml
    files["snapshots/_snapshots.yml"] = _snapshot_yaml(tables[0])

    # Staging: one per raw table (the first one joins the seed), then variants.
    staging: list[str] = []
    for i in range(plan["staging"]):
        table = tables[i % len(tables)]
        variant = i // len(tables)
        name = f"stg_{table}" if variant == 0 else f"stg_{table}_v{variant}"
        files[f"models/staging/{name}.sql"] = _staging_sql(table, variant, with_seed=(i == 0))
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
        sql = _aggregate_sql(parents) if aggregate else _enrich_sql(parents, rng.randint(8, 12))
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
        sql = _aggregate_sql(parents) if dim else _enrich_sql(parents, rng.randint(8, 12))
        files[f"models/marts/{name}.sql"] = sql
        marts.append(name)

    # Tests: not_null on every model's id, unique on a seeded subset.
    all_models = staging + intermediate + marts
    two_tests = set(rng.sample(all_models, plan["model_tests"] - len(all_models)))
    tests = {m: 2 if m in two_tests else 1 for m in all_models}

    def described(names: list[str], what: str) -> list[tuple[str, str, int]]:
        return [(m, f"{what} model {m}", tests[m]) for m in names]

    files["models/staging/_staging.yml"] = _staging_yaml(tables, described(staging, "Staging"))
    files["models/intermediate/_intermediate.yml"] = _models_yaml(
        described(intermediate, "Intermediate")
    )
    files["models/marts/_marts.yml"] = _models_yaml(described(marts, "Mart"))

    _prepare_out(out)
    for rel, text in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))

    _land(warehouse, n, tables)

    nodes = {
        "source": len(tables),
        "seed": 1,
        "snapshot": 1,
        "model": len(all_models),
        "test": plan["source_tests"] + sum(tests.values()),
    }
    return {
        "nodes": {**nodes, "total": sum(nodes.values())},
        "models": {
            "staging": len(staging),
            "intermediate": len(intermediate),
            "marts": len(marts),
        },
        "project_dir": str(out),
        "warehouse": str(warehouse),
        "sources": list(tables),
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
