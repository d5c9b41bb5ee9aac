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
from typing import Optional, Sequence

from blocks.environment import DbtEnvironment, safe_identifier


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str

    def __post_init__(self):
        safe_identifier(self.schema, "schema")
        if not self.name or '"' in self.name or "`" in self.name:
            raise ValueError(f"unsafe relation name {self.name!r}")


class Dialect:
    quote_char = '"'
    catalog: Optional[str] = None

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

    def count_rows(self, relations: Sequence[Relation]) -> str:
        parts = [
            f"SELECT '{r.schema}.{r.name}' AS relation_name, COUNT(*) AS row_count FROM {self.ref(r)}"
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
    name = "databricks"
    quote_char = "`"

    def __init__(self, catalog: str):
        self.catalog = safe_identifier(catalog, "catalog")

    def point_view(self, live: Relation, physical: Relation, exists: bool) -> str:
        # ALTER VIEW keeps the view's grants and tags; CREATE only for a view that is new.
        verb = "ALTER VIEW" if exists else "CREATE VIEW IF NOT EXISTS"
        return f"{verb} {self.ref(live)} AS SELECT * FROM {self.ref(physical)}"

    def copy_table(self, source: Relation, target: Relation) -> str:
        # Zero-copy: a shallow clone shares the source's data files.
        return f"CREATE OR REPLACE TABLE {self.ref(target)} SHALLOW CLONE {self.ref(source)}"

    def list_schemas(self, prefix: str) -> str:
        return (
            f"SELECT schema_name FROM {self.quote(self.catalog)}.information_schema.schemata "
            f"WHERE schema_name LIKE '{_like_prefix(prefix)}' ESCAPE '\\\\'"
        )

    def list_relations(self, schemas: Sequence[str]) -> str:
        names = ", ".join(f"'{safe_identifier(s, 'schema')}'" for s in schemas) or "''"
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
        if not schemas:
            return {}
        rows = self.query(self.dialect.list_relations(schemas))
        return {Relation(schema, name): kind.upper() for schema, name, kind in rows}

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
    """Databricks SQL warehouse through databricks-sql-connector (a dbt-databricks dependency)."""

    def __init__(self, environment: DbtEnvironment, max_workers: int = 8):
        self.environment = environment
        self.dialect = DatabricksDialect(environment.catalog or "main")
        self.max_workers = max_workers

    def _connect(self):
        from databricks import sql

        credentials, http_path = self.environment.require_databricks()
        options = {"server_hostname": credentials.databricks_instance, "http_path": http_path}
        if credentials.token is not None:
            options["access_token"] = credentials.token.get_secret_value()
        else:
            from databricks.sdk.core import Config, oauth_service_principal

            config = Config(
                host=f"https://{credentials.databricks_instance}",
                client_id=credentials.client_id,
                client_secret=credentials.client_secret.get_secret_value(),
            )
            options["credentials_provider"] = lambda: oauth_service_principal(config)
        return sql.connect(**options)

    def query(self, sql: str) -> list[tuple]:
        with closing(self._connect()) as connection, closing(connection.cursor()) as cursor:
            cursor.execute(sql)
            return [tuple(row) for row in cursor.fetchall()]

    def execute_all(self, statements: Sequence[str]) -> None:
        # Each view flips atomically; the set does not (no multi-statement DDL transactions).
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            list(pool.map(self.query, statements))


def warehouse_for(environment: DbtEnvironment) -> Warehouse:
    if environment.adapter == "duckdb":
        return DuckDBWarehouse(str(environment.warehouse_path()))
    return DatabricksWarehouse(environment)
