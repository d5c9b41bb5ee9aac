"""prefect.yaml deploys for real against the session's Prefect server, and the strict config check.

`deploy()` and `read_deployment()` are also used by test_automations.py and test_browser.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deployments import config_check
from deployments.work_pools import LAKEHOUSE_PROCESS, apply_pool

REPO = Path(__file__).resolve().parents[1]
ENVIRONMENTS = ["local", "dev", "staging", "prod"]
FLOW_OF = {  # deployment name -> flow name, as `prefect deploy` registers them
    "production-prod": "production-run", "production-staging": "production-run", "slim-ci": "slim-ci",
    "adhoc-prod": "adhoc-dbt", "adhoc-dev": "adhoc-dbt", "rollback-prod": "rollback",
    "prune-versions-prod": "prune-versions", "drop-ci-schema": "drop-ci-schema",
    "production-local": "production-run", "adhoc-local": "adhoc-dbt", "rollback-local": "rollback",  # make ui
}


_deployed_to: dict[str, set[str]] = {}  # API URL -> deployments this test session deployed there


def deploy(*names: str, again: bool = False) -> None:
    """Apply the work pool, then `prefect deploy` the named deployments (all when none) from the repo.

    Each deployment is deployed once per server unless `again`: later test files reuse it.
    """
    done = _deployed_to.setdefault(os.environ["PREFECT_API_URL"], set())
    wanted = set(names or FLOW_OF)
    if not again and wanted <= done:
        return
    assert apply_pool(LAKEHOUSE_PROCESS) in {"created", "updated", "unchanged"}
    selection = [arg for name in names for arg in ("--name", name)] or ["--all"]
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", *selection],
        cwd=REPO, env={**os.environ, "PREFECT_CLI_WRAP_LINES": "false"},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"prefect deploy failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    done.update(wanted)


def read_deployment(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(f"{FLOW_OF[name]}/{name}")


@pytest.fixture(scope="module")
def deployed(prefect_server):
    deploy(again=True)
    return {name: read_deployment(name) for name in FLOW_OF}


def test_every_deployment_is_created_on_the_pool_with_its_job_variables(deployed):
    for name, deployment in deployed.items():
        assert deployment.work_pool_name == "lakehouse-process", name
        assert deployment.job_variables["env"]["DBT_SEND_ANONYMOUS_USAGE_STATS"] == "false", name
        assert deployment.job_variables["stream_output"] is True, name
        assert "lakehouse" in deployment.tags, name


@pytest.mark.parametrize("name, cron, slug", [
    ("production-prod", "0 2 * * *", "nightly-prod"),
    ("production-staging", "0 1 * * *", "nightly-staging"),
    ("prune-versions-prod", "0 6 * * 0", "weekly-prune-prod"),
])
def test_schedules_have_cron_timezone_and_slug(deployed, name, cron, slug):
    (schedule,) = deployed[name].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.slug) == (cron, "Europe/Amsterdam", slug)
    assert schedule.active


@pytest.mark.parametrize("name", ["slim-ci", "drop-ci-schema", "adhoc-prod", "adhoc-dev", "rollback-prod"])
def test_operator_deployments_have_no_schedule(deployed, name):
    assert deployed[name].schedules == []


@pytest.mark.parametrize("name, strategy", [
    ("production-prod", "ENQUEUE"), ("production-staging", "ENQUEUE"), ("adhoc-prod", "ENQUEUE"),
    ("rollback-prod", "ENQUEUE"), ("prune-versions-prod", "CANCEL_NEW"),
])
def test_production_deployments_run_one_at_a_time(deployed, name, strategy):
    deployment = deployed[name]
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy.value == strategy


def test_parameters_and_schemas_give_the_ui_dropdowns(deployed):
    for name, deployment in deployed.items():
        environment = deployment.parameter_openapi_schema["properties"]["environment"]
        assert environment["enum"] == ENVIRONMENTS, name
    assert deployed["production-prod"].parameters == {"environment": "prod"}
    assert deployed["adhoc-dev"].parameters == {"environment": "dev"}
    assert deployed["slim-ci"].parameters == {"environment": "staging", "base_environment": "prod"}
    adhoc = deployed["adhoc-prod"].parameter_openapi_schema
    assert adhoc["properties"]["command"]["enum"] == [
        "build", "run", "test", "seed", "snapshot", "source freshness", "docs generate", "retry", "ls"]
    assert set(adhoc["required"]) == {"environment", "command"}
    assert adhoc["properties"]["select"]["type"] == "array"
    assert "pr_number" in deployed["slim-ci"].parameter_openapi_schema["required"]
    assert deployed["drop-ci-schema"].parameters == {"environment": "staging"}
    assert deployed["drop-ci-schema"].parameter_openapi_schema["required"] == ["pr_number"]


def test_pull_steps_are_stored_unrendered(deployed):
    """Deploy stores the templates; the worker fills them in when a run starts."""
    clone, workdir = deployed["production-prod"].pull_steps
    assert clone["prefect.deployments.steps.git_clone"]["repository"] == "{{ $LAKEHOUSE_REPO_URL }}"
    assert clone["prefect.deployments.steps.git_clone"]["branch"] == "{{ prefect.variables.lakehouse_branch }}"
    assert workdir["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ clone.directory }}"


def test_local_deployments_run_the_checkout_and_schedule_nothing(deployed):
    """`make ui`'s deployments: the worker's checkout (deployments/ui.py sets LAKEHOUSE_CHECKOUT), no clone."""
    for name in ["production-local", "adhoc-local", "rollback-local"]:
        (workdir,) = deployed[name].pull_steps
        assert workdir["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $LAKEHOUSE_CHECKOUT }}"
        assert deployed[name].parameters == {"environment": "local"}
    (schedule,) = deployed["production-local"].schedules
    assert schedule.slug == "nightly-local" and not schedule.active


def test_redeploying_updates_in_place(deployed):
    deploy("prune-versions-prod", again=True)
    again = read_deployment("prune-versions-prod")
    assert again.id == deployed["prune-versions-prod"].id
    assert [(s.id, s.slug) for s in again.schedules] == [(s.id, s.slug) for s in deployed["prune-versions-prod"].schedules]


def test_work_pool_apply_is_idempotent(prefect_server):
    from prefect.client.orchestration import get_client

    assert apply_pool(LAKEHOUSE_PROCESS) == "unchanged"
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("lakehouse-process")
    assert pool.type == "process"
    assert pool.base_job_template["variables"]["properties"]["stream_output"]["default"] is True


# --- the strict config check: no server needed ---------------------------------------------

def _broken_copy(tmp_path: Path, edit) -> Path:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    edit(config)
    shutil.copytree(REPO / "flows", tmp_path / "flows")  # entrypoints are checked relative to the file
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_the_real_prefect_yaml_passes():
    assert config_check.check(REPO / "prefect.yaml") == []
    result = subprocess.run([sys.executable, "-m", "deployments.config_check"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["deployments"][0].update(concurrency_limt={"limit": 1}),
     "deployments[0] (production-prod).concurrency_limt: unknown key"),
    (lambda c: c["deployments"][0]["schedules"][0].update(cron="0 25 * * *"), 'Invalid cron string: "0 25 * * *"'),
    (lambda c: c["deployments"][0]["schedules"][0].update(cron="every night"), 'Invalid cron string'),
    (lambda c: c["deployments"][0]["schedules"][0].update(timezone="Europe/Amsterdm"), 'Invalid timezone: "Europe/Amsterdm"'),
    (lambda c: c["deployments"][0]["schedules"][0].pop("timezone"), "no timezone"),
    (lambda c: c["deployments"][0]["schedules"][0].pop("slug"), "no slug"),
    (lambda c: c["deployments"][0].pop("concurrency_limit"), "'production-prod': a production deployment needs concurrency_limit"),
    (lambda c: c["deployments"][3].update(concurrency_limit=2), "'adhoc-prod': a production deployment needs concurrency_limit"),
    (lambda c: c["deployments"][0]["work_pool"].update(name="default"), "work pool 'default' is not defined"),
    (lambda c: c["deployments"][0]["work_pool"]["job_variables"].update(imag="x"), "job_variables ['imag']"),
    (lambda c: c["deployments"][4]["parameters"].update(enviroment="dev"), "parameters ['enviroment'] are not parameters"),
    (lambda c: c["deployments"][5].update(entrypoint="flows/blue_green.py:rollbak"), "defines no function 'rollbak'"),
    (lambda c: c.update(deployment=[]), "deployment: unknown key"),
    # a deployment's own env replaces the pool's: without the heartbeat setting, Prefect's default 180 s
    # equals the run-lost window, and a healthy run would be marked Crashed
    (lambda c: c["deployments"][0]["work_pool"]["job_variables"].update(env={"PYTHONUNBUFFERED": "1"}),
     "'production-prod': the run-lost automation marks its runs Crashed after 180 s without a heartbeat"),
    (lambda c: c["deployments"][0]["work_pool"]["job_variables"]["env"].update(PREFECT_FLOWS_HEARTBEAT_FREQUENCY="90"),
     "must set PREFECT_FLOWS_HEARTBEAT_FREQUENCY to at most 60 (has '90'"),
])
def test_a_broken_copy_is_rejected_with_a_clear_message(tmp_path, edit, message):
    problems = config_check.check(_broken_copy(tmp_path, edit))
    assert any(message in p for p in problems), problems


def test_the_command_exits_non_zero_and_names_the_problem(tmp_path):
    path = _broken_copy(tmp_path, lambda c: c["deployments"][1]["schedules"][0].update(slugg="x"))
    result = subprocess.run([sys.executable, "-m", "deployments.config_check", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "deployments[1] (production-staging).schedules[0].slugg: unknown key" in result.stderr


def test_check_knows_every_key_prefect_accepts():
    """Our strict models list exactly Prefect's keys, so a valid Prefect key is never rejected."""
    from prefect.cli.deploy import _models as prefect_models

    def keys(model):
        return {field.alias or name for name, field in model.model_fields.items()}

    assert keys(config_check.Deployment) == keys(prefect_models.DeploymentConfig)
    assert keys(config_check.Schedule) == keys(prefect_models.RawScheduleConfig)
    assert keys(config_check.WorkPool) == keys(prefect_models.WorkPoolConfig)
    assert keys(config_check.Concurrency) == keys(prefect_models.ConcurrencyLimitSpec)
    assert keys(config_check.PrefectYaml) - {"definitions"} == keys(prefect_models.PrefectYamlModel)
