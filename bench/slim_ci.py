"""Slim CI wall time for a one-model change, as a fraction of a full CI build (goal: ≤ 10%), and
the data diff's share of it (goal: ≤ 15%).

    python bench/slim_ci.py --nodes 2000    # the bundled project and a generated one of ~2000 nodes
    python bench/slim_ci.py --nodes 0       # the bundled project only

For each project, in a throw-away $LAKEHOUSE_HOME on the built-in `local` environment:
1. full CI build: `slim_ci` before any production state exists, so it falls back to building
   everything (what CI costs without slim CI);
2. a production run, which saves the state slim CI defers to (timed for reference);
3. slim CI after changing one model: a staging model with a typical number of descendants,
   and a leaf mart model. Each is a new PR, so it parses from scratch like a fresh CI runner;
   then a second push to the same PR, which parses partially (its target is kept).
   Each slim run includes the data diff of its rebuilt models against the live relations; its
   time is measured around `flows.slim_ci.diff_models` and reported next to the slim CI time.
Writes the "Slim CI" section of bench/RESULTS.md. The flows run in this process, against a
Prefect server of its own (or --api-url).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "dbt_project" / "landing")]

import _harness as h  # noqa: E402
import _report  # noqa: E402

GOAL = 0.10
DIFF_GOAL = 0.15  # the data diff's share of a slim CI run


class DiffTimer:
    """Wraps flows.slim_ci.diff_models (the data diff task's work) and keeps each call's time and size."""

    def __init__(self):
        import flows.slim_ci

        self.module, self.original, self.calls = flows.slim_ci, flows.slim_ci.diff_models, []
        flows.slim_ci.diff_models = self

    def __call__(self, warehouse, targets):
        seconds, found = _timed(lambda: self.original(warehouse, targets))
        self.calls.append((seconds, len(found.models), sum(1 for m in found.models if m.key)))
        return found

    def take(self) -> tuple[float, int, int]:
        seconds, models, keyed = (sum(c[i] for c in self.calls) for i in range(3))
        self.calls.clear()
        return seconds, models, keyed


def _timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _children(manifest: dict) -> dict[str, list[str]]:
    return {u: [c for c in cs if c.startswith("model.")] for u, cs in manifest["child_map"].items()}


def _descendants(children: dict[str, list[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def pick_models(manifest: dict) -> list[tuple[str, str]]:
    """(label, unique_id): a staging model with the median number of descendants, and a leaf mart."""
    children = _children(manifest)
    models = {u: n for u, n in manifest["nodes"].items() if n["resource_type"] == "model"}
    staging = sorted((len(_descendants(children, u)), u) for u, n in models.items()
                     if "/staging/" in f"/{n['original_file_path']}")
    leaves = sorted(u for u, n in models.items() if "/marts/" in f"/{n['original_file_path']}" and not children.get(u))
    picked = []
    if staging:
        middle = staging[len(staging) // 2]
        picked.append((f"staging model (+{middle[0]} downstream)", middle[1]))
    if leaves:
        picked.append(("leaf mart model", leaves[0]))
    return picked


def change_model(project: Path, manifest: dict, unique_id: str) -> None:
    """A body change dbt sees as state:modified; a block comment is valid wherever the SQL ends."""
    path = project / manifest["nodes"][unique_id]["original_file_path"]
    path.write_text(path.read_text().rstrip() + "\n/* slim CI bench: changed */\n")


def built_models(home: Path, pr_number: int) -> int:
    results = json.loads((home / "work" / "local" / "ci" / f"pr_{pr_number}" / "target" / "run_results.json").read_text())
    return sum(r["unique_id"].startswith(("model.", "seed.")) for r in results["results"])


def bench_project(label: str, make_project, threads: int | None) -> list[dict]:
    from flows.production import production_run
    from flows.slim_ci import slim_ci

    scratch = Path(tempfile.mkdtemp(prefix="bench-slim-ci-"))
    saved_home = os.environ.get("LAKEHOUSE_HOME")
    try:
        home = scratch / "lakehouse"
        home.mkdir()
        os.environ["LAKEHOUSE_HOME"] = str(home)
        project, nodes = make_project(scratch, home / "warehouse.duckdb")
        ci = dict(environment="local", base_environment="local", threads=threads)
        diff_timer = DiffTimer()
        full_seconds, _ = _timed(lambda: slim_ci(pr_number=1, project_dir=str(project), **ci))
        full_built = built_models(home, 1)
        prod_seconds, _ = _timed(lambda: production_run(environment="local", project_dir=str(project),
                                                        generate_docs=False, threads=threads))
        manifest = json.loads((home / "state" / "local" / "latest" / "manifest.json").read_text())
        rows = []

        def slim(pr_number: int, what: str, unique_id: str, project_copy: Path) -> None:
            change_model(project_copy, manifest, unique_id)
            seconds, _ = _timed(lambda: slim_ci(pr_number=pr_number, project_dir=str(project_copy), **ci))
            diff_s, diffed, keyed = diff_timer.take()
            rows.append({"diff_s": diff_s, "diffed": diffed, "keyed": keyed,"project": label, "nodes": nodes, "change": f"{what}: `{unique_id.split('.')[-1]}`",
                         "full_s": full_seconds, "full_built": full_built, "prod_s": prod_seconds,
                         "slim_s": seconds, "slim_built": built_models(home, pr_number)})

        for pr_number, (what, unique_id) in enumerate(pick_models(manifest), start=2):
            copy = scratch / f"pr-{pr_number}"
            shutil.copytree(project, copy, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
            slim(pr_number, what, unique_id, copy)
        # A second push to the last PR: its target is kept, so dbt parses only the changed file.
        slim(pr_number, f"second push, partial parse; {what}", unique_id, copy)
        return rows
    finally:
        import flows.slim_ci

        flows.slim_ci.diff_models = getattr(flows.slim_ci.diff_models, "original", flows.slim_ci.diff_models)
        if saved_home is None:
            os.environ.pop("LAKEHOUSE_HOME", None)
        else:
            os.environ["LAKEHOUSE_HOME"] = saved_home
        shutil.rmtree(scratch, ignore_errors=True)


def bundled(scratch: Path, warehouse: Path) -> tuple[Path, int]:
    from land import land_initial

    project = scratch / "dbt_project"
    shutil.copytree(REPO / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    land_initial(warehouse)
    return project, _count_nodes(project)


def generated(n_nodes: int):
    def make(scratch: Path, warehouse: Path) -> tuple[Path, int]:
        from generate_project import generate_project

        project = scratch / "generated"
        generate_project(n_nodes, project, warehouse)
        return project, n_nodes
    return make


def _count_nodes(project: Path) -> int:
    """Models, tests, seeds, snapshots and sources, as the generator counts them."""
    from dbt.cli.main import dbtRunner

    from blocks.environment import builtin_local
    from blocks.profile import rendered_profile

    with rendered_profile(builtin_local(), project) as profile, tempfile.TemporaryDirectory() as target:
        result = dbtRunner().invoke(["parse", "--project-dir", str(project), "--profiles-dir",
                                     str(profile.profiles_dir), "--target", profile.target, "--target-path", target,
                                     "--quiet"])
    manifest = result.result
    return len(manifest.nodes) + len(manifest.sources) + len(manifest.unit_tests)


def markdown(rows: list[dict], command: str, loads: tuple[str, str]) -> str:
    return f"""{_report.facts(h.machine_info(), h.versions())}
1-min/5-min/15-min load average: {loads[0]} before, {loads[1]} after.

{table(rows)}

Reproduce:

```
{command}
```
"""


def table(rows: list[dict]) -> str:
    lines = ["| project | nodes | one-model change | full CI build | slim CI | slim / full CI build "
             "| production run | slim / production run | data diff (in slim CI) | diff / slim CI |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fraction = r["slim_s"] / r["full_s"]
        verdict = "✔" if fraction <= GOAL else "✘"
        lines.append(f"| {r['project']} | {r['nodes']} | {r['change']} | {r['full_s']:.1f} s ({r['full_built']} built) "
                     f"| {r['slim_s']:.1f} s ({r['slim_built']} built) | {fraction:.1%} {verdict} | {r['prod_s']:.1f} s "
                     f"| {r['slim_s'] / r['prod_s']:.1%} | {r['diff_s']:.2f} s ({r['diffed']} models, {r['keyed']} keyed) "
                     f"| {r['diff_s'] / r['slim_s']:.1%} {'✔' if r['diff_s'] / r['slim_s'] <= DIFF_GOAL else '✘'} |")
    if rows:
        lines.append(f"\nMedian slim / full: {statistics.median(r['slim_s'] / r['full_s'] for r in rows):.1%} "
                     f"(goal ≤ {GOAL:.0%}). Largest data diff / slim CI: "
                     f"{max(r['diff_s'] / r['slim_s'] for r in rows):.1%} (goal ≤ {DIFF_GOAL:.0%}).")
    return "\n".join(lines)


def warm_up() -> None:
    """Import the flows and reach the API once, before anything is timed."""
    from prefect import flow

    flow(name="bench-warm-up")(lambda: None)()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/slim_ci.py", description=__doc__.splitlines()[0])
    h.add_common_arguments(parser)
    parser.add_argument("--no-bundled", dest="bundled", action="store_false", help="skip the bundled project")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.nodes < 0 or (args.threads is not None and args.threads < 1):
        parser.error("--nodes must be ≥ 0 and --threads ≥ 1")
    sys.path.insert(0, str(args.repo.resolve()))  # the checkout whose flows are benchmarked
    scratch = Path(tempfile.mkdtemp(prefix="bench-slim-ci-server-"))
    try:
        with nullcontext(args.api_url) if args.api_url else h.prefect_server(scratch / "server-home") as api_url:
            # Set before Prefect is first imported, so every thread of the flows sees it.
            os.environ.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(scratch / "client-home"))
            warm_up()
            before, rows = h.load_average(), []
            if args.bundled:
                rows += bench_project("bundled", bundled, args.threads)
            if args.nodes:
                rows += bench_project("generated", generated(args.nodes), args.threads)
            h.flush_prefect_logs()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    command = f"python bench/slim_ci.py --nodes {args.nodes}" + ("" if args.bundled else " --no-bundled") + (
        f" --threads {args.threads}" if args.threads else "")
    _report.write_section(args.out, "Slim CI", markdown(rows, command, (before, h.load_average())))
    print(table(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
