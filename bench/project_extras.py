"""What makes a generated bench project look like a real one: every resource type dbt has.

Real projects are where users run the product, so every generated project, at every size, has:
- a local package (`packages.yml` with `local:`, so `dbt deps` works offline) with a macro and a model;
- a project macro, on-run-start / on-run-end hooks, an analysis;
- a Python model, an ephemeral model, an incremental and a microbatch incremental model;
- a versioned model (`versions:` with `latest_version`) with an enforced contract;
- a snapshot of a model, unit tests, a group with model access;
- exposures, a time spine, a semantic model, metrics and a saved query, declared in the marts
  folder, so a layer's `path:` selector matches them too.

Pure functions of their arguments, like project_templates.py: the same N gives the same bytes.
"""

from __future__ import annotations

from project_data import SOURCE_NAME

PACKAGE_NAME = "bench_utils"
GROUP_NAME = "finance"

# Nodes the extras add, by resource type (counted like the rest: models, tests, snapshots...).
EXTRA_MODELS = 11  # package model; python, ephemeral, events; incremental, microbatch, cents; 2 versions, spine, ratios
EXTRA_TESTS = 3  # data tests on the versioned model and the incremental model
EXTRA_SNAPSHOTS = 1
EXTRA_UNIT_TESTS = 2
EXTRA_NODES = EXTRA_MODELS + EXTRA_TESTS + EXTRA_SNAPSHOTS + EXTRA_UNIT_TESTS
EXPOSURES = 3
METRICS = 2
SEMANTIC_MODELS = 1
SAVED_QUERIES = 1
ANALYSES = 1
HOOKS = 2  # one on-run-start, one on-run-end: dbt lists each as an `operation` node


def packages_yml() -> str:
    return f"packages:\n  - local: packages/{PACKAGE_NAME}\n"


def package_files() -> dict[str, str]:
    """A local package: a macro the project calls and a model of its own."""
    root = f"packages/{PACKAGE_NAME}"
    return {
        f"{root}/dbt_project.yml": (
            f"name: {PACKAGE_NAME}\nversion: \"1.0.0\"\nconfig-version: 2\n"
            "model-paths: [\"models\"]\nmacro-paths: [\"macros\"]\n"
            f"models:\n  {PACKAGE_NAME}:\n    +materialized: table\n"
        ),
        f"{root}/macros/money.sql": (
            "{% macro to_cents(column) -%}\n"
            "    cast(round({{ column }} * 100) as bigint)\n"
            "{%- endmacro %}\n"
        ),
        f"{root}/models/utils_numbers.sql": "select range as n from range(0, 100)\n",
    }


def project_macros() -> dict[str, str]:
    return {
        "macros/safe_divide.sql": (
            "{% macro safe_divide(numerator, denominator) -%}\n"
            "    case when {{ denominator }} = 0 then null else {{ numerator }} / {{ denominator }} end\n"
            "{%- endmacro %}\n"
        ),
    }


def project_yml_extras() -> str:
    """Appended to dbt_project.yml: hooks, analyses, the marts group."""
    return (
        "analysis-paths: [\"analyses\"]\n"
        "\n"
        "on-run-start:\n"
        "  - \"select 1 as on_run_start\"\n"
        "on-run-end:\n"
        "  - \"select 1 as on_run_end\"\n"
    )


def staging_extras(table: str, staging: str) -> dict[str, str]:
    """A Python model, an ephemeral model and an event-time model over staging model `staging`."""
    return {
        f"models/staging/stg_{table}__events.sql": (
            "{{ config(event_time='event_date') }}\n"  # what lets microbatch filter its input per batch
            f"select id, entity_key, amount, event_date from {{{{ ref('{staging}') }}}}\n"
        ),
        f"models/staging/stg_{table}__python.py": (
            "def model(dbt, session):\n"
            "    dbt.config(materialized=\"table\")\n"
            f"    return dbt.ref(\"{staging}\").filter(\"amount > 0\")\n"
        ),
        f"models/staging/stg_{table}__ephemeral.sql": (
            "{{ config(materialized='ephemeral') }}\n"
            f"select id, entity_key, {{{{ {PACKAGE_NAME}.to_cents('amount') }}}} as amount_cents\n"
            f"from {{{{ ref('{staging}') }}}}\n"
        ),
    }


