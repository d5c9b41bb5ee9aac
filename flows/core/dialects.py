"""The few SQL statements the flows send outside dbt, per dialect: pure builders, tested against
sqlglot's dialects. flows/core/warehouse.py sends them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Optional, Sequence

from blocks import naming
from blocks.environment import safe_identifier
from flows.errors import InputError, RunFailure


class UnknownObjectAtLiveName(RunFailure):
    """A live name holds an object of a type the flip does not know how to replace."""


class Phase(IntEnum):
    """When a statement of a set may run on a warehouse that cannot run the set atomically: a later
    phase needs an earlier one done (a view cannot be created before its schema, nor while a table
    still holds its name; a grant or comment needs its view; an old schema goes only once nothing
    points into it). Statements of one phase touch different objects and may run at once."""

    CREATE_SCHEMAS = 0
    FREE_NAMES = 1
    POINT_VIEWS = 2  # views flip and tables clone together
    DESCRIBE_VIEWS = 3  # grants and comments on the views just pointed
    DROP_SCHEMAS = 4


class Statement(str):
    """One SQL statement and the phase it belongs to. The dialect that renders it says its phase;
    the executor reads `phase`, never the SQL. A `str` so that it logs, compares and runs as its SQL."""

    phase: Phase

    def __new__(cls, sql: str, phase: Phase = Phase.POINT_VIEWS) -> "Statement":
        statement = super().__new__(cls, sql)
        statement.phase = phase
        return statement


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    # None: the catalog of the environment the warehouse connects as. Another environment's
    # relation (slim CI's base: staging's PR compared with prod's live) names its own.
    catalog: Optional[str] = None

    def __post_init__(self):
        safe_identifier(self.schema, "schema")
        if self.catalog is not None:
            safe_identifier(self.catalog, "catalog")
        if not self.name or '"' in self.name or "`" in self.name:
            raise InputError(f"unsafe relation name {self.name!r}")


def count_key(relation: Relation) -> str:
    """How count_rows names a relation in its result: `schema.name`, `catalog.schema.name` in another catalog."""
    own = f"{relation.schema}.{relation.name}"
    return own if relation.catalog is None else f"{relation.catalog}.{own}"


class Dialect:
    name: str  # each dialect names itself ("duckdb", "databricks")
    quote_char = '"'
    catalog: Optional[str] = None

    def fold(self, identifier: str) -> str:
        """The name as the catalog stores it, and as information_schema returns it."""
        return naming.fold(identifier, self.name)

    def folded(self, relation: Relation) -> Relation:
        catalog = None if relation.catalog is None else self.fold(relation.catalog)
        return Relation(self.fold(relation.schema), self.fold(relation.name), catalog)

    def quote(self, identifier: str) -> str:
        q = self.quote_char
        return f"{q}{identifier.replace(q, q + q)}{q}"

    def schema_ref(self, schema: str, catalog: Optional[str] = None) -> str:
        catalog = catalog or self.catalog
        if catalog:
            return f"{self.quote(catalog)}.{self.quote(schema)}"
        return self.quote(schema)

    def ref(self, relation: Relation) -> str:
        return f"{self.schema_ref(relation.schema, relation.catalog)}.{self.quote(relation.name)}"

    def create_schema(self, schema: str) -> Statement:
        return Statement(f"CREATE SCHEMA IF NOT EXISTS {self.schema_ref(schema)}", Phase.CREATE_SCHEMAS)

    def drop_schema(self, schema: str) -> Statement:
        return Statement(f"DROP SCHEMA IF EXISTS {self.schema_ref(schema)} CASCADE", Phase.DROP_SCHEMAS)

    def drop_view(self, relation: Relation) -> Statement:
        # a view no longer published: nothing takes its name, so it goes with the flip
        return Statement(f"DROP VIEW IF EXISTS {self.ref(relation)}", Phase.POINT_VIEWS)

    def drop_table(self, relation: Relation) -> Statement:
        # a table at a live name, dropped so that a view can take the name
        return Statement(f"DROP TABLE IF EXISTS {self.ref(relation)}", Phase.FREE_NAMES)

    def drop_relation(self, relation: Relation, kind: str) -> Statement:
        """Drop whatever information_schema says `relation` is (its `table_type`)."""
        return self.drop_view(relation) if kind == "VIEW" else self.drop_table(relation)

    @staticmethod
    def string_literal(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    def count_rows(self, relations: Sequence[Relation]) -> str:
        parts = [
            f"SELECT {self.string_literal(count_key(r))} AS relation_name, COUNT(*) AS row_count "
            f"FROM {self.ref(r)}"
            for r in relations
        ]
        return "\nUNION ALL\n".join(parts)

    # Grants and comments on live views (live_docs.py). DuckDB has no grants and keeps no docs on
    # live views (unchanged behaviour): None, nothing to send.
    def grant(self, relation: Relation, privilege: str, principal: str) -> Optional[Statement]:
        return None

    def comment_relation(self, relation: Relation, text: str) -> Optional[Statement]:
        return None

    def comment_column(self, relation: Relation, column: str, text: str) -> Optional[Statement]:
        return None

    def views_not_owned(self, relations: Sequence[Relation]) -> Optional[str]:
        """SQL listing (schema, name, owner) of those of `relations` this principal does not own."""
        return None

    def list_schemas(self, prefix: str) -> str:
        raise NotImplementedError

    def list_relations(self, schemas: Sequence[str]) -> str:
        raise NotImplementedError

    def point_view(self, live: Relation, physical: Relation, exists: bool) -> Statement:
        raise NotImplementedError

    def copy_table(self, source: Relation, target: Relation, deep: bool = False) -> Statement:
        """`target` starts as a copy of `source`. `deep`: a copy that shares no files with `source`."""
        raise NotImplementedError

    # Whether `copy_table` (not deep) makes a table that reads its source's files: then the source
    # must outlive the copy (see versions.clone_sources).
    copies_share_files = False


class DuckDBDialect(Dialect):
    name = "duckdb"

    def point_view(self, live: Relation, physical: Relation, exists: bool) -> Statement:
        return Statement(f"CREATE OR REPLACE VIEW {self.ref(live)} AS SELECT * FROM {self.ref(physical)}")

    def copy_table(self, source: Relation, target: Relation, deep: bool = False) -> Statement:
        # always a full copy: DuckDB tables share no files
        return Statement(f"CREATE OR REPLACE TABLE {self.ref(target)} AS SELECT * FROM {self.ref(source)}")

    def list_schemas(self, prefix: str) -> str:
        return (
            "SELECT schema_name FROM information_schema.schemata "
            f"WHERE catalog_name = current_database() AND schema_name LIKE '{_like_prefix(prefix)}' ESCAPE '\\'"
        )

    def list_relations(self, schemas: Sequence[str]) -> str:
        names = ", ".join(f"'{safe_identifier(s, 'schema')}'" for s in schemas) or "''"
        return (
            "SELECT table_schema, table_name, table_type FROM information_schema.tables "
            f"WHERE table_catalog = current_database() AND table_schema IN ({names})"
        )


class DatabricksDialect(Dialect):
    """Databricks SQL: `catalog`.`schema`.`name`, backtick-quoted, Spark string literals."""

    name = "databricks"
    quote_char = "`"
    catalog: str

    def __init__(self, catalog: str):
        self.catalog = safe_identifier(catalog, "catalog")

    copies_share_files = True

    # information_schema.tables' table_type values a flip may replace with a view: DROP TABLE also
    # drops a streaming table, a materialized view takes its own DROP.
    KNOWN_KINDS = ("VIEW", "MANAGED", "EXTERNAL", "STREAMING_TABLE", "MATERIALIZED_VIEW")

    def drop_relation(self, relation: Relation, kind: str) -> Statement:
        # Anything else (a METRIC_VIEW, a FOREIGN table of a federated catalog, a type added later)
        # is not ours to drop: refuse while the flip's statements are built, before any is sent.
        if kind not in self.KNOWN_KINDS:
            raise UnknownObjectAtLiveName(
                f"{self.ref(relation)} is a {kind}, which the flip does not replace: nothing was changed. "
                "Move or drop it by hand, or publish the model under another name")
        if kind == "MATERIALIZED_VIEW":
            return Statement(f"DROP MATERIALIZED VIEW IF EXISTS {self.ref(relation)}", Phase.FREE_NAMES)
        return super().drop_relation(relation, kind)

    # Unity Catalog privileges a view takes (https://docs.databricks.com/aws/en/data-governance/
    # unity-catalog/manage-privileges/privileges): anything else in a `grants` config is refused.
    VIEW_PRIVILEGES = {"SELECT", "APPLY TAG", "MANAGE", "ALL PRIVILEGES", "BROWSE"}

    def grant(self, relation: Relation, privilege: str, principal: str) -> Optional[Statement]:
        privilege = " ".join(privilege.replace("_", " ").upper().split())
        if privilege not in self.VIEW_PRIVILEGES:
            raise InputError(f"grants: {privilege!r} is not a privilege a view takes on Unity Catalog "
                             f"({', '.join(sorted(self.VIEW_PRIVILEGES))})")
        # GRANT … ON TABLE covers views (a view is a TABLE securable)
        return Statement(f"GRANT {privilege} ON TABLE {self.ref(relation)} TO {self.quote(principal)}",
                         Phase.DESCRIBE_VIEWS)

    def comment_relation(self, relation: Relation, text: str) -> Optional[Statement]:
        # "To add or alter a comment on a view, use COMMENT ON" (ALTER VIEW reference)
        return Statement(f"COMMENT ON TABLE {self.ref(relation)} IS {self.string_literal(text)}", Phase.DESCRIBE_VIEWS)

    def comment_column(self, relation: Relation, column: str, text: str) -> Optional[Statement]:
        return Statement(f"COMMENT ON COLUMN {self.ref(relation)}.{self.quote(column)} IS {self.string_literal(text)}",
                         Phase.DESCRIBE_VIEWS)

    def views_not_owned(self, relations: Sequence[Relation]) -> Optional[str]:
        # Owned directly, or through a group this principal is a member of.
        pairs = " OR ".join(
            f"(table_schema = {self.string_literal(self.fold(r.schema))} AND table_name = {self.string_literal(self.fold(r.name))})"
            for r in relations)
        return (
            f"SELECT table_schema, table_name, table_owner FROM {self.quote(self.catalog)}.information_schema.tables "
            f"WHERE ({pairs}) AND NOT (table_owner = CURRENT_USER() OR IS_ACCOUNT_GROUP_MEMBER(table_owner))"
        )

    @staticmethod
    def string_literal(value: str) -> str:
        # Spark reads backslash escapes in literals, and 'a''b' is two adjacent literals
        # ('ab'), not an escaped quote: escape with backslashes.
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def point_view(self, live: Relation, physical: Relation, exists: bool) -> Statement:
        # ALTER VIEW keeps the view's grants and tags. A new view gets a plain CREATE VIEW, not
        # CREATE VIEW IF NOT EXISTS: `exists` was read from information_schema just before the
        # flip, so a view that appeared since (or that this principal cannot see) must fail the
        # flip loudly rather than be skipped and left pointing at another version.
        verb = "ALTER VIEW" if exists else "CREATE VIEW"
        return Statement(f"{verb} {self.ref(live)} AS SELECT * FROM {self.ref(physical)}")

    def copy_table(self, source: Relation, target: Relation, deep: bool = False) -> Statement:
        # Shallow: zero-copy, the clone reads the source's data files (Delta tables only). Deep:
        # the source's current files are copied, and the clone depends on nothing.
        kind = "DEEP" if deep else "SHALLOW"
        return Statement(f"CREATE OR REPLACE TABLE {self.ref(target)} {kind} CLONE {self.ref(source)}")

    def list_schemas(self, prefix: str) -> str:
        # In a Spark literal '\\' is one backslash: the LIKE escape character.
        return (
            f"SELECT schema_name FROM {self.quote(self.catalog)}.information_schema.schemata "
            f"WHERE schema_name LIKE {self.string_literal(_like_prefix(self.fold(prefix)))} ESCAPE '\\\\'"
        )

    def list_relations(self, schemas: Sequence[str]) -> str:
        names = ", ".join(self.string_literal(self.fold(safe_identifier(s, "schema"))) for s in schemas) or "''"
        return (
            f"SELECT table_schema, table_name, table_type FROM {self.quote(self.catalog)}.information_schema.tables "
            f"WHERE table_schema IN ({names})"
        )


def _like_prefix(prefix: str) -> str:
    safe_identifier(prefix, "schema prefix")
    return prefix.replace("_", "\\_") + "%"
