"""What one dbt command did, as values: node results, the command's own run_results and sources.json.

`StepResult` is deliberately *not* a dataclass. Prefect walks every task parameter that is a
dataclass, pydantic model or collection, field by field, to find upstream futures (twice per
task call); a plain class is a leaf to that walk (see flows/core/dbt.py). It is immutable:
its fields are set once, when the command's artifacts are read, and never again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

FAILED_STATUSES = {"error", "fail", "runtime error"}


@dataclass(frozen=True)
class NodeResult:
    unique_id: str
    resource_type: str
    name: str
    status: str
    message: str
    execution_time: float
    compiled_path: Optional[str]
    relation: Optional[str]
    rows: Optional[int] = None

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


@dataclass(frozen=True)
class Rescue:
    """A node that failed transiently and was run again by `dbt retry` inside its step."""

    node: str  # unique_id
    error: str  # the database's own error line
    attempt: int  # 1: the first `dbt retry`


class StepResult:
    """What one dbt command did (or several, combined). Immutable; a plain class (see module doc)."""

    __slots__ = ("command", "success", "seconds", "nodes", "skipped_reason", "run_results", "sources", "rescues")
    command: str
    success: bool
    seconds: float
    nodes: list[NodeResult]
    skipped_reason: Optional[str]
    run_results: Optional[dict]
    sources: Optional[dict]
    rescues: tuple[Rescue, ...]

    def __init__(self, command: str, success: bool, seconds: float, nodes: Optional[list[NodeResult]] = None,
                 skipped_reason: Optional[str] = None, run_results: Optional[dict] = None,
                 sources: Optional[dict] = None, rescues: tuple[Rescue, ...] = ()):
        for name, value in (("command", command), ("success", success), ("seconds", seconds),
                            ("nodes", list(nodes) if nodes is not None else []), ("skipped_reason", skipped_reason),
                            ("run_results", run_results),  # dbt's own run_results.json of this command
                            ("sources", sources),  # dbt's sources.json of a `source freshness`
                            ("rescues", tuple(rescues))):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"StepResult is immutable: build a new one (combined(), rescued()) instead of setting {name}")

    def __repr__(self) -> str:
        state = f"skipped: {self.skipped_reason}" if self.skipped_reason else ("ok" if self.success else "failed")
        return f"StepResult({self.command!r}, {state}, {self.seconds:.1f}s, {len(self.nodes)} nodes)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepResult) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # equal by value, and holds lists

    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for node in self.nodes:
            totals[node.status] = totals.get(node.status, 0) + 1
        return totals

    @property
    def failures(self) -> list[NodeResult]:
        return [node for node in self.nodes if node.failed]

    @classmethod
    def skipped(cls, command: str, reason: str) -> "StepResult":
        return cls(command=command, success=True, seconds=0.0, skipped_reason=reason)


def combined(first: StepResult, then: StepResult) -> StepResult:
    """One step made of two dbt commands: their nodes, time and run results together, so the
    saved state (built from run_results) holds every node the report shows."""
    run_results = first.run_results
    if then.run_results:
        before = first.run_results or {}
        run_results = {**(before or then.run_results),  # dbt's metadata and args of the first command
                       "results": [*before.get("results", []), *then.run_results["results"]],
                       "elapsed_time": before.get("elapsed_time", 0) + then.run_results.get("elapsed_time", 0)}
    return StepResult(first.command, first.success and then.success, first.seconds + then.seconds,
                      [*first.nodes, *then.nodes], first.skipped_reason, run_results, first.sources or then.sources,
                      (*first.rescues, *then.rescues))


def rescued(first: StepResult, retry: StepResult, rescues: tuple[Rescue, ...]) -> StepResult:
    """A step whose transient failures `dbt retry` ran again: each node as its last attempt left it.

    Nodes the retry re-ran (the failed ones and those skipped because of them) take the retry's
    result, in node results and in run_results alike, so the saved state and a later flow-level
    `dbt retry` see the node as it now is, not as it first failed."""
    again = {node.unique_id for node in retry.nodes}
    nodes = [node for node in first.nodes if node.unique_id not in again] + list(retry.nodes)
    run_results = first.run_results
    if first.run_results is not None:
        kept = [r for r in first.run_results.get("results", []) if r.get("unique_id") not in again]
        run_results = {**first.run_results, "results": [*kept, *(retry.run_results or {}).get("results", [])],
                       "elapsed_time": first.run_results.get("elapsed_time", 0)
                       + (retry.run_results or {}).get("elapsed_time", 0)}
    return StepResult(first.command, retry.success, first.seconds + retry.seconds, nodes, None, run_results,
                      first.sources, (*first.rescues, *retry.rescues, *rescues))


def compiled_path(node: Any, target_path: Path, project_name: str) -> Optional[str]:
    original = getattr(node, "original_file_path", None)
    if not original or node.resource_type.value not in {"model", "test", "snapshot", "seed"}:
        return None
    return str(target_path / "compiled" / getattr(node, "package_name", project_name) / original)


def node_result(result: Any, target_path: Path, project_name: str) -> NodeResult:
    """A NodeResult from one of dbt's own RunResult objects."""
    node = result.node
    status = getattr(result.status, "value", str(result.status))
    rows = getattr(getattr(result, "adapter_response", None), "get", lambda *_: None)("rows_affected")
    return NodeResult(
        unique_id=node.unique_id,
        resource_type=node.resource_type.value,
        name=node.name,
        status=str(status),
        message=str(result.message or ""),
        execution_time=float(result.execution_time or 0.0),
        compiled_path=compiled_path(node, target_path, project_name),
        relation=getattr(node, "relation_name", None),
        rows=rows,
    )


def with_reported_failures(nodes: list[NodeResult], run_results: Optional[dict],
                           reported: list[NodeResult]) -> tuple[list[NodeResult], Optional[dict]]:
    """Put back the failures dbt's fail-fast lost from its own results, first failure first.

    dbt-core's fail-fast stop can run before the failing node's result reaches its results
    list (the worker thread flags the stop, the pool thread records the result): that node
    then shows as "skipped". The run must report it as failed, and `dbt retry` must rerun it.
    The nodes the stop cancelled fail after it ("Interrupted"): the failure that stopped the
    run is listed before them, in the order the callback saw them finish.
    """
    recorded = {node.unique_id for node in nodes if node.failed}
    lost = {node.unique_id: node for node in reported if node.unique_id not in recorded}
    nodes = [node for node in nodes if node.unique_id not in lost] + list(lost.values())
    for entry in (run_results or {}).get("results", []):
        if entry["unique_id"] in lost:
            entry.update(status=lost[entry["unique_id"]].status, message=lost[entry["unique_id"]].message)
    finished = {node.unique_id: order for order, node in enumerate(reported)}
    return sorted(nodes, key=lambda node: finished.get(node.unique_id, len(finished))), run_results
