"""The blue-green steps of a production run: start a version, publish it (audit, flip, prune), or
discard it when the run fails. flows/production.py wraps them in named tasks, like flows/core/steps.py.
"""

from __future__ import annotations

from prefect.logging import get_run_logger

from flows.core.layers import Plan
from flows.core.run import ProductionRun
from flows.core.versions import (
    AuditRefused, VersionRegistry, abandon_unfinished, audit, drop_unreferenced_schemas, make_live, prune,
    published_relations, restore_live,
)
from flows.core.warehouse import Relation, warehouse_for


def prepare_version(run: ProductionRun, plan: Plan) -> None:
    """Record the new version, clean up orphans of killed runs, and start incremental models from live data."""
    if not run.blue_green:
        return
    logger = get_run_logger()
    warehouse = warehouse_for(run.environment)
    registry = VersionRegistry(run.store)
    base = run.environment.schema_name
    if run.version in registry.versions and run.resumed:
        registry.mark(run.version_id, "building")
    else:
        orphans = abandon_unfinished(registry, warehouse=warehouse)
        dropped = drop_unreferenced_schemas(warehouse, registry, base)
        if orphans or dropped:
            logger.info("Cleaned up after earlier runs: versions %s, schemas %s.", orphans, dropped)
        registry.start(run.version_id, run.run_id)
    manifest = run.build.manifest or run.build.parse()
    current = registry.live.relations if registry.live else {}
    incremental = {
        u for u in plan.nodes
        if manifest.nodes[u].resource_type.value == "model" and manifest.nodes[u].config.materialized == "incremental"
    }
    if run.options.full_refresh or not incremental:
        return
    copies = []
    for live_key, physical_key in published_relations(manifest, incremental, base).items():
        if live_key in current:
            source = Relation(*current[live_key].split(".", 1))
            target = Relation(*physical_key.split(".", 1))
            copies += [warehouse.dialect.create_schema(target.schema), warehouse.dialect.copy_table(source, target)]
    if copies:
        warehouse.execute_all(copies)
        logger.info("Started %d incremental model(s) from their live data.", len(copies) // 2)


def publish(run: ProductionRun, plan: Plan) -> str:
    if not run.blue_green:
        return "blue-green is off for this environment: models were built in place"
    if not run.options.publish:
        VersionRegistry(run.store).mark(run.version_id, "kept", "publish=False: built and tested, not published")
        return (f"publish=False: version {run.version} was built and tested and is kept unpublished "
                f"(live unchanged; prune drops it in time)")
    warehouse = warehouse_for(run.environment)
    registry = VersionRegistry(run.store)
    version = registry.versions[run.version_id]
    changes = published_relations(run.build.manifest, plan.nodes, run.environment.schema_name)
    current = registry.live.relations if registry.live else {}
    version.relations.update(changes)
    version.built = sorted(changes)
    rows = audit(warehouse, changes, current, run.environment.blue_green.max_shrink)
    run.report.audit = rows
    refused = [r for r in rows if r.refused]
    if refused and not run.options.allow_shrink:
        raise AuditRefused(
            "audit refused the flip: " + "; ".join(
                f"{r.relation} {'became empty' if r.verdict == 'empty' else 'shrank'} ({r.live_rows} → {r.new_rows} rows)"
                for r in refused
            ) + " — rerun with allow_shrink=True if this is expected"
        )
    registry.mark(run.version_id, "ready")  # also proves the state store still takes writes, before the flip
    run.pause_before("flip", run.run_dir)  # a no-op, unless a test passed open_run a hook to kill the run here
    statements = make_live(warehouse, registry, version)
    pruned = prune(warehouse, registry, run.environment.schema_name, run.environment.blue_green.keep_versions)
    run.report.versions = registry.listing()
    note = f"; pruned {', '.join(pruned)}" if pruned else ""
    return f"version {run.version} is live ({len(changes)} relations rebuilt, {statements} statements{note})"


def discard_version(run: ProductionRun, reason: str) -> None:
    """A run failed: drop its version unless asked to keep it, and never leave live reading a dropped one.

    - published: the run failed after the flip (promoting state, say); live IS this version: keep it;
    - ready: the flip may have run without being recorded: put live back first;
    - otherwise live was never touched.
    Called while the run is already failing: it logs its own trouble instead of raising over the
    run's error; whatever it could not clean up, the next run's `prepare_version` does.
    """
    if not run.blue_green:
        return
    logger = get_run_logger()
    try:
        registry = VersionRegistry(run.store)
        version = registry.versions.get(run.version_id)
        if version is None:
            return
        if version.status == "published":
            logger.warning("Version %s is live (the run failed after publishing it): it is kept.", run.version_id)
            return
        keep = run.options.keep_failed_version or retries_remaining()
        warehouse = warehouse_for(run.environment)
        if version.status == "ready":
            restore_live(warehouse, registry, version)
        version.status, version.note = ("kept" if keep else "failed"), reason[:300]
        try:
            registry.save()
        finally:  # live no longer reads the version (restored above, or never flipped): dropping it is safe
            if not keep:
                base = run.environment.schema_name
                for schema in warehouse.schemas_with_prefix(f"{base}__{run.version}"):
                    warehouse.execute_all([warehouse.dialect.drop_schema(schema)])
        run.report.versions = registry.listing()
    except Exception as error:  # noqa: BLE001 - the run's own error is what must surface
        logger.error("Could not discard version %s (%s); the next run cleans it up.", run.version_id, error)


def retries_remaining() -> bool:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return False
    return context.flow_run.run_count <= ((context.flow.retries if context.flow else None) or 0)

