"""One production run's session: environment, rendered profiles, dbt projects, lock, journal, report.

Opening a run validates everything a run needs before any dbt work starts.
"""

from __future__ import annotations

import json
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict, Field, field_validator

from blocks.environment import DbtEnvironment, load_environment
from blocks.local import local_paths
from blocks.profile import rendered_profile
from blocks.query_tags import query_history_filter
from flows.core.artifacts import RunReport
from flows.core.dbt import DbtProject
from flows.core.layers import LayerMode, Plan
from flows.core.lock import PublishLock
from flows.core.state_store import StateStore
from flows.core.versions import VersionRegistry, new_version_id, versioned_schema
from flows.errors import InputError, RunFailure

RUN_DIRS_KEPT = 5


def bundled_project_dir() -> Path:
    """`dbt_project/` of the working directory (a deployment's clone), else of this checkout."""
    here = Path.cwd() / "dbt_project"
    if (here / "dbt_project.yml").exists():
        return here
    return Path(__file__).resolve().parents[2] / "dbt_project"


def project_folder(project_dir: Optional[str]) -> Path:
    """The dbt project a run works on (empty: the bundled one), refused unless it has a dbt_project.yml."""
    path = Path(project_dir) if project_dir else bundled_project_dir()
    if not (path / "dbt_project.yml").exists():
        raise InputError(f"project_dir {str(path)!r} has no dbt_project.yml")
    return path.resolve()


def check_selector(spec: str) -> str:
    """Refuse a malformed dbt selector before any dbt work.

    dbt itself accepts `tag:` or `@@model`, selects nothing and says nothing: a typo would
    silently build nothing (or, in `exclude`, leave out nothing).
    """
    from dbt.graph.selector_methods import MethodName
    from dbt.graph.selector_spec import RAW_SELECTOR_PATTERN

    methods = {m.value for m in MethodName}
    terms = [term for union in spec.split() for term in union.split(",")] or [""]
    for term in terms:
        match = RAW_SELECTOR_PATTERN.match(term)
        if not term:
            problem = "it is empty"
        elif match is None:
            problem = "it is not dbt selector syntax"
        elif match["method"] and match["method"].split(".")[0] not in methods:
            problem = f"{match['method'].split('.')[0]!r} is not a dbt selector method ({', '.join(sorted(methods))})"
        elif not match["value"]:
            problem = f"nothing follows {match['method'] + ':' if match['method'] else 'the graph operators'}"
        elif any(c in match["value"] for c in "@+"):
            problem = "'@' goes only at its start, '+' only at its start or end, once each"
        elif match["childrens_parents"] and match["parents"]:
            problem = "'@' and a leading '+' cannot be combined"
        else:
            continue
        raise InputError(f"invalid dbt selector {spec!r}" + (f" (term {term!r})" if term != spec else "") + f": {problem}")
    return spec


class Layer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name shown in the run summary.")
    select: str = Field(description="dbt selector of the layer's nodes, e.g. path:models/staging or tag:staging.")

    @field_validator("select")
    @classmethod
    def _valid_selector(cls, value: str) -> str:
        return check_selector(value)


DEFAULT_LAYERS = [
    Layer(name="staging", select="path:models/staging"),
    Layer(name="intermediate", select="path:models/intermediate"),
    Layer(name="marts", select="path:models/marts"),
]


class RunOptions(BaseModel):
    """Everything a run was asked to do, validated once."""

    model_config = ConfigDict(extra="forbid")

    environment: str
    project_dir: Optional[str] = None
    select: list[str] = []
    exclude: list[str] = []
    full_refresh: bool = False
    vars: dict[str, Any] = {}
    layers: list[Layer] = Field(default_factory=lambda: list(DEFAULT_LAYERS))
    layer_mode: LayerMode = "layers"
    freshness_gate: bool = True
    run_snapshots: bool = True
    generate_docs: bool = True
    publish: bool = True
    fail_fast: bool = True
    threads: Optional[int] = Field(None, ge=1)
    node_tasks: bool = False
    allow_shrink: bool = False
    keep_failed_version: bool = False
    plan_only: bool = False

    @field_validator("select", "exclude")
    @classmethod
    def _valid_selectors(cls, value: list[str]) -> list[str]:
        return [check_selector(spec) for spec in value]

    def project_path(self) -> Path:
        return project_folder(self.project_dir)


