"""flows/core/dbt.py: the performance properties of DbtProject, and the node_tasks path.

Real dbt, real DuckDB, a small generated project; the node-task test runs against the
session's Prefect server.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.context import get_run_context
from prefect.utilities.collections import visit_collection

from blocks.profile import RenderedProfile
from flows.core.progress import StepProgress
from flows.core.command import SELECTED_TAG
from flows.core.dbt import DbtCommandError, DbtProject, NodeResult, StepResult
from flows.core.invocation import _cancel_skips_closed_duckdb_connections
from flows.core.results import with_reported_failures as _with_reported_failures
from flows.core.selection import BUILDABLE, select_in_process

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from generate_project import generate_project, write_profiles  # noqa: E402

N = 200  # big enough that a layer has more nodes than a short list of selectors


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("generated")
    generate_project(N, root / "project", root / "template.duckdb")
    return root / "project", root / "template.duckdb"


@pytest.fixture
def project(generated, tmp_path) -> DbtProject:
    project_dir, template = generated
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.write_bytes(template.read_bytes())
    write_profiles(tmp_path / "profiles", warehouse)
    profile = RenderedProfile(tmp_path / "profiles", "bench", "local", "main")
    project = DbtProject(project_dir, profile, tmp_path / "target")
    if not (project_dir / "dbt_packages").exists():  # the generated project has a local package
        assert project.run(["deps"]).success
    return project


def test_prefect_does_not_walk_into_a_project_or_its_results(project):
    project.parse()
    progress = StepProgress("seeds", to_run=0)  # the live-progress callback, counting dbt's NodeFinished events
    result = project.run(["seed"], callbacks=[progress])
    assert progress.finished == len([n for n in result.nodes if n.resource_type == "seed"]) > 0  # not the hooks
    visited = []
    visit_collection([project, result], lambda value: visited.append(value))
    # The list and its two items, nothing inside them (a manifest walk took seconds on 2,000 nodes).
    assert len(visited) == 3
    assert isinstance(result, StepResult) and result.success and result.run_results


def _tagged_nodes(project) -> list[str]:
    manifest = project.parsed_manifest
    return [u for u, n in [*manifest.nodes.items(), *manifest.unit_tests.items()] if SELECTED_TAG in n.tags]


def test_a_command_of_exact_nodes_selects_exactly_them_with_one_term_and_leaves_no_tag(project):
    project.parse()
    staging = project.list_ids(["path:models/staging"], ["source:*"], ("model", "test"))  # models and data tests
    unit_tests = set(project.parsed_manifest.unit_tests)
    assert len(staging) > 40 and unit_tests
    one_out = sorted(staging)[0]
    for wanted in (staging, staging - {one_out}, set(sorted(staging)[:3])):
        command = project.command("compile", nodes=wanted)
        assert command.argv().count("--select") == 1 and "--indirect-selection" in command.argv()
        result = project.run(command)
        assert result.success and {node.unique_id for node in result.nodes} == wanted
        assert _tagged_nodes(project) == []  # the tag lives for one invocation only
    # a unit test's tags are its config's: selected all the same (compile does not run unit tests)
    result = project.run(project.command("test", nodes=unit_tests))
    assert {node.unique_id for node in result.nodes if node.resource_type != "operation"} == unit_tests  # not hooks
    assert _tagged_nodes(project) == []


SELECTIONS = [  # (select, exclude): graph operators, methods, unions, intersections, state
    (["path:models/staging"], None),
    (["path:models/intermediate", "path:models/marts"], None),
    (["source:*+"], ["path:models/marts"]),
    (["stg_customers+", "+stg_customers"], None),
    (["2+int_customers__incremental+1"], None),
    (["@stg_customers"], None),
    (["stg_customers*"], None),
    (["config.materialized:incremental", "resource_type:snapshot"], None),
    (["path:models/marts,config.materialized:table"], ["tag:no_such_tag"]),
    (["tag:no_such_tag"], None),
    (["state:modified+"], None),
    (["state:modified"], ["source:*"]),
    (["source_status:fresher+", "state:modified+"], None),
]


def test_selections_answered_in_process_are_what_dbt_ls_lists(project, tmp_path):
    """list_ids answers in this process (selection.select_in_process); each answer must be what
    `dbt ls` itself lists, state selectors (a changed model, older sources) included."""
    import json
    import shutil

    project.parse()
    state = tmp_path / "state"
    shutil.copytree(project.as_state(), state, ignore=shutil.ignore_patterns("logs", "compiled", "run"))
    assert project.run(["source", "freshness"]).sources is not None  # target/sources.json: the current one
    sources = json.loads((project.target_path / "sources.json").read_text())
    dated = [r for r in sources["results"] if r.get("max_loaded_at")]
    assert dated, "the generated project dates some sources"
    for r in dated[:1]:
        r["max_loaded_at"] = "2000-01-01T00:00:00+00:00"
    (state / "sources.json").write_text(json.dumps(sources))
    model = project.project_dir / "models" / "staging" / "stg_customers.sql"
    original = model.read_text()
    model.write_text(original + "\n-- changed\n")
    try:
        project.parse()  # the project now differs from the state by one model
        for select, exclude in SELECTIONS:
            extra = ("--state", str(state)) if any(s.startswith(("state:", "source_status:")) for s in select) else ()
            listed = project.listed_by_dbt_ls(select, exclude, BUILDABLE, extra)
            in_process = select_in_process(project.manifest, project._parse_flags, project.project_dir,
                                           project.target_path, select, exclude, BUILDABLE,
                                           state if extra else None)
            assert in_process is not None, (select, exclude)  # answered here, not left to `dbt ls`
            assert in_process == listed == project.list_ids(select, exclude, BUILDABLE, extra), (
                select, exclude, in_process ^ listed)
        assert project.list_ids(["state:modified"], None, ("model",), ("--state", str(state))) == {
            "model.bench.stg_customers"}
    finally:
        model.write_text(original)
    with pytest.raises(DbtCommandError, match="invalid selection"):
        project.list_ids(["nosuchmethod:x"], None, ("model",))


def test_a_node_dbt_does_not_build_cannot_be_selected_and_a_failed_command_leaves_no_tag(project):
    project.parse()
    everything = project.list_ids(["path:models/marts"])
    kinds = {unique_id.split(".")[0] for unique_id in everything}
    assert {"exposure", "metric", "semantic_model", "saved_query"} <= kinds, kinds
    with pytest.raises(DbtCommandError, match="not a node dbt builds"):
        project.run(project.command("compile", nodes={next(u for u in everything if u.startswith("metric."))}))
    model = next(u for u in everything if u.startswith("model."))
    with pytest.raises(DbtCommandError):  # dbt itself refuses the command: the tag still goes
        project.run(project.command("compile", nodes={model}, extra=("--no-such-flag",)))
    assert _tagged_nodes(project) == []


def test_the_warehouse_is_released_between_commands(project):
    project.parse()
    assert project.run(["seed"]).success
    warehouse = Path(project.profile.profiles_dir).parent / "warehouse.duckdb"
    # DuckDB locks a file per process: another process can write only if we closed it.
    script = f"import duckdb; duckdb.connect({str(warehouse)!r}).execute('create table probe as select 1 as x')"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert not warehouse.with_suffix(".duckdb.wal").exists()


def test_node_tasks_make_one_task_run_per_node(project):
    project.parse()
    seeds_and_staging = ["build", "--select", "resource_type:seed", "path:models/staging", "--exclude", "source:*"]

    @flow(name="node-tasks-probe")
    def probe() -> tuple[StepResult, str]:
        result = project.run(seeds_and_staging, node_tasks=True)
        return result, str(get_run_context().flow_run.id)

    result, flow_run_id = probe()
    assert result.success and result.run_results and len(result.nodes) > 10
    # prefect-dbt names each node's task run "<resource type> <node name>".
    # The project's on-run-start/end hooks come back as results too, but are no nodes of the DAG.
    expected = {f"{node.resource_type} {node.name}" for node in result.nodes if node.resource_type != "operation"}
    names: set[str] = set()
    for _ in range(120):  # the server records task runs from events, a moment after they ran
        names = _task_run_names(flow_run_id)
        if expected <= names:
            break
        time.sleep(0.5)
    assert expected <= names, sorted(expected - names)[:5]


def _task_run_names(flow_run_id: str) -> set[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name for run in runs}


def test_failed_nodes_are_reported_when_dbt_raises_after_them(tmp_path):
    """dbt can raise after nodes failed (an on-run-end hook here; a fail-fast cancel under load):
    the step still fails naming the failing test, not dbt's later error."""
    project_dir = tmp_path / "hooked"
    (project_dir / "models").mkdir(parents=True)
    (project_dir / "dbt_project.yml").write_text(
        'name: hooked\nversion: "1.0"\nprofile: hooked\n'
        "on-run-end: [\"{% if execute and results %}{{ exceptions.raise_compiler_error('boom') }}{% endif %}\"]\n")
    (project_dir / "models" / "people.sql").write_text("select null as person_id")
    (project_dir / "models" / "people.yml").write_text(
        "version: 2\nmodels:\n  - name: people\n    columns: [{name: person_id, data_tests: [not_null]}]\n")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "profiles.yml").write_text(
        f"hooked:\n  target: local\n  outputs:\n    local: {{type: duckdb, path: '{tmp_path / 'w.duckdb'}', schema: main}}\n")
    project = DbtProject(project_dir, RenderedProfile(tmp_path / "profiles", "hooked", "local", "main"),
                         tmp_path / "target")
    result = project.run(["build"])
    assert not result.success
    assert [f.name for f in result.failures] == ["not_null_people_person_id"]


