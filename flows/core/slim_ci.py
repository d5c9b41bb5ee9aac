"""Slim CI mechanics: build what a pull request changed, against the base environment's state,
in a schema of its own, and say what was changed, built and deferred.

Where things go:
- the PR builds into `<schema>_pr_<n>` (custom-schema models into `<schema>_pr_<n>_<custom>`);
- unselected parents resolve to the base environment's live relations, because the base
  state's manifest records live (unversioned) locations and we pass `--favor-state`;
- snapshots never run in CI: their history belongs to production, refs to them defer too.
"""

from __future__ import annotations

import json
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Optional

from blocks.environment import DbtEnvironment, EnvironmentConfigError, load_environment
from blocks.local import local_paths
from blocks.naming import checked_pr_number, is_pr_schema, pr_schema
from blocks.profile import rendered_profile
from flows.core.artifacts import failures_table, markdown_table
from flows.core.data_diff import DataDiff, DiffTarget, diff_markdown, primary_key
from flows.core.dbt import BUILDABLE, TESTS, DbtProject, NodeResult, StepResult, fqn_selector, run_log
from flows.core.layers import Graph
from flows.core.version_manifest import MustParse, check_project_files
from flows.core.run import project_folder
from flows.core.state_store import StateStore
from flows.core.warehouse import Relation, Warehouse
from flows.errors import InputError

NEVER_IN_CI = ["resource_type:snapshot"]


def pr_schemas(warehouse: Warehouse, base_schema: str, pr_number: int) -> list[str]:
    root = pr_schema(base_schema, pr_number)
    # The LIKE prefix also matches other PRs whose number starts with the same digits.
    return [s for s in warehouse.schemas_with_prefix(root) if is_pr_schema(s, base_schema, pr_number)]


def ci_work_dir(environment: DbtEnvironment, pr_number: int) -> Path:
    """Target path and base state of one PR, kept between its runs so dbt parses partially."""
    return local_paths().work / environment.name / "ci" / f"pr_{checked_pr_number(pr_number)}"


@dataclass
class CiSession:
    pr_number: int
    environment: DbtEnvironment
    base: DbtEnvironment
    project: DbtProject
    schema: str
    state_dir: Optional[Path]  # None: the base environment has no saved state yet

    @property
    def slim(self) -> bool:
        return self.state_dir is not None


def _check_base_adapter(state_dir: Path, environment: DbtEnvironment, base: DbtEnvironment) -> None:
    manifest = json.loads((state_dir / "manifest.json").read_text())
    adapter = manifest.get("metadata", {}).get("adapter_type")
    if adapter and adapter != environment.adapter:
        raise EnvironmentConfigError(
            f"cannot defer {environment.name!r} ({environment.adapter}) to the state of {base.name!r}, "
            f"which was built on {adapter}: pick a base environment on the same adapter"
        )


def _check_same_duckdb_file(environment: DbtEnvironment, base: DbtEnvironment) -> None:
    # Deferred refs name the base's relations by database (the DuckDB file's name), schema and
    # name: from another file they fail, or read a same-named file's relations of the CI environment.
    if environment.adapter == base.adapter == "duckdb" and (
            environment.warehouse_path().resolve() != base.warehouse_path().resolve()):
        raise EnvironmentConfigError(
            f"cannot defer {environment.name!r} to {base.name!r}: on DuckDB both must use the same warehouse "
            f"file, not {environment.warehouse_path()} and {base.warehouse_path()}")


