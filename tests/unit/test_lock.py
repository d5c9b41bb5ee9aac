"""flows/core/lock.py: the publish lock on an in-memory store (no flow run is ever looked up)."""

from __future__ import annotations

import json
import os

import pytest
from .fakes import MemoryStore

from blocks.host import host_identity, process_start
from flows.core import lock
from flows.core.lock import LOCK, EnvironmentLocked, PublishLock, holder_status


def held_by(store: MemoryStore, **holder) -> None:
    store.write(LOCK, json.dumps({"since": "2024-01-01T00:00:00+00:00", **holder}).encode())


def test_a_free_lock_is_taken_and_released():
    store = MemoryStore()
    with PublishLock(store, "run-a"):  # type: ignore[arg-type]
        holder = json.loads(store.files[LOCK])
        assert holder["run_id"] == "run-a" and holder["pid"] == os.getpid() and holder["host"] == host_identity()
    assert LOCK not in store.files


def test_a_live_process_on_this_host_keeps_the_lock():
    store = MemoryStore()
    held_by(store, run_id="run-b", pid=os.getpid(), host=host_identity(), process_start=process_start(os.getpid()))
    with pytest.raises(EnvironmentLocked, match="locked by flow run run-b .*is alive"):
        PublishLock(store, "run-a").__enter__()  # type: ignore[arg-type]
    assert json.loads(store.files[LOCK])["run_id"] == "run-b"


def test_a_gone_process_loses_the_lock_and_its_run_is_marked_crashed(monkeypatch):
    crashed = []
    monkeypatch.setattr(lock, "_mark_crashed", lambda run_id, message: crashed.append(run_id))
    store = MemoryStore()
    held_by(store, run_id="run-b", pid=os.getpid(), host=host_identity(), process_start="1")  # the pid was reused
    with PublishLock(store, "run-a"):  # type: ignore[arg-type]
        assert json.loads(store.files[LOCK])["run_id"] == "run-a"
    assert crashed == ["run-b"]


def test_an_unreadable_lock_is_taken_over():
    store = MemoryStore()
    store.write(LOCK, b"not json")
    assert PublishLock(store, "run-a").holder()["unreadable"]  # type: ignore[arg-type, index]
    with PublishLock(store, "run-a"):  # type: ignore[arg-type]
        assert json.loads(store.files[LOCK])["run_id"] == "run-a"


def test_a_retry_of_the_same_run_takes_its_own_lock_again():
    store = MemoryStore()
    held_by(store, run_id="run-a", pid=1, host="elsewhere")
    with PublishLock(store, "run-a"):  # type: ignore[arg-type]
        pass
    assert LOCK not in store.files


def test_holder_status_of_another_host_asks_about_its_flow_run():
    assert holder_status({"run_id": "not-a-uuid", "pid": 1, "host": "elsewhere"}) == (False, "not a flow run id", False)
