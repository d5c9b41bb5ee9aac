"""A lock in the environment's state store, so two runs never publish over each other.

A deployment's concurrency limit already keeps scheduled runs apart; this covers
local calls and runs from different deployments. A lock whose holder is no longer
running (crashed, killed, finished) is taken over.

Whether the holder still runs is decided, in order:
1. by its process, when it ran on this host (same hostname, boot and PID namespace): a
   SIGKILLed or OOM-killed run never reports a final state, so the API keeps calling it
   Running forever; a process that is gone (or whose PID now belongs to a newer process)
   settles it. Its flow run is then marked Crashed, so the UI stops showing it as running.
2. otherwise by the holder's flow run state in the API. When the API cannot be asked,
   the lock is NOT taken over: a second run must never publish because of an outage.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone
from typing import Optional

from blocks.host import host_identity, process_gone, process_start
from flows.core.state_store import StateStore
from flows.errors import RunFailure

LOCK = "publish.lock"


class EnvironmentLocked(RunFailure):
    """Another run holds the environment's publish lock: this one did nothing."""


def _flow_run_state(flow_run_id: str):
    """(is_running, detail). Unknown flow runs are not running; an unreachable API counts as running."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        UUID(flow_run_id)
    except ValueError:
        return False, "not a flow run id"
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
    except ObjectNotFound:
        return False, "its flow run no longer exists"
    except Exception as error:  # noqa: BLE001 - cannot check: keep the lock (fail safe)
        return True, f"its state could not be read ({type(error).__name__}), so it is assumed to be running"
    if state is None or state.is_final():
        return False, f"its flow run is {state.name if state else 'without state'}"
    return True, f"its flow run is {state.name}"


def _mark_crashed(flow_run_id: str, message: str) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
            if state is not None and not state.is_final():
                client.set_flow_run_state(UUID(flow_run_id), Crashed(message=message), force=True)
    except Exception:  # noqa: BLE001 - bookkeeping only; the lock decision is already made
        pass


def holder_status(holder: dict) -> tuple[bool, str, bool]:
    """(still running, why, its process is known to be gone) for the run recorded in a lock."""
    pid, started = holder.get("pid"), holder.get("process_start")
    if pid and started and holder.get("host") == host_identity():
        if process_gone(int(pid), started):
            return False, f"its process {pid} on this host is gone", True
        return True, f"its process {pid} on this host is alive", False
    return (*_flow_run_state(str(holder.get("run_id", ""))), False)


class PublishLock:
    def __init__(self, store: StateStore, run_id: str):
        self.store = store
        self.run_id = run_id

    def holder(self) -> Optional[dict]:
        content = self.store.read(LOCK)
        if content is None:
            return None
        try:
            holder = json.loads(content)
        except ValueError:
            holder = None
        return holder if isinstance(holder, dict) and "run_id" in holder else {"run_id": "?", "since": "?", "unreadable": True}

    def _record(self) -> bytes:
        pid = os.getpid()
        return json.dumps({
            "run_id": self.run_id, "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "pid": pid, "host": host_identity(), "hostname": socket.gethostname(), "process_start": process_start(pid),
        }).encode()

    def _describe(self, holder: dict) -> str:
        where = f", pid {holder['pid']} on {holder.get('hostname', '?')}" if holder.get("pid") else ""
        return f"flow run {holder['run_id']} (since {holder.get('since', '?')}{where})"

    def __enter__(self) -> "PublishLock":
        from prefect.logging import get_logger

        if self.store.create(LOCK, self._record()):
            return self._verified()
        holder = self.holder()
        if holder and holder["run_id"] != self.run_id:
            running, why, gone = (False, "the lock file is unreadable", False) if holder.get("unreadable") \
                else holder_status(holder)
            if running:
                raise EnvironmentLocked(
                    f"environment {self.store.environment!r} is locked by {self._describe(holder)}: {why}; "
                    "this run will not build or publish over it"
                )
            get_logger("lakehouse.lock").warning(
                "Taking over the publish lock of %s: %s.", self._describe(holder), why)
            if gone:
                _mark_crashed(holder["run_id"], f"Its process {holder.get('pid')} on {holder.get('hostname')} "
                                                f"is gone; flow run {self.run_id} took over its publish lock.")
        # Our own lock (a flow retry of this run) or a stale one: overwrite, then check nobody else did.
        self.store.write(LOCK, self._record())
        return self._verified()

    def _verified(self) -> "PublishLock":
        time.sleep(0.05)  # two runs that both took over a stale lock: the last writer wins, the other backs off
        holder = self.holder()
        if not holder or holder["run_id"] != self.run_id:
            raise EnvironmentLocked(
                f"environment {self.store.environment!r} was locked by "
                f"{self._describe(holder) if holder else 'another run'} just now; this run backs off"
            )
        return self

    def __exit__(self, *exc) -> None:
        holder = self.holder()
        if holder and holder["run_id"] == self.run_id:
            self.store.delete(LOCK)
