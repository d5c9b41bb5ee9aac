"""Soak: 12 consecutive production runs of the bundled project in one process.

After the first (published) run, nothing is fresher, except every 3rd run, before which new orders
land, so a new version is built, published and older ones pruned (publish prunes to the
environment's keep_versions). Resources must stay flat: open file descriptors, temp dirs
(rendered profiles), versioned schemas (≤ keep), state-store history (≤ its `history`), its bytes,
and the per-run scratch dirs.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import pytest
from land import land_new_data

from blocks.environment import builtin_local
from blocks.profile import PROFILE_DIR_PREFIX
from flows.core import state_store
from flows.production import production_run

from conftest import record_timing
from .helpers import copy_home, dir_bytes, registry, run_dirs, versioned_schemas

# 12 runs: twice the state store's history (6 here; 10 by default, which would take 20 runs of the
# suite's time to prove the same), so its bound is reached and then held for 6 more runs;
# 4 publishes past the first, so prune (keep_versions) drops versions more than once.
RUNS = 12
LAND_EVERY = 3
STATE_HISTORY = 6


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_a_dozen_runs_in_one_process_stay_bounded(tmp_path, published_template, monkeypatch):
    home = copy_home(published_template, tmp_path / "home")
    monkeypatch.setattr(state_store, "RUNS_KEPT", STATE_HISTORY)
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("LAKEHOUSE_HOME", str(home))
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))  # this process's temp files, and only those
    keep = builtin_local().blue_green.keep_versions
    state_dir = home / "state" / "local"

    nothing_fresher: list[float] = []
    nothing_fresher_cpu: list[float] = []  # this process's CPU: a load-independent measure
    rebuilt: list[float] = []
    fds: list[int] = []
    published = {registry(home)["live"]}
    state_bytes = []
    schema_versions = []
    for run in range(1, RUNS + 1):
        landed = run % LAND_EVERY == 0
        if landed:
            land_new_data(home / "warehouse.duckdb", "orders", rows=5)
        started, cpu_started = time.perf_counter(), time.process_time()
        state = production_run(environment="local", return_state=True)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        assert state.is_completed(), f"run {run}: {state.message}"
        if landed:
            assert state.message != "nothing to rebuild", f"run {run} should have rebuilt"
            rebuilt.append(seconds)
            published.add(registry(home)["live"])
        else:
            assert state.message == "nothing to rebuild", f"run {run}: {state.message}"
            nothing_fresher.append(seconds)
            nothing_fresher_cpu.append(cpu)
        fds.append(_open_fds())
        state_bytes.append(dir_bytes(state_dir))

        # Prune keeps `keep` published versions; a schema of an older (pruned) version stays only
        # while a kept version still reads from it (relations the freshness gate did not rebuild).
        data = registry(home)
        kept = [v for v in data["versions"] if v["status"] == "published"]
        assert len(kept) <= keep, f"run {run}: {len(kept)} published versions kept"
        needed = {p.split(".")[0] for v in kept for p in v["relations"].values()}
        assert versioned_schemas(home) == needed, f"run {run}: {versioned_schemas(home) ^ needed}"
        schema_versions.append(len({s.split("__", 1)[1][:22] for s in versioned_schemas(home)}))
        assert len(list((state_dir / "runs").iterdir())) <= STATE_HISTORY
        assert len(run_dirs(home)) <= 5  # RUN_DIRS_KEPT scratch dirs under work/
        assert not [p.name for p in private_tmp.iterdir() if p.name.startswith(PROFILE_DIR_PREFIX)], \
            f"run {run} left a rendered profile behind"
        assert not (state_dir / "publish.lock").exists()

    assert len(published) == 1 + RUNS // LAND_EVERY
    assert max(schema_versions) <= keep + 1, schema_versions  # here: the kept ones + the first (partly still live)
    statuses = {v["status"] for v in registry(home)["versions"]}
    assert statuses <= {"published", "pruned"}, statuses
    # Open files: flat across the nothing-fresher runs (a few descriptors of slack for pools/logging).
    assert max(fds[5:]) - fds[1] <= 8, fds
    # The state store grows only by its history: after the history is full, its size stays level.
    assert state_bytes[-1] <= max(state_bytes[:STATE_HISTORY]) * 1.5, state_bytes
    assert not list(private_tmp.iterdir()), [p.name for p in private_tmp.iterdir()]

    median = statistics.median(nothing_fresher)
    record_timing("soak nothing-fresher run", f"median {median:.2f}s wall ({statistics.median(nothing_fresher_cpu):.2f}s CPU "
                  f"in the flow's process), max {max(nothing_fresher):.2f}s "
                  f"over {len(nothing_fresher)} runs; rebuild runs {', '.join(f'{s:.1f}s' for s in rebuilt)}")
    record_timing("soak open fds", f"{fds[0]} after run 1 → {fds[-1]} after run {RUNS} (max {max(fds)})")
    record_timing("soak versioned schemas", f"versions with schemas per run: max {max(schema_versions)} (keep={keep})")
    record_timing("soak state store", f"{state_bytes[0] // 1024} KiB → {state_bytes[-1] // 1024} KiB")
