"""Each environment's dbt state, kept behind a Prefect filesystem block.

Layout under the block's basepath:

    <environment>/latest/{manifest,sources,run_results}.json   what the freshness gate and slim CI read
    <environment>/latest/docs/                                  the static docs site
    <environment>/runs/<run id>/...                             the same files, kept for `history` runs
    <environment>/timings.json                                  last 10 times (and rows) per model, same code
    <environment>/versions.json                                 blue-green version records
    <environment>/publish.lock                                  held while a run publishes
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import fsspec
from fsspec.implementations.local import LocalFileSystem as FsspecLocal
from prefect.filesystems import LocalFileSystem, RemoteFileSystem

from blocks.environment import DbtEnvironment
from blocks.local import local_paths
from flows.errors import RunFailure

# parse_fingerprint.json: see flows/core/freshness.py
FINGERPRINT_FILE = "parse_fingerprint.json"  # the parse fingerprint the gate compares (freshness.py)
SIGNALS_FILE = "source_signals.json"  # the change signals of sources without freshness (source_signals.py)
STATE_FILES = ("manifest.json", "sources.json", "run_results.json", FINGERPRINT_FILE, SIGNALS_FILE)
TIMING_HISTORY = 10


class StateStoreError(RunFailure):
    """The state store cannot be read or written as a run needs."""


# Runs whose state (manifest, results, sources) stays under runs/ after a newer one is promoted.
RUNS_KEPT = 10


class StateStore:
    def __init__(self, block: LocalFileSystem | RemoteFileSystem, environment: str, history: Optional[int] = None):
        self.block = block
        self.environment = environment
        self.history = RUNS_KEPT if history is None else history

    @classmethod
    def for_environment(cls, environment: DbtEnvironment) -> "StateStore":
        block = environment.state_store or LocalFileSystem(basepath=str(local_paths().state_store))
        return cls(block, environment.name)

    # --- primitives: content goes through the block --------------------------------
    def _key(self, name: str) -> str:
        return posixpath.join(self.environment, name)

    def _filesystem(self) -> tuple[fsspec.AbstractFileSystem, str]:
        if isinstance(self.block, RemoteFileSystem):
            return self.block.filesystem, self.block.basepath.rstrip("/")
        return fsspec.filesystem("file"), str(Path(self.block.basepath or ".").resolve())

    def exists(self, name: str) -> bool:
        filesystem, root = self._filesystem()
        return filesystem.exists(posixpath.join(root, self._key(name)))

    def read(self, name: str) -> Optional[bytes]:
        if not self.exists(name):
            return None
        return self.block.read_path(self._key(name))  # type: ignore[return-value]  # sync_compatible: bytes when called sync

    def write(self, name: str, content: bytes) -> None:
        try:
            self.block.write_path(self._key(name), content)
        except OSError as error:
            raise StateStoreError(f"state store for {self.environment!r} is not writable: {error}") from None

    def create(self, name: str, content: bytes) -> bool:
        """Write `name` only if it does not exist yet; False if it does.

        Atomic on a local store (a hard link of a complete file, so a reader never sees a
        partial one). Object stores offer no create-if-absent through fsspec: there it is
        check-then-write, and a caller that needs exclusivity reads back what it wrote.
        """
        filesystem, root = self._filesystem()
        if not isinstance(filesystem, FsspecLocal):
            if self.read(name) is not None:
                return False
            self.write(name, content)
            return True
        path = Path(filesystem._strip_protocol(posixpath.join(root, self._key(name))))
        staging = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging.write_bytes(content)
            try:
                os.link(staging, path)
            except FileExistsError:
                return False
            finally:
                staging.unlink(missing_ok=True)
        except OSError as error:
            raise StateStoreError(f"state store for {self.environment!r} is not writable: {error}") from None
        return True

    def read_json(self, name: str, default=None):
        content = self.read(name)
        return default if content is None else json.loads(content)

    def write_json(self, name: str, value) -> None:
        self.write(name, json.dumps(value, indent=1, sort_keys=True).encode())

    def delete(self, name: str) -> None:
        filesystem, root = self._filesystem()
        path = posixpath.join(root, self._key(name))
        if filesystem.exists(path):
            filesystem.rm(path, recursive=True)

    def list_dir(self, name: str) -> list[str]:
        filesystem, root = self._filesystem()
        path = posixpath.join(root, self._key(name))
        if not filesystem.exists(path):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in filesystem.ls(path, detail=False))

    # --- dbt state ----------------------------------------------------------------
    def has_state(self) -> bool:
        return self.exists("latest/manifest.json")

    def fetch_latest(self, destination: Path, names: tuple[str, ...] = STATE_FILES) -> bool:
        """Copy the latest state files to `destination`, for --state. False if there is no manifest yet.

        dbt reads every state file it finds, so a caller that needs no `result:` selector leaves
        run_results.json out (1 s to load on a 2,000-node project)."""
        destination.mkdir(parents=True, exist_ok=True)
        found = False
        for name in names:
            content = self.read(f"latest/{name}")
            if content is not None:
                (destination / name).write_bytes(content)
                found = found or name == "manifest.json"
        return found

    def stage_run(self, run_id: str, files: dict[str, Path]) -> None:
        """Keep this run's state files under runs/<run_id>; nothing reads them as latest yet."""
        for name, path in files.items():
            self.write(f"runs/{run_id}/{name}", Path(path).read_bytes())

    def promote_run(self, run_id: str, docs_dir: Optional[Path] = None) -> None:
        """Make the staged state of `run_id` latest (and its docs), then drop history beyond `history`."""
        staged = self.list_dir(f"runs/{run_id}")
        if "manifest.json" not in staged:
            raise StateStoreError(f"state store for {self.environment!r} has no staged state of run {run_id}")
        for name in STATE_FILES:
            if name not in staged:
                self.delete(f"latest/{name}")  # never pair this run's manifest with an older run's sources.json
                continue
            content = self.read(f"runs/{run_id}/{name}")
            if content is None:
                raise StateStoreError(f"state store for {self.environment!r}: {name} of run {run_id} vanished")
            self.write(f"latest/{name}", content)
        if docs_dir is not None and docs_dir.exists():
            for page in ("static_index.html", "index.html", "catalog.json"):
                if (docs_dir / page).exists():
                    self.write(f"latest/docs/{page}", (docs_dir / page).read_bytes())
        self.prune_history()

    def prune_history(self) -> None:
        runs = self.list_dir("runs")
        saved = sorted(runs, key=lambda run: self._run_time(run))
        for run in saved[: max(0, len(saved) - self.history)]:
            self.delete(f"runs/{run}")

    def _run_time(self, run: str) -> float:
        filesystem, root = self._filesystem()
        try:
            return filesystem.info(posixpath.join(root, self._key(f"runs/{run}/run_results.json")))["mtime"]
        except (FileNotFoundError, KeyError):
            return 0.0

    def docs_location(self) -> str:
        _, root = self._filesystem()
        return posixpath.join(root, self._key("latest/docs/static_index.html"))

    # --- timing history -------------------------------------------------------------
    def timings(self) -> dict[str, "ModelTimings"]:
        """Each model's last TIMING_HISTORY execution times (and rows), since its code last changed."""
        return {unique_id: ModelTimings.from_json(value)
                for unique_id, value in self.read_json("timings.json", default={}).items()}

    def record_timings(self, samples: dict[str, "TimingSample"]) -> None:
        history = self.timings()
        for unique_id, sample in samples.items():
            history[unique_id] = history.get(unique_id, ModelTimings()).with_sample(sample)
        self.write_json("timings.json", {unique_id: kept.to_json() for unique_id, kept in history.items()})


