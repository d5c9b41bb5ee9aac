"""Orchestration overhead: plain dbt vs our production flow vs prefect-dbt's runner.

    python bench/overhead.py [--nodes 2000] [--rounds 2] [--out bench/RESULTS.md] [--api-url URL]

One generated project; every variant runs the same dbt commands (bench/_harness.py
`dbt_sequence`, which mirrors what `production_run` sends), on a fresh copy of the same
landed warehouse and an empty target dir, so each one parses from scratch and builds
everything. Variants alternate A/B/C per round so drifting machine load hits all alike.

  plain   the dbt CLI, one process per command
  single  the floor: `dbt deps` and then one plain `dbt build` of everything (no freshness, no docs)
  ours    `python -m flows.production --environment local --no-publish` (subprocess); on this
          blue-green environment it builds and tests a version and keeps it unpublished
  dag     ours with `--layer-mode dag`: all layers in one `dbt build`
  unposted  ours with live progress posting nothing (bench/_unposted_run.py): ours − unposted is
          what the progress artifacts cost
  runner  prefect-dbt's PrefectDbtRunner in a flow, one task run per node (subprocess)

Wall time is launch to exit; peak RSS sums the process and all its descendants. The
Prefect server (started here unless --api-url is given) is not counted in either.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
import _report  # noqa: E402
from generate_project import generate_project, write_profiles  # noqa: E402

REPO = HERE.parent
VARIANTS = ("plain", "single", "ours", "dag", "unposted", "runner")


@dataclass
class Sample:
    variant: str
    round: int
    seconds: float
    peak_rss: int
    nodes_run: int
    load: str
    ok: bool
    startup: dict[str, Optional[float]] = field(default_factory=dict)
    stages: list[tuple[str, float]] = field(default_factory=list)  # flow variants: where the wall time went


def _count_results(path: Path) -> int:
    return len(json.loads(path.read_text())["results"]) if path.exists() else 0


class OverheadBench:
    def __init__(self, workdir: Path, nodes: int, api_url: str, repo: Path):
        self.workdir, self.nodes, self.api_url, self.repo = workdir, nodes, api_url, repo
        self.project = workdir / "project"
        self.template = workdir / "template" / "warehouse.duckdb"
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.summary = generate_project(nodes, self.project, self.template)
        # Same environment for every variant; no anonymous-usage calls out of a benchmark.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "PREFECT_", "LAKEHOUSE_"))}
        self.env.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(workdir / "client-home"),
                        DBT_SEND_ANONYMOUS_USAGE_STATS="false")

    def _fresh(self, name: str) -> Path:
        """An empty directory holding a copy of the landed warehouse: every round builds from scratch."""
        home = self.workdir / "runs" / name
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        shutil.copy(self.template, home / "warehouse.duckdb")
        return home

    def _startup(self, launched: float, dbt_log: Path, stdout: Optional[Path]) -> dict[str, Optional[float]]:
        def since(moment: Optional[float]) -> Optional[float]:
            return None if moment is None else moment - launched
        flow_begins = h.first_log_time(stdout, h.PREFECT_FLOW_BEGIN, launched) if stdout else None
        return {"flow begins": since(flow_begins),
                "dbt starts": since(h.first_log_time(dbt_log, h.DBT_FIRST_LINE, launched)),
                "first node": since(h.first_log_time(dbt_log, h.DBT_FIRST_NODE, launched))}

    def plain(self, round_: int) -> Sample:
        home = self._fresh(f"plain-{round_}")
        profiles, target = home / "profiles", home / "target"
        write_profiles(profiles, home / "warehouse.duckdb")
        log = self.logs / f"plain-{round_}.log"
        load, peak, nodes, ok = h.load_average(), 0, 0, True
        launched, started = time.time(), time.perf_counter()
        for command in h.dbt_sequence():
            target_path = ["--target-path", str(target)] if command[0] != "deps" else []  # deps has no such option
            argv = [h.dbt_executable(), *command, "--project-dir", str(self.project), "--profiles-dir",
                    str(profiles), *target_path, "--log-path", str(target / "logs")]
            (target / "run_results.json").unlink(missing_ok=True)
            measured = h.run_measured(argv, self.env, home, log)
            peak, ok = max(peak, measured.peak_rss), ok and measured.returncode == 0
            if command[0] in {"test", "seed", "snapshot", "build"}:
                nodes += _count_results(target / "run_results.json")
        seconds = time.perf_counter() - started
        return Sample("plain", round_, seconds, peak, nodes, load, ok,
                      self._startup(launched, target / "logs" / "dbt.log", None))

    def single(self, round_: int) -> Sample:
        """One `dbt build`: what the whole run would cost with no orchestration at all."""
        home = self._fresh(f"single-{round_}")
        profiles, target = home / "profiles", home / "target"
        write_profiles(profiles, home / "warehouse.duckdb")
        log = self.logs / f"single-{round_}.log"
        load, peak, ok = h.load_average(), 0, True
        launched, started = time.time(), time.perf_counter()
        for command in (["deps"], ["build", "--target-path", str(target)]):
            argv = [h.dbt_executable(), *command, "--project-dir", str(self.project), "--profiles-dir",
                    str(profiles), "--log-path", str(target / "logs")]
            measured = h.run_measured(argv, self.env, home, log)
            peak, ok = max(peak, measured.peak_rss), ok and measured.returncode == 0
        seconds = time.perf_counter() - started
        return Sample("single", round_, seconds, peak, _count_results(target / "run_results.json"), load, ok,
                      self._startup(launched, target / "logs" / "dbt.log", None))

    def ours(self, round_: int, variant: str = "ours", entry: tuple[str, ...] = ("-m", "flows.production"),
             extra: tuple[str, ...] = ()) -> Sample:
        home = self._fresh(f"{variant}-{round_}")
        log = self.logs / f"{variant}-{round_}.log"
        argv = [sys.executable, *entry, "--environment", "local", "--project-dir", str(self.project), "--no-publish",
                *extra]
        load = h.load_average()
        measured = h.run_measured(argv, {**self.env, "LAKEHOUSE_HOME": str(home)}, self.repo, log)
        merged = list((home / "work" / "local" / "runs").glob("*/run_results.json"))
        nodes = _count_results(merged[0]) if merged else 0
        dbt_log = home / "work" / "local" / "target" / "logs" / "dbt.log"
        return Sample(variant, round_, measured.seconds, measured.peak_rss, nodes, load, measured.returncode == 0,
                      self._startup(measured.started_at, dbt_log, log),
                      h.stage_seconds(log, measured.started_at, measured.started_at + measured.seconds))

    def dag(self, round_: int) -> Sample:
        return self.ours(round_, "dag", extra=("--layer-mode", "dag"))

    def unposted(self, round_: int) -> Sample:
        return self.ours(round_, "unposted", (str(HERE / "_unposted_run.py"),))

    def runner(self, round_: int) -> Sample:
        home = self._fresh(f"runner-{round_}")
        profiles, target = home / "profiles", home / "target"
        write_profiles(profiles, home / "warehouse.duckdb")
        log = self.logs / f"runner-{round_}.log"
        argv = [sys.executable, str(HERE / "prefect_dbt_sequence.py"), "--project-dir", str(self.project),
                "--profiles-dir", str(profiles), "--target-path", str(target)]
        load = h.load_average()
        measured = h.run_measured(argv, self.env, self.repo, log)
        counted = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("nodes run: ")]
        nodes = int(counted[-1].split(": ")[1]) if counted else 0
        return Sample("runner", round_, measured.seconds, measured.peak_rss, nodes, load, measured.returncode == 0,
                      self._startup(measured.started_at, target / "logs" / "dbt.log", log))


def _markdown(bench: OverheadBench, samples: list[Sample], args: argparse.Namespace, loads: tuple[str, str]) -> str:
    by_variant = {v: [s for s in samples if s.variant == v] for v in VARIANTS if any(s.variant == v for s in samples)}
    plain_wall = mean(s.seconds for s in by_variant["plain"])
    plain_rss = max(s.peak_rss for s in by_variant["plain"])
    single_wall = mean(s.seconds for s in by_variant["single"]) if "single" in by_variant else None
    rows = []
    for variant, runs in by_variant.items():
        wall, rss = mean(s.seconds for s in runs), max(s.peak_rss for s in runs)
        rows.append([variant, " / ".join(_report.seconds(s.seconds) for s in runs), _report.seconds(wall),
                     f"{wall / plain_wall:.2f}", f"{wall / single_wall:.2f}" if single_wall else "–",
                     _report.mib(rss), f"{rss / plain_rss:.2f}",
                     " / ".join(str(s.nodes_run) for s in runs), " / ".join(s.load.split()[0] for s in runs),
                     "yes" if all(s.ok for s in runs) else "**NO**"])
    main_table = _report.table(
        ["variant", "wall per round (s)", "mean wall (s)", "÷ plain", "÷ single build", "peak RSS (MiB)", "÷ plain",
         "nodes run", "1-min load at start", "succeeded"], rows)
    startup_rows = []
    for sample in samples:
        s = sample.startup
        to_dbt = None if s["flow begins"] is None or s["dbt starts"] is None else s["dbt starts"] - s["flow begins"]
        to_node = None if s["flow begins"] is None or s["first node"] is None else s["first node"] - s["flow begins"]
        startup_rows.append([sample.variant, sample.round, _report.seconds(s["flow begins"]),
                             _report.seconds(to_dbt), _report.seconds(to_node), _report.seconds(s["first node"])])
    startup_table = _report.table(
        ["variant", "round", "launch → flow run begins", "flow begins → first dbt line",
         "flow begins → first node", "launch → first node"], startup_rows)
    stage_table = _report.stage_table([(s.variant, s.stages, s.seconds) for s in samples if s.round == 1 and s.stages])
    counts = bench.summary["nodes"]
    order = " / ".join(by_variant)
    command = f"python bench/overhead.py --nodes {args.nodes} --rounds {args.rounds}" + (
        f" --max-wait {args.max_wait:.0f}" if args.max_wait else "") + (
        f" --variants {args.variants}" if args.variants != ",".join(VARIANTS) else "") + (
        f" --out {args.out}" if args.out != HERE / "RESULTS.md" else "") + (
        f" --repo {args.repo}" if args.repo.resolve() != REPO else "")
    return f"""{_report.facts(h.machine_info(), h.versions())}
