"""Blue-green versions: where each live relation physically is, and how live moves.

A build writes into `<schema>__<version>` (and `<schema>__<version>_<custom>` for
custom schemas). Live is the unversioned schema names: one view per published
relation, `select * from` its physical table. A version record maps every live
relation to its physical relation, so a run that rebuilt only part of the project
(freshness gate) leaves the other views where they were, and rollback or prune
know exactly what each version needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Literal, Optional

from blocks.naming import (  # noqa: F401 - re-exported: the layout is defined in blocks/naming.py
    VERSION_ID, live_schema_of, new_version_id, version_of_schema, version_schema_prefix, versioned_schema,
)
from flows.core.state_store import StateStore
from flows.core.live_docs import check_ownership, describe_statements
from flows.core.warehouse import Relation, Statement, Warehouse
from flows.errors import RunFailure

# A version's incremental tables start as shallow clones of live's (Databricks): at most this many
# in a row, then a deep clone re-bases the chain. So a clone reads the files of at most this many
# older versions' schemas, which stay (as "clone source") until a re-base frees them; the price is
# one full copy of each incremental table every CLONE_CHAIN_BOUND + 1 runs.
CLONE_CHAIN_BOUND = 3
Status = Literal["building", "ready", "failed", "kept", "published", "pruned"]  # kept: failed, schema kept for debugging


class VersionError(RunFailure):
    """A blue-green version cannot be published, rolled back to or pruned."""


class AuditRefused(VersionError):
    pass


def _relation(key: str) -> Relation:
    schema, name = key.split(".", 1)
    return Relation(schema, name)


def published_relations(manifest, built: set[str], base: str) -> dict[str, str]:
    """Live "schema.name" -> physical "schema.name" for every relation a version build wrote."""
    mapping = {}
    for unique_id in sorted(built):
        node = manifest.nodes.get(unique_id)
        if node is None or node.resource_type.value not in {"model", "seed"}:
            continue
        if node.config.materialized == "ephemeral":
            continue
        live_schema = live_schema_of(node.schema, base)
        if live_schema is None:
            continue  # an absolute schema outside the version: not published through views
        name = node.alias or node.name
        mapping[f"{live_schema}.{name}"] = f"{node.schema}.{name}"
    return mapping


@dataclass
class Version:
    id: str
    created_at: str
    flow_run_id: Optional[str]
    status: Status
    relations: dict[str, str] = field(default_factory=dict)  # live "schema.name" -> physical "schema.name"
    built: list[str] = field(default_factory=list)  # live keys rebuilt by this version
    published_at: Optional[str] = None
    note: str = ""
    # physical "schema.name" of this version's table -> the physical table it is a shallow clone of
    # (it reads that table's data files, so that table's schema must outlive this one)
    clones: dict[str, str] = field(default_factory=dict)
    docs: dict[str, dict] = field(default_factory=dict)  # live key -> grants and descriptions (live_docs.py)


@dataclass
class AuditRow:
    relation: str
    live_rows: Optional[int]
    new_rows: int
    verdict: str  # ok | new | shrank | empty

    @property
    def refused(self) -> bool:
        return self.verdict in {"shrank", "empty"}


class VersionRegistry:
    """versions.json in the environment's state store: every version and which one is live."""

    def __init__(self, store: StateStore):
        self.store = store
        data = store.read_json("versions.json", default={"live": None, "versions": []})
        self.live_id: Optional[str] = data["live"]
        self.flip_incomplete: bool = data.get("flip_incomplete", False)
        self.versions: dict[str, Version] = {v["id"]: Version(**v) for v in data["versions"]}
        # every versioned schema the last clean-up left, and what for (see `drop_unreferenced_schemas`)
        self.kept_schemas: dict[str, list[str]] = data.get("kept_schemas", {})

    def save(self) -> None:
        self.store.write_json("versions.json", {
            "live": self.live_id,
            "flip_incomplete": self.flip_incomplete,
            "versions": [asdict(v) for v in sorted(self.versions.values(), key=lambda v: v.id)],
            "kept_schemas": self.kept_schemas,
        })

    def clone_sources(self) -> dict[str, str]:
        """Every shallow clone any version made (pruned ones too: their tables may still be read)."""
        return {target: source for v in self.versions.values() for target, source in v.clones.items()}

    def clone_depth(self, physical: str) -> int:
        """How many shallow clones deep `physical` reads files through (0: its files are its own)."""
        sources, depth = self.clone_sources(), 0
        while physical in sources:
            physical, depth = sources[physical], depth + 1
        return depth

    @property
    def live(self) -> Optional[Version]:
        return self.versions.get(self.live_id) if self.live_id else None

    def start(self, version_id: str, flow_run_id: Optional[str]) -> Version:
        base = dict(self.live.relations) if self.live else {}
        version = Version(version_id, datetime.now(timezone.utc).isoformat(timespec="seconds"), flow_run_id,
                          "building", relations=base)
        self.versions[version_id] = version
        self.save()
        return version

    def mark(self, version_id: str, status: Status, note: str = "") -> None:
        self.versions[version_id].status = status
        if note:
            self.versions[version_id].note = note
        self.save()

    def rollback_target(self, to_version: Optional[str]) -> Version:
        available = [v for v in sorted(self.versions.values(), key=lambda v: v.id) if v.status == "published"]
        listing = ", ".join(f"{v.id}{' (live)' if v.id == self.live_id else ''}" for v in available) or "none"
        if to_version is None:
            older = [v for v in available if self.live_id and v.id < self.live_id]
            if not older:
                raise VersionError(f"no earlier published version to roll back to; versions: {listing}")
            return older[-1]
        version = self.versions.get(to_version)
        if version is None or version.status != "published":
            state = "was pruned" if version and version.status == "pruned" else "is unknown"
            raise VersionError(f"cannot roll back to {to_version!r}: it {state}; versions that exist: {listing}")
        return version

    def listing(self) -> list[dict]:
        return [
            {"version": v.id, "status": v.status, "live": v.id == self.live_id, "created_at": v.created_at,
             "flow_run_id": v.flow_run_id, "relations": len(v.relations), "rebuilt": len(v.built), "note": v.note}
            for v in sorted(self.versions.values(), key=lambda v: v.id, reverse=True)
        ]


