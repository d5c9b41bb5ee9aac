"""Split one run's nodes into ordered stages: seeds, source snapshots, then the layers.

Works on any stock project from its manifest alone:
- each layer takes its own selector's nodes plus their upstream nodes not built yet,
  so a utility model that staging refs is built with staging;
- nodes in no layer go last;
- a data test runs in the stage where its last parent is built, never before (a test of a
  source that a seed of the project loads runs once that seed is loaded);
- a unit test runs with the model it tests;
- a layer with nothing to build is skipped (and said so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Optional

from dbt.contracts.graph.manifest import Manifest

from flows.core.dbt import TESTS
from flows.core.freshness import seed_loaded_sources


# How the layers are built:
# - "layers": one `dbt build` per layer; a layer starts once the whole layer before it is built
#   and tested.
# - "dag": one `dbt build` of every layer. dbt still runs a model's tests before anything
#   downstream of it, and skips what a failure would feed; nothing waits for the rest of a layer.
#   Where models wait on the warehouse, a layer's slowest model no longer holds up the next layer.
LayerMode = Literal["layers", "dag"]
ALL_LAYERS = "all layers"  # the one build stage of "dag" mode


@dataclass
class Stage:
    name: str
    nodes: set[str] = field(default_factory=set)
    tests: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.nodes or self.tests)


@dataclass
class Plan:
    seeds: set[str]
    snapshots: set[str]
    layers: list[Stage]
    empty_layers: list[str]
    # Sources whose tests the run runs (None: every source's). A gated run tests the sources it reads
    # and those whose data is new; a source neither read nor changed passed its tests last time.
    tested_sources: Optional[set[str]] = None

    @property
    def nodes(self) -> set[str]:
        return self.seeds | self.snapshots | set().union(*(s.nodes for s in self.layers))

    def is_empty(self) -> bool:
        return not (self.seeds or self.snapshots or any(self.layers))

    def to_json(self) -> dict:
        """For the run's journal: a flow retry builds the plan of the first attempt, not a new one."""
        return {"seeds": sorted(self.seeds), "snapshots": sorted(self.snapshots), "empty": self.empty_layers,
                "layers": [{"name": s.name, "nodes": sorted(s.nodes), "tests": sorted(s.tests)} for s in self.layers],
                "tested_sources": None if self.tested_sources is None else sorted(self.tested_sources)}

    def in_one_build(self) -> "Plan":
        """The "dag" layer mode's plan: the layers' nodes and tests in one stage."""
        if len(self.layers) <= 1:
            return self
        merged = Stage(ALL_LAYERS, set().union(*(s.nodes for s in self.layers)),
                       set().union(*(s.tests for s in self.layers)))
        return Plan(self.seeds, self.snapshots, [merged], self.empty_layers, self.tested_sources)

    @classmethod
    def from_json(cls, saved: dict) -> "Plan":
        tested = saved.get("tested_sources")
        return cls(set(saved["seeds"]), set(saved["snapshots"]),
                   [Stage(s["name"], set(s["nodes"]), set(s["tests"])) for s in saved["layers"]], saved["empty"],
                   None if tested is None else set(tested))


class Graph:
    """Parents of every node, tests and unit tests of a manifest."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.resource_type: dict[str, str] = {}
        self.parents: dict[str, list[str]] = {}
        for unique_id, node in manifest.nodes.items():
            self.resource_type[unique_id] = node.resource_type.value
            self.parents[unique_id] = list(getattr(node.depends_on, "nodes", []))
        for unique_id, test in manifest.unit_tests.items():
            self.resource_type[unique_id] = "unit_test"
            self.parents[unique_id] = list(test.depends_on.nodes)
        for unique_id in manifest.sources:
            self.resource_type[unique_id] = "source"
            self.parents[unique_id] = []
        seed_ids = {node.name: u for u, node in manifest.nodes.items() if node.resource_type.value == "seed"}
        # A source whose table a seed of the project loads: its tests run once that seed is loaded.
        self.loaded_by = {source: seed_ids[seed] for source, seed in seed_loaded_sources(manifest).items()}

    def of_type(self, *types: str) -> set[str]:
        return {u for u, t in self.resource_type.items() if t in types}

    def sources_read_by(self, nodes: Iterable[str]) -> set[str]:
        return {p for node in nodes for p in self.parents.get(node, ()) if self.resource_type.get(p) == "source"}

    def source_tests(self) -> set[str]:
        """Data tests on sources alone, except sources a seed of the project loads (those run with the
        seed's layer, once it is loaded)."""
        return {t for t in self.of_type("test") if self.parents[t]
                and all(self.resource_type.get(p) == "source" and p not in self.loaded_by for p in self.parents[t])}

    def ancestors(self, start: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(start)
        while stack:
            for parent in self.parents.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen


def plan_stages(graph: Graph, candidates: set[str], layers: list[tuple[str, set[str]]]) -> Plan:
    """Order `candidates` (models, seeds, snapshots to build) into stages.

    `layers` pairs each layer's name with the node ids its selector matches.
    """
    seeds = candidates & graph.of_type("seed")
    snapshots = {
        s for s in candidates & graph.of_type("snapshot")
        if all(graph.resource_type.get(a) in {"source", "seed"} for a in graph.ancestors([s]))
    }
    built = seeds | snapshots
    stages: list[Stage] = []
    empty: list[str] = []
    for name, members in [*layers, ("unlayered", candidates)]:
        core = (members & candidates) - built
        if not core:
            if name != "unlayered":
                empty.append(name)
            continue
        nodes = core | ((graph.ancestors(core) & candidates) - built)
        built |= nodes
        stages.append(Stage(name, nodes))
    _place_tests(graph, candidates, stages)
    return Plan(seeds, snapshots, stages, empty)


def _place_tests(graph: Graph, candidates: set[str], stages: list[Stage]) -> None:
    stage_of = {node: index for index, stage in enumerate(stages) for node in stage.nodes}
    for test in graph.of_type(*TESTS):
        parents = [graph.loaded_by.get(p, p) for p in graph.parents[test]]
        parents = [p for p in parents if graph.resource_type.get(p) != "source"]
        built_parents = [p for p in parents if p in candidates]
        if not built_parents:
            continue  # tests on sources run in the source-test step; tests on unbuilt nodes need no re-run
        index = max((stage_of.get(p, 0) for p in built_parents), default=0)
        if not stages:
            stages.append(Stage("tests"))
        stages[index].tests.add(test)
