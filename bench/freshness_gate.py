"""What the freshness gate saves: a full run, a run with nothing fresher, a run with one source fresher.

    python bench/freshness_gate.py [--nodes 2000] [--modes publish[,no-publish]] [--out bench/RESULTS.md]
                                   [--api-url URL] [--source NAME]

Each mode keeps one $LAKEHOUSE_HOME for its three runs of `python -m flows.production
--environment local`, as a nightly schedule would: the work dir (partial parsing) and the
state store carry over from run to run. `publish` is the default users run (blue-green on);
`no-publish` builds a version and keeps it unpublished, so it saves no state and every run of
that mode is a full one (kept to show exactly that). Targets (issue 19): nothing fresher ≤ 4% of the full
run; one source fresher ≤ 20%, and it runs nothing outside that source's downstream.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
import _report  # noqa: E402
from generate_project import SOURCE_NAME, generate_project, land_fresher  # noqa: E402

COUNTED_TYPES = {"model", "seed", "snapshot", "test", "unit_test"}


@dataclass
class GateRun:
    mode: str
    name: str
    seconds: float
    peak_rss: int
    nodes_run: int
    outcome: str
    to_first_node: Optional[float]  # flow run begins → first dbt node
    load: str
    ok: bool
    ran: frozenset[str] = frozenset()  # unique ids of the run's dbt results
    stages: tuple = ()  # (stage, seconds): where the wall time went (bench/_harness.py stage_seconds)


def downstream(manifest: dict, unique_id: str) -> set[str]:
    """Models, seeds, snapshots and tests downstream of `unique_id`, from manifest.json's child_map."""
    seen: set[str] = set()
    queue = deque([unique_id])
    while queue:
        for child in manifest["child_map"].get(queue.popleft(), []):
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return {u for u in seen if u.split(".", 1)[0] in COUNTED_TYPES}


def _run(project: Path, home: Path, env: dict, repo: Path, mode: str, name: str, log: Path) -> GateRun:
    runs = home / "work" / "local" / "runs"
    before = set(runs.glob("*")) if runs.exists() else set()
    argv = [sys.executable, "-m", "flows.production", "--environment", "local", "--project-dir", str(project)]
    if mode == "no-publish":
        argv.append("--no-publish")
    load = h.load_average()
    measured = h.run_measured(argv, {**env, "LAKEHOUSE_HOME": str(home)}, repo, log)
    new_runs = [d for d in (set(runs.glob("*")) - before) if (d / "run_results.json").exists()]
    results = json.loads((new_runs[0] / "run_results.json").read_text())["results"] if new_runs else []
    text = log.read_text(errors="replace")
    outcomes = [line for line in text.splitlines() if line.startswith("production_run: ")]
    begins = h.first_log_time(log, h.PREFECT_FLOW_BEGIN, measured.started_at)
    dbt_log = home / "work" / "local" / "target" / "logs" / "dbt.log"
    first_node = h.first_log_time(dbt_log, h.DBT_FIRST_NODE, begins) if begins else None
    return GateRun(mode, name, measured.seconds, measured.peak_rss, len(results),
                   outcomes[-1].removeprefix("production_run: ") if outcomes else "?",
                   None if first_node is None else first_node - begins, load, measured.returncode == 0,
                   frozenset(r["unique_id"] for r in results),
                   tuple(h.stage_seconds(log, measured.started_at, measured.started_at + measured.seconds)))


def run_mode(project: Path, template: Path, workdir: Path, env: dict, repo: Path, mode: str,
             source: str) -> list[GateRun]:
    home = workdir / mode
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(template, home / "warehouse.duckdb")
    log = workdir / "logs"
    log.mkdir(exist_ok=True)
    results = []
    for name in ("full", "nothing fresher", "one source fresher"):
        if name == "one source fresher":
            land_fresher(home / "warehouse.duckdb", source)
        result = _run(project, home, env, repo, mode, name, log / f"{mode}-{name.replace(' ', '-')}.log")
        print(f"{mode} / {name}: {result.seconds:.1f} s, {result.nodes_run} nodes, {result.outcome}", flush=True)
        results.append(result)
    return results