def audit(warehouse: Warehouse, changes: dict[str, str], current: dict[str, str],
          max_shrink: float) -> list[AuditRow]:
    """Row counts of each rebuilt relation, new against live."""
    new_counts = warehouse.row_counts([_relation(p) for p in changes.values()])
    existing = warehouse.relations_in(sorted({_relation(k).schema for k in changes}))
    live_keys = [k for k in changes if warehouse.dialect.folded(_relation(k)) in existing and k in current]
    live_counts = warehouse.row_counts([_relation(k) for k in live_keys])
    rows = []
    for key, physical in sorted(changes.items()):
        new = new_counts[_relation(physical)]
        old = live_counts.get(_relation(key))
        if old is None:
            verdict = "new"
        elif new == 0 and old > 0:
            verdict = "empty"
        elif old > 0 and (old - new) / old > max_shrink:
            verdict = "shrank"
        else:
            verdict = "ok"
        rows.append(AuditRow(key, old, new, verdict))
    return rows


@dataclass
class Flip:
    statements: list[Statement]
    existing_views: list[Relation]  # live views it alters, comments, grants on or drops: it must own them


def plan_flip(warehouse: Warehouse, target: dict[str, str], current: dict[str, str],
              docs: Optional[dict[str, dict]] = None) -> Flip:
    """What makes live exactly `target`: repoint changed views (with their grants and comments from
    `docs`, see live_docs.py), drop views no longer published."""
    dialect = warehouse.dialect
    live_schemas = sorted({_relation(k).schema for k in [*target, *current]})
    existing = warehouse.relations_in(live_schemas)
    statements = [dialect.create_schema(s) for s in sorted({_relation(k).schema for k in target})]
    touched = []
    for key, physical in sorted(target.items()):
        live = _relation(key)
        kind = existing.get(dialect.folded(live))
        if current.get(key) == physical and kind == "VIEW":
            continue
        if kind is not None and kind != "VIEW":
            # a table (or materialized view) left at a live name by a run without blue-green
            statements.append(dialect.drop_relation(live, kind))
            kind = None
        if kind == "VIEW":
            touched.append(live)
        statements.append(dialect.point_view(live, _relation(physical), exists=kind == "VIEW"))
        statements += describe_statements(warehouse, live, (docs or {}).get(key, {}))
    for key in sorted(set(current) - set(target)):
        if existing.get(dialect.folded(_relation(key))) == "VIEW":
            touched.append(_relation(key))
            statements.append(dialect.drop_view(_relation(key)))
    return Flip(statements, touched)


