"""The blue-green steps of a production run: start a version, publish it (audit, flip, prune), or
discard it when the run fails. flows/production.py wraps them in named tasks, like flows/core/steps.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from prefect.logging import get_run_logger

from flows.core.layers import Plan
from flows.core.run import ProductionRun
from flows.core.versions import (
    CLONE_CHAIN_BOUND, AuditRefused, VersionRegistry, abandon_unfinished, audit, drop_unreferenced_schemas, make_live, prune,
    published_relations, restore_live, start_from_live,
)
from blocks import naming
from blocks.naming import version_schema_prefix
from flows.core.live_docs import docs_of
from flows.core.placement import check_placement
from flows.core.warehouse import warehouse_for


def check_version_placement(run: ProductionRun) -> None:
    """Parse the version's project and refuse, before any dbt work, what it would build outside the
    version (placement.py); seeds outside it load in place and are listed in the run summary."""
    if not run.blue_green:
        return
    adapter = run.environment.adapter
    seeds = check_placement(run.build.parsed_manifest, run.environment.schema_name, run.version_id,
                            lambda name: naming.fold(name, adapter))
    run.report.seeds_outside_version = seeds
    if seeds:
        get_run_logger().warning("Seeds outside the blue-green version load in place: %s.", ", ".join(seeds))


def prepare_version(run: ProductionRun, plan: Plan) -> None:
    """Record the new version, clean up orphans of killed runs, and start incremental models from live data."""
    if not run.blue_green:
        return
    logger = get_run_logger()
    warehouse = warehouse_for(run.environment, run.version)
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
    incremental = {
        u for u in plan.nodes
        if manifest.nodes[u].resource_type.value == "model" and manifest.nodes[u].config.materialized == "incremental"
    }
    if run.options.full_refresh or not incremental:
        return
    copies = start_from_live(warehouse, registry, registry.versions[run.version_id],
                             published_relations(manifest, incremental, base), CLONE_CHAIN_BOUND)
    if copies:
        logger.info("Started %d incremental model(s) from their live data.", copies)


def publish(run: ProductionRun, plan: Plan) -> str:
    if not run.blue_green:
        return "blue-green is off for this environment: models were built in place"
    if not run.options.publish:
        VersionRegistry(run.store).mark(run.version_id, "kept", "publish=False: built and tested, not published")
        return (f"publish=False: version {run.version} was built and tested and is kept unpublished "
                f"(live unchanged; prune drops it in time)")
    warehouse = warehouse_for(run.environment, run.version)
    registry = VersionRegistry(run.store)
    version = registry.versions[run.version_id]
    changes = published_relations(run.build.manifest, plan.nodes, run.environment.schema_name)
    current = registry.live.relations if registry.live else {}
    version.relations.update(changes)
    version.built = sorted(changes)
    version.docs = docs_of(run.build.manifest, run.environment.schema_name)  # grants, comments for the live views
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


def show_live_names_in_docs(run: ProductionRun) -> None:
    """The docs site a run keeps names each relation as readers query it, and keeps only pages that work.

    A blue-green build documents its versioned tables (`main__v…_finance.fct_revenue`), a name that
    disappears at the next prune: readers would copy it into their queries. The static page is made
    here (the docs step leaves `--static` out), as `dbt docs generate --static` makes it, from the
    manifest and catalog with this version's schemas named as live (`main_finance`; every published
    relation is a live view there, and snapshots live there too). `index.html` needs a manifest.json next to it, which the kept
    site does not have: it is not kept.
    """
    from dbt.task.docs import DOCS_INDEX_FILE_PATH

    if not run.options.generate_docs:
        return
    target = run.build.target_path
    (target / "index.html").unlink(missing_ok=True)
    run.store.delete("latest/docs/index.html")  # kept by runs before this rule
    manifest, catalog = target / "manifest.json", target / "catalog.json"
    if not run.blue_green or not manifest.exists() or not catalog.exists():
        return
    base = run.environment.schema_name
    versioned = re.compile(rf"\b{re.escape(naming.versioned_schema(base, run.version_id))}", re.IGNORECASE)
    live_catalog = versioned.sub(base, catalog.read_text())
    page = Path(DOCS_INDEX_FILE_PATH).read_text()
    page = page.replace('"MANIFEST.JSON INLINE DATA"', versioned.sub(base, manifest.read_text()))
    (target / "static_index.html").write_text(page.replace('"CATALOG.JSON INLINE DATA"', live_catalog))
    catalog.write_text(live_catalog)


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
        warehouse = warehouse_for(run.environment, run.version)
        if version.status == "ready":
            restore_live(warehouse, registry, version)
        version.status, version.note = ("kept" if keep else "failed"), reason[:300]
        try:
            registry.save()
        finally:  # live no longer reads the version (restored above, or never flipped): dropping it is safe
            if not keep:
                base = run.environment.schema_name
                for schema in warehouse.schemas_with_prefix(version_schema_prefix(base, run.version_id)):
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

