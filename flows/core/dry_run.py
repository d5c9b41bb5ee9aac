"""A plan-only run's answer: what a real run would build now, and why each node is in it.

Each node's reason comes from the gate's own inputs (freshness.GateDecision): the fresher
sources, the undated sources whose change signal moved, and the nodes dbt calls
`state:modified`, each traced to the planned node through the manifest's parents.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbt.contracts.graph.manifest import Manifest
from prefect.artifacts import create_markdown_artifact

from flows.core.artifacts import artifact_key, markdown_table
from flows.core.freshness import GateDecision, decide_gate
from flows.core.layers import Graph, Plan
from flows.core.run import ProductionRun
from flows.core.steps import Selection, plan_layers

NAMES_SHOWN = 3  # per reason: a node downstream of 40 changed models says 3 and "+37 more"


def post_plan(run: ProductionRun, selection: Selection) -> str:
    """Apply the gate as a real run would, and post what it would build as the run's plan artifact."""
    decision = decide_gate(run, set(selection.candidates), list_modified=True)
    plan = plan_layers(run, decision)
    nodes = explain(decision, plan, run.live.parsed_manifest)
    create_markdown_artifact(plan_markdown(run.environment.name, decision, plan, nodes),
                             key=artifact_key(run.environment.name, "plan"),
                             description="Plan only: what a real run would build now, and why")
    return f"plan only: a real run would build {len(nodes)} node(s)"


@dataclass(frozen=True)
class PlannedNode:
    unique_id: str
    resource_type: str
    stage: str  # seeds, snapshots, or the layer that builds it
    why: str


def explain(decision: GateDecision, plan: Plan, manifest: Manifest) -> list[PlannedNode]:
    """Every node the plan builds, with the stage that builds it and why the gate let it through."""
    graph = Graph(manifest)
    stage_of = {u: "seeds" for u in plan.seeds} | {u: "snapshots" for u in plan.snapshots}
    for stage in plan.layers:
        stage_of.update(dict.fromkeys(stage.nodes, stage.name))
    modified = decision.modified or frozenset()

    def name(unique_id: str) -> str:
        source = manifest.sources.get(unique_id)
        return f"{source.source_name}.{source.name}" if source else unique_id.split(".")[-1]

    def listed(ids: set[str]) -> str:
        names = sorted(name(u) for u in ids)
        more = f" (+{len(names) - NAMES_SHOWN} more)" if len(names) > NAMES_SHOWN else ""
        return ", ".join(names[:NAMES_SHOWN]) + more

    def why(unique_id: str) -> str:
        if decision.off_reason:
            return f"gate off: {decision.off_reason}"
        upstream = graph.ancestors([unique_id])
        reasons = []
        if unique_id in modified:
            reasons.append(f"changed since the last build: {manifest.nodes[unique_id].original_file_path}")
        if upstream & decision.fresher:
            reasons.append(f"downstream of fresher source {listed(upstream & decision.fresher)}")
        if upstream & decision.changed:
            reasons.append(f"downstream of changed or undatable source {listed(upstream & decision.changed)}")
        if upstream & modified:
            reasons.append(f"downstream of changed {listed(upstream & modified)}")
        return "; ".join(reasons) or "state:modified+ (a change dbt sees, upstream)"

    return sorted((PlannedNode(u, graph.resource_type[u], stage, why(u)) for u, stage in stage_of.items()),
                  key=lambda n: (n.stage, n.unique_id))


def plan_markdown(environment: str, decision: GateDecision, plan: Plan, nodes: list[PlannedNode]) -> str:
    tests = sum(len(stage.tests) for stage in plan.layers)
    parts = [f"# Plan only — `{environment}`: a real run would build {len(nodes)} node(s) and run {tests} test(s)",
             "Nothing was built, no lock was taken and no state was written."]
    if decision.off_reason:
        parts.append(f"Freshness gate off: {decision.off_reason}.")
    elif decision.nothing_new:
        parts.append("Freshness gate: no source is fresher or changed, and the project is unchanged since the "
                     "last build (same parse fingerprint): nothing to rebuild.")
    else:
        parts.append(f"Freshness gate: {len(decision.candidates)} of {decision.selected} selected node(s) are "
                     "downstream of fresher or changed sources, or changed.")
    stages = [("seeds", len(plan.seeds), 0), ("snapshots", len(plan.snapshots), 0),
              *((stage.name, len(stage.nodes), len(stage.tests)) for stage in plan.layers)]
    parts.append("## Per stage\n" + markdown_table(["stage", "nodes", "tests"], [list(row) for row in stages]))
    if plan.empty_layers:
        parts.append("Layers with nothing to build: " + ", ".join(f"`{name}`" for name in plan.empty_layers))
    if nodes:
        parts.append("## What would be built, and why\n" + markdown_table(
            ["node", "type", "stage", "why"], [[f"`{n.unique_id}`", n.resource_type, n.stage, n.why] for n in nodes]))
    return "\n\n".join(parts)
