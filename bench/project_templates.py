"""The files of a generated bench project: each model's SQL, the YAML per folder, the project,
seed and snapshot files. Pure functions of their arguments, so the same N gives the same bytes."""

from __future__ import annotations

import json

from project_data import CATEGORIES, SEGMENTS, SOURCE_NAME, SOURCE_SCHEMA

PROFILE_NAME = "bench"
SEED_NAME = "segments"


# --------------------------------------------------------------------------- SQL

_COLUMNS = "id, entity_key, category, amount, quantity, event_date"


def staging_sql(table: str, variant: int, with_seed: bool) -> str:
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


def _base_and_side_ctes(base: str, side_ctes: list[str]) -> list[str]:
    return ["with base as (", f"    select {_COLUMNS}", f"    from {{{{ ref('{base}') }}}}", ")", *side_ctes]


def enrich_sql(parents: list[str], factor: int) -> str:
    """Row-preserving: the first parent enriched with per-key aggregates of the others."""
    base, side = parents[0], parents[1:]
    ctes, joins = _side_ctes(side)
    amount = "base.amount" + "".join(f" + coalesce(p{j}.amount, 0)" for j in range(1, len(side) + 1))
    quantity = "base.quantity" + "".join(f" + coalesce(p{j}.n_rows, 0)" for j in range(1, len(side) + 1))
    event_date = "base.event_date"
    for j in range(1, len(side) + 1):
        event_date = f"greatest({event_date}, coalesce(p{j}.event_date, base.event_date))"
    lines = [
        *_base_and_side_ctes(base, ctes),
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


def aggregate_sql(parents: list[str]) -> str:
    """One row per entity_key (id = entity_key) over the first parent joined to the others."""
    base, side = parents[0], parents[1:]
    ctes, joins = _side_ctes(side)
    side_amount = "".join(f" + coalesce(max(p{j}.amount), 0)" for j in range(1, len(side) + 1))
    lines = [
        *_base_and_side_ctes(base, ctes),
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


# Real projects configure freshness on few sources (a public 1,058-model project: 12 of its 58), so
# only every fifth table here has it (the first always); the gate dates the others by their signal.
FRESHNESS_EVERY = 5


def staging_yaml(tables: list[str], models: list[tuple[str, str, int]]) -> str:
    lines = [
        "version: 2",
        "",
        "sources:",
        f"  - name: {SOURCE_NAME}",
        f"    schema: {SOURCE_SCHEMA}",
        "    description: \"Raw tables landed by bench/generate_project.py\"",
        "    tables:",
    ]
    for index, table in enumerate(tables):
        lines.append(f"      - name: {table}")
        if index % FRESHNESS_EVERY == 0:
            lines += [
                "        config:",
                "          loaded_at_field: _loaded_at",
                "          freshness:",
                "            warn_after: {count: 24, period: hour}",
                "            error_after: {count: 72, period: hour}",
            ]
        lines += [
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


def models_yaml(models: list[tuple[str, str, int]]) -> str:
    lines = ["version: 2", "", "models:"]
    for name, description, tests in models:
        lines += _model_yaml(name, description, tests)
    return "\n".join(lines) + "\n"


DBT_PROJECT = """\
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


def seed_files() -> tuple[str, str]:
    csv = "category,segment\n" + "".join(
        f"{c},{s}\n" for c, s in zip(CATEGORIES, SEGMENTS, strict=True)
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


def snapshot_yaml(table: str) -> str:
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