def intermediate_extras(table: str, staging: str) -> dict[str, str]:
    """An incremental and a microbatch incremental model, and a model reading the ephemeral one."""
    return {
        f"models/intermediate/int_{table}__incremental.sql": (
            "{{ config(materialized='incremental', unique_key='id') }}\n"
            f"select id, entity_key, amount, event_date from {{{{ ref('{staging}') }}}}\n"
            "{% if is_incremental() %}\n"
            "where event_date >= (select coalesce(max(event_date), date '1900-01-01') from {{ this }})\n"
            "{% endif %}\n"
        ),
        f"models/intermediate/int_{table}__microbatch.sql": (
            "{{ config(materialized='incremental', incremental_strategy='microbatch',\n"
            "          event_time='event_date', begin='2024-01-01', batch_size='year') }}\n"
            f"select id, entity_key, amount, event_date from {{{{ ref('stg_{table}__events') }}}}\n"
        ),
        f"models/intermediate/int_{table}__cents.sql": (
            f"select id, entity_key, amount_cents from {{{{ ref('stg_{table}__ephemeral') }}}}\n"
        ),
    }


def marts_extras(table: str, fact: str) -> dict[str, str]:
    """Versioned model (two versions), a time spine, a model using the project macro."""
    versioned = (
        "select\n"
        "    cast(entity_key as integer) as entity_key,\n"
        "    cast(count(*) as bigint) as n_rows,\n"
        "    cast(sum(amount) as decimal(18, 2)) as amount__EXTRA__\n"
        f"from {{{{ ref('{fact}') }}}}\n"
        "group by entity_key\n"
    )
    return {
        "models/marts/dim_entities_v1.sql": versioned.replace("__EXTRA__", ""),
        "models/marts/dim_entities_v2.sql": versioned.replace(
            "__EXTRA__", ",\n    cast(max(event_date) as date) as last_event_date"),
        "models/marts/metricflow_time_spine.sql": (
            "select cast(range as date) as date_day\n"
            "from range(date '2023-01-01', date '2027-01-01', interval 1 day)\n"
        ),
        f"models/marts/fct_{table}__ratios.sql": (
            "select id, entity_key, event_date,\n"
            "    {{ safe_divide('amount', 'quantity') }} as amount_per_unit\n"
            f"from {{{{ ref('{fact}') }}}}\n"
        ),
    }


def analysis_files(fact: str) -> dict[str, str]:
    return {"analyses/amount_by_category.sql": (
        f"select category, sum(amount) as amount from {{{{ ref('{fact}') }}}} group by category\n")}


def snapshot_of_model_yaml(staging: str) -> str:
    return "\n".join([
        "snapshots:",
        f"  - name: snap_{staging}",
        f"    relation: ref('{staging}')",
        "    config:",
        "      schema: snapshots",
        "      unique_key: id",
        "      strategy: check",
        "      check_cols: [amount, category]",
    ]) + "\n"


def staging_unit_tests_yaml(table: str, staging: str) -> str:
    """A unit test of a staging model (reads a source) and one of the Python model's input."""
    return "\n".join([
        "unit_tests:",
        f"  - name: {staging}_lowercases_category",
        f"    model: {staging}",
        "    given:",
        f"      - input: source('{SOURCE_NAME}', '{table}')",
        "        rows:",
        "          - {id: 1, entity_key: 7, category: \" ALPHA \", amount: 2.5, quantity: 1,"
        " event_ts: \"2024-01-01 10:00:00\", _loaded_at: \"2024-01-02 00:00:00\"}",
        "    expect:",
        "      rows:",
        "        - {id: 1, entity_key: 7, category: alpha}",
        f"  - name: int_{table}__cents_converts_to_cents",
        f"    model: int_{table}__cents",
        "    given:",
        f"      - input: ref('stg_{table}__ephemeral')",
        "        format: sql",
        "        rows: |",
        "          select 1 as id, 7 as entity_key, 250 as amount_cents",
        "    expect:",
        "      rows:",
        "        - {id: 1, entity_key: 7, amount_cents: 250}",
    ]) + "\n"


