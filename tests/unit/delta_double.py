"""A test double of a Databricks SQL warehouse on Unity Catalog that models Delta file references,
in the worst case the documentation leaves open, for the statements the flows send outside dbt.

What it models, and the documentation behind each rule:
- A shallow clone copies no data files: it references its source's ("Shallow clone ... without
  copying the underlying data files", https://docs.databricks.com/aws/en/tables/operations/clone-unity-catalog).
  A deep clone copies them and depends on nothing (https://docs.databricks.com/aws/en/delta/clone).
- DROP TABLE removes the table's own files ("Deletes the table and removes the directory associated
  with the table from the file system if the table is not an EXTERNAL table",
  https://docs.databricks.com/aws/en/sql/language-manual/sql-ref-syntax-ddl-drop-table). On UC
  managed tables the files are purged after a 7-day recovery window; that a clone of a dropped
  table keeps its source's files is documented only for VACUUM, not for DROP, so the double
  purges at once (the worst case, and the documented case for external tables).
- Reading a table whose files are gone fails (DELTA_FILE_NOT_FOUND).
- ALTER VIEW ... AS needs ownership of the view; COMMENT ON and GRANT need ownership (or MANAGE)
  (https://docs.databricks.com/aws/en/sql/language-manual/sql-ref-syntax-ddl-alter-view,
  https://docs.databricks.com/aws/en/sql/language-manual/security-grant). The creator of an
  object owns it.

Every statement must parse as Databricks SQL with sqlglot (DEEP CLONE, which sqlglot 30 does not
parse, is checked with the SHALLOW CLONE grammar it shares).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import sqlglot
from sqlglot import exp

from flows.core.warehouse import DatabricksDialect, DatabricksWarehouse, Warehouse

NAME = r"`(?:[^`]|``)+`"
REF = rf"{NAME}\.{NAME}\.{NAME}"


class DeltaError(RuntimeError):
    pass


@dataclass
class Table:
    files: set[int]  # every data file the table reads
    own: set[int]  # the files it wrote itself: DROP deletes these
    owner: str


@dataclass
class View:
    target: tuple[str, str]
    owner: str
    grants: set[tuple[str, str]] = field(default_factory=set)  # (privilege, principal)
    comment: Optional[str] = None
    column_comments: dict[str, str] = field(default_factory=dict)


def _names(ref: str) -> tuple[str, ...]:
    return tuple(part.strip("`").lower() for part in re.findall(NAME, ref))


def check_parses(sql: str) -> exp.Expression:
    expression = sqlglot.parse_one(sql.replace(" DEEP CLONE ", " SHALLOW CLONE "), read="databricks")
    if isinstance(expression, exp.Command):
        raise AssertionError(f"not Databricks SQL per sqlglot (passed through unparsed): {sql}")
    return expression


class DeltaWarehouse(Warehouse):
    """Statements run phase by phase, as DatabricksWarehouse.execute_all runs them."""

    def __init__(self, catalog: str = "lake", user: str = "deployer"):
        self.dialect = DatabricksDialect(catalog)
        self.user = user
        self.schemas: set[str] = set()
        self.tables: dict[tuple[str, str], Table] = {}
        self.views: dict[tuple[str, str], View] = {}
        self.file_rows: dict[int, int] = {}  # file id -> rows; a purged file is absent
        self.executed: list[str] = []
        self._ids = itertools.count(1)

    # --- what dbt does in a version's schemas (outside this module's statements)
    def write_table(self, schema: str, name: str, rows: int) -> None:
        """dbt's table materialization: a new table with files of its own."""
        self.schemas.add(schema.lower())
        self._drop_table((schema.lower(), name.lower()))
        file = self._new_file(rows)
        self.tables[(schema.lower(), name.lower())] = Table({file}, {file}, self.user)

    def append(self, schema: str, name: str, rows: int) -> None:
        """An incremental run: new files added to the table, its earlier (maybe cloned) files still read."""
        table = self.tables[(schema.lower(), name.lower())]
        file = self._new_file(rows)
        table.files.add(file)
        table.own.add(file)

    # --- reading
    def read(self, schema: str, name: str) -> int:
        key = (schema.lower(), name.lower())
        if key in self.views:
            key = self.views[key].target
        table = self.tables.get(key)
        if table is None:
            raise DeltaError(f"[TABLE_OR_VIEW_NOT_FOUND] {'.'.join(key)}")
        missing = sorted(f for f in table.files if f not in self.file_rows)
        if missing:
            raise DeltaError(f"[DELTA_FILE_NOT_FOUND] {'.'.join(key)} reads files {missing} that were deleted")
        return sum(self.file_rows[f] for f in table.files)

    def query(self, sql: str) -> list[tuple]:
        check_parses(sql)
        if "information_schema.schemata" in sql:
            prefix = re.search(r"LIKE '(.*?)%'", sql).group(1).replace("\\\\", "")  # type: ignore[union-attr]
            return [(s,) for s in sorted(self.schemas) if s.startswith(prefix)]
        if "table_owner" in sql:  # views_not_owned: owned directly (the double models no groups)
            wanted = set(re.findall(r"table_schema = '([^']*)' AND table_name = '([^']*)'", sql))
            return [(s, n, v.owner) for (s, n), v in sorted(self.views.items()) if (s, n) in wanted and v.owner != self.user]
        if "information_schema.tables" in sql:
            wanted = set(re.findall(r"'([^']*)'", sql.split(" IN ", 1)[1]))
            rows = [(s, n, "VIEW") for (s, n) in self.views if s in wanted]
            return rows + [(s, n, "MANAGED") for (s, n) in self.tables if s in wanted]
        if "row_count" in sql:
            return [(key, self.read(*_names(ref)[1:])) for key, ref in
                    re.findall(rf"SELECT '([^']*)' AS relation_name, COUNT\(\*\) AS row_count FROM ({REF})", sql)]
        raise AssertionError(f"the double has no answer for {sql}")

    # --- the statements the flows send
    def execute_all(self, statements: Sequence[str]) -> None:
        for phase in DatabricksWarehouse.phases(statements):
            for statement in phase:
                check_parses(statement)
                self._run(statement)
                self.executed.append(statement)

    def _run(self, sql: str) -> None:
        if m := re.fullmatch(rf"CREATE SCHEMA IF NOT EXISTS ({NAME}\.{NAME})", sql):
            self.schemas.add(_names(m[1])[1])
        elif m := re.fullmatch(rf"DROP SCHEMA IF EXISTS ({NAME}\.{NAME}) CASCADE", sql):
            schema = _names(m[1])[1]
            for key in [k for k in self.tables if k[0] == schema]:
                self._drop_table(key)
            for key in [k for k in self.views if k[0] == schema]:
                del self.views[key]
            self.schemas.discard(schema)
        elif m := re.fullmatch(rf"CREATE OR REPLACE TABLE ({REF}) (SHALLOW|DEEP) CLONE ({REF})", sql):
            target, source = _names(m[1])[1:], _names(m[3])[1:]
            self._need_schema(target[0])
            rows = self.read(*source)  # cloning reads the source: its files must be there
            self._drop_table(target)
            if m[2] == "SHALLOW":
                self.tables[target] = Table(set(self.tables[source].files), set(), self.user)
            else:
                file = self._new_file(rows)
                self.tables[target] = Table({file}, {file}, self.user)
        elif m := re.fullmatch(rf"(CREATE|ALTER) VIEW ({REF}) AS SELECT \* FROM ({REF})", sql):
            live, target = _names(m[2])[1:], _names(m[3])[1:]
            self._need_schema(live[0])
            if m[1] == "CREATE":
                if live in self.views or live in self.tables:
                    raise DeltaError(f"[TABLE_OR_VIEW_ALREADY_EXISTS] {'.'.join(live)}")
                self.views[live] = View(target, self.user)
            else:
                view = self._owned_view(live, "ALTER VIEW ... AS")
                view.target, view.comment, view.column_comments = target, None, {}  # AS resets comments
        elif m := re.fullmatch(rf"DROP VIEW IF EXISTS ({REF})", sql):
            self.views.pop(_names(m[1])[1:], None)  # type: ignore[call-overload]
        elif m := re.fullmatch(rf"DROP TABLE IF EXISTS ({REF})", sql):
            self._drop_table(_names(m[1])[1:])  # type: ignore[arg-type]
        elif m := re.fullmatch(rf"GRANT (\w+(?: \w+)?) ON TABLE ({REF}) TO ({NAME})", sql):
            self._owned_view(_names(m[2])[1:], "GRANT").grants.add((m[1], _names(m[3])[0]))
        elif m := re.fullmatch(rf"COMMENT ON TABLE ({REF}) IS '((?:[^'\\]|\\.)*)'", sql):
            self._owned_view(_names(m[1])[1:], "COMMENT ON").comment = m[2]
        elif m := re.fullmatch(rf"COMMENT ON COLUMN ({REF}\.{NAME}) IS '((?:[^'\\]|\\.)*)'", sql):
            _, schema, name, column = _names(m[1])
            self._owned_view((schema, name), "COMMENT ON").column_comments[column] = m[2]
        else:
            raise AssertionError(f"the double does not model: {sql}")

    def _owned_view(self, key, action: str) -> View:
        view = self.views.get(key)
        if view is None:
            raise DeltaError(f"[TABLE_OR_VIEW_NOT_FOUND] {'.'.join(key)}")
        if view.owner != self.user:
            raise DeltaError(f"[PERMISSION_DENIED] {action} on {'.'.join(key)} needs ownership (or MANAGE); "
                             f"owner is {view.owner}")
        return view

    def _need_schema(self, schema: str) -> None:
        if schema not in self.schemas:
            raise DeltaError(f"[SCHEMA_NOT_FOUND] {schema}")

    def _new_file(self, rows: int) -> int:
        file = next(self._ids)
        self.file_rows[file] = rows
        return file

    def _drop_table(self, key) -> None:
        table = self.tables.pop(key, None)
        for file in table.own if table else ():
            self.file_rows.pop(file, None)  # purged: the worst case the docs leave open