@dataclass
class Journal:
    """What this flow run has done and decided, so a flow retry re-runs only what failed, with the
    same version and the same plan. Written by the runbook's evaluator (flows/production.py) and the
    stages that decide something once per run."""

    path: Path
    done: list[str] = field(default_factory=list)  # steps completed, in order
    failed: Optional[str] = None  # the step that failed last, which a retry resumes
    version: Optional[str] = None  # blue-green: the version this run builds
    plan: Optional[Plan] = None  # what the gate decided to build (a retry builds the same)
    source_signals: dict[str, Any] = field(default_factory=dict)  # change signals read before the build

    @classmethod
    def load(cls, path: Path) -> "Journal":
        if not path.exists():
            return cls(path)
        saved = json.loads(path.read_text())
        plan = saved.get("plan")
        return cls(path, saved["done"], saved["failed"], saved.get("version"),
                   Plan.from_json(plan) if plan else None, saved.get("source_signals") or {})

    def save(self) -> None:
        # Write-then-rename: a run killed mid-write leaves the previous journal, never a truncated one.
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps({
            "done": self.done, "failed": self.failed, "version": self.version,
            "plan": self.plan.to_json() if self.plan else None, "source_signals": self.source_signals}))
        partial.replace(self.path)

    def complete(self, step: str) -> None:
        self.done.append(step)
        if self.failed == step:
            self.failed = None
        self.save()

    def fail(self, step: str) -> None:
        self.failed = step
        self.save()


@dataclass
class ProductionRun:
    options: RunOptions
    environment: DbtEnvironment
    store: StateStore
    run_id: str
    run_dir: Path
    live: DbtProject  # the unversioned target: freshness, source tests, snapshots, state
    build: DbtProject  # where models are built: a versioned schema when blue-green publishes
    version: Optional[str]
    journal: Journal
    report: RunReport
    # Called with a point's name ("flip") and the run dir just before it: a test passes a hook that
    # pauses there, to kill the run at that exact moment. Production passes none.
    pause_before: Callable[[str, Path], None] = lambda point, run_dir: None

    @property
    def blue_green(self) -> bool:
        return self.version is not None

    @property
    def version_id(self) -> str:
        """The version a blue-green run builds; a run that builds in place has none."""
        if self.version is None:
            raise RunFailure("this run builds in place: it has no blue-green version")
        return self.version

    @property
    def changes_live(self) -> bool:
        """Whether this run changes what live reads (and so the state the next run compares with)."""
        return self.options.publish or not self.blue_green

    @property
    def resumed(self) -> bool:
        return bool(self.journal.done or self.journal.failed)


def blue_green_retry_must_start_over(store: StateStore, journal: Journal, environment: DbtEnvironment) -> bool:
    """A retry resumes its first attempt's version, unless that failed attempt dropped it (no
    retries were left then; an operator retried from the UI later): then it starts over, new version."""
    version = journal.version
    if not (version and environment.blue_green.enabled):
        return False
    record = VersionRegistry(store).versions.get(version)
    if record is None or record.status not in {"failed", "pruned"}:
        return False
    get_run_logger().info("Version %s was dropped when this run failed: the retry builds a new version "
                          "from the start.", version)
    return True


def _work_dir(environment: DbtEnvironment) -> Path:
    return local_paths().work / environment.name


def _prune_run_dirs(runs: Path, keep: int = RUN_DIRS_KEPT) -> None:
    dirs = sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    for stale in dirs[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def open_run(options: RunOptions, run_id: str,
             pause_before: Optional[Callable[[str, Path], None]] = None) -> Iterator[ProductionRun]:
    """Load and check everything, lock the environment, render profiles; undo it all on exit."""
    environment = load_environment(options.environment)
    project_dir = options.project_path()
    store = StateStore.for_environment(environment)
    work = _work_dir(environment)
    run_dir = work / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal.load(run_dir / "journal.json")
    if blue_green_retry_must_start_over(store, journal, environment):
        journal = Journal(journal.path)
    # publish=False on a blue-green environment still builds into a version (kept, not flipped):
    # building in place would show BI readers a half-built, untested live schema.
    blue_green = environment.blue_green.enabled
    version = journal.version or (new_version_id(run_id) if blue_green else None)
    journal.version = version
    journal.save()

    with ExitStack() as stack:
        # the version registry and the state are shared; a plan-only run writes neither
        if (options.publish or blue_green) and not options.plan_only:
            stack.enter_context(PublishLock(store, run_id))
        live_profile = stack.enter_context(rendered_profile(environment, project_dir, version=version))
        live = DbtProject(project_dir, live_profile, work / "target", options.vars, options.threads)
        build = live
        if version:
            schema = versioned_schema(environment.schema_name, version)
            build_profile = stack.enter_context(rendered_profile(environment, project_dir, schema=schema,
                                                                 version=version))
            build = DbtProject(project_dir, build_profile, run_dir / "target", options.vars, options.threads,
                               schema_of=live)
        _prune_run_dirs(work / "runs")
        yield ProductionRun(
            options=options, environment=environment, store=store, run_id=run_id, run_dir=run_dir,
            live=live, build=build, version=version, journal=journal,
            report=RunReport(environment=environment.name, version=version,
                             query_history_filter=query_history_filter(run_id) if environment.adapter == "databricks"
                             else None),
            **({"pause_before": pause_before} if pause_before else {}),
        )

