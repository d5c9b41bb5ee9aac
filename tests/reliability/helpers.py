"""Shared helpers of the reliability suite: homes, live-data fingerprints, subprocess runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import duckdb

from conftest import relation_fingerprint

REPO = Path(__file__).resolve().parents[2]
BUNDLED_PROJECT = REPO / "dbt_project"
LIVE_SCHEMAS = ("main", "main_finance", "main_snapshots")


def copy_home(template: Path, destination: Path) -> Path:
    """A private $LAKEHOUSE_HOME: warehouse, state store and work dir of `template`."""
    shutil.copytree(template, destination, symlinks=True)
    return destination


def sql(home: Path, statement: str) -> list[tuple]:
    with duckdb.connect(str(home / "warehouse.duckdb")) as connection:
        return connection.execute(statement).fetchall()


def downstream(manifest: dict, start: str, *, include_start: bool) -> set[str]:
    """Every model, seed and snapshot built from `start` at any depth, read from the manifest's child
    map (independently of dbt's selectors); `start` itself is in it only with include_start."""
    seen, stack = {start} if include_start else set(), [start]
    while stack:
        for child in manifest["child_map"].get(stack.pop(), []):
            if child.split(".")[0] in {"model", "seed", "snapshot"} and child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def schemas(home: Path) -> set[str]:
    return {s for (s,) in sql(home, "select schema_name from information_schema.schemata "
                                    "where catalog_name = current_database()")}


def versioned_schemas(home: Path) -> set[str]:
    return {s for s in schemas(home) if s.startswith("main__v")}


def live_data(home: Path) -> dict[str, tuple]:
    """Every live relation (views in main/main_finance, snapshot tables): kind, rows, view SQL."""
    return relation_fingerprint(home / "warehouse.duckdb", f"table_schema in {LIVE_SCHEMAS}")


def prod_data(home: Path) -> dict[str, tuple]:
    """live_data plus every blue-green version's relations: all a production environment owns."""
    return relation_fingerprint(home / "warehouse.duckdb", f"table_schema in {LIVE_SCHEMAS} or table_schema "
                                                           "like 'main\\_\\_v%' escape '\\'")


def view_targets(home: Path) -> dict[str, str]:
    """Live view -> its SQL: which version each live view reads."""
    return {f"{s}.{v}": text for s, v, text in sql(
        home, "select schema_name, view_name, sql from duckdb_views() where not internal "
              f"and schema_name in {LIVE_SCHEMAS}")}


def registry(home: Path, environment: str = "local") -> dict:
    path = home / "state" / environment / "versions.json"
    return json.loads(path.read_text()) if path.exists() else {"live": None, "versions": []}


def statuses(home: Path) -> dict[str, str]:
    return {v["id"]: v["status"] for v in registry(home)["versions"]}


def snapshot(home: Path) -> dict:
    """Everything a failed or refused run must leave as it was."""
    return {
        "live": live_data(home),
        "views": view_targets(home),
        "schemas": schemas(home),
        "live_id": registry(home)["live"],
        "latest": {p.name: p.read_bytes() for p in (home / "state" / "local" / "latest").glob("*.json")},
    }


def assert_unchanged(home: Path, before: dict) -> None:
    after = snapshot(home)
    assert after["live"] == before["live"], "live data changed"
    assert after["views"] == before["views"], "a live view was repointed"
    assert after["live_id"] == before["live_id"], "the live version changed"
    assert after["latest"] == before["latest"], "the saved state (latest/) changed"
    assert after["schemas"] == before["schemas"], f"schemas changed: {after['schemas'] ^ before['schemas']}"


def journal(home: Path, flow_run_id, missing_ok: bool = False) -> dict:
    """The run's journal. A missing one is an error (a moved journal must not read as "no step
    ran"), unless `missing_ok`: polling a run that may not have written it yet."""
    path = home / "work" / "local" / "runs" / str(flow_run_id) / "journal.json"
    if path.exists():
        return json.loads(path.read_text())
    assert missing_ok, f"no journal at {path}"
    return {"done": [], "failed": None, "version": None, "plan": None, "source_signals": {}}


# What a dbt command that did work leaves: build/run/test/seed/snapshot/retry/docs write
# run_results.json, source freshness sources.json, docs generate catalog.json (and every one of
# them its dbt.log). A parse (the only dbt call allowed before input is checked) writes none of these results.
DBT_RESULT_FILES = ("run_results.json", "sources.json", "catalog.json")


def dbt_results_written(roots, since: float) -> list[str]:
    """dbt result files under `roots` written at or after `since` (time.time())."""
    return sorted(str(p) for root in roots if Path(root).exists() for p in Path(root).rglob("*")
                  if p.name in DBT_RESULT_FILES and p.stat().st_mtime >= since)


def files_written(root: Path, since: float) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and p.stat().st_mtime >= since)


