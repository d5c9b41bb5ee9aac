"""A blue-green version's manifest, derived from the live parse instead of a second full parse.

The version's profile differs from live's in one field, the schema (blocks/profile.py). dbt's
partial parsing refuses a changed profile, so parsing the version costs a full parse: ~10 s at
2,000 nodes, a fifth of a nightly run that rebuilds one source's downstream. Where the schema can
only have reached the manifest through dbt's own `generate_schema_name`, the version's manifest is
the live one with every `<live>` / `<live>_<custom>` schema moved to `<version>` / `<version>_<custom>`,
and every relation name with it: a copy of the live manifest (~1 s at 2,000 nodes) does.

Correctness comes first. Any of these takes the safe path, a real parse of the version's profile:
- a `generate_schema_name` (or `_alias_`, `_database_`) macro outside dbt's own packages, in the
  project or in any package: it may place nodes any way it likes;
- jinja anywhere in the project or its packages that reads the target's schema at parse time
  (`target.schema`, `target['schema']`, `target.get(...)`, or `target` handed whole to a macro):
  configs, sources, descriptions and docs blocks are rendered during parsing;
- a snapshot with a legacy `target_schema` (dbt uses it as-is, without `generate_schema_name`);
- a saved query with exports (their schema comes from the target);
- a node whose schema or relation name does not have the shape dbt's default macro gives.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any, Iterable, Optional

from dbt.contracts.graph.manifest import Manifest

SCHEMA_MACROS = {"generate_schema_name", "generate_alias_name", "generate_database_name"}
# Target fields that are the same in the live and the version profiles, so reading them is harmless.
SAME_IN_BOTH = r"name|type|database|catalog|threads|profile_name|user|host|path|warehouse|role|account"
JINJA = re.compile(r"{{.*?}}|{%.*?%}", re.DOTALL)
READS_TARGET_SCHEMA = re.compile(rf"\btarget\b(?!\s*\.\s*(?:{SAME_IN_BOTH})\b)")
# Compiled state a command left on a live node; the version compiles its own.
COMPILED_FIELDS = {"compiled": False, "compiled_code": None, "extra_ctes_injected": False, "compiled_path": None}


class MustParse(Exception):
    """Why the version's manifest cannot be derived from live's: the version's profile is parsed."""


def version_manifest(live: Manifest, live_schema: str, version_schema: str, adapter_type: str) -> Manifest:
    """The manifest a parse of the version's profile (schema `version_schema`) would give; raises
    MustParse, naming why, where that cannot be shown from the project."""
    _check_parse_does_not_read_the_schema(live, adapter_type)
    quote = _quote_character(adapter_type)
    derived = _copy(live)
    move = _Move(live_schema, version_schema, quote)
    movable: list[Any] = [*derived.nodes.values(), *derived.unit_tests.values(),
                          *(node for nodes in derived.disabled.values() for node in nodes)]
    for node in movable:
        if getattr(node, "resource_type", None) is not None and node.resource_type.value == "snapshot" \
                and getattr(node.config, "target_schema", None):
            raise MustParse(f"snapshot {node.unique_id} sets a legacy target_schema")
        move.node(node)
        if getattr(node, "compiled", False):
            for name, default in COMPILED_FIELDS.items():
                setattr(node, name, default)
            node.extra_ctes = []
    for semantic_model in derived.semantic_models.values():
        relation: Any = semantic_model.node_relation
        if relation is not None:
            old_schema = relation.schema_name
            relation.schema_name = move.schema(old_schema, semantic_model.unique_id)
            relation.relation_name = move.relation(relation.relation_name, relation.database, old_schema,
                                                   semantic_model.unique_id, new_schema=relation.schema_name)
    for saved_query in derived.saved_queries.values():
        if saved_query.exports:
            raise MustParse(f"saved query {saved_query.unique_id} has exports, whose schema comes from the target")
    derived.build_flat_graph()  # jinja's `graph` (packages read it), as dbt builds it after a parse
    return derived


# Read-only during a run and the bulk of a manifest's size: shared with live, not copied.
SHARED = {"macros", "files", "docs"}


def _copy(live: Manifest) -> Manifest:
    """A copy whose nodes can move without touching live's. Not pickle: dbt 1.11's
    `Manifest.__reduce_ex__` leaves out `fixtures`, which shifts its lookups into the wrong fields.
    Lookups start empty (dbt rebuilds them on first use); the flat graph is built once moved."""
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(live):
        if not item.init:
            continue
        if item.name.startswith("_") or item.name == "flat_graph":
            fields[item.name] = item.default_factory() if item.default_factory is not dataclasses.MISSING \
                else item.default
        elif item.name in SHARED:
            fields[item.name] = getattr(live, item.name)
        else:
            fields[item.name] = copy.deepcopy(getattr(live, item.name))
    return Manifest(**fields)


