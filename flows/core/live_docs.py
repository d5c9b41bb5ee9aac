"""Grants and descriptions of live views: what readers see of a published relation.

dbt applies a model's `grants` config and persisted descriptions (`persist_docs`) to the
relation it builds: in blue-green, a versioned table nobody reads. Readers query the live view,
so the flip applies them there too (Databricks; DuckDB has no grants, and nothing changes on it):

- `grants: {select: [bi_readers]}` → GRANT SELECT ON TABLE <live view> TO `bi_readers`;
- `persist_docs: {relation: true}` → COMMENT ON TABLE <live view> IS '<description>';
- `persist_docs: {columns: true}` → COMMENT ON COLUMN <live view>.<column> IS '<description>'.

They run after the views are pointed (Phase.DESCRIBE_VIEWS), for every view the flip creates or
re-points: ALTER VIEW … AS keeps a view's grants but drops its column comments. Each version
records its relations' docs, so a rollback re-applies the docs of the version it makes live.
Ownership: ALTER VIEW … AS, COMMENT ON and GRANT on a view need its ownership (or MANAGE):
`check_ownership` refuses a flip that lacks it before any view changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from blocks.naming import live_schema_of
from flows.core.warehouse import Relation, Statement, Warehouse
from flows.errors import RunFailure


class MissingPrivilege(RunFailure):
    """The flip's principal lacks a privilege it needs on a live view: nothing was changed."""


@dataclass
class LiveDocs:
    grants: dict[str, list[str]] = field(default_factory=dict)  # privilege -> principals
    description: str = ""  # only when persist_docs.relation
    columns: dict[str, str] = field(default_factory=dict)  # only when persist_docs.columns


def docs_of(manifest: Any, base: str) -> dict[str, dict]:
    """Live "schema.name" -> LiveDocs (as a dict, as the registry keeps it), for each model and seed."""
    docs: dict[str, dict] = {}
    for node in manifest.nodes.values():
        if node.resource_type.value not in {"model", "seed"} or node.config.materialized == "ephemeral":
            continue
        live_schema = live_schema_of(node.schema, base)
        if live_schema is None:
            continue
        config = node.config
        persist = getattr(config, "persist_docs", None) or {}
        grants = {str(k): ([v] if isinstance(v, str) else list(v)) for k, v in (getattr(config, "grants", None) or {}).items()}
        entry = LiveDocs(
            grants={k: v for k, v in grants.items() if v},
            description=(node.description or "") if persist.get("relation") else "",
            columns={name: column.description for name, column in (getattr(node, "columns", None) or {}).items()
                     if column.description} if persist.get("columns") else {},
        )
        if entry.grants or entry.description or entry.columns:
            docs[f"{live_schema}.{node.alias or node.name}"] = vars(entry)
    return docs


def describe_statements(warehouse: Warehouse, live: Relation, docs: dict) -> list[Statement]:
    entry = LiveDocs(**docs)
    dialect = warehouse.dialect
    statements = [dialect.grant(live, privilege, principal)
                  for privilege, principals in sorted(entry.grants.items()) for principal in principals]
    if entry.description:
        statements.append(dialect.comment_relation(live, entry.description))
    statements += [dialect.comment_column(live, column, text) for column, text in sorted(entry.columns.items())]
    return [s for s in statements if s is not None]


def check_ownership(warehouse: Warehouse, views: Sequence[Relation]) -> None:
    """Refuse, before any change, a flip whose principal does not own a view it must alter."""
    not_owned = warehouse.views_not_owned(views)
    if not_owned:
        raise MissingPrivilege(
            "the flip needs ownership (or MANAGE) of the live views it re-points, comments or grants on, and "
            "this principal lacks it on: " + ", ".join(f"{r.schema}.{r.name} (owner {owner})" for r, owner in not_owned)
            + ". Nothing was changed. Have the owner transfer them (ALTER VIEW … OWNER TO <this principal>) "
            "or grant MANAGE on them."
        )
