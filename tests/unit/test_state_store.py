"""flows/core/state_store.py on a local filesystem block in a temp dir (no Prefect API involved)."""

from __future__ import annotations

import os

import pytest
from prefect.filesystems import LocalFileSystem

from flows.core.state_store import (
    STATE_FILES, TIMING_HISTORY, ModelTimings, StateStore, StateStoreError, TimingSample,
)


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(LocalFileSystem(basepath=str(tmp_path / "state")), "unit", history=2)


def test_read_write_delete_and_json(store):
    assert store.read("a.json") is None and not store.exists("a.json")
    store.write_json("a.json", {"b": 1})
    assert store.exists("a.json") and store.read_json("a.json") == {"b": 1}
    assert store.read_json("missing.json", default=[]) == []
    store.delete("a.json")
    assert store.read("a.json") is None


def test_create_writes_only_once(store):
    assert store.create("publish.lock", b"first")
    assert not store.create("publish.lock", b"second")
    assert store.read("publish.lock") == b"first"
    assert store.list_dir("") == ["publish.lock"]  # no staging file left behind


def test_a_staged_run_becomes_latest_only_when_promoted(store, tmp_path):
    files = {}
    for name in ("manifest.json", "run_results.json"):
        files[name] = tmp_path / name
        files[name].write_text(f'{{"{name}": 1}}')
    store.write("latest/sources.json", b"{}")  # an older run's
    store.stage_run("r1", files)
    assert not store.has_state()
    store.promote_run("r1")
    assert store.has_state() and store.read_json("latest/manifest.json") == {"manifest.json": 1}
    assert store.read("latest/sources.json") is None  # never paired with another run's sources.json
    destination = tmp_path / "fetched"
    assert store.fetch_latest(destination)
    assert sorted(p.name for p in destination.iterdir()) == ["manifest.json", "run_results.json"]
    assert set(STATE_FILES) >= {"manifest.json", "sources.json"}


def test_promoting_a_run_that_staged_no_manifest_fails(store):
    with pytest.raises(StateStoreError, match="no staged state of run r9"):
        store.promote_run("r9")


def test_history_keeps_the_newest_runs(store, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    for index, run in enumerate(["r1", "r2", "r3"]):
        store.stage_run(run, {"manifest.json": manifest, "run_results.json": manifest})
        path = os.path.join(store.block.basepath, "unit", "runs", run, "run_results.json")
        os.utime(path, (1000 + index, 1000 + index))
    store.prune_history()
    assert store.list_dir("runs") == ["r2", "r3"]


def test_timings_keep_the_last_runs_per_node(store):
    for seconds in range(TIMING_HISTORY + 2):
        store.record_timings({"model.s.a": TimingSample(seconds + 0.00049, "c1", rows=seconds)})
    kept = store.timings()["model.s.a"]
    assert kept.seconds == [float(s) for s in range(2, TIMING_HISTORY + 2)]
    assert kept.rows == list(range(2, TIMING_HISTORY + 2)) and kept.checksum == "c1"


def test_a_changed_checksum_starts_a_new_baseline(store):
    for seconds in (1.0, 1.0, 1.0):
        store.record_timings({"model.s.a": TimingSample(seconds, "old")})
    store.record_timings({"model.s.a": TimingSample(9.0, "new", rows=None)})
    assert store.timings()["model.s.a"] == ModelTimings("new", [9.0], [None])


def test_timings_saved_before_checksums_read_as_history_of_unknown_code(store):
    store.write_json("timings.json", {"model.s.a": [1.0, 2.0]})
    assert store.timings()["model.s.a"] == ModelTimings(None, [1.0, 2.0], [None, None])
    store.record_timings({"model.s.a": TimingSample(3.0, "c1", 7)})  # unknown code: kept, adopts the checksum
    assert store.timings()["model.s.a"] == ModelTimings("c1", [1.0, 2.0, 3.0], [None, None, 7])


def test_an_unwritable_store_says_so(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = StateStore(LocalFileSystem(basepath=str(blocker)), "unit")
    with pytest.raises(StateStoreError, match="not writable"):
        store.write("x.json", b"{}")
