"""Slack alerts of the lakehouse flows as code, from deployments/automations.yaml.

    python -m deployments.automations apply [--file F]   create or update, matched by name
    python -m deployments.automations show  [--file F]   print the automations as Prefect JSON

Two kinds of alert:
- `run-ended`: a flow run of a matching deployment enters one of `states` (Failed, Crashed, TimedOut);
- `run-late`: a matching flow run went Late and no worker picked it up within `late_for_minutes`
  (a proactive trigger: it fires on the *absence* of Pending/Running/Cancelled after Late).
Deployments match by name or by tag. Unknown keys in the file are errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_FILE = Path(__file__).with_name("automations.yaml")
SLACK_BLOCK_TYPE = "slack-incoming-webhook"  # prefect-slack's SlackWebhook
MANAGED_TAG = "managed-by:deployments/automations"
# After Late, any of these means a worker took the run or someone cancelled it: no alert.
PICKED_UP = {"prefect.flow-run.Pending", "prefect.flow-run.Running",
             "prefect.flow-run.Cancelling", "prefect.flow-run.Cancelled"}


class AutomationsConfigError(ValueError):
    pass


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(Strict):
    subject: str
    body: str


class Match(Strict):
    deployments: list[str] = Field([], description="Deployment names (without the flow name).")
    tags: list[str] = Field([], description="Flow-run tags; flow runs inherit their deployment's tags.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Match":
        if bool(self.deployments) == bool(self.tags):
            raise ValueError("match needs exactly one of `deployments` or `tags`, non-empty")
        return self

    def related(self) -> dict:
        if self.deployments:
            return {"prefect.resource.role": "deployment", "prefect.resource.name": self.deployments}
        return {"prefect.resource.role": "tag", "prefect.resource.id": [f"prefect.tag.{t}" for t in self.tags]}


class RunEnded(Strict):
    name: str
    description: str = ""
    when: Literal["run-ended"]
    states: list[Literal["Failed", "Crashed", "TimedOut", "Cancelled"]] = Field(min_length=1)
    match: Match
    message: str

    def actions(self, config: "AutomationsFile", block_id) -> list:
        return _notify(config, self.message, block_id)

    def trigger(self):
        from prefect.events.schemas.automations import EventTrigger, Posture

        return EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=self.match.related(),
            expect={f"prefect.flow-run.{state}" for state in self.states},
            posture=Posture.Reactive, threshold=1, within=timedelta(0),
        )


class RunLate(Strict):
    name: str
    description: str = ""
    when: Literal["run-late"]
    late_for_minutes: int = Field(ge=1)
    match: Match
    message: str

    def actions(self, config: "AutomationsFile", block_id) -> list:
        return _notify(config, self.message, block_id)

    def trigger(self):
        from prefect.events.schemas.automations import EventTrigger, Posture

        return EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=self.match.related(),
            after={"prefect.flow-run.Late"},
            expect=PICKED_UP,
            for_each={"prefect.resource.id"},  # one clock per flow run
            posture=Posture.Proactive, threshold=1, within=timedelta(minutes=self.late_for_minutes),
        )


class RunLost(Strict):
    """A flow run whose process died without a word (SIGKILL, lost host): its heartbeats stop.

    Prefect marks nothing by itself: the run would stay Running forever, and on-call would never
    hear. This marks it Crashed, which the run-ended alert then reports. Flow runs send heartbeats
    only with PREFECT_FLOWS_HEARTBEAT_FREQUENCY set where they run (prefect.yaml sets it per pool).
    """

    name: str
    description: str = ""
    when: Literal["run-lost"]
    no_heartbeat_for_seconds: int = Field(ge=60, description="Several heartbeat intervals, so one late beat is no crash.")
    match: Match

    def trigger(self):
        from prefect.events.schemas.automations import EventTrigger, Posture

        return EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=self.match.related(),
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in FINAL_STATES)},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive, threshold=1, within=timedelta(seconds=self.no_heartbeat_for_seconds),
        )

    def actions(self, config: "AutomationsFile", block_id) -> list:
        from prefect.client.schemas.objects import StateType
        from prefect.events.actions import ChangeFlowRunState

        return [ChangeFlowRunState(state=StateType.CRASHED, message=(
            f"No heartbeat for {self.no_heartbeat_for_seconds} s: the process running this flow run is gone."))]


FINAL_STATES = ("Completed", "Failed", "Cancelled", "Crashed", "TimedOut")

Alert = Annotated[Union[RunEnded, RunLate, RunLost], Field(discriminator="when")]


class AutomationsFile(Strict):
    slack_webhook_block: str
    messages: dict[str, Message]
    automations: list[Alert]

    @model_validator(mode="after")
    def _consistent(self) -> "AutomationsFile":
        names = [a.name for a in self.automations]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"automation names must be unique; repeated: {repeated}")
        for alert in self.automations:
            if getattr(alert, "message", None) is not None and alert.message not in self.messages:
                raise ValueError(f"automation {alert.name!r} uses message {alert.message!r}, "
                                 f"not one of: {', '.join(sorted(self.messages))}")
        return self


def load(path: Path = DEFAULT_FILE) -> AutomationsFile:
    try:
        return AutomationsFile.model_validate(yaml.safe_load(Path(path).read_text()))
    except ValidationError as error:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: "
                 f"{'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}" for e in error.errors()]
        raise AutomationsConfigError(f"{path} is not valid:\n  " + "\n  ".join(lines)) from None


def slack_block_id(name: str):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_block_document_by_name(name, block_type_slug=SLACK_BLOCK_TYPE).id
        except ObjectNotFound:
            raise AutomationsConfigError(
                f"no Slack Incoming Webhook block named {name!r}; create it first, e.g. "
                f"SlackWebhook(url=...).save({name!r}) with `from prefect_slack import SlackWebhook`"
            ) from None


def desired(config: AutomationsFile, block_id) -> list:
    """The automations the file describes, as Prefect objects."""
    from prefect.events.schemas.automations import AutomationCore

    return [
        AutomationCore(
            name=alert.name, description=alert.description, enabled=True, tags=[MANAGED_TAG],
            trigger=alert.trigger(),
            actions=alert.actions(config, block_id),
        )
        for alert in config.automations
    ]


def _notify(config: AutomationsFile, message: str, block_id) -> list:
    from prefect.events.actions import SendNotification

    return [SendNotification(block_document_id=block_id, subject=config.messages[message].subject,
                             body=config.messages[message].body)]


def _comparable(automation) -> dict:
    """The automation as JSON, with sets (expect, after, for_each, tags) in a stable order."""
    from prefect.events.schemas.automations import AutomationCore

    def stable(value):
        if isinstance(value, dict):
            return {k: stable(v) for k, v in value.items()}
        if isinstance(value, list):
            items = [stable(v) for v in value]
            return sorted(items) if all(isinstance(v, str) for v in items) else items
        return value

    core = AutomationCore.model_validate(automation.model_dump())
    return stable(core.model_dump(mode="json", exclude={"owner_resource"}))


def apply(config: AutomationsFile) -> dict[str, str]:
    """Create or update each automation by name; extra copies with the same name are deleted."""
    from prefect.client.orchestration import get_client

    outcome = {}
    with get_client(sync_client=True) as client:
        for automation in desired(config, slack_block_id(config.slack_webhook_block)):
            existing = client.read_automations_by_name(automation.name)
            if not existing:
                client.create_automation(automation)
                outcome[automation.name] = "created"
                continue
            keep, *extra = sorted(existing, key=lambda a: str(a.id))
            for duplicate in extra:
                client.delete_automation(duplicate.id)
            if _comparable(keep) == _comparable(automation) and not extra:
                outcome[automation.name] = "unchanged"
            else:
                client.update_automation(keep.id, automation)
                outcome[automation.name] = "updated" + (f" ({len(extra)} duplicate(s) deleted)" if extra else "")
        managed = {a.name for a in client.read_automations() if MANAGED_TAG in a.tags}
    for name in sorted(managed - set(outcome)):
        outcome[name] = "not in the file any more: delete it with `prefect automation delete` if it should go"
    return outcome


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.automations", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["apply", "show"])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args(argv)
    try:
        config = load(args.file)
        if args.action == "show":
            block_id = "00000000-0000-0000-0000-000000000000"  # shape only; apply looks the block up
            print(json.dumps([a.model_dump(mode="json") for a in desired(config, block_id)], indent=2))
            return 0
        for name, result in apply(config).items():
            print(f"automation {name!r}: {result}")
    except AutomationsConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