@dataclass(frozen=True)
class TimingSample:
    """One model's build in one run: how long, which code (dbt's file checksum), how many rows."""

    seconds: float
    checksum: Optional[str] = None
    rows: Optional[int] = None  # what the adapter reports (adapter_response.rows_affected); None if nothing


@dataclass(frozen=True)
class ModelTimings:
    """A model's recent builds, all of the same code: a changed checksum starts a new baseline,
    because a rewritten model taking longer is not a regression of the old one."""

    checksum: Optional[str] = None
    seconds: list[float] = field(default_factory=list)
    rows: list[Optional[int]] = field(default_factory=list)

    @classmethod
    def from_json(cls, value: Any) -> "ModelTimings":
        if isinstance(value, list):  # timings.json before checksums were kept: a bare list of seconds
            return cls(None, [float(v) for v in value], [None] * len(value))
        seconds = [float(v) for v in value.get("seconds", [])]
        rows = list(value.get("rows", []))
        return cls(value.get("checksum"), seconds, (rows + [None] * len(seconds))[: len(seconds)])

    def to_json(self) -> dict:
        return {"checksum": self.checksum, "seconds": self.seconds, "rows": self.rows}

    def with_sample(self, sample: TimingSample) -> "ModelTimings":
        changed = None not in (self.checksum, sample.checksum) and self.checksum != sample.checksum
        seconds, rows = ([], []) if changed else (self.seconds, self.rows)
        return ModelTimings(sample.checksum or self.checksum, (seconds + [round(sample.seconds, 3)])[-TIMING_HISTORY:],
                            (rows + [sample.rows])[-TIMING_HISTORY:])
