"""One in-process dbt invocation (`dbtRunner.invoke`) as DbtProject makes every one of them:
stoppable (flows/core/stop.py), and with dbt-duckdb's embedded database handled as the dbt CLI would."""

from __future__ import annotations

import sys
from typing import Any

from flows.core.stop import dbt_invocation


def invoke(runner: Any, argv: list[str]) -> Any:
    """`runner.invoke(argv)`: stoppable by a step timeout or SIGTERM, and leaving no DuckDB open."""
    if "dbt.adapters.duckdb" in sys.modules:  # loaded by the parse that precedes every command
        _cancel_skips_closed_duckdb_connections()
    with dbt_invocation():  # a step timeout or SIGTERM now cancels its queries (flows/core/stop.py)
        try:
            return runner.invoke(argv)
        finally:
            _close_embedded_database()


def _cancel_skips_closed_duckdb_connections() -> None:
    """Make dbt-duckdb's fail-fast cancel skip connections whose node already finished.

    dbt-duckdb (1.11) interrupts every connection dbt still lists as open, including those
    whose cursor its node already closed. That raises "Connection already closed!" inside
    dbt's fail-fast handler, and dbt returns that error instead of the run's results (seen in
    about 1 of 10 fail-fast stops with 4 threads). A closed connection has nothing to cancel.
    """
    import duckdb
    from dbt.adapters.duckdb.environments.local import LocalEnvironment

    cancel = LocalEnvironment.__dict__["cancel"].__func__
    if getattr(cancel, "skips_closed", False):
        return

    def cancel_open_only(cls, connection: Any) -> None:
        try:
            cancel(cls, connection)
        except duckdb.ConnectionException:
            pass

    cancel_open_only.skips_closed = True  # type: ignore[attr-defined]
    LocalEnvironment.cancel = classmethod(cancel_open_only)  # type: ignore[method-assign, assignment]


def _close_embedded_database() -> None:
    """Close dbt-duckdb's DuckDB instance after every command, as the dbt CLI does when it exits.

    dbt-duckdb >= 1.10 keeps it open between in-process invocations (`keep_open` defaults to
    true): its buffer pool then grows with every step of a run, and the write-ahead log of the
    whole run is checkpointed only at process exit. Measured on 2,000 nodes: +200 MB peak.
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # another adapter: nothing stays open between commands
        return
    DuckDBConnectionManager.close_all_connections()
