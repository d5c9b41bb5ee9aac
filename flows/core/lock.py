"""A lock in the environment's state store, so two runs never publish over each other.

A deployment's concurrency limit already keeps scheduled runs apart; this covers
local calls and runs from different deployments. A lock whose holder is no longer
running (crashed, killed, finished) is taken over.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Optional

from flows.core.state_store import StateStore

LOCK = "publish.lock"


class EnvironmentLocked(RuntimeError):
    pass


def _holder_is_running(flow_run_id: str) -> bool:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    try:
        UUID(flow_run_id)
    except ValueError:
        return False
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
    except Exception:  # the holder's run is gone from the API: nothing holds the lock any more
        return False
    return state is not None and not state.is_final()


class PublishLock:
    def __init__(self, store: StateStore, run_id: str):
        self.store = store
        self.run_id = run_id

    def holder(self) -> Optional[dict]:
        content = self.store.read(LOCK)
        return json.loads(content) if content else None

    def __enter__(self) -> "PublishLock":
        holder = self.holder()
        if holder and holder["run_id"] != self.run_id and _holder_is_running(holder["run_id"]):
            raise EnvironmentLocked(
                f"environment {self.store.environment!r} is locked by flow run {holder['run_id']} "
                f"(since {holder['since']}); this run will not build or publish over it"
            )
        self.store.write(LOCK, json.dumps(
            {"run_id": self.run_id, "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        ).encode())
        time.sleep(0.05)  # two runs that both saw no holder: the last writer wins, the other backs off
        holder = self.holder()
        if not holder or holder["run_id"] != self.run_id:
            raise EnvironmentLocked(f"environment {self.store.environment!r} was locked by another run just now")
        return self

    def __exit__(self, *exc) -> None:
        holder = self.holder()
        if holder and holder["run_id"] == self.run_id:
            self.store.delete(LOCK)
