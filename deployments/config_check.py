"""A strict check of prefect.yaml, for what `prefect deploy` lets through silently.

    python -m deployments.config_check [prefect.yaml]

Prefect ignores unknown keys (a misspelt `concurrency_limt` just disappears) and
accepts a schedule without a time zone (UTC, an hour off half the year). This check
rejects both, and also checks: every cron and time zone as Prefect's server parses
them; every schedule has a slug (so a redeploy updates it instead of adding one);
every work pool is one of deployments/work_pools.py and its job variables exist;
every entrypoint names a function in an existing file, and its parameters are that
function's; every production deployment runs one at a time; every deployment a run-lost
automation watches sends heartbeats at least three times per its window (Prefect's default,
180 s, equals the window: a healthy run would be marked Crashed). No flow is imported and
nothing is deployed: entrypoints are read with `ast`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.work_pools import POOLS

PRODUCTION_FLOWS = {"production_run"}
PRODUCTION_ENVIRONMENTS = {"prod"}

Steps = list[dict[str, Any]]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Schedule(Strict):
    cron: Optional[str] = None
    interval: Optional[Union[int, float, str]] = None
    rrule: Optional[str] = None
    timezone: Optional[str] = None
    anchor_date: Optional[str] = None
    active: Optional[Union[bool, str]] = None
    parameters: dict[str, Any] = {}
    slug: Optional[str] = None
    replaces: Optional[str] = None
    day_or: Optional[Union[bool, str]] = None


class Concurrency(Strict):
    limit: int = Field(ge=1)
    collision_strategy: Literal["ENQUEUE", "CANCEL_NEW"] = "ENQUEUE"
    grace_period_seconds: Optional[int] = Field(None, ge=0)


class WorkPool(Strict):
    name: str
    work_queue_name: Optional[str] = None
    job_variables: dict[str, Any] = {}


class Deployment(Strict):
    """Every key Prefect 3.8's prefect.yaml deployment accepts (tests compare against Prefect's own model)."""

    name: str
    entrypoint: str
    work_pool: WorkPool
    version: Optional[str] = None
    version_type: Optional[str] = None
    tags: Optional[Union[str, list[str]]] = None
    description: Optional[str] = None
    schedule: Optional[Schedule] = None
    schedules: Optional[list[Schedule]] = None
    paused: Optional[bool] = None
    concurrency_limit: Optional[Union[int, Concurrency]] = None
    flow_name: Optional[str] = None
    parameters: dict[str, Any] = {}
    enforce_parameter_schema: Optional[bool] = None
    build: Optional[Steps] = None
    push: Optional[Steps] = None
    pull: Optional[Steps] = None
    triggers: Optional[list[dict[str, Any]]] = None
    sla: Optional[list[dict[str, Any]]] = None


class PrefectYaml(Strict):
    name: Optional[str] = None
    prefect_version: Optional[str] = Field(None, alias="prefect-version")
    definitions: dict[str, Any] = Field({}, description="YAML anchors only; Prefect ignores it.")
    build: Optional[Steps] = None
    push: Optional[Steps] = None
    pull: Optional[Steps] = None
    deployments: list[Deployment]


def _where(location: tuple, raw: dict) -> str:
    parts = []
    for i, part in enumerate(location):
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
            if location[:i] == ("deployments",):
                name = (raw.get("deployments") or [{}] * (part + 1))[part].get("name", "?")
                parts[-1] += f" ({name})"
        elif not (isinstance(part, str) and (part[:1].isupper() or "[" in part or part.startswith("function-"))):
            parts.append(str(part))  # skip pydantic's union branch names
    return ".".join(parts) or "(top level)"


def _schema_problems(raw: Any) -> tuple[Optional[PrefectYaml], list[str]]:
    if not isinstance(raw, dict):
        return None, ["the file is not a YAML mapping"]
    try:
        return PrefectYaml.model_validate(raw), []
    except ValidationError as error:
        problems = {}
        for item in error.errors():
            message = "unknown key (Prefect would silently ignore it)" if item["type"] == "extra_forbidden" else item["msg"]
            problems.setdefault(_where(item["loc"], raw), message)
        return None, [f"{where}: {message}" for where, message in problems.items()]


def _schedule_problems(where: str, schedule: Schedule) -> list[str]:
    from prefect.client.schemas.schedules import CronSchedule

    problems = []
    if sum(v is not None for v in (schedule.cron, schedule.interval, schedule.rrule)) != 1:
        problems.append(f"{where}: give exactly one of cron, interval, rrule")
    if not schedule.slug:
        problems.append(f"{where}: no slug (without one, a redeploy cannot match the schedule and adds a new one)")
    if not schedule.timezone:
        problems.append(f"{where}: no timezone (it would run in UTC; name one, e.g. Europe/Amsterdam or UTC)")
    if schedule.cron is not None or schedule.timezone:
        try:  # the server's own validation of the cron string and the IANA time zone
            CronSchedule(cron=schedule.cron or "* * * * *", timezone=schedule.timezone or "UTC")
        except ValidationError as error:
            problems += [f"{where}: {e['msg'].removeprefix('Value error, ')}" for e in error.errors()]
    return problems


def _flow_arguments(base: Path, entrypoint: str) -> tuple[Optional[set[str]], Optional[str]]:
    """The function's parameter names (None if it takes **kwargs), or a problem."""
    path, _, function = entrypoint.rpartition(":")
    if not path or not function:
        return None, f"entrypoint {entrypoint!r} is not path/to/file.py:function"
    file = base / path
    if not file.is_file():
        return None, f"entrypoint file {path!r} does not exist"
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            args = node.args
            if args.kwarg:
                return None, None
            return {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}, None
    return None, f"entrypoint {path!r} defines no function {function!r}"


