"""How the flows' own SQL statements (flows/core/dialects.py) are sent to a warehouse, outside dbt.

- DuckDB: one transaction for a set of statements (DuckDB DDL is transactional);
- Databricks: statements in parallel on a SQL warehouse, since it has no
  multi-statement transactions for DDL.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any, Optional, Sequence, Union

from blocks.environment import DbtEnvironment
from blocks.profile import connection_retry_parameters
from blocks.query_tags import run_query_tags, session_query_tags
from flows.core.dialects import (  # re-exported: callers find the statement builders here too
    DatabricksDialect, Dialect, DuckDBDialect, Phase, Relation, Statement, UnknownObjectAtLiveName, count_key,
)
from flows.errors import RunFailure

__all__ = ["DatabricksDialect", "DatabricksWarehouse", "Dialect", "DuckDBDialect", "DuckDBWarehouse", "Phase",
           "Relation", "Statement", "UnknownObjectAtLiveName", "Warehouse", "count_key", "warehouse_for"]


class Warehouse:
    """A connection to one environment's warehouse, outside dbt."""

    dialect: Dialect

    def query(self, sql: str) -> list[tuple]:
        raise NotImplementedError

    def query_each(self, statements: Sequence[str]) -> list[Union[list[tuple], Exception]]:
        """Each statement's rows, or the error it raised."""
        results: list[Union[list[tuple], Exception]] = []
        for sql in statements:
            try:
                results.append(self.query(sql))
            except Exception as error:  # noqa: BLE001 - the caller decides what one failure means
                results.append(error)
        return results

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

    def views_not_owned(self, relations: Sequence[Relation]) -> list[tuple[Relation, str]]:
        """Those of `relations` this principal does not own, with their owner (none where there are no owners)."""
        sql = self.dialect.views_not_owned(relations) if relations else None
        return [(Relation(schema, name), owner) for schema, name, owner in self.query(sql)] if sql else []

    def row_counts(self, relations: Sequence[Relation]) -> dict[Relation, int]:
        counts: dict[Relation, int] = {}
        for start in range(0, len(relations), 200):  # keep each statement a reasonable size
            chunk = list(relations[start:start + 200])
            by_key = {count_key(r): r for r in chunk}
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

    def query_each(self, statements: Sequence[str]) -> list[Union[list[tuple], Exception]]:
        """Over one connection: opening a DuckDB file of 1,000 tables takes 0.14 s, longer than a
        query of a small table."""
        results: list[Union[list[tuple], Exception]] = []
        with closing(self._connect()) as connection:
            for sql in statements:
                try:
                    results.append(connection.execute(sql).fetchall())
                except Exception as error:  # noqa: BLE001 - the caller decides what one failure means
                    results.append(error)
        return results

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

    OTHER_PHASE = Phase.POINT_VIEWS  # the phase of most statements (views, clones)

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
        """`statements` grouped into the phases that must run one after the other, in order.
        Each must be a `Statement`: its phase is what its dialect said, not a guess from its text."""
        by_phase: dict[Phase, list[str]] = {}
        for statement in statements:
            if not isinstance(statement, Statement):
                raise TypeError(f"a statement for Databricks needs its phase (render it with the dialect): {statement}")
            by_phase.setdefault(statement.phase, []).append(statement)
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
