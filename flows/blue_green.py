"""Operator flows for blue-green versions: list them, roll live back, prune old ones.

The flip itself happens at the end of `production_run`; these act on what it recorded.
"""

from __future__ import annotations

from typing import Annotated, Optional

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from blocks.environment import EnvironmentName, load_environment
from flows.core.artifacts import artifact_key
from flows.core.lock import PublishLock
from flows.core.state_store import StateStore
from flows.core.versions import VersionRegistry, make_live, prune
from flows.core.warehouse import warehouse_for


def _open(environment: EnvironmentName) -> tuple:
    env = load_environment(environment)
    return env, StateStore.for_environment(env)


@task(name="list versions", cache_policy=NO_CACHE)
def list_versions_task(store: StateStore) -> list[dict]:
    versions = VersionRegistry(store).listing()
    create_table_artifact(versions or [{"version": "(none yet)"}], key=artifact_key(store.environment, "versions"),
                          description="Blue-green versions, newest first")
    return versions


@flow(name="list-versions")
def list_versions(environment: EnvironmentName = "local") -> list[dict]:
    """List the blue-green versions of an environment, newest first, and which one is live.

    Args:
        environment: Which environment's versions to list.
    """
    _, store = _open(environment)
    return list_versions_task(store)


@flow(name="rollback")
def rollback(environment: EnvironmentName = "local", to_version: Optional[str] = None) -> str:
    """Make an earlier version live again: the previous good one, or the one named.

    Args:
        environment: Which environment to roll back.
        to_version: Version id to make live (see list-versions). Empty: the version before the live one.
    """
    logger = get_run_logger()
    env, store = _open(environment)
    with PublishLock(store, str(flow_run.id or "local")):
        registry = VersionRegistry(store)
        target = registry.rollback_target(to_version)
        previous = registry.live_id
        make_live(warehouse_for(env), registry, target)
        # Live data is now older than the saved source state: the next run must not skip rebuilding.
        store.delete("latest/sources.json")
    list_versions_task(store)
    message = f"rolled back {environment} from {previous} to {target.id}"
    logger.info(message)
    return message


@flow(name="prune-versions")
def prune_versions(environment: EnvironmentName = "local", keep: Annotated[int, Field(ge=2)] = 3) -> list[str]:
    """Drop blue-green versions beyond the newest `keep`; never the live one nor the one before it.

    Args:
        environment: Which environment to prune.
        keep: How many published versions to keep (at least 2).
    """
    logger = get_run_logger()
    env, store = _open(environment)
    with PublishLock(store, str(flow_run.id or "local")):
        dropped = prune(warehouse_for(env), VersionRegistry(store), env.schema_name, keep)
    logger.info("Pruned %d version(s): %s", len(dropped), ", ".join(dropped) or "none")
    list_versions_task(store)
    return dropped