def _is_production(deployment: Deployment) -> bool:
    return (deployment.parameters.get("environment") in PRODUCTION_ENVIRONMENTS
            or deployment.entrypoint.rpartition(":")[2] in PRODUCTION_FLOWS)


HEARTBEAT = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
BEATS_PER_WINDOW = 3  # one late or lost heartbeat is no crash


def _heartbeat_problems(where: str, deployment: Deployment, watched_by: list[Any]) -> list[str]:
    """A run-lost automation marks a run Crashed after its window without a heartbeat."""
    tags = set([deployment.tags] if isinstance(deployment.tags, str) else deployment.tags or [])
    windows = [a.no_heartbeat_for_seconds for a in watched_by
               if deployment.name in a.match.deployments or tags & set(a.match.tags)]
    if not windows:
        return []
    env = deployment.work_pool.job_variables.get("env") or {}
    frequency = env.get(HEARTBEAT)
    if frequency is None or not str(frequency).isdigit() or int(frequency) * BEATS_PER_WINDOW > min(windows):
        return [f"{where}: the run-lost automation marks its runs Crashed after {min(windows)} s without a heartbeat, "
                f"so job_variables.env must set {HEARTBEAT} to at most {min(windows) // BEATS_PER_WINDOW} "
                f"(has {frequency!r}; Prefect's default is 180)"]
    return []


def _deployment_problems(base: Path, deployment: Deployment, watched_by: Sequence[Any] = ()) -> list[str]:
    where = f"deployment {deployment.name!r}"
    problems = _heartbeat_problems(where, deployment, list(watched_by))
    schedules = [*(deployment.schedules or []), *([deployment.schedule] if deployment.schedule else [])]
    for i, schedule in enumerate(schedules):
        problems += _schedule_problems(f"{where} schedule {i}", schedule)
    slugs = [s.slug for s in schedules if s.slug]
    if len(slugs) != len(set(slugs)):
        problems.append(f"{where}: schedule slugs repeat: {slugs}")

    arguments, problem = _flow_arguments(base, deployment.entrypoint)
    if problem:
        problems.append(f"{where}: {problem}")
    elif arguments is not None:
        unknown = sorted(set(deployment.parameters) - arguments)
        if unknown:
            problems.append(f"{where}: parameters {unknown} are not parameters of {deployment.entrypoint}")

    pool = POOLS.get(deployment.work_pool.name)
    if pool is None:
        problems.append(f"{where}: work pool {deployment.work_pool.name!r} is not defined in "
                        f"deployments/work_pools.py (known: {', '.join(sorted(POOLS))})")
    else:
        known = set(pool.base_job_template()["variables"]["properties"])
        unknown = sorted(set(deployment.work_pool.job_variables) - known)
        if unknown:
            problems.append(f"{where}: job_variables {unknown} are not job variables of work pool "
                            f"{pool.name!r} (known: {', '.join(sorted(known))})")

    if _is_production(deployment):
        limit = deployment.concurrency_limit
        limit = limit.limit if isinstance(limit, Concurrency) else limit
        if limit != 1:
            problems.append(f"{where}: a production deployment needs concurrency_limit "
                            f"{{limit: 1, collision_strategy: ENQUEUE or CANCEL_NEW}} so two runs never overlap "
                            f"(has {deployment.concurrency_limit!r})")
    return problems


def check(path: Path) -> list[str]:
    """Every problem in the prefect.yaml at `path`; empty when it is good."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        return [f"cannot read {path}: {error}"]
    config, problems = _schema_problems(raw)
    if config is None:
        return problems
    names = [d.name for d in config.deployments]
    problems += [f"deployment name {n!r} appears more than once" for n in sorted({n for n in names if names.count(n) > 1})]
    from deployments.automations import RunLost, load

    watched_by = [a for a in load().automations if isinstance(a, RunLost)]
    for deployment in config.deployments:
        problems += _deployment_problems(path.resolve().parent, deployment, watched_by)
    return problems


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.config_check", description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default="prefect.yaml", type=Path)
    args = parser.parse_args(argv)
    problems = check(args.file)
    if problems:
        print(f"{args.file}: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{args.file}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
