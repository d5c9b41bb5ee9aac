"""Alerts as code: applied idempotently, and a real failing deployment run posts ONE Slack message.

A local HTTP receiver stands in for Slack. The failing run is the real `adhoc-prod`
deployment asked to run without `confirm_prod`, executed by a real process worker
(`prefect worker start --run-once`) that clones a throw-away git copy of this
checkout through the deployment's own pull steps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from deployments import automations
from test_deployments import REPO, deploy

MESSAGE_TIMEOUT = 60


@pytest.fixture
def slack_receiver():
    """A stand-in for Slack's incoming webhook: records every POST body."""
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def slack_block(prefect_server, slack_receiver):
    from prefect_slack import SlackWebhook

    url, received = slack_receiver
    name = automations.load().slack_webhook_block
    SlackWebhook(url=url).save(name, overwrite=True)
    return received


@pytest.fixture
def git_checkout(tmp_path, monkeypatch) -> Path:
    """A git repository holding this checkout's files (committed or not), for the pull steps to clone."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    repo = tmp_path / "lakehouse.git"
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot for the automation test"], cwd=repo, check=True)
    monkeypatch.setenv("LAKEHOUSE_REPO_URL", f"file://{repo}")
    return repo


def test_the_file_rejects_unknown_keys_and_bad_references(tmp_path):
    config = yaml.safe_load(automations.DEFAULT_FILE.read_text())
    config["automations"][0]["tgas"] = ["x"]
    path = tmp_path / "automations.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(automations.AutomationsConfigError, match=r"automations\.0\.run-ended\.tgas: unknown key"):
        automations.load(path)
    config["automations"][0].pop("tgas")
    config["automations"][0]["message"] = "no_such_message"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(automations.AutomationsConfigError, match="uses message 'no_such_message'"):
        automations.load(path)


def test_alerts_cover_the_deployments_in_prefect_yaml():
    config = automations.load()
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    names = {d["name"] for d in deployments}
    for alert in config.automations:
        assert set(alert.match.deployments) <= names, f"{alert.name} names a deployment prefect.yaml lacks"
        for tag in alert.match.tags:
            assert all(tag in d.get("tags", []) for d in deployments), f"not every deployment is tagged {tag!r}"


def test_the_late_alert_waits_30_minutes_per_flow_run_for_a_worker():
    (late,) = [a for a in automations.load().automations if a.when == "run-late"]
    trigger = late.trigger()
    assert trigger.posture == "Proactive"
    assert trigger.after == {"prefect.flow-run.Late"}
    assert "prefect.flow-run.Running" in trigger.expect
    assert trigger.within.total_seconds() == 1800
    assert trigger.for_each == {"prefect.resource.id"}
    assert set(late.match.deployments) == {"production-prod", "production-staging"}


def test_a_run_without_heartbeats_is_marked_crashed_so_the_crash_alert_reports_it():
    (lost,) = [a for a in automations.load().automations if a.when == "run-lost"]
    trigger = lost.trigger()
    assert trigger.posture == "Proactive" and trigger.for_each == {"prefect.resource.id"}
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Crashed"} <= trigger.expect
    (action,) = lost.actions(automations.load(), block_id=None)
    assert action.type == "change-flow-run-state" and action.state == "CRASHED"
    (crash_alert,) = [a for a in automations.load().automations if a.when == "run-ended"]
    assert "Crashed" in crash_alert.states and crash_alert.match == lost.match
    # the pool's runs send the heartbeats the trigger waits for, often enough for its window
    pool = yaml.safe_load((REPO / "prefect.yaml").read_text())["definitions"]["work_pools"]["lakehouse"]
    frequency = int(pool["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
    assert trigger.within.total_seconds() >= 3 * frequency


def test_apply_without_the_slack_block_says_how_to_create_it(prefect_server, tmp_path):
    config = yaml.safe_load(automations.DEFAULT_FILE.read_text())
    config["slack_webhook_block"] = "no-such-block"
    path = tmp_path / "automations.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "deployments.automations", "apply", "--file", str(path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "no Slack Incoming Webhook block named 'no-such-block'" in result.stderr


def _automations_by_name() -> dict[str, int]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        names = [a.name for a in client.read_automations()]
    return {name: names.count(name) for name in names}


def test_failing_run_posts_exactly_one_slack_message(slack_block, git_checkout, lakehouse_home):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.variables import Variable

    config = automations.load()
    first = automations.apply(config)
    assert automations.apply(config) == {a.name: "unchanged" for a in config.automations}
    assert set(first.values()) <= {"created", "updated", "unchanged"}
    counts = _automations_by_name()
    assert all(counts[a.name] == 1 for a in config.automations), counts

    Variable.set("lakehouse_branch", "main", overwrite=True)
    deploy("adhoc-prod")
    # A real deployment whose parameters make it fail before any dbt work: prod without confirm_prod.
    # The run goes to a queue of its own, the only one the worker polls: the pool's default queue
    # also gets the nightly deployments' scheduled runs (deployed by other test files), which a
    # worker on it would pick first around 01:00 and 02:00 Europe/Amsterdam.
    queue = f"automation-test-{uuid.uuid4().hex[:8]}"
    flow_run = run_deployment("adhoc-dbt/adhoc-prod", parameters={"command": "ls"}, timeout=0,
                              work_queue_name=queue)
    try:
        worker = subprocess.run(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "lakehouse-process", "--work-queue", queue,
             "--run-once", "--limit", "1", "--name", f"test-worker-{flow_run.id}"],
            env=dict(os.environ), capture_output=True, text=True, timeout=180,
        )
    finally:
        with get_client(sync_client=True) as client:
            client.delete_work_queue_by_id(client.read_work_queue_by_name(queue, "lakehouse-process").id)
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert flow_run.work_queue_name == queue
    assert state.is_failed(), f"{state!r}\n{worker.stdout[-3000:]}\n{worker.stderr[-3000:]}"
    assert "confirm_prod=True" in state.message

    deadline = time.monotonic() + MESSAGE_TIMEOUT
    mine = []
    while time.monotonic() < deadline and not mine:
        time.sleep(1)
        mine = [body for body in slack_block if flow_run.name in body]
    assert mine, f"no Slack message for {flow_run.name} within {MESSAGE_TIMEOUT}s; received: {slack_block}"
    time.sleep(3)  # a duplicate would arrive right behind the first
    mine = [body for body in slack_block if flow_run.name in body]
    assert len(mine) == 1, mine
    assert "adhoc-prod" in mine[0] and "Failed" in mine[0] and "confirm_prod=True" in mine[0]
    assert f"/runs/flow-run/{flow_run.id}" in mine[0]

    # A run that timed out reaches on-call too: the engine ends a flow past its timeout in a Failed
    # state named TimedOut, whose event (prefect.flow-run.TimedOut) the same automation expects.
    # The run is scheduled a day ahead, so no worker picks it before its state is set.
    import datetime as dt

    from prefect.states import Failed, Scheduled

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("adhoc-dbt/adhoc-prod")
        timed_out = client.create_flow_run_from_deployment(
            deployment.id, parameters={"command": "ls"},
            state=Scheduled(scheduled_time=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)))
        client.set_flow_run_state(timed_out.id, Failed(name="TimedOut", message="Flow run exceeded timeout of 1.0 second(s)"),
                                  force=True)
    deadline = time.monotonic() + MESSAGE_TIMEOUT
    alerts = []
    while time.monotonic() < deadline and not alerts:
        time.sleep(1)
        alerts = [body for body in slack_block if timed_out.name in body]
    assert alerts, f"no Slack message for the timed-out run {timed_out.name}; received: {slack_block}"
    assert "TimedOut" in alerts[0] and "exceeded timeout" in alerts[0] and "adhoc-prod" in alerts[0]
