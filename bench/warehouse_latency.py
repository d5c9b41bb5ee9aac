"""Layer barriers when models wait on a warehouse: ours (layered) vs one DAG-parallel `dbt build`.

    python bench/warehouse_latency.py [--models 60] [--threads 4,16] [--median 2] [--out bench/RESULTS.md]

On DuckDB every model takes milliseconds and burns CPU, so what a layer barrier costs never
shows. On Databricks a model waits seconds to minutes on the warehouse, and a layer cannot
start before its slowest model finishes. Here every model is a dbt-duckdb Python model that
sleeps (no CPU) for a skewed, seeded duration: lognormal around `--median` seconds, a few
ten times longer, as warehouse query times are. Three layers (staging → intermediate → marts),
each model refs one to three models of the layer before, each has a `not_null` test.

  single  `dbt build --threads T`: the DAG-parallel floor, tests interleaved as dbt schedules them
  ours    `python -m flows.production --environment local --no-publish --no-docs --threads T`:
          one build per layer, each layer built and tested before the next starts
  dag     the same with `--layer-mode dag`: one build of all layers, each model tested before
          anything downstream of it, nothing waiting for the rest of a layer

Also reported: the schedule's lower bound, max(critical path, total sleep ÷ T), which no
scheduler can beat.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
import _report  # noqa: E402
from generate_project import write_profiles  # noqa: E402

REPO = HERE.parent
LAYERS = ("staging", "intermediate", "marts")
PROFILE = "bench"


def sleep_seconds(count: int, median: float, seed: int = 7) -> list[float]:
    """Skewed durations: lognormal (sigma 0.9) around `median`, capped at 25× the median."""
    rng = random.Random(seed)
    return [round(min(median * math.exp(rng.gauss(0, 0.9)), 25 * median), 2) for _ in range(count)]


def generate(project: Path, models: int, median: float) -> dict:
    """Write the project; return each model's parents and sleep, for the lower bound."""
    rng = random.Random(11)
    shutil.rmtree(project, ignore_errors=True)
    (project / "seeds").mkdir(parents=True)
    (project / "seeds" / "landed.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(10)))
    (project / "dbt_project.yml").write_text(
        f"name: latency\nprofile: {PROFILE}\nconfig-version: 2\nversion: '1.0'\n"
        "model-paths: [models]\nseed-paths: [seeds]\n")
    per_layer = [models // 3 + (1 if i < models % 3 else 0) for i in range(3)]
    durations = iter(sleep_seconds(models, median))
    graph: dict[str, dict] = {}
    previous: list[str] = []
    for layer, count in zip(LAYERS, per_layer, strict=True):
        folder = project / "models" / layer
        folder.mkdir(parents=True)
        names = [f"{layer[:3]}_{i:03d}" for i in range(count)]
        for name in names:
            parents = rng.sample(previous, k=min(len(previous), rng.randint(1, 3))) if previous else []
            seconds = next(durations)
            refs = "".join(f"    dbt.ref({parent!r})\n" for parent in parents) or "    dbt.ref('landed')\n"
            (folder / f"{name}.py").write_text(
                "import time\n\n\ndef model(dbt, session):\n"
                "    dbt.config(materialized='table')\n"
                f"{refs}"
                f"    time.sleep({seconds})  # waiting on the warehouse: no CPU\n"
                "    return session.sql('select 1 as id')\n")
            graph[name] = {"parents": parents, "seconds": seconds}
        (folder / "_models.yml").write_text("version: 2\nmodels:\n" + "".join(
            f"  - name: {name}\n    columns:\n      - name: id\n        data_tests: [not_null]\n" for name in names))
        previous = names
    return graph


def lower_bound(graph: dict, threads: int) -> float:
    """max(critical path, total work ÷ threads): no schedule of these sleeps finishes sooner."""
    finish: dict[str, float] = {}
    for name, node in graph.items():  # written layer by layer: parents come first
        finish[name] = node["seconds"] + max((finish[p] for p in node["parents"]), default=0.0)
    return max(max(finish.values()), sum(n["seconds"] for n in graph.values()) / threads)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=60)
    parser.add_argument("--threads", default="4,16")
    parser.add_argument("--median", type=float, default=2.0, help="median model wait, seconds")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--api-url", default=None)
    parser.add_argument("--repo", type=Path, default=REPO)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    project = workdir / "project"
    graph = generate(project, args.models, args.median)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "PREFECT_", "LAKEHOUSE_"))}
    env.update(PREFECT_HOME=str(workdir / "client-home"), DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    rows, ok = [], True
    try:
        server = nullcontext(args.api_url) if args.api_url else h.prefect_server(workdir / "server-home")
        with server as api_url:
            env["PREFECT_API_URL"] = api_url
            for threads in (int(t) for t in args.threads.split(",")):
                walls = {}
                for variant in ("single", "ours", "dag"):
                    home = workdir / "runs" / f"{variant}-{threads}"
                    home.mkdir(parents=True)
                    log = workdir / f"{variant}-{threads}.log"
                    if variant == "single":
                        write_profiles(home / "profiles", home / "warehouse.duckdb", threads=threads)
                        argv_ = [h.dbt_executable(), "build", "--project-dir", str(project), "--profiles-dir",
                                 str(home / "profiles"), "--target-path", str(home / "target"),
                                 "--threads", str(threads)]
                        measured = h.run_measured(argv_, env, home, log)
                    else:
                        argv_ = [sys.executable, "-m", "flows.production", "--environment", "local",
                                 "--project-dir", str(project), "--no-publish", "--no-docs",
                                 "--threads", str(threads), *(["--layer-mode", "dag"] if variant == "dag" else [])]
                        measured = h.run_measured(argv_, {**env, "LAKEHOUSE_HOME": str(home)}, args.repo, log)
                    ok = ok and measured.returncode == 0
                    walls[variant] = measured.seconds
                    print(f"{threads} threads, {variant}: {measured.seconds:.1f} s, rc={measured.returncode}", flush=True)
                bound = lower_bound(graph, threads)
                rows.append([threads, _report.seconds(bound), _report.seconds(walls["single"]),
                             _report.seconds(walls["ours"]), f"{walls['ours'] / walls['single']:.2f}",
                             _report.seconds(walls["dag"]), f"{walls['dag'] / walls['single']:.2f}",
                             f"{walls['single'] / bound:.2f}", f"{walls['ours'] / bound:.2f}"])
        sleeps = [n["seconds"] for n in graph.values()]
        body = f"""{_report.facts(h.machine_info(), h.versions())}

Project: {args.models} dbt-duckdb Python models in three layers, each sleeping a seeded lognormal
duration (median {args.median:g} s, longest {max(sleeps):.1f} s, total {sum(sleeps):.0f} s) and
tested by a `not_null` test; one seed. Sleeping costs no CPU, as waiting on a warehouse does not.

{_report.table(["threads", "lower bound (s)", "single dbt build (s)", "ours, layered (s)", "layered ÷ single",
                "ours, `--layer-mode dag` (s)", "dag ÷ single", "single ÷ bound", "layered ÷ bound"], rows)}

`layered` is the default: each layer is built and tested before the next starts. `dag` is one build
of all layers (`layer_mode="dag"`): a model is still tested before anything downstream of it runs,
but nothing waits for the rest of its layer.

Reproduce: `python bench/warehouse_latency.py --models {args.models} --threads {args.threads} --median {args.median:g}`
"""
        _report.write_section(args.out, "Warehouse latency: layer barriers", body)
        print(f"wrote {args.out}")
        return 0 if ok else 1
    finally:
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir} for its logs", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
