"""The few SQL statements the flows send outside dbt, per dialect, and how they are sent.

Statement builders are pure (tested against sqlglot's dialects). Execution:
- DuckDB: one transaction for a set of statements (DuckDB DDL is transactional);
- Databricks: statements in parallel on a SQL warehouse, since it has no
  multi-statement transactions for DDL.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from blocks.environment import DbtEnvironment, safe_identifier
from blocks.profile import connection_retry_parameters
from blocks.query_tags import run_query_tags, session_query_tags
from flows.errors import InputError, RunFailure


class UnknownObjectAtLiveName(RunFailure):
    """A live name holds an object of a type the flip does not know how to replace."""


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str

    def __post_init__(self):
        safe_identifier(self.schema, "schema")
        if not self.name or '"' in self.name or "`" in self.name:
            raise InputError(f"unsafe relation name {self.name!r}")


class Dialect:
    name: str  # each dialect names itself ("duckdb", "databricks")
    quote_char = '"'
    catalog: Optional[str] = None

    def fold(self, identifier: str) -> str:
        """The name as the catalog stores it, and as information_schema returns it."""
        return identifier

    def folded(self, relation: Relation) -> Relation:
        return Relation(self.fold(relation.schema), self.fold(relation.name))

    def quote(self, identifier: str) -> str:
        q = self.quote_char
        return f"{q}{identifier.replace(q, q + q)}{q}"

    def schema_ref(self, schema: str) -> str:
        if self.catalog:
            return f"{self.quote(self.catalog)}.{self.quote(schema)}"
        return self.quote(schema)

    def ref(self, relation: Relation) -> str:
        return f"{self.schema_ref(relation.schema)}.{self.quote(relation.name)}"

    def create_schema(self, schema: str) -> str:
        return f"CREATE SCHEMA IF NOT EXISTS {self.schema_ref(schema)}"

    def drop_schema(self, schema: str) -> str:
        return f"DROP SCHEMA IF EXISTS {self.schema_ref(schema)} CASCADE"

    def drop_view(self, relation: Relation) -> str:
        return f"DROP VIEW IF EXISTS {self.ref(relation)}"

    def drop_table(self, relation: Relation) -> str:
        return f"DROP TABLE IF EXISTS {self.ref(relation)}"

    def drop_relation(self, relation: Relation, kind: str) -> str:
        """Drop whatever information_schema says `relation` is (its `table_type`)."""
        return self.drop_view(relation) if kind == "VIEW" else self.drop_table(relation)

    @staticmethod
    def string_literal(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    def count_rows(self, relations: Sequence[Relation]) -> str:
        parts = [
            f"SELECT {self.string_literal(f'{r.schema}.{r.name}')} AS relation_name, COUNT(*) AS row_count "
            f"FROM {self.ref(r)}"
            for r in relations
        ]
        return "\nUNION ALL\n".join(parts)

    def list_schemas(self, prefix: str) -> str:
        raise NotImplementedError

    def list_relations(self, schemas: Sequence[str]) -> str:
        raise NotImplementedError

    def point_view(self, live: Relation, physical: Relation, exists: bool) -> str:
        raise NotImplementedError

    def copy_table(self, source: Relation, target: Relation) -> str:
        raise NotImplementedError


class DuckDBDialect(Dialect):
    name = "duckdb"

    def point_view(self, live: Relation, physical: Relation, exists: bool) -> str:
        return f"CREATE OR REPLACE VIEW {self.ref(live)} AS SELECT * FROM {self.ref(physical)}"

    def copy_table(self, source: Relation, target: Relation) -> str:
        return f"CREATE OR REPLACE TABLE {self.ref(target)} AS SELECT * FROM {self.ref(source)}"

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

    def fold(self, identifier: str) -> str:
        # Unity Catalog and the Hive metastore store names in lower case, whatever case dbt used.
        return identifier.lower()

    # information_schema.tables' table_type values a flip may replace with a view, and how each is
    # dropped: DROP TABLE also drops a streaming table, a materialized view takes its own DROP.
    DROP_BY_KIND = {"VIEW": "DROP VIEW", "MANAGED": "DROP TABLE", "EXTERNAL": "DROP TABLE",
                    "STREAMING_TABLE": "DROP TABLE", "MATERIALIZED_VIEW": "DROP MATERIALIZED VIEW"}

    def drop_relation(self, relation: Relation, kind: str) -> str:
        # Anything else (a METRIC_VIEW, a FOREIGN table of a federated catalog, a type added later)
        # is not ours to drop: refuse while the flip's statements are built, before any is sent.
        verb = self.DROP_BY_KIND.get(kind)
        if verb is None:
            raise UnknownObjectAtLiveName(
                f"{self.ref(relation)} is a {kind}, which the flip does not replace: nothing was changed. "
                "Move or drop it by hand, or publish the model under another name")
        return f"{verb} IF EXISTS {self.ref(relation)}"

    @staticmethod
    def string_literal(value: str) -> str:
        # Spark reads backslash escapes in literals, and 'a''b' is two adjacent literals
        # ('ab'), not an escaped quote: escape with backslashes.
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def point_view(self, live: Relation, physical: Relation, exists: bool) -> str:
        # ALTER VIEW keeps the view's grants and tags. A new view gets a plain CREATE VIEW, not
        # CREATE VIEW IF NOT EXISTS: `exists` was read from information_schema just before the
        # flip, so a view that appeared since (or that this principal cannot see) must fail the
        # flip loudly rather than be skipped and left pointing at another version.
        verb = "ALTER VIEW" if exists else "CREATE VIEW"
        return f"{verb} {self.ref(live)} AS SELECT * FROM {self.ref(physical)}"

    def copy_table(self, source: Relation, target: Relation) -> str:
        # Zero-copy: a shallow clone shares the source's data files (Delta tables only).
        return f"CREATE OR REPLACE TABLE {self.ref(target)} SHALLOW CLONE {self.ref(source)}"

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


class Warehouse:
    """A connection to one environment's warehouse, outside dbt."""

    dialect: Dialect

    def query(self, sql: str) -> list[tuple]:
        raise NotImplementedError

    def execute_all(self, statements: Sequence[str]) -> None:
        """Run `statements` as one unit: atomically where the warehouse can."""
        raise NotImplementedError

    def schemas_with_prefix(self, prefix: str) -> list[str]:
        return sorted(row[0] for row in self.query(self.dialect.list_schemas(prefix)))

    def relations_in(self, schemas: Sequence[str]) -> dict[Relation, str]:
        """What each relation in `schemas` is (VIEW, MANAGED, ...), keyed by its folded name."""
        if not schemas:
            return {}
        rows = self.query(self.dialect.list_relations(schemas))
        return {self.dialect.folded(Relation(schema, name)): kind.upper() for schema, name, kind in rows}

    def row_counts(self, relations: Sequence[Relation]) -> dict[Relation, int]:
        counts: dict[Relation, int] = {}
        for start in range(0, len(relations), 200):  # keep each statement a reasonable size
            chunk = list(relations[start:start + 200])
            by_key = {f"{r.schema}.{r.name}": r for r in chunk}
            for key, count in self.query(self.dialect.count_rows(chunk)):
                counts[by_key[key]] = int(count)
        return counts


