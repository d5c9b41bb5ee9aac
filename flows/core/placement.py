"""Where a blue-green version's nodes resolve, checked once the version's project is parsed and
before any dbt work touches the warehouse.

A version builds in `<schema>__<version>` (and `<schema>__<version>_<custom>`), which nobody reads
until the flip. A project whose `generate_schema_name` uses a custom schema as-is (dbt's own
`generate_schema_name_for_env` does so when the target is named `prod`) resolves those nodes
outside the version: built there, they would land straight in what readers query, untested.

- models and snapshots outside the version: refused, naming them and the ways out;
- seeds outside it (raw data loaded in place, as such projects mean it): allowed, and listed;
- materialized views and streaming tables: refused. In a version they are recomputed from
  scratch, and a streaming table restarts its stream; no carry-over is implemented.
"""

from __future__ import annotations

from typing import Any

from blocks.naming import version_of_schema
from flows.errors import InputError

REFUSED_MATERIALIZATIONS = {"materialized_view", "streaming_table"}


class OutsideVersion(InputError):
    """The project would build part of a blue-green version outside the version's schemas."""


def check_placement(manifest: Any, base: str, version: str, fold) -> list[str]:
    """Refuse what cannot be built in the version; return the seeds that load outside it."""
    outside: list[str] = []
    seeds: list[str] = []
    refreshed: list[str] = []
    for unique_id, node in sorted(manifest.nodes.items()):
        kind = node.resource_type.value
        if kind not in {"model", "seed", "snapshot"} or node.config.materialized == "ephemeral":
            continue
        if node.config.materialized in REFUSED_MATERIALIZATIONS:
            refreshed.append(f"{unique_id} ({node.config.materialized})")
        if version_of_schema(fold(node.schema), fold(base)) == version:
            continue
        (seeds if kind == "seed" else outside).append(f"{unique_id} → schema {node.schema}")
    if refreshed:
        raise OutsideVersion(
            "blue-green cannot publish materialized views or streaming tables: in a version they are recomputed "
            "from scratch (a streaming table restarts its stream). Refused: " + ", ".join(refreshed)
            + ". Ways out: materialize them as tables or incremental models, or run them in an environment "
            "without blue-green."
        )
    if outside:
        raise OutsideVersion(
            f"{len(outside)} model(s)/snapshot(s) resolve outside version schema {base}__{version}, so they would be "
            "built in place, straight into what readers query: " + "; ".join(outside)
            + ". Ways out: have generate_schema_name build on target.schema (dbt's default: "
            "`{{ target.schema }}_{{ custom_schema_name }}`); generate_schema_name_for_env uses a custom schema "
            "as-is only on a target named `prod`, so register the environment under another name; or turn "
            "blue-green off for this environment."
        )
    return seeds