def flip_statements(warehouse: Warehouse, target: dict[str, str], current: dict[str, str],
                    docs: Optional[dict[str, dict]] = None) -> list[Statement]:
    return plan_flip(warehouse, target, current, docs).statements


def make_live(warehouse: Warehouse, registry: VersionRegistry, version: Version) -> int:
    # After a flip that failed part-way (possible on Databricks, where the set is not atomic), the
    # registry no longer says where each view points: repoint every view, not only the changed ones.
    current = registry.live.relations if registry.live and not registry.flip_incomplete else {}
    flip = plan_flip(warehouse, version.relations, current, version.docs)
    check_ownership(warehouse, flip.existing_views)  # before any view changes
    statements = flip.statements
    try:
        warehouse.execute_all(statements)
    except BaseException:
        registry.flip_incomplete = True
        registry.save()
        raise
    registry.flip_incomplete = False
    version.status = "published"
    version.published_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    registry.live_id = version.id
    registry.save()
    return len(statements)


def restore_live(warehouse: Warehouse, registry: VersionRegistry, version: Version) -> int:
    """Point live back at what the registry says is live, undoing `version`'s flip if it ran.

    For a version that reached the flip ("ready") but whose run never recorded the outcome
    (killed during the flip, or the state store failed right after it): its schemas may be
    what live reads, so they must not be dropped before live is put back. On a version
    that never flipped this re-points nothing that changes.
    """
    current = registry.live.relations if registry.live else {}
    statements = flip_statements(warehouse, current, version.relations, registry.live.docs if registry.live else {})
    warehouse.execute_all(statements)
    return len(statements)


def abandon_unfinished(registry: VersionRegistry, note: str = "abandoned: its run ended before publishing",
                       warehouse: Optional[Warehouse] = None) -> list[str]:
    """Versions a killed run left behind. Only one run publishes at a time (the publish lock),
    so at the start of a run every version still building is an orphan. A "ready" orphan
    may have been flipped: with `warehouse`, live is restored before it is marked failed;
    without, it stays "ready" (and its schemas are spared)."""
    orphans = [v.id for v in registry.versions.values() if v.status == "building"
               or (v.status == "ready" and warehouse is not None)]
    for version_id in orphans:
        if warehouse is not None and registry.versions[version_id].status == "ready":  # chosen only with one
            restore_live(warehouse, registry, registry.versions[version_id])
        registry.versions[version_id].status = "failed"
        registry.versions[version_id].note = note
    if orphans:
        registry.save()
    return orphans


def kept_schemas(registry: VersionRegistry, base: str, fold) -> dict[str, list[str]]:
    """Each versioned schema that must stay (folded name), with why: a published version reads it
    (live, or a rollback target), it is a kept or ready version's own, or a table in a schema that
    stays is a shallow clone of a table in it (the clone reads its files: dropping the source's
    schema would break the clone once its files are purged)."""
    reasons: dict[str, list[str]] = {}

    def keep(schema: str, why: str) -> None:
        if why not in reasons.setdefault(fold(schema), []):
            reasons[fold(schema)].append(why)

    for v in sorted(registry.versions.values(), key=lambda v: v.id):
        if v.status == "published":
            role = "live" if v.id == registry.live_id else "published (rollback target)"
            for schema in sorted({_relation(p).schema for p in v.relations.values()}):
                keep(schema, f"read by {role} version {v.id}")
    spared = {v.id: v.status for v in registry.versions.values() if v.status in {"kept", "ready"}}
    sources = registry.clone_sources()
    for target in sorted(sources):
        version_id = version_of_schema(fold(_relation(target).schema), fold(base))
        if version_id in spared:
            keep(_relation(target).schema, f"{spared[version_id]} version {version_id}")
    changed = True
    while changed:  # follow clone chains from every schema that stays, to a fixed point
        changed = False
        for target, source in sorted(sources.items()):
            if fold(_relation(target).schema) in reasons:
                before = len(reasons.get(fold(_relation(source).schema), []))
                keep(_relation(source).schema, f"{target} is a shallow clone of {source} (reads its files)")
                changed |= len(reasons[fold(_relation(source).schema)]) != before
    return reasons