def test_a_failure_fail_fast_recorded_as_skipped_is_reported_and_retried():
    """dbt's fail-fast can stop before the failing node's result is recorded (it then reads
    "skipped"); the failure the event callback saw wins, in the step and in what dbt retry reads."""
    failing = NodeResult("test.p.not_null_x", "test", "not_null_x", "fail", "Got 1 result", 0.1, None, None)
    recorded = [NodeResult("model.p.x", "model", "x", "success", "OK", 0.2, None, None),
                NodeResult("test.p.not_null_x", "test", "not_null_x", "skipped", "Skipping due to fail_fast",
                           0.0, None, None)]
    run_results = {"results": [{"unique_id": "model.p.x", "status": "success", "message": "OK"},
                               {"unique_id": "test.p.not_null_x", "status": "skipped", "message": ""}]}
    nodes, run_results = _with_reported_failures(recorded, run_results, [failing])
    assert [n.name for n in nodes if n.failed] == ["not_null_x"]
    assert [e["status"] for e in run_results["results"]] == ["success", "fail"]
    assert _with_reported_failures(nodes, run_results, [failing]) == (nodes, run_results)


def test_the_failure_that_stopped_a_fail_fast_run_is_listed_before_the_nodes_it_cancelled():
    trigger = NodeResult("test.p.not_null_x", "test", "not_null_x", "fail", "Got 1 result", 0.1, None, None)
    cancelled = NodeResult("model.p.y", "model", "y", "error", "INTERRUPT Error: Interrupted!", 0.3, None, None)
    nodes, _ = _with_reported_failures([cancelled, trigger], None, [trigger, cancelled])
    assert [n.name for n in nodes] == ["not_null_x", "y"]


