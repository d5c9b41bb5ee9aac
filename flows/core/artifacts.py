"""What a run leaves for people: a markdown summary, a model timing table, the failures.

Node detail lives here, published once per run, not as one Prefect object per node.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Optional

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows.core.dbt import BUILDABLE, NodeResult, StepResult
from flows.core.freshness import SourceFreshness
from flows.errors import cause_line

REGRESSION_FACTOR = 3.0
MIN_HISTORY = 3


@dataclass
class StepRecord:
    name: str
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    note: str = ""


@dataclass
class Regression:
    node: str
    seconds: float
    median: float

    @property
    def factor(self) -> float:
        return self.seconds / self.median if self.median else float("inf")


@dataclass
class RunReport:
    environment: str
    outcome: str = "running"
    version: Optional[str] = None
    steps: list[StepRecord] = field(default_factory=list)
    results: list[StepResult] = field(default_factory=list)
    freshness: list[SourceFreshness] = field(default_factory=list)
    undatable: list[str] = field(default_factory=list)  # sources with no freshness and no change signal
    regressions: list[Regression] = field(default_factory=list)
    audit: list = field(default_factory=list)
    versions: list[dict] = field(default_factory=list)
    empty_layers: list[str] = field(default_factory=list)
    query_history_filter: Optional[str] = None  # Databricks: the condition selecting this run's queries

    def record(self, name: str, result: StepResult) -> StepResult:
        status = "skipped" if result.skipped_reason else ("ok" if result.success else "failed")
        self.steps.append(StepRecord(name, status, result.seconds, result.counts(), result.skipped_reason or ""))
        if not result.skipped_reason:
            self.results.append(result)
        return result

    def note(self, name: str, status: str, note: str = "", seconds: float = 0.0) -> None:
        self.steps.append(StepRecord(name, status, seconds, {}, note))

    @property
    def nodes(self) -> list[NodeResult]:
        return [node for result in self.results for node in result.nodes]

    @property
    def failures(self) -> list[NodeResult]:
        return [node for node in self.nodes if node.failed]


def model_timings(report: RunReport) -> list[dict]:
    rows = [
        {"node": n.name, "type": n.resource_type, "status": n.status, "seconds": round(n.execution_time, 3)}
        for n in report.nodes if n.resource_type in BUILDABLE
    ]
    return sorted(rows, key=lambda r: r["seconds"], reverse=True)


def find_regressions(report: RunReport, history: dict[str, list[float]]) -> list[Regression]:
    """Models that took more than 3x their median of the last runs."""
    found = []
    for node in report.nodes:
        past = history.get(node.unique_id, [])
        if node.resource_type != "model" or len(past) < MIN_HISTORY or node.status != "success":
            continue
        median = statistics.median(past)
        if median > 0 and node.execution_time > REGRESSION_FACTOR * median:
            found.append(Regression(node.name, node.execution_time, median))
    return sorted(found, key=lambda r: r.factor, reverse=True)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(report: RunReport) -> str:
    parts = [f"# dbt production run — `{report.environment}`: {report.outcome}"]
    if report.version:
        parts.append(f"Version: `{report.version}`")
    if report.query_history_filter:
        parts.append("Warehouse queries of this run (dbt's and the flow's own), for cost: "
                     f"`SELECT * FROM system.query.history WHERE {report.query_history_filter}`")
    parts.append("## Steps\n" + markdown_table(
        ["step", "status", "seconds", "nodes", "note"],
        [[s.name, s.status, f"{s.seconds:.1f}", ", ".join(f"{k}={v}" for k, v in sorted(s.counts.items())), s.note]
         for s in report.steps],
    ))
    if report.empty_layers:
        parts.append("Empty layers skipped: " + ", ".join(f"`{name}`" for name in report.empty_layers))
    if report.freshness:
        parts.append("## Source freshness\n" + markdown_table(
            ["source", "status", "age", "max loaded at"],
            [[f.source, f.outcome, f.age, f.max_loaded_at or ""] for f in report.freshness],
        ))
    if report.undatable:
        parts.append("Sources with no freshness configured and no change signal (what reads them is always "
                     "rebuilt): " + ", ".join(f"`{name}`" for name in report.undatable))
    if report.failures:
        parts.append("## Failures\n" + failures_markdown(report))
    if report.regressions:
        parts.append("## Runtime regressions (> 3× median of recent runs)\n" + markdown_table(
            ["model", "seconds", "median", "factor"],
            [[r.node, f"{r.seconds:.2f}", f"{r.median:.2f}", f"{r.factor:.1f}×"] for r in report.regressions],
        ))
    if report.audit:
        parts.append("## Publish audit (row counts, live → new)\n" + markdown_table(
            ["relation", "live rows", "new rows", "verdict"],
            [[a.relation, "—" if a.live_rows is None else a.live_rows, a.new_rows, a.verdict] for a in report.audit],
        ))
    if report.versions:
        parts.append("## Versions\n" + markdown_table(
            ["version", "status", "live", "created", "rebuilt"],
            [[v["version"], v["status"], "✔" if v["live"] else "", v["created_at"], v["rebuilt"]] for v in report.versions[:10]],
        ))
    return "\n\n".join(parts)


def failures_markdown(report: RunReport) -> str:
    return failures_table(report.failures)


def failures_table(failures: list[NodeResult]) -> str:
    """The one table of failing nodes (production, ad-hoc and slim CI): the line that explains each, and
    where its compiled SQL is."""
    return markdown_table(
        ["node", "type", "status", "cause", "compiled SQL"],
        [[f.name, f.resource_type, f.status, cause_line(f.message, limit=500), f"`{f.compiled_path}`" if f.compiled_path else ""]
         for f in failures],
    )


def artifact_key(environment: str, what: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in environment.lower())
    return f"dbt-{slug}-{what}"


def publish_artifacts(report: RunReport, docs_url: Optional[str] = None) -> None:
    """Three artifacts per run (four with docs): summary, timings, failures."""
    env = report.environment
    create_markdown_artifact(summary_markdown(report), key=artifact_key(env, "run-summary"),
                             description="dbt production run summary")
    create_table_artifact(model_timings(report) or [{"node": "(none built)", "seconds": 0}],
                          key=artifact_key(env, "model-timings"), description="Model timings, slowest first")
    if report.failures:
        create_markdown_artifact(failures_markdown(report), key=artifact_key(env, "failures"),
                                 description="Failing nodes with their compiled SQL")
    if docs_url:
        create_link_artifact(docs_url, link_text="dbt docs", key=artifact_key(env, "docs"),
                             description="Static dbt docs site in the state store")