def intermediate_yaml(table: str) -> str:
    return "\n".join([
        "version: 2",
        "",
        "models:",
        f"  - name: int_{table}__incremental",
        "    description: \"Incremental: appends the rows of newer days\"",
        "    columns:",
        "      - name: id",
        "        data_tests:",
        "          - not_null",
        f"  - name: int_{table}__microbatch",
        "    description: \"Microbatch incremental, one batch per year of event_date\"",
    ]) + "\n"


def marts_yaml(table: str, fact: str, dims: list[str]) -> str:
    """The versioned model, time spine, group, exposures and the semantic layer, all in marts."""
    exposures = []
    parents = [fact, *dims]
    for i in range(1, EXPOSURES + 1):
        parent = parents[(i - 1) % len(parents)]  # small projects have few marts to point at
        exposures += [
            f"  - name: dashboard_{i}",
            "    type: dashboard",
            "    maturity: high",
            f"    url: https://bi.example.com/dashboards/{i}",
            "    owner: {name: BI team, email: bi@example.com}",
            f"    depends_on: [ref('{parent}'), ref('dim_entities')]",
        ]
    return "\n".join([
        "version: 2",
        "",
        "groups:",
        f"  - name: {GROUP_NAME}",
        "    owner: {name: Finance, email: finance@example.com}",
        "",
        "models:",
        "  - name: dim_entities",
        "    description: \"One row per entity (versioned, contract enforced)\"",
        "    latest_version: 2",
        f"    config: {{contract: {{enforced: true}}, group: {GROUP_NAME}, access: public}}",
        "    columns:",
        "      - name: entity_key",
        "        data_type: integer",
        "        constraints: [{type: not_null}]",
        "        data_tests: [unique]",
        "      - name: n_rows",
        "        data_type: bigint",
        "      - name: amount",
        "        data_type: decimal(18, 2)",
        "      - name: last_event_date",
        "        data_type: date",
        "    versions:",
        "      - v: 1",
        "        columns: [{include: all, exclude: [last_event_date]}]",
        "      - v: 2",
        "  - name: metricflow_time_spine",
        "    description: \"One row per day, for the semantic layer\"",
        "    time_spine:",
        "      standard_granularity_column: date_day",
        "    columns:",
        "      - name: date_day",
        "        granularity: day",
        f"  - name: fct_{table}__ratios",
        f"    config: {{group: {GROUP_NAME}, access: private}}",
        "",
        "exposures:",
        *exposures,
        "",
        "semantic_models:",
        f"  - name: {table}_facts",
        f"    model: ref('{fact}')",
        "    defaults: {agg_time_dimension: event_date}",
        "    entities:",
        "      - {name: fact_row, type: primary, expr: id}",
        "      - {name: entity, type: foreign, expr: entity_key}",
        "    dimensions:",
        "      - {name: event_date, type: time, type_params: {time_granularity: day}}",
        "      - {name: category, type: categorical}",
        "    measures:",
        "      - {name: amount_total, agg: sum, expr: amount}",
        "      - {name: fact_rows, agg: count, expr: id}",
        "",
        "metrics:",
        "  - name: total_amount",
        "    label: Total amount",
        "    type: simple",
        "    type_params: {measure: amount_total}",
        "  - name: fact_row_count",
        "    label: Fact rows",
        "    type: simple",
        "    type_params: {measure: fact_rows}",
        "",
        "saved_queries:",
        "  - name: amount_by_category",
        "    query_params:",
        "      metrics: [total_amount, fact_row_count]",
        "      group_by: [\"Dimension('fact_row__category')\"]",
    ]) + "\n"


def extra_files(table: str, staging: str, fact: str, dims: list[str]) -> dict[str, str]:
    """Every extra file. `table` is a raw table whose staging model is `staging`; `fact` and
    `dims` are generated marts the extras read (the semantic layer, exposures)."""
    return {
        "packages.yml": packages_yml(),
        **package_files(),
        **project_macros(),
        **staging_extras(table, staging),
        **intermediate_extras(table, staging),
        **marts_extras(table, fact),
        **analysis_files(fact),
        "snapshots/_model_snapshots.yml": snapshot_of_model_yaml(staging),
        "models/staging/_extras.yml": staging_unit_tests_yaml(table, staging),
        "models/intermediate/_extras.yml": intermediate_yaml(table),
        "models/marts/_extras.yml": marts_yaml(table, fact, dims),
    }
