"""Which failed nodes failed transiently: worth one more try inside the step, with `dbt retry`.

The classification is data: patterns per adapter, matched against a node's error message
(case-insensitive). Transient: the connection dropped, a timeout, HTTP 429/503, a warehouse
that "could not be scheduled" or is "temporarily unavailable", a Delta concurrent-write
conflict, a DuckDB file or write lock held by someone else. Everything else is a real failure
and is never retried: a failing test (status "fail", whatever its message), SQL and compile
errors, permission errors, and anything unknown.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

from flows.core.results import NodeResult

# Patterns of every adapter: what a network or a busy service says, whoever's driver says it.
COMMON = (
    r"connection (was )?(reset|closed|aborted|refused|lost|dropped)",
    r"connection reset by peer",
    r"broken pipe",
    r"remote end closed connection",
    r"\btimed out\b", r"\btimeout\b",
    r"\b429\b", r"too many requests", r"rate limit",
    r"\b503\b", r"service unavailable",
    r"could not be scheduled",
    r"temporarily unavailable",
)
PATTERNS: dict[str, tuple[str, ...]] = {
    "databricks": (
        # Delta optimistic concurrency: another writer committed first; a retry reads the new snapshot.
        # https://docs.databricks.com/en/optimizations/isolation-level.html#conflict-exceptions
        r"ConcurrentAppendException", r"ConcurrentDeleteReadException", r"ConcurrentDeleteDeleteException",
        r"ConcurrentTransactionException", r"DELTA_CONCURRENT_APPEND", r"DELTA_CONCURRENT_DELETE_READ",
        r"TEMPORARILY_UNAVAILABLE", r"RESOURCE_EXHAUSTED", r"\bREQUEST_LIMIT_EXCEEDED\b",
    ),
    "duckdb": (
        # Another process holds the database file (dbt-duckdb opens it for writing).
        r"Could not set lock on file", r"Conflicting lock is held",
        # Two transactions wrote the same rows or catalog entry; the later one must start again.
        r"TransactionContext Error: .*Conflict", r"write-write conflict",
    ),
}
# A query cancelled by dbt's own fail-fast stop, after another node failed: it failed only because
# that node did. It is retried when (and only when) that first failure was transient.
COLLATERAL = {
    "duckdb": (r"INTERRUPT Error",),
    "databricks": (r"Query was cancel", r"operation was canceled", r"CANCELED"),
}
# Never transient, whatever else the message says: the database answered, and said no.
REAL = (
    r"permission", r"privilege", r"not authori[sz]ed", r"access denied", r"PERMISSION_DENIED", r"\b403\b", r"\b401\b",
    r"Compilation Error", r"Parser Error", r"syntax error", r"PARSE_SYNTAX_ERROR",
    r"Catalog Error", r"Binder Error", r"TABLE_OR_VIEW_NOT_FOUND", r"UNRESOLVED_COLUMN",
)


def _compiled(patterns: Iterable[str]) -> Optional[re.Pattern[str]]:
    patterns = list(patterns)
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None


_TRANSIENT = {adapter: _compiled((*COMMON, *PATTERNS.get(adapter, ()))) for adapter in (*PATTERNS, "")}
_COLLATERAL = {adapter: _compiled(COLLATERAL.get(adapter, ())) for adapter in (*PATTERNS, "")}
_REAL = _compiled(REAL)


def is_transient(node: NodeResult, adapter: str) -> bool:
    """Whether this failed node failed for a reason that a second try may not meet."""
    if not node.failed or node.status == "fail":  # "fail": a test (or unit test) whose assertion failed
        return False
    if _REAL is not None and _REAL.search(node.message or ""):
        return False
    pattern = _TRANSIENT.get(adapter) or _TRANSIENT[""]
    return pattern is not None and bool(pattern.search(node.message or ""))


def transient_cause(node: NodeResult, adapter: str) -> str:
    """The line of the node's message that makes it transient (the driver's own words), else its first line."""
    pattern = _TRANSIENT.get(adapter) or _TRANSIENT[""]
    lines = [line.strip() for line in (node.message or "").splitlines() if line.strip()]
    matching = [line for line in lines if pattern is not None and pattern.search(line)]
    line = (matching or lines or [""])[-1 if matching else 0]
    return line if len(line) <= 300 else line[:299] + "…"


def is_collateral(node: NodeResult, adapter: str) -> bool:
    """A node whose query dbt's fail-fast stop cancelled: it failed because another node did."""
    pattern = _COLLATERAL.get(adapter)
    return node.failed and pattern is not None and bool(pattern.search(node.message or ""))


def rescuable(failures: list[NodeResult], adapter: str) -> list[NodeResult]:
    """The transient failures worth a `dbt retry`, or [] when any failure is real.

    `dbt retry` re-runs every failed and skipped node of the command: with one real failure
    among them, it would retry that one too, so the step fails as it is and an operator (or a
    flow-level retry) takes over."""
    transient = [node for node in failures if is_transient(node, adapter)]
    others = [node for node in failures if node not in transient and not is_collateral(node, adapter)]
    return transient if transient and not others else []