def test_fail_fast_cancel_skips_duckdb_connections_already_closed():
    """dbt-duckdb's cancel raised on a finished node's closed cursor, and dbt then lost the run's results."""
    import duckdb
    from dbt.adapters.duckdb.environments.local import LocalEnvironment

    closed = duckdb.connect(":memory:")
    closed.close()
    with pytest.raises(duckdb.ConnectionException):  # what dbt-duckdb's own cancel runs into
        closed.cursor().interrupt()
    _cancel_skips_closed_duckdb_connections()
    _cancel_skips_closed_duckdb_connections()  # applied once per invocation: it must not stack
    assert LocalEnvironment.cancel.__func__.skips_closed
    LocalEnvironment.cancel(SimpleNamespace(handle=closed))  # raises if the patch does not hold

    # An open connection's query is still interrupted (a dbt-duckdb handle's cursor() is the cursor
    # its node runs on).
    running = duckdb.connect(":memory:")
    handle = SimpleNamespace(cursor=lambda: running)
    outcome: list[BaseException] = []

    def long_query() -> None:
        try:
            running.execute("select count(*) from range(10000000000) a, range(1000) b").fetchall()
        except BaseException as error:  # noqa: BLE001  (the interrupt is what we wait for)
            outcome.append(error)

    query = threading.Thread(target=long_query)
    query.start()
    deadline = time.monotonic() + 30
    while query.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)  # interrupting before the query started would interrupt nothing
        LocalEnvironment.cancel(SimpleNamespace(handle=handle))
        query.join(timeout=1)
    assert not query.is_alive(), "cancel did not interrupt an open connection's query"
    assert outcome and "interrupt" in str(outcome[0]).lower(), outcome


def test_the_lean_graph_summary_is_dbt_s_own(project):
    """invocation.graph_summary replaces dbt's Linker.get_graph_summary (graph_summary.json): same output."""
    from dbt.compilation import Linker

    from flows.core.invocation import _DBT_GRAPH_SUMMARY, graph_summary

    manifest = project.parse()
    assert Linker.get_graph_summary is graph_summary and _DBT_GRAPH_SUMMARY  # installed by the parse's invocation
    linker = Linker()
    linker.link_graph(manifest)
    manifest.build_parent_and_child_maps()
    linker.add_test_edges(manifest)
    assert graph_summary(linker, manifest) == _DBT_GRAPH_SUMMARY[0](linker, manifest)
