"""One object owns a dbt project and every invocation of it during a flow run.

dbt runs in-process through `dbtRunner`. The project is parsed once; every later
command reuses that manifest, so a step costs only its own work. Node results come
from dbt's own result objects, not from one Prefect call per node.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dbt.cli.main import dbtRunner
from dbt.contracts.graph.manifest import Manifest

from blocks.profile import RenderedProfile

BUILDABLE = {"model", "seed", "snapshot"}


class DbtCommandError(RuntimeError):
    """dbt itself failed (parse error, bad selector, crash) rather than a node."""


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
        return self.status in {"error", "fail", "runtime error"}


@dataclass
class StepResult:
    """What one dbt command did."""

    command: str
    success: bool
    seconds: float
    nodes: list[NodeResult] = field(default_factory=list)
    skipped_reason: Optional[str] = None
    run_results: Optional[dict] = None  # dbt's own run_results.json of this command

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


def _node_result(result: Any, target_path: Path, project_name: str) -> NodeResult:
    node = result.node
    compiled = None
    original = getattr(node, "original_file_path", None)
    if original and node.resource_type.value in {"model", "test", "snapshot", "seed"}:
        package = getattr(node, "package_name", project_name)
        compiled = str(target_path / "compiled" / package / original)
    status = getattr(result.status, "value", str(result.status))
    rows = getattr(getattr(result, "adapter_response", None), "get", lambda *_: None)("rows_affected")
    return NodeResult(
        unique_id=node.unique_id,
        resource_type=node.resource_type.value,
        name=node.name,
        status=str(status),
        message=str(result.message or ""),
        execution_time=float(result.execution_time or 0.0),
        compiled_path=compiled,
        relation=getattr(node, "relation_name", None),
        rows=rows,
    )


@dataclass
class DbtProject:
    """A dbt project bound to one rendered profile and one target path."""

    project_dir: Path
    profile: RenderedProfile
    target_path: Path
    vars: dict = field(default_factory=dict)
    threads: Optional[int] = None
    manifest: Optional[Manifest] = None

    def __post_init__(self) -> None:
        self.project_dir = Path(self.project_dir).resolve()
        self.target_path = Path(self.target_path).resolve()
        self.target_path.mkdir(parents=True, exist_ok=True)

    @property
    def project_name(self) -> str:
        return self.manifest.metadata.project_name if self.manifest else self.project_dir.name

    def _argv(self, command: list[str]) -> list[str]:
        argv = [
            *command,
            "--project-dir", str(self.project_dir),
            "--profiles-dir", str(self.profile.profiles_dir),
            "--target", self.profile.target,
            "--target-path", str(self.target_path),
            "--log-path", str(self.target_path / "logs"),
        ]
        if self.vars:
            argv += ["--vars", json.dumps(self.vars)]
        if self.threads and command[0] not in {"parse", "deps", "ls", "list", "clean"}:
            argv += ["--threads", str(self.threads)]
        return argv

    def parse(self) -> Manifest:
        """Parse once (partial parsing stays on); every later command reuses the result."""
        result = dbtRunner().invoke(self._argv(["parse"]))
        if not result.success or result.result is None:
            raise DbtCommandError(f"dbt parse failed: {result.exception or 'see the dbt log above'}")
        self.manifest = result.result
        return self.manifest

    def raw_invoke(self, command: list[str]) -> Any:
        if self.manifest is None:
            self.parse()
        return dbtRunner(manifest=self.manifest).invoke(self._argv(command))

    def run(self, command: list[str]) -> StepResult:
        """Run one dbt command and collect its node results."""
        started = time.perf_counter()
        result = self.raw_invoke(command)
        seconds = time.perf_counter() - started
        if result.exception is not None:
            raise DbtCommandError(f"dbt {' '.join(command[:2])} failed: {result.exception}")
        nodes = [
            _node_result(r, self.target_path, self.project_name)
            for r in (getattr(result.result, "results", None) or [])
        ]
        run_results = self.artifact("run_results.json") if nodes else None
        return StepResult(" ".join(command), bool(result.success), seconds, nodes, run_results=run_results)

    def list_ids(self, select: list[str] | None = None, exclude: list[str] | None = None,
                 resource_types: tuple[str, ...] = (), extra: list[str] = ()) -> set[str]:
        """unique_ids that a selection resolves to, through dbt's own selector grammar."""
        command = ["ls", "--output", "json", "--output-keys", "unique_id", "--quiet"]
        if select:
            command += ["--select", *select]
        if exclude:
            command += ["--exclude", *exclude]
        for resource_type in resource_types:
            command += ["--resource-type", resource_type]
        command += list(extra)
        result = self.raw_invoke(command)
        if not result.success or result.exception is not None:
            raise DbtCommandError(
                f"invalid selection (select={select}, exclude={exclude}): {result.exception or 'dbt ls failed'}"
            )
        return {json.loads(line)["unique_id"] for line in result.result or []}

    def artifact(self, name: str) -> Optional[dict]:
        path = self.target_path / name
        return json.loads(path.read_text()) if path.exists() else None
