"""Selector helpers: which resource types dbt builds, and one selector term per node."""

from __future__ import annotations

from dbt.contracts.graph.manifest import Manifest

from flows.errors import InputError

BUILDABLE = ("model", "seed", "snapshot")  # what a run materialises
TESTS = ("test", "unit_test")  # data tests and unit tests
EXECUTED = (*BUILDABLE, *TESTS)  # what `dbt build` runs for them: the only nodes we ever select


def resource_type_of(unique_id: str) -> str:
    """The resource type of any unique_id in the manifest ("model", "exposure", "metric", ...)."""
    return unique_id.split(".", 1)[0]  # dbt builds every unique_id as <resource type>.<package>.<name>...


def unexecuted_types(manifest: Manifest) -> list[str]:
    """The resource types this project defines that dbt does not build (selectors match them)."""
    defined = {"source": manifest.sources, "exposure": manifest.exposures, "metric": manifest.metrics,
               "semantic_model": manifest.semantic_models, "saved_query": manifest.saved_queries}
    kinds = [kind for kind, nodes in defined.items() if nodes]
    if any(node.resource_type.value == "analysis" for node in manifest.nodes.values()):
        kinds.append("analysis")
    return kinds


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
