"""The work pools the deployments in prefect.yaml run on, as code.

    python -m deployments.work_pools apply     create or update every pool (idempotent)
    python -m deployments.work_pools show      print the desired pools as JSON

A process pool runs each flow run as a subprocess of a `prefect worker`, in a fresh
temporary folder into which the deployment's pull steps clone the repository. The
worker's own environment is inherited, so `LAKEHOUSE_HOME` (where the local state,
DuckDB file and dbt target folders persist between runs) belongs on the worker host,
not in the pool: a value here would override every worker's.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class WorkPoolSpec:
    name: str
    type: str
    description: str
    concurrency_limit: Optional[int] = None
    # Defaults of the pool's job variables; a deployment's `job_variables` override them.
    variable_defaults: dict[str, Any] = field(default_factory=dict)

    def base_job_template(self) -> dict:
        template = copy.deepcopy(_default_template(self.type))
        properties = template["variables"]["properties"]
        for name, default in self.variable_defaults.items():
            if name not in properties:
                raise ValueError(f"work pool {self.name!r}: {self.type} pools have no job variable {name!r}; "
                                 f"known: {', '.join(sorted(properties))}")
            properties[name]["default"] = default
        return template


LAKEHOUSE_PROCESS = WorkPoolSpec(
    name="lakehouse-process",
    type="process",
    description="dbt lakehouse flows: one subprocess per flow run on the worker host.",
    concurrency_limit=4,  # dbt itself runs threads; more parallel runs mostly queue at the warehouse
    variable_defaults={
        "env": {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "PYTHONUNBUFFERED": "1"},
        "stream_output": True,
    },
)
POOLS = {pool.name: pool for pool in (LAKEHOUSE_PROCESS,)}


def _default_template(pool_type: str) -> dict:
    if pool_type != "process":
        raise ValueError(f"unsupported work pool type {pool_type!r}: only 'process' pools are defined as code")
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


def apply_pool(spec: WorkPoolSpec) -> str:
    """Create the pool, or update it in place when it differs; returns created/updated/unchanged."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    template = spec.base_job_template()
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(spec.name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=spec.name, type=spec.type, description=spec.description,
                base_job_template=template, concurrency_limit=spec.concurrency_limit,
            ))
            return "created"
        if existing.type != spec.type:
            raise ValueError(f"work pool {spec.name!r} exists with type {existing.type!r}, not {spec.type!r}; "
                             "delete it or rename the pool in deployments/work_pools.py")
        wanted = (spec.description, template, spec.concurrency_limit)
        if (existing.description, existing.base_job_template, existing.concurrency_limit) == wanted:
            return "unchanged"
        client.update_work_pool(spec.name, WorkPoolUpdate(
            description=spec.description, base_job_template=template, concurrency_limit=spec.concurrency_limit,
        ))
        return "updated"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.work_pools", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["apply", "show"])
    parser.add_argument("--pool", action="append", choices=sorted(POOLS), help="only this pool (repeatable)")
    args = parser.parse_args(argv)
    pools = [POOLS[name] for name in args.pool] if args.pool else list(POOLS.values())
    for spec in pools:
        if args.action == "show":
            print(json.dumps({"name": spec.name, "type": spec.type, "concurrency_limit": spec.concurrency_limit,
                              "base_job_template": spec.base_job_template()}, indent=2))
        else:
            print(f"work pool {spec.name!r}: {apply_pool(spec)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
