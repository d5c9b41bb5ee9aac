"""Alerts as code: applied idempotently, and each alert reaches Slack ONCE for a real flow run.

A local HTTP receiver stands in for Slack. The failing run is the real `adhoc-prod`
deployment asked to run without `confirm_prod`, executed by a real process worker
(`prefect worker start --run-once`) that clones a throw-away git copy of this
checkout through the deployment's own pull steps. The late run is a real `production-prod`
run no worker picks up; the lost run is a flow process killed after its first heartbeat.
The two proactive automations (late, lost) are applied as shipped but for their wait.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import textwrap
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import read_all, saved_block, saved_variable
from deployments import automations
from reliability.helpers import wait_for
from test_deployments import REPO, deploy, read_deployment

MESSAGE_TIMEOUT = 120  # s, for the first message; the proactive ones come a window after their cause
DUPLICATE_GRACE = 3  # s: a duplicate would arrive right behind the first message
# The wait of the late and lost automations in these tests instead of 30 min and 180 s. Prefect's
# floor for a proactive trigger is 10 s; a little more, for minutes are converted through a float.
SHORT_WINDOW_SECONDS = 12


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
    with saved_block(SlackWebhook(url=url), automations.load().slack_webhook_block):
        yield received


@pytest.fixture
def branch_variable(prefect_server):
    """The deployments' pull steps clone the branch the variable lakehouse_branch names (read when a
    run starts): `main`, the git_checkout's branch, while the test runs."""
    with saved_variable("lakehouse_branch", "main"):
        yield


def the_one_slack_message_naming(received: list[str], needle: str) -> str:
    """The Slack message naming `needle`, which must be the only one: waits for it, then a little
    longer so that a duplicate sent right behind it is counted too."""
    wait_for(lambda: any(needle in body for body in received), timeout=MESSAGE_TIMEOUT,
             what=f"a Slack message naming {needle}", interval=1)
    time.sleep(DUPLICATE_GRACE)
    mine = [body for body in received if needle in body]
    assert len(mine) == 1, mine
    return mine[0]


@contextmanager
def shipped_automations_with_window(seconds: float):
    """The automations of deployments/automations.yaml, loaded and applied by the product's own code,
    with only the wait of the proactive ones (late, lost) cut to `seconds`; on exit the shipped ones
    are applied again, so that later tests on this server meet what production has."""
    shipped = automations.load()
    window = {"run-late": {"late_for_minutes": seconds / 60}, "run-lost": {"no_heartbeat_for_seconds": seconds}}
    # model_copy does not validate: the file's floors (1 minute, 60 s) keep production from
    # alerting on noise; they are not needed to see the automations fire.
    shortened = shipped.model_copy(update={"automations": [
        alert.model_copy(update=window.get(alert.when, {})) for alert in shipped.automations]})
    automations.apply(shortened)
    try:
        yield shortened
    finally:
        automations.apply(shipped)


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