def _markdown(runs: list[GateRun], summary: dict, source: str, reach: tuple[set[str], int], args, loads,
              import_floor: float) -> str:
    rows = []
    for run in runs:
        full = next(r for r in runs if r.mode == run.mode and r.name == "full")
        # The project's on-run-start/end hooks run in every dbt command: not nodes of any source's downstream.
        outside = len({u for u in run.ran - reach[0] if not u.startswith("operation.")}) if run.name != "full" else "–"
        rows.append([run.mode, run.name, _report.seconds(run.seconds), f"{run.seconds / full.seconds:.1%}",
                     _report.mib(run.peak_rss), run.nodes_run, outside, _report.seconds(run.to_first_node),
                     run.load.split()[0], run.outcome])
    table = _report.table(["mode", "run", "wall (s)", "÷ full", "peak RSS (MiB)", "nodes run",
                           "run outside the source's downstream (hooks aside)", "flow begins → first node (s)", "1-min load",
                           "outcome"], rows)
    stage_table = _report.stage_table([(f"{run.mode}, {run.name}", list(run.stages), run.seconds)
                                       for run in runs if run.name != "full" and run.stages])
    command = f"python bench/freshness_gate.py --nodes {args.nodes} --modes {args.modes}" + (
        f" --source {args.source}" if args.source else "")
    counts = summary["nodes"]
    dated = "freshness configured" if source in summary["dated_sources"] else "no freshness configured"
    return f"""{_report.facts(h.machine_info(), h.versions())}
1-min/5-min/15-min load average: {loads[0]} before, {loads[1]} after.

Project: {counts['total']} nodes ({counts['model']} models, {counts['test']} tests, {counts['source']} sources).
{len(summary['dated_sources'])} of the {counts['source']} sources configure freshness; the gate dates the others by their change signal.
The fresher source is `{SOURCE_NAME}.{source}` ({dated}): {len(reach[0])} of the project's {reach[1]} models, seeds,
snapshots and tests are downstream of it ({len(reach[0]) / reach[1]:.1%}). "nodes run" counts dbt results of the run
(tests included; source freshness not). Runs of one mode share their $LAKEHOUSE_HOME, in order.

{table}

Where the partial runs' wall time went (from each run's Prefect log; a stage counts from the previous
stage's end). For scale: `python -c "import flows.production"` alone took {import_floor:.1f} s on this machine.

{stage_table}

Reproduce:

```
{command}
```
"""


def _import_seconds(repo: Path) -> float:
    """The fixed floor of every run: a Python process importing the production flow, and exiting."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import flows.production"], cwd=repo, check=True)
    return time.perf_counter() - started


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    h.add_common_arguments(parser)
    parser.add_argument("--modes", default="publish", help="comma-separated: publish, no-publish")
    parser.add_argument("--source", default=None, help="source table to make fresher (default: the last one)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep generated files and logs here")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-gate-"))
    workdir.mkdir(parents=True, exist_ok=True)
    runs: list[GateRun] = []
    try:
        summary = generate_project(args.nodes, workdir / "project", workdir / "template" / "warehouse.duckdb")
        source = args.source or summary["sources"][-1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "PREFECT_", "LAKEHOUSE_"))}
        server = nullcontext(args.api_url) if args.api_url else h.prefect_server(workdir / "server-home")
        with server as api_url:
            env.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(workdir / "client-home"),
                       DBT_SEND_ANONYMOUS_USAGE_STATS="false")
            before = h.load_average()
            for mode in args.modes.split(","):
                runs += run_mode(workdir / "project", workdir / "template" / "warehouse.duckdb", workdir, env,
                                 args.repo.resolve(), mode.strip(), source)
        manifest = json.loads(next(workdir.glob("*/work/local/target/manifest.json")).read_text())
        buildable = [u for u in [*manifest["nodes"], *manifest.get("unit_tests", {})]
                     if u.split(".", 1)[0] in COUNTED_TYPES]
        reach = (downstream(manifest, f"source.bench.{SOURCE_NAME}.{source}"), len(buildable))
        _report.write_section(args.out, f"Freshness gate, N = {args.nodes:,}",
                              _markdown(runs, summary, source, reach, args, (before, h.load_average()),
                                        _import_seconds(args.repo.resolve())))
        print(f"wrote {args.out}")
        return 0 if all(r.ok for r in runs) else 1
    finally:
        if args.workdir is None and runs and all(r.ok for r in runs):
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.workdir is None:
            print(f"kept {workdir} for its logs", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
