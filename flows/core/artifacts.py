"""What a run leaves for people: a markdown summary (with timing trends), a model timing table,
a timeline picture, the failures. Live progress while it builds is flows/core/progress.py.

Node detail lives here, published once per run, not as one Prefect object per node.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Optional

import leather
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows.core.dbt import BUILDABLE, NodeResult, StepResult
from flows.core.results import Rescue
from flows.core.freshness import SourceFreshness
from flows.core.progress import RunProgress
from flows.core.state_store import ModelTimings, TimingSample
from flows.core.timeline import data_uri, timeline_image, timeline_markdown
from flows.errors import cause_line

REGRESSION_FACTOR = 3.0
MIN_HISTORY = 3
TREND_MODELS = 10  # the slowest models whose recent runs the summary charts
SPARK = "▁▂▃▄▅▆▇█"
# Tableau 10: one colour per trend line. leather's own palette has fewer than TREND_MODELS colours.
LINE_COLORS = ("#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1", "#FF9DA7",
               "#9C755F", "#BAB0AC")


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
    rows: Optional[int] = None  # rows this build processed, where the adapter reports them
    median_rows: Optional[float] = None  # the same, over the baseline runs that reported them

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
    step_results: list[tuple[str, StepResult]] = field(default_factory=list)  # what the timeline draws
    trends: dict[str, list[float]] = field(default_factory=dict)  # slowest models -> seconds, oldest first
    progress: RunProgress = field(init=False, repr=False)  # live progress of the build steps

    def __post_init__(self) -> None:
        self.progress = RunProgress(self.environment)
    seeds_outside_version: list[str] = field(default_factory=list)  # blue-green: seeds loaded in place

    def record(self, name: str, result: StepResult) -> StepResult:
        status = "skipped" if result.skipped_reason else ("ok" if result.success else "failed")
        self.steps.append(StepRecord(name, status, result.seconds, result.counts(), result.skipped_reason or ""))
        if not result.skipped_reason:
            self.results.append(result)
            self.step_results.append((name, result))
        else:
            self.progress.drop(name)
        return result

    def note(self, name: str, status: str, note: str = "", seconds: float = 0.0) -> None:
        self.steps.append(StepRecord(name, status, seconds, {}, note))
        if status == "skipped":  # done in an earlier attempt of the run: this attempt does not wait for it
            self.progress.drop(name)

    @property
    def nodes(self) -> list[NodeResult]:
        return [node for result in self.results for node in result.nodes]

    @property
    def failures(self) -> list[NodeResult]:
        return [node for node in self.nodes if node.failed]

    @property
    def rescues(self) -> list[Rescue]:
        """Nodes that failed transiently and that a step ran again with dbt retry (flows/core/transient.py)."""
        return [rescue for result in self.results for rescue in result.rescues]


def model_timings(report: RunReport) -> list[dict]:
    rows = [
        {"node": n.name, "type": n.resource_type, "status": n.status, "seconds": round(n.execution_time, 3)}
        for n in report.nodes if n.resource_type in BUILDABLE
    ]
    return sorted(rows, key=lambda r: r["seconds"], reverse=True)


def timing_samples(report: RunReport, checksums: dict[str, str]) -> dict[str, TimingSample]:
    """This run's successful model builds, as the state store keeps them (with the code's checksum)."""
    return {n.unique_id: TimingSample(n.execution_time, checksums.get(n.unique_id), n.rows)
            for n in report.nodes if n.resource_type == "model" and n.status == "success"}


def find_regressions(report: RunReport, history: dict[str, ModelTimings],
                     checksums: Optional[dict[str, str]] = None) -> list[Regression]:
    """Models that took more than 3x their median of the last runs of the same code.

    `history` is what the state store held before this run. A model whose checksum changed since
    has no baseline yet: its new code is not a regression of the old."""
    checksums = checksums or {}
    found = []
    for node in report.nodes:
        past = history.get(node.unique_id)
        if node.resource_type != "model" or node.status != "success" or past is None:
            continue
        if None not in (past.checksum, checksums.get(node.unique_id)) and past.checksum != checksums[node.unique_id]:
            continue
        if len(past.seconds) < MIN_HISTORY:
            continue
        median = statistics.median(past.seconds)
        if median > 0 and node.execution_time > REGRESSION_FACTOR * median:
            reported = [r for r in past.rows if r is not None]
            found.append(Regression(node.name, node.execution_time, median, node.rows,
                                    statistics.median(reported) if reported else None))
    return sorted(found, key=lambda r: r.factor, reverse=True)


def slowest_trends(report: RunReport, history: dict[str, ModelTimings], count: int = TREND_MODELS,
                   checksums: Optional[dict[str, str]] = None) -> dict[str, list[float]]:
    """The `count` slowest models of this run, each with its seconds over its recent runs (this
    one last). History of older code is left out, as the regression flag leaves it out."""
    checksums = checksums or {}
    built = [n for n in report.nodes if n.resource_type == "model" and n.status == "success"]
    trends = {}
    for node in sorted(built, key=lambda n: n.execution_time, reverse=True)[:count]:
        past = history.get(node.unique_id, ModelTimings())
        same_code = None in (past.checksum, checksums.get(node.unique_id)) or past.checksum == checksums[node.unique_id]
        trends[node.name] = [*(past.seconds if same_code else []), round(node.execution_time, 3)]
    return trends


def sparkline(values: list[float]) -> str:
    top = max(values, default=0) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1)))] for v in values)


def trends_svg(trends: dict[str, list[float]]) -> str:
    """A small line chart: one line per model, its seconds per run, this run rightmost."""
    runs = max((len(v) for v in trends.values()), default=0)
    chart = leather.Chart("Slowest models, seconds over their last runs")
    chart.add_x_scale(1, max(runs, 2))
    chart.add_x_axis(name="run (this one is the last)")
    for index, (name, seconds) in enumerate(trends.items()):
        start = runs - len(seconds) + 1  # aligned on this run: a model with less history starts later
        chart.add_line([(start + i, value) for i, value in enumerate(seconds)], name=name, width=2,
                       stroke_color=LINE_COLORS[index % len(LINE_COLORS)])
    return chart.to_svg(width=720, height=360)


def trends_markdown(trends: dict[str, list[float]]) -> str:
    table = markdown_table(["model", "this run (s)", "median (s)", "runs", "trend"],
                           [[name, f"{v[-1]:.2f}", f"{statistics.median(v):.2f}", len(v), sparkline(v)]
                            for name, v in trends.items()])
    return f"![slowest models over their last runs]({data_uri(trends_svg(trends))})\n\n{table}"


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
    if report.seeds_outside_version:
        parts.append("Seeds loaded in place, outside the blue-green version (their schema is not the version's): "
                     + ", ".join(f"`{name}`" for name in report.seeds_outside_version))
    if report.freshness:
        parts.append("## Source freshness\n" + markdown_table(
            ["source", "status", "age", "max loaded at"],
            [[f.source, f.outcome, f.age, f.max_loaded_at or ""] for f in report.freshness],
        ))
    if report.undatable:
        parts.append("Sources with no freshness configured and no change signal (what reads them is always "
                     "rebuilt): " + ", ".join(f"`{name}`" for name in report.undatable))
    if report.rescues:
        final = {node.unique_id: node.status for node in report.nodes}
        parts.append("## Transient failures rescued (dbt retry inside the step)\n" + markdown_table(
            ["node", "error", "attempt", "then"],
            [[r.node, r.error, r.attempt, final.get(r.node, "")] for r in report.rescues],
        ))
    if report.failures:
        parts.append("## Failures\n" + failures_markdown(report))
    if report.regressions:
        parts.append("## Runtime regressions (> 3× median of recent runs of the same code)\n" + markdown_table(
            ["model", "seconds", "median", "factor", "rows", "median rows"],
            [[r.node, f"{r.seconds:.2f}", f"{r.median:.2f}", f"{r.factor:.1f}×", _rows(r.rows), _rows(r.median_rows)]
             for r in report.regressions],
        ))
    if report.trends:
        parts.append(f"## Slowest {len(report.trends)} models over their last runs\n" + trends_markdown(report.trends))
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


def _rows(rows: Optional[float]) -> str:
    return "—" if rows is None else f"{rows:,.0f}"  # "—": the adapter reports no row count (views, DuckDB)


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


def publish_artifacts(report: RunReport, docs_url: Optional[str] = None, manifest: Any = None) -> None:
    """Summary, timings, timeline; failures when some failed; docs when generated.

    manifest: the parsed manifest, whose dependencies give the timeline its critical path."""
    env = report.environment
    create_markdown_artifact(summary_markdown(report), key=artifact_key(env, "run-summary"),
                             description="dbt production run summary")
    if report.step_results:
        steps, parents = [(name, result.run_results) for name, result in report.step_results], dependencies(manifest)
        create_markdown_artifact(timeline_markdown(steps, parents), key=artifact_key(env, "timeline"),
                                 description=f"{timeline_image(steps, parents)}\nEvery node of every step, one row "
                                             "per dbt thread; the critical path in red")
    create_table_artifact(model_timings(report) or [{"node": "(none built)", "seconds": 0}],
                          key=artifact_key(env, "model-timings"), description="Model timings, slowest first")
    if report.failures:
        create_markdown_artifact(failures_markdown(report), key=artifact_key(env, "failures"),
                                 description="Failing nodes with their compiled SQL")
    if docs_url:
        create_link_artifact(docs_url, link_text="dbt docs", key=artifact_key(env, "docs"),
                             description="Static dbt docs site in the state store")


def dependencies(manifest: Any) -> dict[str, list[str]]:
    """unique_id -> the unique_ids it depends on, for every node and unit test (none without a manifest)."""
    if manifest is None:
        return {}
    nodes = {**manifest.nodes, **getattr(manifest, "unit_tests", {})}
    return {unique_id: list(getattr(node.depends_on, "nodes", [])) for unique_id, node in nodes.items()}


def code_checksums(manifest: Any) -> dict[str, str]:
    """dbt's checksum of each model's file: when it changes, the model's timing baseline starts over."""
    return {unique_id: node.checksum.checksum for unique_id, node in manifest.nodes.items()
            if node.resource_type.value == "model" and getattr(node, "checksum", None)}