def failed_with(state, *needles: str) -> str:
    """The failed state's message, which must name every needle."""
    assert state.is_failed(), f"expected a failed run, got {state.name}: {state.message}"
    message = str(state.message)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "LAKEHOUSE_HOME": str(home), "PYTHONUNBUFFERED": "1", **extra}
    return env


def pause_before(point: str, seconds: float = 300) -> str:
    """A prelude for start_production: the run is opened with a hook that, at `point`, touches
    `paused-before-<point>` in its run dir and sleeps, so the test can kill it at that moment."""
    return textwrap.dedent(f"""
        import functools, time
        import flows.core.run

        def _pause(point, run_dir):
            if point == {point!r}:
                (run_dir / f"paused-before-{{point}}").touch()
                time.sleep({seconds!r})

        flows.core.run.open_run = functools.partial(flows.core.run.open_run, pause_before=_pause)
    """)


def start_production(home: Path, log: Path, *args: str, prelude: str = "", **env: str) -> subprocess.Popen:
    """`python -m flows.production --environment local` in its own process group.

    `prelude`: Python run first in that process (then the module runs as `-m` would run it)."""
    module = ["-c", f"{prelude}\nimport runpy; runpy.run_module('flows.production', run_name='__main__', "
                    "alter_sys=True)"] if prelude else ["-m", "flows.production"]
    return subprocess.Popen(
        [sys.executable, *module, "--environment", "local", *args],
        cwd=REPO, env=subprocess_env(home, **env), stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(condition, timeout: float, what: str, process: Optional[subprocess.Popen] = None, log: Optional[Path] = None,
             interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run exited ({process.returncode}) before {what}:\n"
                                 f"{log.read_text()[-4000:] if log else ''}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{log.read_text()[-4000:] if log else ''}")


@contextmanager
def file_in_place_of(directory: Path) -> Iterator[None]:
    """Make `directory` unwritable as a directory (a file takes its name); put it back on exit."""
    saved = directory.with_name(directory.name + ".saved")
    shutil.move(directory, saved)
    directory.write_text(f"a file where {directory.name}/ should be")
    try:
        yield
    finally:
        directory.unlink()
        shutil.move(saved, directory)


def run_dirs(home: Path) -> list[Path]:
    runs = home / "work" / "local" / "runs"
    return sorted(runs.iterdir()) if runs.exists() else []


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def project_copy(destination: Path, files: dict[str, str] | None = None, append: dict[str, str] | None = None) -> Path:
    """A copy of the bundled project (no target/logs), with files written or appended to."""
    shutil.copytree(BUNDLED_PROJECT, destination, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    for name, content in (files or {}).items():
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        (destination / name).write_text(content)
    for name, content in (append or {}).items():
        with (destination / name).open("a") as handle:
            handle.write(content)
    return destination


def flow_run_state(flow_run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def flow_run_id_of(home: Path, process_log: Path) -> Optional[str]:
    """The flow run id of a subprocess run: the run dir it created (the newest one)."""
    import re

    match = re.search(r"/runs/flow-run/([0-9a-f-]{36})", process_log.read_text()) if process_log.exists() else None
    return match.group(1) if match else None


class CuttableProxy:
    """A TCP relay to the Prefect API that the test can cut: afterwards every connection is
    reset and new ones are refused, as when the API host goes away."""

    def __init__(self, target: str):
        import socket
        import threading
        from urllib.parse import urlsplit

        parts = urlsplit(target)
        self.upstream = (parts.hostname, parts.port)
        self.path = parts.path
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list = []
        self.lock = threading.Lock()
        self.cut_done = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def _accept(self):
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.cut_done:
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        import socket

        with self.lock:
            self.cut_done = True
            try:
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the relay thread
            except OSError:
                pass
            self.listener.close()
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