def _automations_by_name(names) -> dict[str, int]:
    """How many automations on the server carry each of `names` (every page of them)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import AutomationFilter, AutomationFilterName

    names = list(names)
    with get_client(sync_client=True) as client:
        found = [a.name for a in read_all(client.read_automations,
                                          automations=AutomationFilter(name=AutomationFilterName(any_=names)))]
    return {name: found.count(name) for name in names}


def test_failing_run_posts_exactly_one_slack_message(slack_block, branch_variable, git_checkout, lakehouse_home):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    config = automations.load()
    first = automations.apply(config)
    assert automations.apply(config) == {a.name: "unchanged" for a in config.automations}
    assert set(first.values()) <= {"created", "updated", "unchanged"}
    counts = _automations_by_name(a.name for a in config.automations)
    assert all(count == 1 for count in counts.values()), counts

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

    message = the_one_slack_message_naming(slack_block, flow_run.name)
    assert "adhoc-prod" in message and "Failed" in message and "confirm_prod=True" in message
    assert f"/runs/flow-run/{flow_run.id}" in message

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
    alert = the_one_slack_message_naming(slack_block, timed_out.name)
    assert "TimedOut" in alert and "exceeded timeout" in alert and "adhoc-prod" in alert


def test_a_production_run_no_worker_picks_up_posts_exactly_one_late_alert(slack_block):
    import datetime as dt

    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    deploy("production-prod")
    deployment = read_deployment("production-prod")
    with shipped_automations_with_window(SHORT_WINDOW_SECONDS), get_client(sync_client=True) as client:
        # Due a while ago, and no worker polls the pool during this test: the server's late-runs
        # service marks it Late (runs past due by PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS,
        # 15 s by default, every 5 s), and then nothing picks it up.
        late = client.create_flow_run_from_deployment(deployment.id, state=Scheduled(
            scheduled_time=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)))
        try:
            message = the_one_slack_message_naming(slack_block, late.name)
            assert client.read_flow_run(late.id).state.name == "Late"
        finally:
            client.delete_flow_run(late.id)  # never to be picked up by a later test's worker
    assert "production-prod" in message and "has not started" in message, message
    assert "lakehouse-process" in message and f"/runs/flow-run/{late.id}" in message, message


# A lakehouse flow run whose host is lost: a plain process, with no worker or runner that would
# notice it exit and report the crash itself. It says which flow run it is, then waits to be killed.
FLOW_UNTIL_KILLED = textwrap.dedent("""
    import time
    from prefect import flow, runtime, tags

    @flow(name="lakehouse-until-killed")
    def until_killed():
        print(f"flow-run-id={runtime.flow_run.id}", flush=True)
        time.sleep(3600)

    with tags("lakehouse"):  # as a lakehouse deployment's runs are tagged (prefect.yaml)
        until_killed()
""")


def heartbeats_of(flow_run_id: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    with get_client(sync_client=True) as client:
        return client.read_events(EventFilter(
            event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"])), limit=1).total


def test_a_killed_run_is_marked_crashed_for_its_missing_heartbeats_and_one_crash_alert_is_posted(
        slack_block, tmp_path):
    from prefect.client.orchestration import get_client

    pool = yaml.safe_load((REPO / "prefect.yaml").read_text())["definitions"]["work_pools"]["lakehouse"]
    frequency = pool["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]  # as the pool's runs beat
    log = tmp_path / "until-killed.log"
    with shipped_automations_with_window(SHORT_WINDOW_SECONDS), log.open("w") as errors:
        process = subprocess.Popen([sys.executable, "-c", FLOW_UNTIL_KILLED],
                                   env={**os.environ, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": frequency},
                                   stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            line = process.stdout.readline()
            assert line.startswith("flow-run-id="), f"{line!r}\n{log.read_text()[-3000:]}"
            flow_run_id = line.strip().removeprefix("flow-run-id=")
            # The first heartbeat is sent as the flow starts; once the server has it, the
            # automation's clock for this run is running.
            wait_for(lambda: heartbeats_of(flow_run_id), timeout=MESSAGE_TIMEOUT, what="the first heartbeat",
                     process=process, log=log, interval=0.5)
        finally:
            process.kill()  # SIGKILL: no engine hook, no final state, no last word
            process.wait()
            process.stdout.close()
        with get_client(sync_client=True) as client:
            crashed = wait_for(lambda: (run := client.read_flow_run(flow_run_id)).state.is_crashed() and run,
                               timeout=MESSAGE_TIMEOUT, what="the automation to mark the run Crashed", interval=1)
        # The automation's own message: it, not a worker or the engine, marked the run Crashed.
        assert crashed.state.message.startswith(f"No heartbeat for {SHORT_WINDOW_SECONDS} s"), crashed.state
        message = the_one_slack_message_naming(slack_block, crashed.name)
    assert "Crashed" in message and "No heartbeat for" in message, message
