"""`make ui` for real: the UI answers, a production-local run started through the API completes on
its worker, and SIGINT to the process group (a Ctrl-C) leaves no process behind.

It runs on a server of its own (own PREFECT_HOME and port), not the session's.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import _harness
from deployments.ui import _alive, _descendants

REPO = Path(__file__).resolve().parents[1]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="session")
def prefect_server():
    """This module brings its own server (`make ui` starts it): the session's is not needed here."""
    yield None


def _lines(stream) -> queue.Queue:
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue, prefix: str, seconds: float, seen: list[str]) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no {prefix!r} line within {seconds} s:\n" + "".join(seen))


def _run_production_local(api: str) -> dict:
    with httpx.Client(base_url=api, timeout=30) as client:
        deployment = client.get("/deployments/name/production-run/production-local").raise_for_status().json()
        run = client.post(f"/deployments/{deployment['id']}/create_flow_run", json={}).raise_for_status().json()
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            run = client.get(f"/flow_runs/{run['id']}").raise_for_status().json()
            if run["state_type"] in TERMINAL:
                return run
            time.sleep(2)
    raise AssertionError(f"production-local run still {run['state_type']} after 420 s")


def test_make_ui_serves_runs_and_stops_on_ctrl_c(tmp_path):
    port = _harness.free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), LAKEHOUSE_HOME=str(tmp_path / "lakehouse"),
               LAKEHOUSE_UI_PORT=str(port), PREFECT_WORKER_QUERY_SECONDS="2",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    # `-o`: the suite runs inside an installed checkout; never reinstall from a test.
    make = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/.installed", "ui", f"PY={sys.executable}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen: list[str] = []
    try:
        lines = _lines(make.stdout)
        url = _wait_for(lines, "Prefect UI: ", 300, seen).split()[2]
        assert url == f"http://127.0.0.1:{port}"
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()

        run = _run_production_local(f"{url}/api")
        assert run["state_type"] == "COMPLETED", run["state"]
        assert (tmp_path / "lakehouse" / "state" / "local" / "latest" / "manifest.json").exists()

        started = [make.pid, *_descendants([make.pid])]
        assert len(started) >= 4, started  # make, ui.py, the server, the worker (and theirs)
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        # GNU make waits for its child, then dies of the same signal (or exits 2)
        assert make.wait(timeout=90) in {0, 2, -signal.SIGINT}, "".join(seen)
        time.sleep(0.5)
        while not lines.empty():
            seen.append(lines.get())
        assert any("SIGINT: stopping the worker and the server" in line for line in seen), "".join(seen)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(map(_alive, started)):
            time.sleep(0.3)  # reparented children are reaped by init a moment later
        assert not [pid for pid in started if _alive(pid)], "processes left after Ctrl-C"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/api/health", timeout=5)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            for pid in _descendants([make.pid]):
                os.kill(pid, signal.SIGKILL)
            make.wait()
