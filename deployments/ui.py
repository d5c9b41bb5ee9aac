"""`make ui`: the operator experience on the embedded default, on this machine.

    python -m deployments.ui [--port 4200]

Starts a local Prefect server, applies the work pool and the deployments of the built-in `local`
environment (production-local, adhoc-local, rollback-local from prefect.yaml), lands the example
data when the warehouse is empty, starts a worker and prints the UI's URL. Ctrl-C (SIGINT) or
SIGTERM stops all of it: the server, the worker and any flow run the worker started.

Each child runs in a session of its own, so a Ctrl-C reaches only this script, which then stops
them in order (worker before server). Flow runs start their own sessions too (Prefect's runner),
so on the way out every descendant of a child is found through `ps` and stopped as well.
Server state lives in $PREFECT_HOME (default ~/.prefect), the data in $LAKEHOUSE_HOME.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
LOCAL_DEPLOYMENTS = ["production-local", "adhoc-local", "rollback-local"]
STARTUP_SECONDS = 180  # a first server start migrates its SQLite database
STOP_SECONDS = 20


class Stop(Exception):
    """SIGINT or SIGTERM arrived: stop everything."""


def _raise_stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def _descendants(pids: list[int]) -> list[int]:
    """Every process below `pids` (POSIX `ps`; no psutil needed)."""
    listing = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in listing.splitlines():
        pid, ppid = (int(x) for x in line.split())
        children.setdefault(ppid, []).append(pid)
    found, stack = [], list(pids)
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _signal(pid: int, signum: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM each child's group and every descendant, newest child first; SIGKILL what remains."""
    for process in reversed(processes):
        if process.poll() is not None:
            continue
        below = _descendants([process.pid])
        _signal(process.pid, signal.SIGTERM, group=True)
        for pid in below:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and (process.poll() is None or any(map(_alive, below))):
            time.sleep(0.2)
        _signal(process.pid, signal.SIGKILL, group=True)
        for pid in below:
            _signal(pid, signal.SIGKILL)
        process.wait()


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_healthy(api_url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the Prefect server exited ({server.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Prefect server did not answer within {STARTUP_SECONDS} s; see {log}")


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("LAKEHOUSE_UI_PORT", "4200")),
                        help="the server's port (default: $LAKEHOUSE_UI_PORT or 4200)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)

    api_url = f"http://127.0.0.1:{args.port}/api"
    home = Path(os.environ.get("LAKEHOUSE_HOME", REPO / ".lakehouse")).resolve()
    logs = home / "ui"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_UI_API_URL": api_url, "LAKEHOUSE_HOME": str(home),
           "LAKEHOUSE_CHECKOUT": str(REPO), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_CLI_WRAP_LINES": "false"}
    python, processes = sys.executable, []
    try:
        print(f"Starting the Prefect server on port {args.port} (log: {logs / 'server.log'})", flush=True)
        processes.append(_start([python, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(args.port)], logs / "server.log", env))
        _wait_healthy(api_url, processes[0], logs / "server.log")
        print("Applying the work pool and the local deployments: " + ", ".join(LOCAL_DEPLOYMENTS), flush=True)
        _run([python, "-m", "deployments.work_pools", "apply"], env, "applying the work pool")
        _run([python, "-m", "prefect", "--no-prompt", "deploy",
              *(arg for name in LOCAL_DEPLOYMENTS for arg in ("--name", name))], env, "prefect deploy")
        print(f"Landing the example data into {home / 'warehouse.duckdb'} (if empty)", flush=True)
        _run([python, str(REPO / "dbt_project" / "landing" / "land.py"), "--init-if-empty"], env, "landing")
        processes.append(_start([python, "-m", "prefect", "worker", "start", "--pool", "lakehouse-process"],
                                logs / "worker.log", env))
        print(f"Prefect UI: http://127.0.0.1:{args.port}  (worker log: {logs / 'worker.log'}; Ctrl-C stops all)",
              flush=True)
        while all(p.poll() is None for p in processes):
            time.sleep(1)
        gone = next(p for p in processes if p.poll() is not None)
        print(f"{gone.args[3]} exited ({gone.returncode}); stopping the rest", file=sys.stderr, flush=True)
        return 1
    except Stop as why:
        print(f"{why}: stopping the worker and the server", flush=True)
        return 0
    except RuntimeError as error:
        print(f"make ui: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        stop(processes)


if __name__ == "__main__":
    sys.exit(main())