class DuckDBWarehouse(Warehouse):
    def __init__(self, path: str):
        self.path = path
        self.dialect = DuckDBDialect()

    def _connect(self):
        import duckdb

        return duckdb.connect(self.path)

    def query(self, sql: str) -> list[tuple]:
        with closing(self._connect()) as connection:
            return connection.execute(sql).fetchall()

    def execute_all(self, statements: Sequence[str]) -> None:
        with closing(self._connect()) as connection:
            connection.execute("BEGIN TRANSACTION")
            try:
                for statement in statements:
                    connection.execute(statement)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise


class DatabricksWarehouse(Warehouse):
    """A Databricks SQL warehouse through databricks-sql-connector (a dbt-databricks dependency).

    A set of statements runs in phases, each phase concurrently on up to `max_workers`
    connections: schemas are created first, then tables that a view takes the name of are
    dropped, then views flip and tables clone together, and schemas are dropped last. Each
    view flips atomically; the set does not (Databricks has no multi-statement DDL transactions).
    """

    # Statements of one phase touch different objects; a later phase needs an earlier one done
    # (a view cannot be created before its schema, nor while a table still holds its name).
    PHASE_BY_VERB = {"CREATE SCHEMA": 0, "DROP TABLE": 1, "DROP MATERIALIZED": 1, "DROP SCHEMA": 3}
    OTHER_PHASE = 2

    def __init__(self, environment: DbtEnvironment, max_workers: int = 8, version: Optional[str] = None):
        self.environment = environment
        self.auth, self.http_path = environment.require_databricks()  # refused here, before any work
        self.dialect = DatabricksDialect(environment.catalog or "")  # required by require_databricks
        self.max_workers = max_workers
        self.version = version

    def connect_options(self) -> dict[str, Any]:
        """databricks-sql-connector `connect()` arguments: the environment's one identity through a
        databricks-sdk Config with an explicit auth_type, its retry budget, and this run's query tags."""
        auth = self.auth

        def credentials_provider():
            # Called by the connector when it connects; building the Config authenticates.
            return auth.sdk_config().authenticate

        tags = run_query_tags(self.environment.name, self.version)
        return {"server_hostname": auth.host, "http_path": self.http_path, "catalog": self.environment.catalog,
                "credentials_provider": credentials_provider,
                "session_configuration": {"QUERY_TAGS": session_query_tags(tags)},
                **connection_retry_parameters(self.environment)}

    def _connect(self):
        from databricks import sql

        return sql.connect(**self.connect_options())

    def query(self, sql: str) -> list[tuple]:
        with closing(self._connect()) as connection, closing(connection.cursor()) as cursor:
            cursor.execute(sql)
            return [tuple(row) for row in cursor.fetchall()]

    @classmethod
    def phases(cls, statements: Sequence[str]) -> list[list[str]]:
        """`statements` grouped into the phases that must run one after the other, in order."""
        by_phase: dict[int, list[str]] = {}
        for statement in statements:
            verb = " ".join(statement.split()[:2]).upper()
            by_phase.setdefault(cls.PHASE_BY_VERB.get(verb, cls.OTHER_PHASE), []).append(statement)
        return [by_phase[phase] for phase in sorted(by_phase)]

    def _execute(self, statements: Sequence[str]) -> None:
        """Run DDL one after the other on one connection. DDL returns no rows: nothing is fetched."""
        with closing(self._connect()) as connection, closing(connection.cursor()) as cursor:
            for statement in statements:
                try:
                    cursor.execute(statement)
                except Exception as error:
                    raise RunFailure(f"{statement} -- failed: {error}") from error

    def execute_all(self, statements: Sequence[str]) -> None:
        for phase in self.phases(statements):
            workers = min(self.max_workers, len(phase))
            shares = [phase[worker::workers] for worker in range(workers)]
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(self._execute, share) for share in shares]
            errors = [future.exception() for future in futures if future.exception()]
            if errors:
                # Each failed share stopped at its failure; the others ran to the end.
                raise RunFailure(
                    f"{len(errors)} statement(s) failed on Databricks; the set was applied only in part "
                    "(each statement is atomic, the set is not): " + "; ".join(map(str, errors))
                ) from errors[0]


def warehouse_for(environment: DbtEnvironment, version: Optional[str] = None) -> Warehouse:
    """`version`: the blue-green version a run builds, for the query tags of our statements."""
    if environment.adapter == "duckdb":
        return DuckDBWarehouse(str(environment.warehouse_path()))
    return DatabricksWarehouse(environment, version=version)
