"""flows/core/transient.py: which failed nodes are worth a `dbt retry` inside the step.

The messages are as dbt reports them (the node's `message`): a database's or driver's own text
after dbt's "Runtime Error in model x" line.
"""

from __future__ import annotations

import pytest

from flows.core.results import NodeResult
from flows.core.transient import is_transient, rescuable, transient_cause


def _failed(message: str, status: str = "error", unique_id: str = "model.p.m") -> NodeResult:
    return NodeResult(unique_id, unique_id.split(".")[0], unique_id.split(".")[-1], status, message, 1.0, None, None)


TRANSIENT = [
    ("databricks", "Runtime Error in model fct_orders (models/marts/fct_orders.sql)\n"
                   "  [DELTA_CONCURRENT_APPEND] ConcurrentAppendException: Files were added to the root of the table "
                   "by a concurrent update. Please try the operation again."),
    ("databricks", "Runtime Error in model dim_customers (models/marts/dim_customers.sql)\n"
                   "  ConcurrentDeleteReadException: This transaction attempted to read one or more files that were "
                   "deleted (for example part-00001-1b6c.snappy.parquet) by a concurrent update."),
    ("databricks", "Database Error in model stg_orders (models/staging/stg_orders.sql)\n"
                   "  Error during request to server: 503 Service Unavailable"),
    ("databricks", "Database Error in model stg_orders (models/staging/stg_orders.sql)\n"
                   "  HTTPSConnectionPool(host='adb-1.azuredatabricks.net', port=443): Read timed out. (read timeout=900)"),
    ("databricks", "Database Error\n  [TEMPORARILY_UNAVAILABLE] The service at /api/2.0/sql/statements is "
                   "temporarily unavailable. Please try again later."),
    ("databricks", "Database Error\n  Query could not be scheduled: the SQL warehouse has reached its cluster limit"),
    ("databricks", "Database Error\n  Error during request to server: 429 Too Many Requests"),
    ("databricks", "Database Error\n  ('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"),
    ("duckdb", 'Runtime Error in model stg_orders (models/staging/stg_orders.sql)\n  IO Error: Could not set lock on '
               'file "/home/warehouse.duckdb": Conflicting lock is held in /usr/bin/python3.11 (PID 4242) by user '
               "root. See also https://duckdb.org/docs/connect/concurrency"),
    ("duckdb", "Runtime Error in model stg_flaky (models/staging/stg_flaky.py)\n  Python model failed:\n"
               "Connection reset by peer"),
]
REAL = [
    ("duckdb", "Runtime Error in model int_broken (models/intermediate/int_broken.sql)\n"
               "  Conversion Error: Could not convert string 'not a number' to INT32"),
    ("duckdb", 'Runtime Error in model x (models/x.sql)\n  Binder Error: Referenced column "amount" not found in '
               "FROM clause!"),
    ("duckdb", "Runtime Error in model x (models/x.sql)\n  Catalog Error: Table with name stg_nope does not exist!"),
    ("databricks", "Database Error in model x (models/x.sql)\n  [INSUFFICIENT_PERMISSIONS] Insufficient privileges: "
                   "User does not have USE SCHEMA on Schema 'main.finance'."),
    ("databricks", "Database Error in model x (models/x.sql)\n  [PARSE_SYNTAX_ERROR] Syntax error at or near 'form'."),
    ("databricks", "Compilation Error in model x (models/x.sql)\n  'foo' is undefined"),
    ("databricks", "Something nobody has seen before"),
]


@pytest.mark.parametrize("adapter, message", TRANSIENT)
def test_transient_errors(adapter, message):
    assert is_transient(_failed(message), adapter)


@pytest.mark.parametrize("adapter, message", REAL)
def test_real_errors_are_not_transient(adapter, message):
    assert not is_transient(_failed(message), adapter)


def test_a_failing_test_is_never_transient_whatever_it_says():
    test = _failed("Got 1 result, configured to fail if != 0 (connection reset)", "fail", "test.p.t")
    assert not is_transient(test, "duckdb")


def test_delta_conflicts_are_transient_only_on_databricks():
    message = "ConcurrentAppendException: Files were added by a concurrent update."
    assert is_transient(_failed(message), "databricks") and not is_transient(_failed(message), "duckdb")


def test_a_step_is_rescued_only_when_no_failure_is_real():
    flaky = _failed("Connection reset by peer", unique_id="model.p.flaky")
    cancelled = _failed("Runtime Error in model a\n  INTERRUPT Error: Interrupted!", unique_id="model.p.a")
    failing_test = _failed("Got 3 results, configured to fail if != 0", "fail", "test.p.t")
    assert rescuable([flaky, cancelled], "duckdb") == [flaky]  # the fail-fast stop's casualty comes along
    assert rescuable([flaky, failing_test], "duckdb") == []  # dbt retry would re-run the test too
    assert rescuable([cancelled], "duckdb") == []  # nothing transient started it


def test_the_cause_of_a_transient_failure_is_the_drivers_own_line():
    message = ("Runtime Error in model stg_flaky (models/staging/stg_flaky.py)\n  Python model failed:\n"
               "  ConnectionResetError: Connection reset by peer")
    assert transient_cause(_failed(message), "duckdb") == "ConnectionResetError: Connection reset by peer"
