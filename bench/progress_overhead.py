"""What live progress costs a run: the dbt callback per node event, and the Prefect API posts.

    python bench/progress_overhead.py [--nodes 2000] [--run-seconds 260] [--steps 6]

Against a real local Prefect server (started here), inside a flow run, with the production
RunProgress and its Prefect poster: feeds `--nodes` NodeFinished events (and as many NodeStart
ones, which the callback ignores) from 4 threads, as dbt does, and times

  callback   what dbt's worker threads pay per event (a counter under a lock)
  post       one create or update of a progress artifact (the timer thread's, or a step end's)

then prices a run of `--run-seconds` with `--steps` build steps: events x callback, plus posts
(a create and 2 updates per step, and one timer post per 5 s). The timer's posts run in their own
thread, so the run pays them only as CPU they take from dbt; the sum is an upper bound.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _harness as h  # noqa: E402

FINISHED = SimpleNamespace(info=SimpleNamespace(name="NodeFinished"))
STARTED = SimpleNamespace(info=SimpleNamespace(name="NodeStart"))


def measure(nodes: int, posts: int) -> dict[str, float]:
    from prefect import flow

    from flows.core.progress import POST_INTERVAL_SECONDS, PrefectPoster, RunProgress

    @flow(name="progress-overhead")
    def bench() -> dict[str, float]:
        progress = RunProgress("bench", PrefectPoster(), interval=POST_INTERVAL_SECONDS)
        progress.expect({"build": nodes})
        with progress.step("build", timer=False) as on_event:
            def feed(count: int) -> None:
                for _ in range(count):
                    on_event(STARTED)
                    on_event(FINISHED)

            threads = [threading.Thread(target=feed, args=(nodes // 4,)) for _ in range(4)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            events = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(posts):
                on_event(FINISHED)
                progress.tick()
            post = (time.perf_counter() - started) / posts
        return {"events_seconds": events, "per_event_us": events / (2 * nodes) * 1e6, "post_ms": post * 1e3}

    return bench()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--run-seconds", type=float, default=260.7, help="the run to price (ours at 2,000: RESULTS.md)")
    parser.add_argument("--steps", type=int, default=6, help="build steps (seeds, snapshots, layers)")
    parser.add_argument("--posts", type=int, default=20, help="posts to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, h.prefect_server(Path(home)) as api_url:
        os.environ.update(PREFECT_HOME=home, PREFECT_API_URL=api_url)
        result = measure(args.nodes, args.posts)
    posts = 3 * args.steps + args.run_seconds / 5
    total = result["events_seconds"] + posts * result["post_ms"] / 1e3
    print(f"nodes {args.nodes}: {2 * args.nodes} events in {result['events_seconds'] * 1e3:.1f} ms "
          f"({result['per_event_us']:.2f} us each); one post {result['post_ms']:.1f} ms; "
          f"a {args.run_seconds:.0f} s run with {args.steps} steps makes {posts:.0f} posts: "
          f"at most {total:.2f} s ({100 * total / args.run_seconds:.2f}% of the run)")


if __name__ == "__main__":
    main()
