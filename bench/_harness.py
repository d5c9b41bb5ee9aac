"""Shared bench helpers: a private Prefect server, and timing a command's whole process tree.

Peak memory is the peak of the *sum* of RSS over a process and all its descendants,
sampled from /proc every ~50 ms, so a flow that forks dbt or a server it spawns
would be counted, not hidden.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Iterator, Optional

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import _report  # noqa: E402
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_SECONDS = 0.05


# --------------------------------------------------------------------------- /proc sampling


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # exited while we looked
        # The command name is in parentheses and may hold spaces: the ppid follows the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except OSError:
        return 0


def tree_rss(root: int) -> int:
    """Summed RSS of `root` and every descendant, right now."""
    children = _children_by_parent()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss_bytes(pid)
        stack.extend(children.get(pid, ()))
    return total


class PeakSampler(threading.Thread):
    """Samples the tree RSS of one pid until stopped; `peak` is the largest sum seen."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak = pid, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop_event.wait(SAMPLE_SECONDS)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


@dataclass
class Measured:
    seconds: float
    peak_rss: int
    returncode: int
    started_at: float  # time.time() at launch, to compare with log timestamps


def run_measured(argv: list[str], env: dict, cwd: Path, log: Path, timeout: float = 3600) -> Measured:
    """Run argv to completion with stdout+stderr appended to `log`; time it and sample its tree."""
    with open(log, "ab") as out:
        started_at, started = time.time(), time.perf_counter()
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        sampler = PeakSampler(process.pid)
        sampler.start()
        try:
            returncode = process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            peak = sampler.stop()
        return Measured(time.perf_counter() - started, peak, returncode, started_at)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every bench script takes: project size, where results go, server, checkout."""
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--api-url", default=None, help="use this running Prefect server instead of starting one")
    parser.add_argument("--repo", type=Path, default=BENCH_DIR.parent, help="checkout whose `flows` package is benchmarked")


# --------------------------------------------------------------------------- Prefect server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(api_url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("prefect server did not become healthy in time")


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """`prefect server start` on a free port with its own PREFECT_HOME and SQLite; yields the API URL.

    The bench and the test suite (tests/conftest.py) both start their servers here."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": api_url,
    }
    with open(home / "server.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            _wait_healthy(api_url, process)
            yield api_url
        finally:
            # The server runs uvicorn workers in its own session: stop exactly that group.
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# --------------------------------------------------------------------------- environment facts


def flush_prefect_logs() -> None:
    """Send this process's buffered logs and events while the server is still up; otherwise
    exit waits on retries to a dead server."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=15)
        except Exception:
            pass


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def wait_for_quiet(max_load: float, max_wait: float, log=print) -> str:
    """Wait (up to max_wait s) for the 1-minute load to drop below max_load; return the load seen."""
    deadline = time.monotonic() + max_wait
    while float(load_average().split()[0]) > max_load and time.monotonic() < deadline:
        log(f"load {load_average()} > {max_load}: waiting", flush=True)
        time.sleep(15)
    return load_average()


def machine_info() -> dict[str, str]:
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal"))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    return {"cpus": str(os.cpu_count()), "cpu": cpu, "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
            "kernel": platform.release(), "date": datetime.now().isoformat(timespec="seconds")}


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("dbt-core", "dbt-duckdb", "duckdb", "prefect", "prefect-dbt"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "absent"
    return found


def dbt_executable() -> str:
    """The `dbt` next to this interpreter, so plain dbt and the flows use the same install."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


# --------------------------------------------------------------------------- the command sequence

DEFAULT_LAYER_SELECTORS = ("path:models/staging", "path:models/intermediate", "path:models/marts")


def dbt_sequence(layer_selectors=DEFAULT_LAYER_SELECTORS) -> list[list[str]]:
    """The dbt commands our production flow sends for a full build (publish off, no gate).

    `--exclude source:*` keeps each layer build to the same node set as the flow's
    layer stage (tests on sources ran in their own step); bench/overhead.py checks
    that both ran the same number of nodes.
    """
    return [
        ["deps"],  # the generated project has a local package, as real projects have packages
        ["source", "freshness", "--no-populate-cache"],
        ["test", "--select", "source:*"],
        ["seed"],
        # Snapshots of sources before the layers, snapshots of models once the models exist.
        ["snapshot", "--exclude", "resource_type:model+"],
        *(["build", "--select", layer, "--exclude", "source:*", "--fail-fast"] for layer in layer_selectors),
        ["snapshot", "--select", "resource_type:model+,resource_type:snapshot"],
        ["docs", "generate", "--static"],
    ]


# --------------------------------------------------------------------------- log timestamps

# dbt.log:    "\x1b[0m20:05:33.123456 [info ] [Thread-1 (]: 1 of 20 START freshness of raw.x"
# Prefect:    "20:05:33.123 | INFO    | Flow run 'x' - Beginning flow run 'x' for flow 'y'"
DBT_FIRST_LINE = rb"(\d\d):(\d\d):(\d\d\.\d+) \[info \] \[[^\]]*\]: Running with dbt="
DBT_FIRST_NODE = rb"(\d\d):(\d\d):(\d\d\.\d+) \[info \] \[[^\]]*\]: \d+ of \d+ START "
PREFECT_FLOW_BEGIN = rb"^(\d\d):(\d\d):(\d\d\.\d+) \| INFO +\| Flow run .* - Beginning flow run"
# Prefect:    "20:05:40.456 | INFO    | Task run 'build staging-e97' - Finished in state Completed()"
PREFECT_TASK_FINISHED = rb"^(\d\d):(\d\d):(\d\d\.\d+) \| INFO +\| Task run '(.+)-[0-9a-f]+' - Finished in state"


def log_times(log: Path, pattern: bytes, not_before: float) -> list[tuple[float, str]]:
    """(epoch seconds, group 4 or "") of every line of `log` matching `pattern` (groups: hh, mm,
    ss.ffff[, a label]) at or after `not_before` (epoch), in order. Lines carry the local time of
    day only; `not_before` gives the day, and earlier lines (a log that accumulates) are skipped."""
    if not log.exists():
        return []
    day = datetime.fromtimestamp(not_before).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    found = []
    for match in re.finditer(pattern, log.read_bytes(), re.MULTILINE):
        moment = day + int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3])
        if moment < not_before - 43200:
            moment += 86400  # the run crossed midnight
        if moment >= not_before - 0.5:  # log times have ms precision; launch time is taken just before
            found.append((moment, match[4].decode(errors="replace") if match.re.groups >= 4 else ""))
    return found


def stage_seconds(log: Path, launched: float, exited: float) -> list[tuple[str, float]]:
    """Where a flow run's wall time went, from its Prefect log: launch → flow run begins, each task
    run (from the previous one's end to its own, so the gaps between stages count too), and the
    last task's end → process exit."""
    begins = first_log_time(log, PREFECT_FLOW_BEGIN, launched)
    if begins is None:
        return []
    stages, mark = [("start-up: Python, imports, the flow run", begins - launched)], begins
    for moment, name in log_times(log, PREFECT_TASK_FINISHED, begins):
        stages.append((name, moment - mark))
        mark = moment
    stages.append((_report.EXIT_STAGE, exited - mark))
    return stages


def first_log_time(log: Path, pattern: bytes, not_before: float) -> Optional[float]:
    """Epoch seconds of the first line of `log` matching `pattern` at or after `not_before` (see log_times)."""
    found = log_times(log, pattern, not_before)
    return found[0][0] if found else None
