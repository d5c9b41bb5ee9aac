"""Small stand-ins for the unit tests: a manifest's shape, an in-memory state store, a canned warehouse."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Optional, Sequence

from flows.core.warehouse import DatabricksDialect, Dialect, DuckDBDialect, Relation, Warehouse


def kind(value: str) -> SimpleNamespace:
    """dbt's NodeType enum as the code reads it: `node.resource_type.value`."""
    return SimpleNamespace(value=value)


def node(unique_id: str, schema: str = "main", alias: Optional[str] = None, parents: Sequence[str] = (),
         materialized: str = "table") -> SimpleNamespace:
    resource_type, package, *rest = unique_id.split(".")
    return SimpleNamespace(
        unique_id=unique_id, name=rest[-1], resource_type=kind(resource_type), fqn=[package, *rest],
        schema=schema, alias=alias, depends_on=SimpleNamespace(nodes=list(parents)),
        config=SimpleNamespace(materialized=materialized),
    )


def source(unique_id: str, schema: str = "raw", identifier: Optional[str] = None, loaded_at_field: Optional[str] = None,
           warn_after: Optional[int] = None, error_after: Optional[int] = None) -> SimpleNamespace:
    _, _, source_name, name = unique_id.split(".")

    def time(count):
        return SimpleNamespace(count=count, period="hour" if count else None)

    return SimpleNamespace(
        unique_id=unique_id, source_name=source_name, name=name, schema=schema, identifier=identifier or name,
        loaded_at_field=loaded_at_field, loaded_at_query=None, freshness=SimpleNamespace(warn_after=time(warn_after), error_after=time(error_after)),
    )


def manifest(nodes=(), sources=(), unit_tests=(), adapter_type: str = "duckdb", **others) -> SimpleNamespace:
    defined = {kind: {} for kind in ("exposures", "metrics", "semantic_models", "saved_queries")}
    defined.update({kind: {u: object() for u in ids} for kind, ids in others.items()})
    return SimpleNamespace(
        nodes={n.unique_id: n for n in nodes}, sources={s.unique_id: s for s in sources},
        unit_tests={t.unique_id: t for t in unit_tests}, metadata=SimpleNamespace(adapter_type=adapter_type), **defined,
    )


class MemoryStore:
    """The part of StateStore that VersionRegistry and PublishLock use, in memory."""

    def __init__(self, environment: str = "unit"):
        self.environment = environment
        self.files: dict[str, bytes] = {}

    def read(self, name: str) -> Optional[bytes]:
        return self.files.get(name)

    def write(self, name: str, content: bytes) -> None:
        self.files[name] = content

    def create(self, name: str, content: bytes) -> bool:
        if name in self.files:
            return False
        self.files[name] = content
        return True

    def delete(self, name: str) -> None:
        self.files.pop(name, None)

    def read_json(self, name: str, default=None):
        content = self.read(name)
        return default if content is None else json.loads(content)

    def write_json(self, name: str, value) -> None:
        self.write(name, json.dumps(value).encode())


class CannedWarehouse(Warehouse):
    """Answers information_schema and row-count queries from dicts; records what it executes."""

    def __init__(self, dialect: Dialect | None = None, relations: Optional[dict[Relation, str]] = None,
                 schemas: Sequence[str] = (), rows: Optional[dict[str, int]] = None):
        self.dialect = dialect or DuckDBDialect()
        self.relations = relations or {}
        self.schemas = list(schemas)
        self.rows = rows or {}
        self.executed: list[str] = []

    def query(self, sql: str) -> list[tuple]:
        if "information_schema.tables" in sql:
            return [(r.schema, r.name, kind) for r, kind in self.relations.items() if f"'{r.schema}'" in sql]
        if "information_schema.schemata" in sql:
            return [(s,) for s in self.schemas]
        if "row_count" in sql:
            return [(key, count) for key, count in self.rows.items() if f"'{key}'" in sql]
        raise AssertionError(f"no canned answer for {sql}")

    def execute_all(self, statements: Sequence[str]) -> None:
        self.executed += statements


__all__ = ["CannedWarehouse", "DatabricksDialect", "MemoryStore", "kind", "manifest", "node", "source"]
