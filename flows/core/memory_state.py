"""dbt's `--state` / `--defer-state` manifests, each read at most once per process.

dbt reads the state's manifest.json in every command given `--state` or `--defer-state`
(dbt.contracts.state.PreviousState): JSON, validation and `Manifest.from_writable_manifest`, about
2 s at 2,000 nodes. A blue-green run defers every build and its docs to live, whose manifest it
parsed itself: it wrote that file and read it back in each of its dbt commands. Slim CI read the
base state once to select `state:modified` and again in its build.

Here PreviousState's manifest comes from:
- a manifest this process holds, for a directory registered with `state_dir()` (it has no
  manifest.json: nothing is written or read);
- else the last read of the same manifest.json file (same path, inode, size and mtime), which
  dbt only ever reads (state selectors compare with it, deferral copies relation names from it);
- else the file, as dbt reads it.
run_results.json and sources.json are read as dbt reads them, every time: they are small.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

_REGISTERED: dict[Path, Any] = {}  # state dir (resolved) → dbt Manifest held by this process
_READ: "OrderedDict[tuple, Any]" = OrderedDict()  # (manifest.json path, inode, size, mtime) → Manifest
_READ_KEPT = 2  # manifests of 2,000 nodes are ~100 MB each: keep only the latest few
_LOCK = threading.Lock()


def state_dir(directory: Path, manifest: Any) -> Path:
    """`directory`, holding no manifest.json, as a state that this process's dbt commands read from
    `manifest`. Registering again replaces the manifest (a project parsed again)."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").unlink(missing_ok=True)  # memory is the state: no stale file beside it
    install()
    with _LOCK:
        _REGISTERED[directory] = manifest
    return directory


def install() -> None:
    """Make dbt's PreviousState take its manifest from here (idempotent)."""
    from dbt.contracts.state import PreviousState

    if getattr(PreviousState.__init__, "reads_once", False):
        return
    PreviousState.__init__ = _previous_state_init  # type: ignore[method-assign]


def _previous_state_init(self: Any, state_path: Path, target_path: Path, project_root: Path) -> None:
    """dbt 1.10/1.11's PreviousState.__init__, with the manifest from `_manifest_at`."""
    from dbt.contracts.state import load_result_state
    from dbt.events.types import WarnStateTargetEqual
    from dbt_common.events.functions import fire_event

    self.state_path, self.target_path, self.project_root = Path(state_path), Path(target_path), Path(project_root)
    self.manifest = self.results = self.sources = self.sources_current = None
    if self.state_path == self.target_path:
        fire_event(WarnStateTargetEqual(state_path=str(self.state_path)))
    state = self.project_root / self.state_path  # as dbt: an absolute state_path ignores project_root
    self.manifest = _manifest_at(state)
    self.results = load_result_state(state / "run_results.json")
    self.sources = _freshness(state / "sources.json")
    self.sources_current = _freshness(self.project_root / self.target_path / "sources.json")


_previous_state_init.reads_once = True  # type: ignore[attr-defined]


def _manifest_at(state: Path) -> Optional[Any]:
    with _LOCK:
        registered = _REGISTERED.get(state.resolve())
    if registered is not None:
        return registered
    path = state / "manifest.json"
    if not path.is_file():
        return None
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        if key in _READ:
            _READ.move_to_end(key)
            return _READ[key]
    manifest = _read_manifest(path)
    with _LOCK:
        _READ[key] = manifest
        while len(_READ) > _READ_KEPT:
            _READ.popitem(last=False)
    return manifest


def _read_manifest(path: Path) -> Any:
    from dbt.artifacts.exceptions import IncompatibleSchemaError
    from dbt.artifacts.schemas.manifest import WritableManifest
    from dbt.contracts.graph.manifest import Manifest

    try:
        return Manifest.from_writable_manifest(WritableManifest.read_and_check_versions(str(path)))
    except IncompatibleSchemaError as exc:
        exc.add_filename(str(path))
        raise


def _freshness(path: Path) -> Optional[Any]:
    from dbt.artifacts.exceptions import IncompatibleSchemaError
    from dbt.artifacts.schemas.freshness import FreshnessExecutionResultArtifact

    if not path.is_file():
        return None
    try:
        return FreshnessExecutionResultArtifact.read_and_check_versions(str(path))
    except IncompatibleSchemaError as exc:
        exc.add_filename(str(path))
        raise
