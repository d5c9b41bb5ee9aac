"""`DbtCommand`: one dbt command as a value, which renders its own argv.

A step builds the command it means; `dbt retry` of it is `dataclasses.replace(command,
verb="retry", state=...)`, keeping what retry does not carry over by itself (the deferral),
so nothing ever searches an argv for a flag. Where the project lives (project dir, profiles,
target, target path) is the DbtProject's to add: the same command runs against any target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

from flows.errors import InputError

# What a command of exact nodes selects. dbt matches every `--select` term against every node, so
# one term per node costs O(terms x nodes): 130 of them took 3 s of a 7 s layer build at 2,000
# nodes, and a covering selector plus corrections needed a `dbt ls` (~1 s) to find. One tag, set
# on exactly the nodes for the one invocation and removed after it, is one pass.
SELECTED_TAG = "lakehouse__selected"

# The verbs that take --threads (dbt rejects it elsewhere).
THREADED = {"build", "run", "test", "seed", "snapshot", "retry", "compile", "source freshness", "docs generate", "show"}


@dataclass(frozen=True)
class DbtCommand:
    verb: str  # "build", "seed", "source freshness", "docs generate", "retry", ...
    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    indirect_selection: Optional[str] = None  # "empty": no test comes along that the selection does not name
    resource_types: tuple[str, ...] = ()
    full_refresh: bool = False
    fail_fast: bool = False
    defer: bool = False
    favor_state: bool = False
    defer_state: Optional[str] = None  # the manifest refs to unbuilt nodes resolve to
    state: Optional[str] = None  # --state: the comparison state (state:modified) or, for retry, the run_results
    vars: Mapping[str, Any] = field(default_factory=dict)
    threads: Optional[int] = None
    extra: tuple[str, ...] = ()  # flags of this verb alone (--no-populate-cache, --static, ...)
    # Exactly these unique_ids, and no test they do not name: DbtProject.run tags them for the
    # invocation and dbt selects the tag, one pass over the nodes (see SELECTED_TAG).
    nodes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("select", "exclude", "resource_types", "extra"):
            value = getattr(self, name)
            if isinstance(value, str):  # one selector given as a string, not its characters
                raise TypeError(f"DbtCommand.{name} is a tuple of strings, got the string {value!r}")
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "nodes", frozenset(self.nodes))
        if self.nodes and (self.select or self.indirect_selection not in (None, "empty")):
            raise InputError("DbtCommand.nodes selects by itself: give it no select, and no indirect selection")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"DbtCommand.threads must be at least 1, got {self.threads}")

    @property
    def words(self) -> list[str]:
        return self.verb.split()

    def argv(self) -> list[str]:
        """The command's own arguments, verb first (no project location: see DbtProject)."""
        argv = self.words
        if self.nodes:
            argv += ["--select", f"tag:{SELECTED_TAG}"]
        if self.select:
            argv += ["--select", *self.select]
        if self.exclude:
            argv += ["--exclude", *self.exclude]
        for resource_type in self.resource_types:
            argv += ["--resource-type", resource_type]
        indirect_selection = "empty" if self.nodes else self.indirect_selection
        if indirect_selection:
            argv += ["--indirect-selection", indirect_selection]
        if self.full_refresh:
            argv.append("--full-refresh")
        if self.fail_fast:
            argv.append("--fail-fast")
        if self.defer:
            argv.append("--defer")
        if self.favor_state:
            argv.append("--favor-state")
        if self.defer_state:
            argv += ["--defer-state", self.defer_state]
        if self.state:
            argv += ["--state", self.state]
        if self.vars:
            argv += ["--vars", json.dumps(dict(self.vars), sort_keys=True)]
        if self.threads and self.verb in THREADED:
            argv += ["--threads", str(self.threads)]
        return argv + list(self.extra)

    def retry(self, state: str) -> "DbtCommand":
        """`dbt retry` of this command, reading the run_results in `state`: only what failed or was skipped."""
        # dbt retry re-reads the selection, full refresh and fail-fast from the previous
        # invocation's run_results (and refuses to be given a selection). The deferral it does
        # not carry over (dbt 1.11): it stays, or refs to nodes this run does not build cannot resolve.
        return replace(self, verb="retry", state=state, select=(), exclude=(), indirect_selection=None,
                       resource_types=(), full_refresh=False, fail_fast=False, extra=(), nodes=frozenset())

    def __str__(self) -> str:
        return " ".join(self.words)