def drop_unreferenced_schemas(warehouse: Warehouse, registry: VersionRegistry, base: str,
                              spare: tuple[str, ...] = ()) -> list[str]:
    """Drop versioned schemas nothing needs (see `kept_schemas`), except those of `spare` versions,
    of failed versions kept for debugging, and of versions that reached the flip without recording
    its outcome ("ready": live may read them until `restore_live`). Records in the registry what
    each schema left is kept for."""
    fold = warehouse.dialect.fold
    needed = kept_schemas(registry, base, fold)
    spared = set(spare) | {v.id for v in registry.versions.values() if v.status in {"kept", "ready"}}
    dropped, left = [], {}
    for schema in warehouse.schemas_with_prefix(version_schema_prefix(base)):
        version_id = version_of_schema(schema, fold(base))
        if version_id is None:
            continue
        if schema in needed or version_id in spared:
            status = registry.versions[version_id].status if version_id in registry.versions else "unregistered"
            left[schema] = needed.get(schema) or [f"{status} version {version_id}"]
            continue
        warehouse.execute_all([warehouse.dialect.drop_schema(schema)])
        dropped.append(schema)
    registry.kept_schemas = left
    registry.save()
    return dropped


def start_from_live(warehouse: Warehouse, registry: VersionRegistry, version: Version,
                    targets: dict[str, str], chain_bound: int) -> int:
    """Start each of `version`'s incremental tables (live key -> physical key) as a copy of what live
    reads, so it appends to live data. Where copies share files (Databricks shallow clones), the
    clone is recorded, so its source's schema outlives it; a chain that reached `chain_bound`
    shallow clones is re-based with a deep copy, which depends on nothing. Returns the copies made."""
    dialect = warehouse.dialect
    current = registry.live.relations if registry.live else {}
    statements = []
    for live_key, physical_key in sorted(targets.items()):
        if live_key not in current:
            continue
        source, target = _relation(current[live_key]), _relation(physical_key)
        deep = dialect.copies_share_files and registry.clone_depth(current[live_key]) + 1 > chain_bound
        if dialect.copies_share_files and not deep:
            version.clones[physical_key] = current[live_key]
        statements += [dialect.create_schema(target.schema), dialect.copy_table(source, target, deep=deep)]
    if statements:
        registry.save()  # recorded before the clone exists: a clone never goes unrecorded
        warehouse.execute_all(statements)
    return len(statements) // 2


def prune(warehouse: Warehouse, registry: VersionRegistry, base: str, keep: int) -> list[str]:
    """Drop versions beyond the newest `keep`; never the live one nor the one before it."""
    if keep < 2:
        raise VersionError(f"keep must be at least 2 (the live version and the one before it), got {keep}")
    published = sorted((v for v in registry.versions.values() if v.status == "published"), key=lambda v: v.id)
    kept = {v.id for v in published[-keep:]}
    if registry.live_id:
        kept.add(registry.live_id)
        before = [v.id for v in published if v.id < registry.live_id]
        if before:
            kept.add(before[-1])
    dropped = [v for v in registry.versions.values() if v.id not in kept and v.status in {"published", "kept"}]
    for version in dropped:
        version.status = "pruned"
    registry.save()
    drop_unreferenced_schemas(warehouse, registry, base)
    return sorted(v.id for v in dropped)
