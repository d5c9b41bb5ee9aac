"""What a pull request changes in the data: each model the PR rebuilt, against the base environment's
live relation of the same model.

For every such model: row counts on both sides. When the model has a primary key (a column with
both a `unique` and a `not_null` test, or a `primary_key` constraint): rows added, removed and
changed, and how many rows changed in each column. Everything is computed in the warehouse by one
aggregate query per keyed model (a FULL OUTER JOIN on the key comparing per-column hashes, summed),
so the answer is a handful of numbers whatever the table size: no row leaves the warehouse.

The SQL is plain enough to run on DuckDB and on Databricks SQL; only the hash function differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from flows.core.artifacts import markdown_table
from flows.core.warehouse import Dialect, Relation, Warehouse

# A per-value hash either warehouse computes natively; both take any type and return an integer.
HASH_FUNCTION = {"duckdb": "hash", "databricks": "xxhash64"}
MAX_MODELS = 100  # a PR touching more gets the first 100 diffed and the rest named: the comment stays readable
KEY_TESTS = {"unique", "not_null"}


@dataclass(frozen=True)
class DiffTarget:
    """One rebuilt model: where the PR built it, where the base environment serves it."""

    name: str
    pr: Relation
    base: Relation
    key: tuple[str, ...]  # empty: no primary key, counts only


@dataclass
class ModelDiff:
    name: str
    pr: Relation
    base: Relation
    key: tuple[str, ...]
    pr_rows: Optional[int] = None
    base_rows: Optional[int] = None
    added: Optional[int] = None
    removed: Optional[int] = None
    changed: Optional[int] = None
    changed_by_column: dict[str, int] = field(default_factory=dict)
    columns_added: list[str] = field(default_factory=list)
    columns_removed: list[str] = field(default_factory=list)
    error: Optional[str] = None


@dataclass
class DataDiff:
    models: list[ModelDiff]
    not_diffed: list[str]  # beyond MAX_MODELS
    seconds: float


def primary_key(manifest, unique_id: str) -> tuple[str, ...]:
    """The model's key: a `primary_key` constraint (model- or column-level), else the one column that
    has both a `unique` and a `not_null` test (the first by name when several do)."""
    node = manifest.nodes[unique_id]
    for constraint in getattr(node, "constraints", None) or []:
        if _value(constraint.type) == "primary_key" and constraint.columns:
            return tuple(constraint.columns)
    for name, column in (getattr(node, "columns", None) or {}).items():
        if any(_value(c.type) == "primary_key" for c in column.constraints or []):
            return (name,)
    tests_by_column: dict[str, set[str]] = {}
    for test in manifest.nodes.values():
        metadata = getattr(test, "test_metadata", None)
        if (test.resource_type.value == "test" and metadata is not None and metadata.name in KEY_TESTS
                and getattr(test, "attached_node", None) == unique_id and getattr(test, "column_name", None)
                and not test.config.where):  # a filtered test does not make a key
            tests_by_column.setdefault(test.column_name, set()).add(metadata.name)
    keys = sorted(column for column, tests in tests_by_column.items() if tests >= KEY_TESTS)
    return (keys[0],) if keys else ()


def _value(enum_or_text) -> str:
    return getattr(enum_or_text, "value", enum_or_text)


def list_columns(dialect: Dialect, relations: Sequence[Relation]) -> str:
    """The columns of `relations`, all in one catalog, in order, from information_schema (views included)."""
    (catalog,) = {r.catalog for r in relations} or {None}
    schemas = sorted({dialect.fold(r.schema) for r in relations})
    names = sorted({dialect.fold(r.name) for r in relations})
    where = (f"table_schema IN ({', '.join(map(dialect.string_literal, schemas))}) "
             f"AND table_name IN ({', '.join(map(dialect.string_literal, names))})")
    if dialect.catalog:  # Databricks: each catalog has an information_schema of its own
        source = f"{dialect.quote(catalog or dialect.catalog)}.information_schema.columns"
    else:  # DuckDB: one information_schema over every attached database
        database = dialect.string_literal(catalog) if catalog else "current_database()"
        source, where = "information_schema.columns", f"table_catalog = {database} AND {where}"
    return (f"SELECT table_schema, table_name, column_name FROM {source} WHERE {where} "
            "ORDER BY table_schema, table_name, ordinal_position")


def compare_keyed(dialect: Dialect, pr: Relation, base: Relation, key: Sequence[str], columns: Sequence[str]) -> str:
    """One row: rows added, removed, changed, then rows changed per column of `columns` (in order).

    Each side is reduced to its key and one hash per compared column before the join, so the join
    carries fixed-size values. A presence flag tells a missing row from a NULL key.
    """
    hash_function = HASH_FUNCTION[dialect.name]

    def side(relation: Relation) -> str:
        keys = [f"{dialect.quote(k)} AS k_{i}" for i, k in enumerate(key)]
        # NULL hashes to NULL in some engines: coalesce so NULL against a value counts as a change.
        hashes = [f"COALESCE({hash_function}({dialect.quote(c)}), 0) AS h_{i}" for i, c in enumerate(columns)]
        return f"SELECT {', '.join([*keys, *hashes, '1 AS present'])} FROM {dialect.ref(relation)}"

    both = "pr.present IS NOT NULL AND base.present IS NOT NULL"
    differs = [f"pr.h_{i} <> base.h_{i}" for i in range(len(columns))]
    any_differs = " OR ".join(differs) or "FALSE"
    join = " AND ".join(f"pr.k_{i} = base.k_{i}" for i in range(len(key)))
    measures = [
        "SUM(CASE WHEN base.present IS NULL THEN 1 ELSE 0 END) AS rows_added",
        "SUM(CASE WHEN pr.present IS NULL THEN 1 ELSE 0 END) AS rows_removed",
        f"SUM(CASE WHEN {both} AND ({any_differs}) THEN 1 ELSE 0 END) AS rows_changed",
        *(f"SUM(CASE WHEN {both} AND {d} THEN 1 ELSE 0 END) AS changed_{i}" for i, d in enumerate(differs)),
    ]
    return (f"WITH pr AS ({side(pr)}), base AS ({side(base)}) "
            f"SELECT {', '.join(measures)} FROM pr FULL OUTER JOIN base ON {join}")


def diff_models(warehouse: Warehouse, targets: Sequence[DiffTarget]) -> DataDiff:
    """Row counts for every target and a keyed comparison for those with a key. A model whose
    comparison fails (its key's type changed, say) reports the error; the others still run."""
    started = time.perf_counter()
    chosen, rest = list(targets[:MAX_MODELS]), [t.name for t in targets[MAX_MODELS:]]
    if not chosen:
        return DataDiff([], rest, 0.0)
    dialect = warehouse.dialect
    columns: dict[Relation, list[str]] = {}
    relations = [r for t in chosen for r in (t.pr, t.base)]
    for catalog in sorted({r.catalog for r in relations}, key=str):  # the base's may be another catalog
        in_catalog = [r for r in relations if r.catalog == catalog]
        for schema, name, column in warehouse.query(list_columns(dialect, in_catalog)):
            columns.setdefault(dialect.folded(Relation(schema, name, catalog)), []).append(column)
    present = [t for t in chosen if dialect.folded(t.pr) in columns and dialect.folded(t.base) in columns]
    counts = warehouse.row_counts([r for t in present for r in (t.pr, t.base)])
    diffs = []
    for target in chosen:
        diff = ModelDiff(target.name, target.pr, target.base, target.key)
        diffs.append(diff)
        if target not in present:
            diff.error = "relation not found in the warehouse"
            continue
        diff.pr_rows, diff.base_rows = counts.get(target.pr), counts.get(target.base)
        pr_columns, base_columns = columns[dialect.folded(target.pr)], columns[dialect.folded(target.base)]
        base_by_folded = {c.lower(): c for c in base_columns}
        pr_by_folded = {c.lower(): c for c in pr_columns}
        diff.columns_added = [c for c in pr_columns if c.lower() not in base_by_folded]
        diff.columns_removed = [c for c in base_columns if c.lower() not in pr_by_folded]
        if not target.key:
            continue
        key = [pr_by_folded.get(k.lower()) for k in target.key]
        if any(k is None or k.lower() not in base_by_folded for k in key):
            diff.error = f"key {', '.join(target.key)} is not a column on both sides"
            continue
        keys = {k.lower() for k in key if k}
        compared = [c for c in pr_columns if c.lower() in base_by_folded and c.lower() not in keys]
        try:
            row = warehouse.query(compare_keyed(dialect, target.pr, target.base, [k for k in key if k], compared))[0]
        except Exception as error:  # the diff informs the reviewer; it never fails the check
            diff.error = str(error).strip().splitlines()[0][:300]
            continue
        diff.added, diff.removed, diff.changed = (int(v or 0) for v in row[:3])
        diff.changed_by_column = {c: int(v or 0) for c, v in zip(compared, row[3:], strict=True) if v}
    return DataDiff(diffs, rest, time.perf_counter() - started)


def _count(value: Optional[int]) -> str:
    return "—" if value is None else f"{value:,}"


def _columns(diff: ModelDiff) -> str:
    parts = [f"`{c}` ({n:,})" for c, n in sorted(diff.changed_by_column.items(), key=lambda kv: -kv[1])]
    parts += [f"`{c}` (new)" for c in diff.columns_added] + [f"`{c}` (dropped)" for c in diff.columns_removed]
    return ", ".join(parts) or "none"


def diff_markdown(data_diff: DataDiff, base: str) -> str:
    """The "Data diff" section of the slim-CI report (and of the PR comment)."""
    if not data_diff.models:
        return f"## Data diff against `{base}`\n_No rebuilt model exists in `{base}` yet: nothing to compare._"
    rows = []
    for d in data_diff.models:
        delta = "—" if d.pr_rows is None or d.base_rows is None else f"{d.pr_rows - d.base_rows:+,}"
        if d.error:
            keyed = [f"not compared: {d.error}", "—", "—", "—"]
        elif d.key:
            keyed = [_count(d.added), _count(d.removed), _count(d.changed)]
            keyed.insert(0, ", ".join(f"`{k}`" for k in d.key))
        else:
            keyed = ["no key: counts only", "—", "—", "—"]
        rows.append([d.name, _count(d.base_rows), _count(d.pr_rows), delta, *keyed, _columns(d)])
    parts = [f"## Data diff against `{base}`",
             f"Each rebuilt model against `{base}`'s live relation, computed in the warehouse in "
             f"{data_diff.seconds:.1f} s (aggregate hashes; no rows copied out).",
             markdown_table(["model", f"rows in {base}", "rows in PR", "Δ rows", "key", "added", "removed",
                             "changed", "columns changed"], rows)]
    if data_diff.not_diffed:
        parts.append(f"Not compared (over {MAX_MODELS} models): " + ", ".join(f"`{n}`" for n in data_diff.not_diffed))
    return "\n\n".join(parts)