def _check_parse_does_not_read_the_schema(manifest: Manifest, adapter_type: str) -> None:
    from dbt.adapters.factory import get_adapter_package_names

    internal = set(get_adapter_package_names(adapter_type))
    for macro in manifest.macros.values():
        if macro.package_name not in internal and macro.name.split("__")[-1] in SCHEMA_MACROS:
            raise MustParse(f"{macro.package_name} defines {macro.name} ({macro.original_file_path})")
    for path in _user_files(manifest, internal):
        _check_text(path)


def _check_text(path: Path) -> None:
    for block in JINJA.findall(path.read_text(errors="replace")):
        if READS_TARGET_SCHEMA.search(block):
            raise MustParse(f"{path} reads the target at parse time: {' '.join(block.split())[:120]}")


SCHEMA_MACRO_DEFINITION = re.compile(r"{%-?\s*macro\s+(\w+__)?generate_(schema|alias|database)_name\b")
PROJECT_TEXT = {".sql", ".yml", ".yaml", ".md"}
NOT_PROJECT = {"target", "logs", "node_modules", "venv"}  # dbt's output, and what a repository may hold beside


def check_project_files(project_dir: Path) -> None:
    """The same rules on the files alone, before any parse (raises MustParse): whether a parse for
    another schema can be moved at all, so a project that must be parsed for its own schema is not
    parsed twice. The manifest check still decides."""
    for path in project_dir.rglob("*"):
        folders = path.relative_to(project_dir).parts[:-1]
        if path.suffix not in PROJECT_TEXT or any(part.startswith(".") or part in NOT_PROJECT for part in folders) \
                or not path.is_file():
            continue
        if path.suffix == ".sql" and SCHEMA_MACRO_DEFINITION.search(path.read_text(errors="replace")):
            raise MustParse(f"{path} defines a schema, alias or database name macro")
        _check_text(path)


def _user_files(manifest: Manifest, internal: set[str]) -> Iterable[Path]:
    """Every file dbt parsed outside its own packages, and each project's dbt_project.yml."""
    roots: set[str] = set()
    for source_file in manifest.files.values():
        path: Any = source_file.path
        if source_file.project_name in internal or not hasattr(path, "project_root"):  # a dbt Cloud RemoteFile
            continue
        roots.add(path.project_root)
        if not path.relative_path.endswith(".csv"):  # seeds' data is never rendered
            yield Path(path.full_path)
    for root in roots:
        if (Path(root) / "dbt_project.yml").exists():
            yield Path(root) / "dbt_project.yml"


def _quote_character(adapter_type: str) -> str:
    from dbt.adapters.factory import get_adapter_class_by_name

    return get_adapter_class_by_name(adapter_type).Relation.quote_character


class _Move:
    """Moves schemas and relation names from live's schema to the version's, as dbt's default
    `generate_schema_name` would have placed them: `<target.schema>` or `<target.schema>_<custom>`."""

    def __init__(self, live_schema: str, version_schema: str, quote: str):
        self.live, self.version, self.quote = live_schema, version_schema, quote

    def node(self, node: Any) -> None:
        old_schema = node.schema
        node.schema = self.schema(old_schema, node.unique_id)
        if getattr(node, "relation_name", None):
            node.relation_name = self.relation(node.relation_name, node.database, old_schema, node.unique_id,
                                               new_schema=node.schema)

    def schema(self, schema: Optional[str], unique_id: str) -> Optional[str]:
        if schema is None:
            return None
        if schema == self.live or schema.startswith(self.live + "_"):
            return self.version + schema[len(self.live):]
        raise MustParse(f"{unique_id} is in schema {schema!r}, not {self.live!r} or {self.live!r}_<custom>")

    def relation(self, relation_name: Optional[str], database: Optional[str], old_schema: Optional[str],
                 unique_id: str, new_schema: Optional[str] = None) -> Optional[str]:
        """The relation name with its schema part replaced (the include policy may leave out the
        database, quoting may be on or off per part)."""
        if not relation_name or not old_schema:
            return relation_name
        new_schema = new_schema if new_schema is not None else self.schema(old_schema, unique_id)
        q = self.quote
        for head in ([f"{q}{database}{q}.", f"{database}."] if database else []) + [""]:
            for part in (f"{q}{old_schema}{q}", old_schema):
                if relation_name.startswith(head + part + "."):
                    return head + part.replace(old_schema, str(new_schema)) + relation_name[len(head + part):]
        if old_schema not in relation_name:
            return relation_name  # the include policy leaves the schema out
        raise MustParse(f"{unique_id}'s relation name {relation_name!r} does not have the shape its schema gives")