@contextmanager
def open_ci(pr_number: int, environment: str, base_environment: str, project_dir: Optional[str],
            threads: Optional[int]) -> Iterator[CiSession]:
    """Check the inputs, fetch the base state, render the PR profile; clean the profile up on exit."""
    checked_pr_number(pr_number)
    if threads is not None and threads < 1:
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    env, base = load_environment(environment), load_environment(base_environment)
    _check_same_duckdb_file(env, base)
    project_path = project_folder(project_dir)
    schema = pr_schema(env.schema_name, pr_number)
    work = ci_work_dir(env, pr_number)
    state_dir = work / "base-state"
    shutil.rmtree(state_dir, ignore_errors=True)  # never compare against an older fetch
    found = StateStore.for_environment(base).fetch_latest(state_dir)
    if found:
        _check_base_adapter(state_dir, env, base)
    with ExitStack() as stack:
        profile = stack.enter_context(rendered_profile(env, project_path.resolve(), schema=schema))
        parsed_for = _environment_parse(stack, env, project_path, work, threads)
        project = DbtProject(project_path, profile, work / "target", threads=threads, schema_of=parsed_for)
        yield CiSession(pr_number, env, base, project, schema, state_dir if found else None)


def _environment_parse(stack: ExitStack, env: DbtEnvironment, project_path: Path, work: Path,
                       threads: Optional[int]) -> Optional[DbtProject]:
    """The PR's code parsed for the environment's own schema, which the PR's schema is then moved
    from (version_manifest.py), or None where that cannot be exact.

    A PR's profile names the PR's schema, so dbt cannot partially parse its first push from any
    earlier parse; for the environment's schema it can: from another PR's parse, or production's
    on this machine. ci.yml caches it across pull requests."""
    try:
        check_project_files(project_path)
    except MustParse as reason:
        run_log(f"The PR is parsed for its own schema: {reason}.")
        return None
    profile = stack.enter_context(rendered_profile(env, project_path.resolve()))
    target = work / PARSE_TARGET
    _seed_partial_parse(target, env)
    return DbtProject(project_path, profile, target, threads=threads)


PARTIAL_PARSE = "partial_parse.msgpack"
PARSE_TARGET = "parse-target"  # in a PR's work dir: the target of its parse for the environment's schema


def _seed_partial_parse(target: Path, env: DbtEnvironment) -> None:
    """Give a PR's first parse the newest parse of the environment's schema on this machine. dbt
    checks it (profile, vars, versions, files) and parses in full where it does not match."""
    if (target / PARTIAL_PARSE).exists():
        return
    environment_work = local_paths().work / env.name
    candidates = [environment_work / "target" / PARTIAL_PARSE,
                  *(environment_work / "ci").glob(f"pr_*/{PARSE_TARGET}/{PARTIAL_PARSE}")]
    found = [path for path in candidates if path.is_file()]
    if found:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(max(found, key=lambda path: path.stat().st_mtime), target / PARTIAL_PARSE)


@dataclass
class CiPlan:
    mode: Literal["slim", "full"]
    changed: set[str]  # models, seeds, snapshots that differ from the base state (all of them in a full build)
    command: list[str]
    left_out: set[str] = field(default_factory=set)  # snapshots and, in a full build, what reads them


def plan(session: CiSession) -> CiPlan:
    """`state:modified+` deferred to the base state, or a full build when there is no state."""
    project = session.project
    graph = Graph(project.parsed_manifest)
    snapshots = graph.of_type("snapshot")
    if session.slim:
        state = ["--state", str(session.state_dir)]
        changed = project.list_ids(["state:modified"], None, BUILDABLE, extra=state)
        # --favor-state: an unselected parent always resolves to the base state's live relation,
        # never to a stale copy an earlier run of this PR left in the PR schema.
        command = ["build", "--select", "state:modified+", "--exclude", *NEVER_IN_CI, *state,
                   "--defer", "--favor-state"]
        return CiPlan("slim", changed, command, left_out=changed & snapshots)
    # No state to defer to: nothing could resolve a ref to a snapshot, so its readers stay out too.
    exclude = [*NEVER_IN_CI, *(fqn_selector(graph.manifest, s) + "+" for s in sorted(snapshots))]
    left_out = project.list_ids(exclude, None, BUILDABLE) if snapshots else set()
    changed = project.list_ids(None, None, BUILDABLE) - left_out
    return CiPlan("full", changed, ["build", "--exclude", *exclude], left_out=left_out)


