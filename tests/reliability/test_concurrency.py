"""Two production runs against the same environment at once.

(a) Through a deployment with a concurrency limit of 1, the Prefect server itself keeps the
    second run out: it is cancelled (CANCEL_NEW) or made to wait (ENQUEUE) when it asks to
    start. Checked against the real server's orchestration rules by proposing the states a
    worker proposes (Pending, then Running); no worker is needed.
(b) Without any server-side limit (two `python -m flows.production` processes started
    together), the publish lock in the state store lets exactly one of them build and publish;
    the other stops before any dbt work, naming the holder.
"""

from __future__ import annotations

import re
import uuid

import pytest
from land import land_new_data
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
from prefect.states import Cancelled, Completed, Pending, Running

from flows.production import production_run

from .helpers import (
    copy_home, flow_run_id_of, registry, run_dirs, schemas, snapshot, sql, start_production, statuses, view_targets,
)


def _deployment(client, strategy: ConcurrencyLimitStrategy):
    flow_id = client.create_flow(production_run)
    return client.create_deployment(
        flow_id=flow_id, name=f"reliability-{strategy.value.lower()}-{uuid.uuid4().hex[:6]}",
        entrypoint="flows/production.py:production_run", parameters={"environment": "local"},
        concurrency_limit=1, concurrency_options=ConcurrencyOptions(collision_strategy=strategy),
    )


def _start(client, flow_run_id):
    """What a worker does: propose Pending (the server secures a concurrency slot here), then Running."""
    pending = client.set_flow_run_state(flow_run_id, Pending())
    if pending.state.type.value != "PENDING":
        return pending
    return client.set_flow_run_state(flow_run_id, Running())


@pytest.mark.parametrize("strategy", [ConcurrencyLimitStrategy.CANCEL_NEW, ConcurrencyLimitStrategy.ENQUEUE])
def test_deployment_concurrency_limit_keeps_the_second_run_out(prefect_server, strategy):
    with get_client(sync_client=True) as client:
        deployment_id = _deployment(client, strategy)
        first = client.create_flow_run_from_deployment(deployment_id)
        second = client.create_flow_run_from_deployment(deployment_id)

        assert _start(client, first.id).state.is_running()
        refused = _start(client, second.id)
        assert refused.status.value == "REJECT" and "Deployment concurrency limit reached" in str(refused.details)
        state = client.read_flow_run(second.id).state
        if strategy is ConcurrencyLimitStrategy.CANCEL_NEW:
            assert state.is_cancelled() and state.message == "Deployment concurrency limit reached."
        else:
            assert state.is_scheduled() and state.name == "AwaitingConcurrencySlot"

        client.set_flow_run_state(first.id, Completed())  # the first run ends: its slot is released
        if strategy is ConcurrencyLimitStrategy.ENQUEUE:
            # The slot is free: the queued run's Pending is accepted (Running then waits for the
            # time AwaitingConcurrencySlot rescheduled it to).
            pending = client.set_flow_run_state(second.id, Pending())
            assert pending.status.value == "ACCEPT" and pending.state.type.value == "PENDING", pending
            client.set_flow_run_state(second.id, Cancelled(), force=True)
        else:
            assert client.read_flow_run(second.id).state.is_cancelled()  # a cancelled run stays cancelled
        client.delete_deployment(deployment_id)


@pytest.mark.slow
def test_publish_lock_lets_exactly_one_of_two_simultaneous_runs_publish(tmp_path, published_template, monkeypatch):
    home = copy_home(published_template, tmp_path / "home")
    monkeypatch.setenv("LAKEHOUSE_HOME", str(home))
    land_new_data(home / "warehouse.duckdb", "orders", rows=10)
    before, versions_before = snapshot(home), statuses(home)
    earlier = set(run_dirs(home))
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    processes = [start_production(home, log) for log in logs]
    codes = [p.wait(timeout=900) for p in processes]
    outputs = [log.read_text() for log in logs]
    assert sorted(codes) == [0, 1], [o[-2000:] for o in outputs]
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    winner_id = flow_run_id_of(home, logs[winner])
    assert winner_id and "production_run: Completed" in outputs[winner]
    match = re.search(r"environment 'local' is locked by flow run (\S+) \(since [^,]+, pid (\d+) on [^)]+\): "
                      r"its process \d+ on this host is alive; this run will not build or publish over it",
                      outputs[loser])
    assert match, outputs[loser][-3000:]
    assert match.group(1) == winner_id and int(match.group(2)) == processes[winner].pid

    loser_id = flow_run_id_of(home, logs[loser])
    loser_dir = next(d for d in run_dirs(home) if d not in earlier and d.name == loser_id)
    assert not (loser_dir / "target" / "run_results.json").exists() and not list(loser_dir.glob("steps/*"))
    new_versions = {v: s for v, s in statuses(home).items() if v not in versions_before}
    assert list(new_versions.values()) == ["published"], new_versions  # only the winner's version exists
    assert registry(home)["live"] in new_versions
    assert {s for s in schemas(home) if s.startswith("main__")} >= {f"main__{registry(home)['live']}"}
    assert sql(home, "select count(*) from main.fct_orders")[0][0] == \
        before["live"]["main.fct_orders"][1] + 10  # (kind, rows, hash, view SQL)
    assert all(registry(home)["live"] in text or text == before["views"].get(view)
               for view, text in view_targets(home).items())
    assert not (home / "state" / "local" / "publish.lock").exists()
