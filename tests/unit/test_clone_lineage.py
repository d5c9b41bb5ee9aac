"""Shallow-clone chains against prune, on the Delta test double (tests/unit/delta_double.py):
no table that live or a kept version reads may depend on files of a schema prune drops."""

from __future__ import annotations

import pytest

from flows.core.versions import (
    CLONE_CHAIN_BOUND, VersionRegistry, make_live, prune, start_from_live, versioned_schema,
)

from .delta_double import DeltaError, DeltaWarehouse
from .fakes import MemoryStore

BASE = "analytics"


def publish(warehouse: DeltaWarehouse, registry: VersionRegistry, run: int, forget_clones: bool = False) -> str:
    """One production run of a project with an incremental model (`events`) and a table (`daily`):
    what prepare_version, the layer builds and publish do to the warehouse, in that order."""
    version_id = f"v2024010100{run:04d}_abc123"
    version = registry.start(version_id, None)
    schema = versioned_schema(BASE, version_id)
    targets = {f"{BASE}.events": f"{schema}.events"}
    copied = start_from_live(warehouse, registry, version, targets, CLONE_CHAIN_BOUND)
    if forget_clones:  # what the flows did before clone sources were recorded
        version.clones.clear()
    if copied:
        warehouse.append(schema, "events", rows=10)  # dbt's incremental run on the clone
    else:
        warehouse.write_table(schema, "events", rows=100)
    warehouse.write_table(schema, "daily", rows=run)
    version.relations.update({f"{BASE}.events": f"{schema}.events", f"{BASE}.daily": f"{schema}.daily"})
    registry.mark(version_id, "ready")
    make_live(warehouse, registry, version)
    prune(warehouse, registry, BASE, keep=3)
    return version_id


def test_ten_publishes_pruned_at_three_keep_every_live_and_kept_table_readable():
    warehouse, store = DeltaWarehouse(), MemoryStore()
    for run in range(1, 11):
        publish(warehouse, VersionRegistry(store), run)  # type: ignore[arg-type]
        registry = VersionRegistry(store)  # type: ignore[arg-type]
        # every live view reads, with every row the incremental model ever appended
        assert warehouse.read(BASE, "events") == 100 + 10 * (run - 1)
        assert warehouse.read(BASE, "daily") == run
        # every table of every version kept (rollback targets) reads too
        for version in registry.versions.values():
            if version.status == "published":
                for physical in version.relations.values():
                    warehouse.read(*physical.split("."))
        # the registry says what each schema left is kept for, and keeps nothing unexplained
        left = {s for s in warehouse.schemas if s.startswith(f"{BASE}__v")}
        assert set(registry.kept_schemas) == left
        assert all(registry.kept_schemas[s] for s in left)
        live_schema = versioned_schema(BASE, registry.live_id or "")
        assert registry.kept_schemas[live_schema] == [f"read by live version {registry.live_id}"]
        assert max((registry.clone_depth(t) for t in registry.clone_sources()), default=0) <= CLONE_CHAIN_BOUND
    published = [v for v in registry.versions.values() if v.status == "published"]
    assert len(published) == 3
    reasons = [why for whys in registry.kept_schemas.values() for why in whys]
    assert any("is a shallow clone of" in why for why in reasons)  # a schema kept only as a clone source
    assert any("published (rollback target)" in why for why in reasons)
    # the chain was re-based with a deep clone, and the schemas it freed were dropped
    assert sum(" DEEP CLONE " in s for s in warehouse.executed) == 2  # runs 5 and 9
    assert len(left) < 10


def test_without_clone_records_prune_breaks_the_live_incremental_table():
    """The double catches the data loss the flows had: prune drops a clone's source."""
    warehouse, store = DeltaWarehouse(), MemoryStore()
    with pytest.raises(DeltaError, match="DELTA_FILE_NOT_FOUND"):
        for run in range(1, 11):
            publish(warehouse, VersionRegistry(store), run, forget_clones=True)  # type: ignore[arg-type]
            warehouse.read(BASE, "events")