EPHEMERAL = "ephemeral"  # the status of a changed ephemeral model: nothing is built for it


@dataclass
class CiNode:
    unique_id: str
    name: str
    resource_type: str
    role: Literal["changed", "downstream", "deferred"]
    status: str  # dbt's status, or "deferred"
    relation: str
    tests_passed: int = 0
    tests_failed: list[str] = field(default_factory=list)


@dataclass
class CiReport:
    pr_number: int
    environment: str
    base: str
    schema: str
    mode: str
    nodes: list[CiNode]
    left_out: list[str]
    failures: list[NodeResult]
    seconds: float
    data_diff: Optional[DataDiff] = None  # slim mode only: what changed in the rebuilt models' data

    def of_role(self, role: str) -> list[CiNode]:
        return [n for n in self.nodes if n.role == role]

    @property
    def outcome(self) -> str:
        built = len([n for n in self.of_role("changed") + self.of_role("downstream") if n.status != EPHEMERAL])
        verdict = f"failed ({len(self.failures)} failing nodes)" if self.failures else "passed"
        return f"{verdict}: {built} built, {len(self.of_role('deferred'))} deferred, in {self.schema}"


def _ephemeral(manifest, unique_id: str) -> bool:
    node = manifest.nodes.get(unique_id)
    return node is not None and node.resource_type.value == "model" and node.config.materialized == "ephemeral"


def _relation_parents(graph: Graph, unique_id: str) -> set[str]:
    """The parents a node reads as relations: an ephemeral parent is inlined into its SQL, so what
    is read (and deferred) is that parent's own parents."""
    found, stack, seen = set(), list(graph.parents.get(unique_id, ())), set()
    while stack:
        parent = stack.pop()
        if parent in seen:
            continue
        seen.add(parent)
        if _ephemeral(graph.manifest, parent):
            stack.extend(graph.parents.get(parent, ()))
        else:
            found.add(parent)
    return found


def _tested_node(graph: Graph, unique_id: str) -> Optional[str]:
    node = graph.manifest.nodes.get(unique_id)
    attached: Optional[str] = getattr(node, "attached_node", None)  # a generic test's model
    if attached:
        return attached
    parents = graph.parents.get(unique_id, [])
    return parents[-1] if parents else None


def summarize(session: CiSession, ci_plan: CiPlan, result: StepResult, base_manifest: Optional[dict]) -> CiReport:
    """Which nodes changed, were built downstream, or were deferred, each with its tests."""
    manifest = session.project.parsed_manifest
    graph = Graph(manifest)
    by_id = {n.unique_id: n for n in result.nodes}
    built = [n for n in result.nodes if n.resource_type in BUILDABLE]
    tests = [n for n in result.nodes if n.resource_type in TESTS]
    nodes: dict[str, CiNode] = {}
    for n in built:
        role: Literal["changed", "downstream"] = "changed" if n.unique_id in ci_plan.changed and ci_plan.mode == "slim" else "downstream"
        nodes[n.unique_id] = CiNode(n.unique_id, n.name, n.resource_type, role, n.status, n.relation or "")
    for unique_id in sorted(ci_plan.changed - nodes.keys()):
        if ci_plan.mode == "slim" and _ephemeral(manifest, unique_id):  # dbt runs no node for it: it is inlined
            node = manifest.nodes[unique_id]
            nodes[unique_id] = CiNode(unique_id, node.name, "model", "changed", EPHEMERAL, "(inlined into its children)")
    if ci_plan.mode == "slim":
        base_nodes = (base_manifest or {}).get("nodes", {})
        for parent in sorted({p for n in [*built, *tests] for p in _relation_parents(graph, n.unique_id)}):
            if parent in nodes or parent in by_id or parent not in manifest.nodes:
                continue  # built here, or a source (sources are read where they are)
            node = manifest.nodes[parent]
            relation = base_nodes.get(parent, {}).get("relation_name") or "(not in the base state)"
            nodes[parent] = CiNode(parent, node.name, node.resource_type.value, "deferred", "deferred", relation)
    for test in tests:
        target = nodes.get(_tested_node(graph, test.unique_id) or "")
        if target is None:
            continue
        if test.failed:
            target.tests_failed.append(test.name)
        elif test.status in {"pass", "warn", "success"}:
            target.tests_passed += 1
    return CiReport(session.pr_number, session.environment.name, session.base.name, session.schema, ci_plan.mode,
                    sorted(nodes.values(), key=lambda n: (n.role, n.name)), sorted(ci_plan.left_out),
                    result.failures, result.seconds)


