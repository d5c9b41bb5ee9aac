"""Selector helpers: which resource types dbt builds, one selector term per node, and dbt's own
selector run in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from dbt.contracts.graph.manifest import Manifest

from flows.errors import InputError

BUILDABLE = ("model", "seed", "snapshot")  # what a run materialises
TESTS = ("test", "unit_test")  # data tests and unit tests
EXECUTED = (*BUILDABLE, *TESTS)  # what `dbt build` runs for them: the only nodes we ever select


def resource_type_of(unique_id: str) -> str:
    """The resource type of any unique_id in the manifest ("model", "exposure", "metric", ...)."""
    return unique_id.split(".", 1)[0]  # dbt builds every unique_id as <resource type>.<package>.<name>...


def fqn_selector(manifest: Manifest, unique_id: str) -> str:
    """`fqn:<the node's fqn>`. dbt matches an fqn selector as a prefix: a model's also matches its
    unit tests (their fqn continues with the test's name) and, unversioned, all its versions."""
    node = manifest.nodes.get(unique_id) or manifest.unit_tests.get(unique_id)
    if node is None or resource_type_of(unique_id) not in EXECUTED:
        raise InputError(f"{unique_id} is not a node dbt builds: it cannot be selected on its own")
    return "fqn:" + ".".join(node.fqn)


def exact_selector(manifest: Manifest, unique_id: str) -> str:
    """One selector term matching this node and nothing else: its fqn, intersected with its type."""
    return f"{fqn_selector(manifest, unique_id)},resource_type:{resource_type_of(unique_id)}"


def select_in_process(manifest: Manifest, flags: Any, project_dir: Path, target_path: Path, select: Sequence[str],
                      exclude: Optional[Sequence[str]], resource_types: Sequence[str],
                      state_dir: Optional[Path]) -> Optional[set[str]]:
    """What `dbt ls --select … --exclude … --resource-type … [--state …]` lists, from the classes that
    command runs (dbt's graph, ResourceTypeSelector, PreviousState), without starting dbt: a `dbt ls`
    costs 0.1–0.6 s (N = 500–2,000) to set up before it selects in ~10 ms, and a gated run asked four.

    flags: what dbt set for this project's own parse (project flags such as
    state_modified_compare_more_unrendered_values decide `state:modified`). None when the answer
    could differ from `dbt ls`: no flags, no `--select` (then a default selector of selectors.yml
    applies), or tests among the resource types (their indirect selection is a per-command flag).
    """
    if flags is None or not hasattr(flags, "INDIRECT_SELECTION") or not select or not resource_types \
            or not set(resource_types) <= set(BUILDABLE):
        return None
    from dbt.contracts.state import PreviousState
    from dbt.flags import get_flags, set_flags
    from dbt.graph import ResourceTypeSelector, parse_difference
    from dbt.node_types import NodeType
    from dbt_common.events.contextvars import task_contextvars

    from flows.core import memory_state

    before = get_flags()
    set_flags(flags)
    try:
        with task_contextvars(project_root=str(project_dir)):  # where `path:` selectors start
            spec = parse_difference(list(select), list(exclude) if exclude else None)
            memory_state.install()  # so the command that follows reuses the manifest read here
            state = PreviousState(state_dir, target_path, project_dir) if state_dir is not None else None
            selector = ResourceTypeSelector(_graph_of(manifest), manifest, state,
                                            [NodeType(kind) for kind in resource_types], include_empty_nodes=True)
            return {str(unique_id) for unique_id in selector.get_selected(spec, warn_on_no_nodes=False)}
    finally:
        set_flags(before)


_linked: list = []  # [(manifest, graph)]: the graph of the manifest selected from last


def _graph_of(manifest: Manifest) -> Any:
    """dbt's graph of the manifest, as `dbt ls` links it (a manifest's nodes do not change after its parse)."""
    from dbt.compilation import Linker
    from dbt.graph import Graph

    if not _linked or _linked[0][0] is not manifest:
        linker = Linker()
        linker.link_graph(manifest)
        _linked[:] = [(manifest, Graph(linker.graph))]
    return _linked[0][1]
