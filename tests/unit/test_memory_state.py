"""dbt's --state manifests read once per process (flows/core/memory_state.py), with dbt's own PreviousState."""

from __future__ import annotations

import os
from argparse import Namespace

from dbt.contracts.graph.manifest import Manifest
from dbt.contracts.state import PreviousState
from dbt.flags import set_from_args
from dbt.parser.manifest import write_manifest

from flows.core import memory_state


def test_a_registered_state_dir_is_read_from_memory_and_holds_no_manifest_file(tmp_path):
    manifest = Manifest()
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "manifest.json").write_text("{stale")  # never read: memory is the state
    state = memory_state.state_dir(tmp_path / "state", manifest)
    assert not (state / "manifest.json").exists()
    assert PreviousState(state, tmp_path / "target", tmp_path).manifest is manifest
    # relative to the project root, as dbt resolves --state
    assert PreviousState(state.relative_to(tmp_path), tmp_path / "target", tmp_path).manifest is manifest
    replaced = Manifest()
    memory_state.state_dir(state, replaced)
    assert PreviousState(state, tmp_path / "target", tmp_path).manifest is replaced


def test_a_manifest_file_is_read_once_until_it_changes(tmp_path):
    memory_state.install()
    set_from_args(Namespace(SEND_ANONYMOUS_USAGE_STATS=False), None)  # what writing a manifest asks of dbt's flags
    write_manifest(Manifest(), str(tmp_path))
    first = PreviousState(tmp_path, tmp_path / "target", tmp_path)
    assert first.manifest is not None and first.results is None and first.sources is None
    assert PreviousState(tmp_path, tmp_path / "target", tmp_path).manifest is first.manifest
    stat = (tmp_path / "manifest.json").stat()
    os.utime(tmp_path / "manifest.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert PreviousState(tmp_path, tmp_path / "target", tmp_path).manifest is not first.manifest


def test_a_state_dir_without_a_manifest_has_none(tmp_path):
    memory_state.install()
    assert PreviousState(tmp_path, tmp_path / "target", tmp_path).manifest is None