DIFFED_TYPES = {"model", "seed"}


def diff_targets(session: CiSession, report: CiReport, base_manifest: Optional[dict]) -> list[DiffTarget]:
    """Every model or seed the PR built that the base environment's state also has, with its key."""
    manifest, base_nodes = session.project.parsed_manifest, (base_manifest or {}).get("nodes", {})
    targets = []
    for node in report.of_role("changed") + report.of_role("downstream"):
        built, base = manifest.nodes.get(node.unique_id), base_nodes.get(node.unique_id)
        if (built is None or base is None or node.resource_type not in DIFFED_TYPES
                or node.status not in {"success", "pass"} or not base.get("relation_name")):
            continue
        targets.append(DiffTarget(
            node.name, Relation(built.schema, built.alias or built.name, _other_catalog(session, built.database)),
            Relation(base["schema"], base.get("alias") or base["name"], _other_catalog(session, base.get("database"))),
            primary_key(manifest, node.unique_id)))
    return targets


def _other_catalog(session: CiSession, database: Optional[str]) -> Optional[str]:
    """A relation's catalog when it is not the CI environment's own (Databricks: staging's PR against
    prod's live relations), else None. DuckDB environments share one file (open_ci checks it)."""
    own = session.environment.catalog or ""
    if session.environment.adapter != "databricks" or not database or database.lower() == own.lower():
        return None
    return database


def _node_rows(nodes: list[CiNode]) -> list[list]:
    def tests(node: CiNode) -> str:
        passed = f"{node.tests_passed} passed" if node.tests_passed else ""
        failed = f"failed: {', '.join(node.tests_failed)}" if node.tests_failed else ""
        return ", ".join(p for p in (passed, failed) if p) or "—"

    return [[n.name, n.resource_type, n.status, tests(n), f"`{n.relation}`" if n.relation else ""] for n in nodes]


def report_markdown(report: CiReport) -> str:
    headers = ["node", "type", "status", "tests", "relation"]
    parts = [f"# Slim CI — PR #{report.pr_number} on `{report.environment}`: {report.outcome}"]
    if report.mode == "slim":
        parts.append(f"Built `state:modified+` into `{report.schema}*`; unchanged parents resolve to "
                     f"`{report.base}`'s live relations (`--defer --favor-state`). Took {report.seconds:.1f} s.")
    else:
        parts.append(f"**Full build**: `{report.base}` has no saved state yet, so nothing could be compared "
                     f"or deferred. Built everything into `{report.schema}*` in {report.seconds:.1f} s.")
    sections = [("Changed (state:modified)", "changed"), ("Built downstream", "downstream"),
                (f"Deferred to `{report.base}`", "deferred")]
    if report.mode == "full":
        sections = [("Built", "downstream")]
    for title, role in sections:
        rows = report.of_role(role)
        parts.append(f"## {title}\n" + (markdown_table(headers, _node_rows(rows)) if rows else "_none_"))
    if report.data_diff is not None:
        parts.append(diff_markdown(report.data_diff, report.base))
    if report.left_out:
        parts.append("## Not run in CI\nSnapshots never run in CI" + (
            " (and with no base state, nothing that reads them can be built)" if report.mode == "full" else "")
            + ": " + ", ".join(f"`{u}`" for u in report.left_out))
    if report.failures:
        parts.append("## Failures\n" + failures_table(report.failures))
    return "\n\n".join(parts)