1-min/5-min/15-min load average: {loads[0]} before, {loads[1]} after.

Project: {counts['total']} nodes ({counts['model']} models, {counts['test']} tests, {counts['source']} sources,
{counts['seed']} seed, {counts['snapshot']} snapshots, {counts.get('unit_test', 0)} unit tests, and exposures, metrics,
a semantic model, a saved query, an analysis and hooks, which dbt does not build); DuckDB, 4 threads; each round starts from an empty
target dir and a fresh copy of the landed warehouse, so every variant parses fully and builds everything.
Rounds alternate {order}. `unposted` is ours with live progress posting nothing. `single` checks no freshness and writes no docs: it is
the floor a run of the same nodes cannot go below without skipping work.

{main_table}

Startup (seconds; each round's target dir is empty, so "first node" includes a full parse for every
variant; plain has no flow, its first dbt line and node come from `dbt source freshness`):

{startup_table}

Where each flow variant's wall time went, round 1 (from its Prefect log: each stage counts from the
previous stage's end, so the gaps between stages are in it; for `single`, the startup table's
launch → first node is its imports and full parse, and the rest of its wall is the build):

{stage_table}

Reproduce (from the repo root, with the project's virtualenv):

```
{command}
```
"""


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    h.add_common_arguments(parser)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="keep generated files here (default: a temp dir)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--max-load", type=float, default=1.5,
                        help="before each sample, wait (up to --max-wait s) for the 1-min load to drop below this")
    parser.add_argument("--max-wait", type=float, default=0, help="seconds to wait for a quiet machine (0: never)")
    args = parser.parse_args(argv)
    requested = {v.strip() for v in args.variants.split(",")}
    variants = [v for v in VARIANTS if v in requested]  # plain first: the others' ratios need it
    if "plain" not in requested or requested - set(VARIANTS):
        parser.error(f"--variants must include plain (the baseline) and only {', '.join(VARIANTS)}")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    workdir.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []
    try:
        server = nullcontext(args.api_url) if args.api_url else h.prefect_server(workdir / "server-home")
        with server as api_url:
            bench = OverheadBench(workdir, args.nodes, api_url, args.repo.resolve())
            before = h.load_average()
            planned = args.rounds * len(variants)
            for round_ in range(1, args.rounds + 1):
                for variant in variants:
                    if args.max_wait:
                        h.wait_for_quiet(args.max_load, args.max_wait)
                    sample = getattr(bench, variant)(round_)
                    print(f"round {round_} {variant}: {sample.seconds:.1f} s, peak {_report.mib(sample.peak_rss)} MiB, "
                          f"{sample.nodes_run} nodes, ok={sample.ok}, load {sample.load}", flush=True)
                    samples.append(sample)
                    # Rewritten after every sample: a long run that dies still leaves what it measured.
                    body = _markdown(bench, samples, args, (before, h.load_average()))
                    if len(samples) < planned:
                        body = f"**Partial: {len(samples)} of {planned} samples so far.**\n\n" + body
                    _report.write_section(args.out, f"Overhead, N = {args.nodes:,}", body)
        print(f"wrote {args.out}")
        return 0 if all(s.ok for s in samples) else 1
    finally:
        if args.workdir is None and samples and all(s.ok for s in samples):
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.workdir is None:
            print(f"kept {workdir} for its logs", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
