"""The schema layout, in one place: where a blue-green version, a pull request and live put things.

- live:           `<schema>` and `<schema>_<custom>` (dbt's default `generate_schema_name`);
- a version:      `<schema>__<version>` and `<schema>__<version>_<custom>`;
- a pull request: `<schema>_pr_<n>` and `<schema>_pr_<n>_<custom>`.

Case: Unity Catalog and the Hive metastore store names in lower case (`fold`), so names read
back from information_schema are compared folded; DuckDB keeps case (`fold` is identity there).
Everything that builds, parses or compares these names calls this module.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Optional

from blocks.environment import safe_identifier
from flows.errors import InputError

VERSION_ID = re.compile(r"v\d{14}_[0-9a-z]{6}")
VERSION_SEPARATOR = "__"


def fold(identifier: str, adapter: str) -> str:
    """The name as the adapter's catalog stores it (and information_schema returns it)."""
    return identifier.lower() if adapter == "databricks" else identifier


def new_version_id(run_id: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    short = re.sub(r"[^0-9a-z]", "", run_id.lower())[:6].ljust(6, "0")
    return f"v{stamp}_{short}"


def versioned_schema(base: str, version: str) -> str:
    return f"{base}{VERSION_SEPARATOR}{version}"


def version_schema_prefix(base: str, version: str = "v") -> str:
    """What every schema of `version` starts with (all versions' schemas, by default): for LIKE listings."""
    return versioned_schema(base, version)


def _parse(physical_schema: str, base: str) -> Optional[re.Match]:
    return re.fullmatch(rf"{re.escape(base)}{VERSION_SEPARATOR}({VERSION_ID.pattern})(_.+)?", physical_schema)


def live_schema_of(physical_schema: str, base: str) -> Optional[str]:
    """`main__v…_finance` → `main_finance`; None when not a versioned schema of `base`."""
    match = _parse(physical_schema, base)
    return None if not match else base + (match.group(2) or "")


def version_of_schema(physical_schema: str, base: str) -> Optional[str]:
    match = _parse(physical_schema, base)
    return match.group(1) if match else None


def checked_pr_number(pr_number: int) -> int:
    if isinstance(pr_number, bool) or not isinstance(pr_number, int) or pr_number < 1:
        raise InputError(f"pr_number must be a positive integer, got {pr_number!r}")
    return pr_number


def pr_schema(base_schema: str, pr_number: int) -> str:
    """`analytics` + PR 7 → `analytics_pr_7`; every schema of the PR starts with it."""
    return safe_identifier(f"{base_schema}_pr_{checked_pr_number(pr_number)}", "PR schema")


def is_pr_schema(schema: str, base_schema: str, pr_number: int) -> bool:
    """The PR's own schema or one of its custom schemas; `main_pr_1` is not `main_pr_12`.
    Compared in lower case: whichever adapter listed it, a PR's schemas are found."""
    root = pr_schema(base_schema, pr_number).lower()
    return schema.lower() == root or schema.lower().startswith(root + "_")
