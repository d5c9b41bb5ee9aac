"""One in-process dbt invocation (`dbtRunner.invoke`) as DbtProject makes every one of them:
stoppable (flows/core/stop.py), with dbt-duckdb's embedded database handled as the dbt CLI would,
and `--state` manifests read once per process (flows/core/memory_state.py)."""

from __future__ import annotations

import gc
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from flows.core import memory_state
from flows.core.stop import dbt_invocation


FULL_COLLECTION_EVERY = 100  # middle-generation collections per full one during a dbt command (CPython: 10)
_FROZEN_LOCK = threading.Lock()
_commands_running = 0
_thresholds_found = gc.get_threshold()  # by the first of the commands running, restored by the last


def invoke(runner: Any, argv: list[str]) -> Any:
    """`runner.invoke(argv)`: stoppable by a step timeout or SIGTERM, and leaving no DuckDB open."""
    if "dbt.adapters.duckdb" in sys.modules:  # loaded by the parse that precedes every command
        _cancel_skips_closed_duckdb_connections()
    memory_state.install()  # a --state manifest is read once per process, not once per command
    _lean_graph_summary()
    with dbt_invocation(), _heap_frozen():  # a step timeout or SIGTERM now cancels its queries (flows/core/stop.py)
        try:
            return runner.invoke(argv)
        finally:
            _close_embedded_database()


@contextmanager
def _heap_frozen() -> Iterator[None]:
    """During a dbt command, keep what was alive before it (the parsed manifests: millions of
    objects at 2,000 nodes) out of the cyclic garbage collector, and collect the oldest generation
    10× less often.

    Every full collection traverses the whole heap, and a build triggers dozens: at 2,000 nodes
    (`--layer-mode dag`, measured with gc.callbacks) the collector took 22.4 s of a 198 s run, 12.8 s
    of it in 25 full collections. The dbt CLI holds one manifest; a run here holds live's, the
    version's and a previous state's. Frozen, and with full collections every 100 middle ones
    instead of 10: 13.4 s in all, 5.6 s in full collections. Unfrozen afterwards (freeze and unfreeze
    splice lists, O(1)) once no command runs, so whatever of it became garbage is still collected,
    and the thresholds are restored: nothing outlives the commands.
    """
    global _commands_running, _thresholds_found
    with _FROZEN_LOCK:  # commands may overlap in threads: the first in sets, the last out restores
        if not _commands_running:
            _thresholds_found = young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
        _commands_running += 1
        gc.freeze()
    try:
        yield
    finally:
        with _FROZEN_LOCK:
            _commands_running -= 1
            if not _commands_running:
                gc.unfreeze()
                gc.set_threshold(*_thresholds_found)


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


def graph_summary(linker: Any, manifest: Any) -> dict[int, dict[str, Any]]:
    """dbt's `Linker.get_graph_summary`, the same summary without serialising every node to a dict
    for its resource type: dbt writes it (graph_summary.json, diagnostics only) twice per `dbt build`,
    0.1-0.2 s each at 2,000 nodes."""
    index = {name: position for position, name in enumerate(linker.graph)}
    summary: dict[int, dict[str, Any]] = {}
    for name, position in index.items():
        entry: dict[str, Any] = {"name": name, "type": manifest.expect(name).resource_type.value}
        successors = [index[child] for child in linker.graph.successors(name)]
        if successors:
            entry["succ"] = successors
        summary[position] = entry
    return summary


def _lean_graph_summary() -> None:
    from dbt.compilation import Linker

    if Linker.get_graph_summary is not graph_summary:
        _DBT_GRAPH_SUMMARY.append(Linker.get_graph_summary)  # kept: the tests compare the two
        Linker.get_graph_summary = graph_summary  # type: ignore[method-assign, assignment]


_DBT_GRAPH_SUMMARY: list[Any] = []


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
