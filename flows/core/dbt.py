"""One object owns a dbt project and every invocation of it during a flow run.

dbt runs in-process through `dbtRunner`. The project is parsed once; every later
command reuses that manifest, so a step costs only its own work. Node results come
from dbt's own result objects, not from one Prefect call per node.

`DbtProject` and `StepResult` are deliberately *not* dataclasses. Prefect walks every
task parameter that is a dataclass, pydantic model or collection, field by field, to
find upstream futures (twice per task call). A parsed manifest of 2,000 nodes took
~5 s per walk, so passing a run that holds a project to a task cost ~10 s per task.
Plain classes are leaves to that walk.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

from dbt.cli.main import dbtRunner
from dbt.contracts.graph.manifest import Manifest
from dbt_common.exceptions import DbtBaseException

from blocks.profile import RenderedProfile
from flows.core.command import SELECTED_TAG, DbtCommand
from flows.core.results import (FAILED_STATUSES, NodeResult, Rescue, StepResult, combined, compiled_path, node_result,
                                rescued, with_reported_failures)
from flows.core.selection import (BUILDABLE, EXECUTED, exact_selector, fqn_selector, resource_type_of,
                                  select_in_process, TESTS)
from flows.core.invocation import invoke
from flows.core.memory_state import state_dir
from flows.errors import RunFailure

# Commands that, left to themselves, rewrite manifest.json after running (dbt's GraphRunnableTask):
# 2.2 s per command on a 2,000-node project, for a manifest that does not change between steps.
# They run with `--no-write-json`; we write their own result file, and the manifest once, on demand.
RESULT_FILES = {"build": "run_results.json", "run": "run_results.json", "test": "run_results.json",
                "seed": "run_results.json", "snapshot": "run_results.json", "retry": "run_results.json",
                "compile": "run_results.json", "source": "sources.json"}
# Commands that work without a parsed project: `deps` must run before the first parse can succeed
# (a project with packages does not parse until they are installed).
NEEDS_NO_MANIFEST = {"deps", "clean", "debug"}


# Re-exported: what callers of this module used to find here before it was split.
__all__ = ["BUILDABLE", "EXECUTED", "FAILED_STATUSES", "DbtCommand", "DbtCommandError",
           "DbtProject", "NodeResult", "Rescue", "StepResult", "combined", "exact_selector", "fqn_selector", "rescued",
           "resource_type_of", "TESTS"]


class DbtCommandError(RunFailure):
    """dbt itself failed (parse error, bad selector, crash) rather than a node."""


class _FailedNodes:
    """A dbt event callback keeping the nodes that failed, for when the command then raises.

    A fail-fast stop cancels the warehouse connections, and dbt can raise afterwards
    ("Connection already closed") and lose its node results: the failing test or model,
    not that error, is what the run must report.
    """

    def __init__(self, project: "DbtProject"):
        self.project = project
        self.nodes: list[NodeResult] = []

    def __call__(self, event: Any) -> None:
        # dbt calls this inside its own threads: an error here would abort the command.
        try:
            self._record(event)
        except Exception:  # noqa: BLE001 - dbt's own result then stands alone
            pass

    def _record(self, event: Any) -> None:
        if event.info.name != "NodeFinished":
            return
        result, info = event.data.run_result, event.data.node_info
        if result.status not in FAILED_STATUSES:
            return
        node = self.project.manifest.nodes.get(info.unique_id) if self.project.manifest else None
        self.nodes.append(NodeResult(
            unique_id=info.unique_id, resource_type=info.resource_type, name=info.node_name,
            status=result.status, message=result.message, execution_time=result.execution_time,
            compiled_path=compiled_path(node, self.project.target_path, self.project.project_name) if node else None,
            relation=getattr(node, "relation_name", None),
        ))


def run_log(message: str) -> None:
    """Info to the flow run's log in a run (the UI shows it), else to this module's logger."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_logger, get_run_logger

    try:
        get_run_logger().info(message)
    except MissingContextError:
        get_logger(__name__).info(message)


