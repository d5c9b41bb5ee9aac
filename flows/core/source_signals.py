"""A change signal for every source that configures no freshness, so the gate can skip what did not change.

dbt dates a source only where the project sets a freshness threshold (and a `loaded_at_field`,
or adapter metadata). Real projects do that for few sources (a public 1,058-model project: 12 of
58), and a source nobody can date must be treated as changed, so the gate rebuilt most of such a
project every night. For those sources, the gate reads a signal from the warehouse, saves it with
the run's state, and compares it with the one the last published build saved:

- **Databricks, Unity Catalog:** `information_schema.tables.last_altered`, which dbt-databricks
  itself reads as a relation's last modification for metadata-based freshness
  (`get_relation_last_modified`). One query per catalog, not per table.
- **DuckDB:** the row count and the sum of every row's hash: a full scan, which DuckDB does at
  about 15 M rows a second on one core (1 M rows in 0.06 s here), so it costs little next to the
  builds that read the same rows. A signal equal to last time means the same rows. One connection
  for all of them: opening a DuckDB file of 1,000 tables costs 0.14 s, a small table's scan 2 ms.
- **Anything else** (the Hive metastore, another adapter, a missing table, no privilege): no
  signal. The source counts as changed, and the run summary names it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Optional, Sequence

from dbt.contracts.graph.manifest import Manifest

from flows.core.state_store import SIGNALS_FILE
from flows.core.warehouse import DatabricksDialect, Warehouse

__all__ = ["SIGNALS_FILE", "SourceTable", "changed_sources", "read_signals", "source_tables"]

Signals = dict[str, Optional[str]]  # source unique_id -> its signal (None: cannot be dated)


@dataclass(frozen=True)
class SourceTable:
    unique_id: str
    name: str  # source_name.table, as operators know it
    database: Optional[str]
    schema: str
    identifier: str
    relation_name: str  # as dbt renders it, quoted for the adapter


def source_tables(manifest: Manifest, unique_ids: Sequence[str]) -> list[SourceTable]:
    tables = []
    for unique_id in sorted(unique_ids):
        source = manifest.sources[unique_id]
        tables.append(SourceTable(unique_id, f"{source.source_name}.{source.name}", source.database,
                                  source.schema, source.identifier, source.relation_name or ""))
    return tables


def read_signals(warehouse: Warehouse, sources: Sequence[SourceTable]) -> Signals:
    """Each source's signal now; None where it cannot be read."""
    if not sources:
        return {}
    if warehouse.dialect.name == "duckdb":
        return _duckdb_signals(warehouse, sources)
    if isinstance(warehouse.dialect, DatabricksDialect) and warehouse.dialect.catalog != "hive_metastore":
        return _databricks_signals(warehouse, sources)
    return {source.unique_id: None for source in sources}


def changed_sources(current: Signals, previous: Signals) -> set[str]:
    """Sources whose signal differs from the saved one, or that have none now or had none then."""
    return {unique_id for unique_id, signal in current.items() if signal is None or previous.get(unique_id) != signal}


def duckdb_signal_sql(source: SourceTable) -> str:
    return ("SELECT COUNT(*), COALESCE(SUM(HASH(lakehouse_row)::HUGEINT), 0) "
            f"FROM {source.relation_name} AS lakehouse_row")


def _duckdb_signals(warehouse: Warehouse, sources: Sequence[SourceTable]) -> Signals:
    signals: Signals = {source.unique_id: None for source in sources}
    readable = [source for source in sources if source.relation_name]
    try:
        results = warehouse.query_each([duckdb_signal_sql(source) for source in readable])
    except Exception:  # noqa: BLE001 - the warehouse cannot be opened: nothing can be dated
        return signals
    for source, rows in zip(readable, results, strict=True):
        if not isinstance(rows, Exception):  # a missing table or attachment: no signal, so "changed"
            count, digest = rows[0]
            signals[source.unique_id] = f"rows={count};hash={digest}"
    return signals


def databricks_signal_sql(catalog: str, sources: Sequence[SourceTable]) -> str:
    """One query for the sources of one catalog (names folded to lower case, as UC stores them)."""
    dialect = DatabricksDialect(catalog)
    wanted = " OR ".join(
        f"(table_schema = {dialect.string_literal(dialect.fold(s.schema))} "
        f"AND table_name = {dialect.string_literal(dialect.fold(s.identifier))})"
        for s in sources)
    return ("SELECT table_schema, table_name, CAST(last_altered AS STRING) "
            f"FROM {dialect.quote(catalog)}.information_schema.tables WHERE {wanted}")


def _databricks_signals(warehouse: Warehouse, sources: Sequence[SourceTable]) -> Signals:
    signals: Signals = {source.unique_id: None for source in sources}
    by_catalog: dict[str, list[SourceTable]] = defaultdict(list)
    default_catalog = warehouse.dialect.catalog or "hive_metastore"
    for source in sources:
        catalog = (source.database or default_catalog).lower()
        if catalog != "hive_metastore":  # no last_altered there: those sources cannot be dated
            by_catalog[catalog].append(source)
    if not by_catalog:
        return signals
    try:
        results = warehouse.query_each([databricks_signal_sql(catalog, members) for catalog, members in by_catalog.items()])
    except Exception:  # noqa: BLE001 - no connection: nothing can be dated
        return signals
    for members, rows in zip(by_catalog.values(), results, strict=True):
        if isinstance(rows, Exception):  # no privilege on the catalog: these sources cannot be dated
            continue
        altered = {(schema.lower(), name.lower()): value for schema, name, value in rows}
        for source in members:
            value = altered.get((source.schema.lower(), source.identifier.lower()))
            signals[source.unique_id] = f"last_altered={value}" if value else None
    return signals