@contextmanager
def _tagged(nodes: Sequence[Any]) -> Iterator[None]:
    """SELECTED_TAG on `nodes` for one invocation; never left in a manifest that is written,
    compared or used again. A unit test's tags are its config's (a property), possibly a string."""
    saved = [(node, node.config.tags) for node in nodes if node.resource_type.value == "unit_test"]
    for node, tags in saved:
        node.config.tags = [*([tags] if isinstance(tags, str) else tags), SELECTED_TAG]
    others = [node for node in nodes if node.resource_type.value != "unit_test"]
    for node in others:
        node.tags.append(SELECTED_TAG)
    try:
        yield
    finally:
        for node, tags in saved:
            node.config.tags = tags
        for node in others:
            node.tags.remove(SELECTED_TAG)


class DbtProject:
    """A dbt project bound to one rendered profile and one target path."""

    def __init__(self, project_dir: Path, profile: RenderedProfile, target_path: Path,
                 vars: Optional[dict] = None, threads: Optional[int] = None, manifest: Optional[Manifest] = None,
                 schema_of: Optional["DbtProject"] = None):
        """schema_of: a project of the same code, vars and target with only another schema (a blue-green
        version of live): its parse is moved to this schema where that is exact (version_manifest.py)."""
        self.project_dir = Path(project_dir).resolve()
        self.schema_of = schema_of
        self.profile = profile
        self.target_path = Path(target_path).resolve()
        self.target_path.mkdir(parents=True, exist_ok=True)
        self.vars = dict(vars or {})
        self.threads = threads
        self.manifest = manifest
        self._manifest_written = False
        self._parse_flags: Any = None  # dbt's flags of this project's parse: list_ids selects with them

    def __repr__(self) -> str:
        return f"DbtProject({str(self.project_dir)!r}, target={self.profile.target!r}, schema={self.profile.schema!r})"

    @property
    def project_name(self) -> str:
        return (self.manifest.metadata.project_name if self.manifest else None) or self.project_dir.name

    @property
    def parsed_manifest(self) -> Manifest:
        """The manifest, parsing the project first if it has not been parsed yet."""
        return self.manifest if self.manifest is not None else self.parse()

    def _argv(self, command: list[str], vars: Optional[dict] = None, threads: Optional[int] = None) -> list[str]:
        argv = [
            *command,
            "--project-dir", str(self.project_dir),
            "--profiles-dir", str(self.profile.profiles_dir),
            "--target", self.profile.target,
            *(["--target-path", str(self.target_path)] if command[0] != "deps" else []),  # deps has no such option
            "--log-path", str(self.target_path / "logs"),
        ]
        vars, threads = (vars if vars is not None else self.vars), (threads or self.threads)
        if vars:
            argv += ["--vars", json.dumps(vars)]
        if threads and command[0] not in {"parse", "deps", "ls", "list", "clean"}:
            argv += ["--threads", str(threads)]
        return argv

    def install_packages(self) -> StepResult:
        """`dbt deps`, where the project declares packages: a fresh checkout cannot parse without it."""
        if not any((self.project_dir / name).exists() for name in ("packages.yml", "dependencies.yml")):
            return StepResult.skipped("deps", "the project has no packages")
        return self.run(["deps"])

    def parse(self) -> Manifest:
        """Parse once (partial parsing stays on); every later command reuses the result.

        manifest.json is not written here: a run with nothing to build never needs it.
        `as_state()` writes it for the commands and the state store that read it.
        """
        if self.schema_of is not None:
            derived = self._moved_parse(self.schema_of)
            if derived is not None:
                self.manifest, self._manifest_written = derived, False
                self._parse_flags = self.schema_of._parse_flags  # the same project: the same flags
                return derived
        result = invoke(dbtRunner(), self._argv(["parse", "--no-write-json"]))
        if not result.success or result.result is None:
            raise DbtCommandError(f"dbt parse failed: {result.exception or 'see the dbt log above'}")
        from dbt.flags import get_flags

        self.manifest = result.result
        self._manifest_written = False
        self._parse_flags = get_flags()  # what this invocation set, until the next one replaces them
        return self.manifest

    def _moved_parse(self, other: "DbtProject") -> Optional[Manifest]:
        from flows.core.version_manifest import MustParse, version_manifest

        live = other.parsed_manifest
        try:
            derived = version_manifest(live, other.profile.schema, self.profile.schema, str(live.metadata.adapter_type))
        except MustParse as reason:
            run_log(f"Parsing the project again for schema {self.profile.schema}: {reason}.")
            return None
        run_log(f"Schema {self.profile.schema}: the parse of {other.profile.schema} moved there (dbt's default schema "
             "macros, nothing reads the schema while parsing), no second parse.")
        return derived

    def as_state(self, rewrite: bool = False) -> Path:
        """The target dir, with this project's manifest.json written, for `--state`/`--defer-state`.

        rewrite: write it again, with what the commands since compiled (the SQL of every node built).
        """
        if self.manifest is None:
            self.parse()
        if rewrite or not self._manifest_written:
            from dbt.parser.manifest import write_manifest

            write_manifest(self.parsed_manifest, str(self.target_path))
            self._manifest_written = True
        return self.target_path

    def memory_state(self) -> Path:
        """A state dir for `--defer-state` that this process's dbt commands read from this project's
        manifest in memory (memory_state.py): no manifest.json written, none read back (~2 s each at
        2,000 nodes). Only for commands of this process; anything else gets `as_state()`."""
        return state_dir(self.target_path / "state-in-memory", self.parsed_manifest)

    def raw_invoke(self, command: list[str], callbacks: Sequence[Any] = (),
                   overrides: tuple[Optional[dict], Optional[int]] = (None, None)) -> Any:
        if command[0] in NEEDS_NO_MANIFEST:
            return invoke(dbtRunner(callbacks=list(callbacks)), self._argv(command, *overrides))
        if self.manifest is None:
            self.parse()
        return invoke(dbtRunner(manifest=self.manifest, callbacks=list(callbacks)), self._argv(command, *overrides))

    def command(self, verb: str, **fields: Any) -> DbtCommand:
        """A command of this project: its vars and threads unless `fields` say otherwise."""
        return DbtCommand(verb, **{"vars": self.vars, "threads": self.threads, **fields})

    def run(self, command: Union[DbtCommand, list[str]], node_tasks: bool = False,
            callbacks: Sequence[Any] = ()) -> StepResult:
        """Run one dbt command and collect its node results, run_results and sources.json, read once.

        node_tasks: run it through prefect-dbt's PrefectDbtRunner, which makes one Prefect
        task run (and asset) per dbt node. Much slower on big projects; see bench/RESULTS.md.
        callbacks: more dbt event callbacks (live progress); dbt calls them in its own threads.
        """
        if isinstance(command, DbtCommand) and command.nodes and node_tasks:
            # prefect-dbt's runner parses again, without the tag: one exact selector per node instead
            command = replace(command, nodes=frozenset(), indirect_selection="empty",
                              select=tuple(sorted(self.node_selector(i) for i in command.nodes)))
        tagged: list[Any] = []
        if isinstance(command, DbtCommand):
            tagged = self.manifest_nodes(command.nodes)
            # vars and threads are the project's own (_argv adds them), unless the command sets others
            words, argv_of_command = command.words, replace(command, vars={}, threads=None).argv()
            overrides = (dict(command.vars) if command.vars != self.vars else None,
                         command.threads if command.threads != self.threads else None)
        else:
            words, argv_of_command, overrides = command, list(command), (None, None)
        result_file = RESULT_FILES.get(words[0])
        # Not every command writes its result file: never read the one an earlier command left.
        if result_file:
            (self.target_path / result_file).unlink(missing_ok=True)
        argv = [*argv_of_command, "--no-write-json"] if result_file else argv_of_command
        started = time.perf_counter()
        failed = _FailedNodes(self)
        with _tagged(tagged):
            result = (self._invoke_with_node_tasks(argv) if node_tasks
                      else self.raw_invoke(argv, [failed, *callbacks], overrides))
        artifact = None
        if result_file and hasattr(result.result, "write"):
            result.result.write(str(self.target_path / result_file))  # for people and `dbt retry --state`
            artifact = self.artifact(result_file)
        seconds = time.perf_counter() - started
        label = " ".join(argv_of_command)
        if result.exception is not None and failed.nodes:
            return StepResult(label, False, seconds, failed.nodes)
        if result.exception is not None:
            raise DbtCommandError(f"dbt {' '.join(words[:2])} failed: {type(result.exception).__name__}: "
                                  f"{result.exception}")
        nodes = [
            node_result(r, self.target_path, self.project_name)
            for r in (getattr(result.result, "results", None) or [])
        ]
        sources = artifact if result_file == "sources.json" else None
        run_results = artifact if result_file == "run_results.json" and nodes else None
        if not result.success and failed.nodes:
            nodes, run_results = with_reported_failures(nodes, run_results, failed.nodes)
            if run_results:  # the file, for people, says what the result says
                (self.target_path / "run_results.json").write_text(json.dumps(run_results))
        return StepResult(label, bool(result.success), seconds, nodes, run_results=run_results, sources=sources)

    def _invoke_with_node_tasks(self, command: list[str]) -> Any:
        # Imported here: prefect-dbt costs import time only to runs that ask for node tasks.
        from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings

        if self.manifest is None:
            self.parse()
        settings = PrefectDbtSettings(profiles_dir=self.profile.profiles_dir, project_dir=self.project_dir,
                                      target_path=self.target_path)
        # The runner reads our manifest for node configs and lineage; dbt itself still re-parses
        # (partially) because the runner gives dbtRunner no manifest. Node failures come back as
        # a failed result, like the plain path; only dbt's own errors raise.
        runner = PrefectDbtRunner(manifest=self.manifest, settings=settings, raise_on_failure=False)
        try:
            return invoke(runner, self._argv(command))
        except ValueError as error:
            raise DbtCommandError(str(error)) from error

    def list_ids(self, select: list[str] | None = None, exclude: list[str] | None = None,
                 resource_types: tuple[str, ...] = (), extra: Sequence[str] = ()) -> set[str]:
        """unique_ids that a selection resolves to, through dbt's own selector grammar: in this process
        where that is exactly what `dbt ls` would list (selection.select_in_process), else `dbt ls`."""
        state = list(extra)[1:] if len(extra) == 2 and extra[0] == "--state" else None
        if self.manifest is not None and (state is not None or not extra):
            try:
                selected = select_in_process(self.manifest, self._parse_flags, self.project_dir, self.target_path,
                                             select or (), exclude, resource_types, Path(state[0]) if state else None)
            except DbtBaseException as error:  # dbt's own message for a selector it refuses
                raise DbtCommandError(f"invalid selection (select={select}, exclude={exclude}): {error}") from error
            except Exception:  # noqa: BLE001 - not the selector's fault: `dbt ls` answers, with its own errors
                selected = None
            if selected is not None:
                return selected
        return self.listed_by_dbt_ls(select, exclude, resource_types, extra)

    def listed_by_dbt_ls(self, select: list[str] | None = None, exclude: list[str] | None = None,
                         resource_types: tuple[str, ...] = (), extra: Sequence[str] = ()) -> set[str]:
        """What `dbt ls` itself lists (list_ids without the in-process answer)."""
        # `--quiet` still prints every listed node; `--log-level none` keeps a 2,000-line
        # listing off stdout, which halved the time of an `ls` on a 2,000-node project.
        command = ["ls", "--output", "json", "--output-keys", "unique_id", "--log-level", "none"]
        if select:
            command += ["--select", *select]
        if exclude:
            command += ["--exclude", *exclude]
        for resource_type in resource_types:
            command += ["--resource-type", resource_type]
        command += list(extra)
        result = self.raw_invoke(command)
        if not result.success or result.exception is not None:
            raise DbtCommandError(
                f"invalid selection (select={select}, exclude={exclude}): {result.exception or 'dbt ls failed'}"
            )
        return {json.loads(line)["unique_id"] for line in result.result or []}

    def manifest_nodes(self, unique_ids: Iterable[str]) -> list[Any]:
        """The manifest's nodes (unit tests included) of `unique_ids`; a unique_id it lacks is refused."""
        manifest = self.parsed_manifest
        nodes = []
        for unique_id in sorted(unique_ids):
            node = manifest.nodes.get(unique_id) or manifest.unit_tests.get(unique_id)
            if node is None or resource_type_of(unique_id) not in EXECUTED:
                raise DbtCommandError(f"{unique_id} is not a node dbt builds in this project: it cannot be selected")
            nodes.append(node)
        return nodes

    def node_selector(self, unique_id: str) -> str:
        """A selector matching exactly this node (models, seeds, snapshots, tests, unit tests)."""
        return exact_selector(self.parsed_manifest, unique_id)

    def artifact(self, name: str) -> Optional[dict]:
        path = self.target_path / name
        return json.loads(path.read_text()) if path.exists() else None
