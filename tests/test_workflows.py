"""The GitHub workflows run what the README promises: tests and slim CI on pull requests,
schema clean-up on close, and registration + `prefect deploy --all` on main."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from flows.slim_ci import build_parser

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True)  # YAML 1.1 reads the key `on` as a boolean
    return workflow


def runs(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def uses(job: dict) -> list[str]:
    return [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]


def python_version(job: dict) -> str:
    setup = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python@"))
    return str(setup["with"]["python-version"])


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), flags=re.M))


@pytest.fixture(scope="module")
def ci() -> dict:
    return load("ci.yml")


@pytest.fixture(scope="module")
def deploy() -> dict:
    return load("deploy.yml")


def test_ci_runs_on_pull_requests_including_close(ci):
    assert set(ci["on"]) == {"pull_request"}
    assert {"opened", "synchronize", "reopened", "closed"} <= set(ci["on"]["pull_request"]["types"])
    assert "pull_request.number" in ci["concurrency"]["group"]  # one check per PR at a time
    assert set(ci["jobs"]) == {"test", "slim-ci", "drop-ci-schema"}


def test_ci_tests_with_the_readme_commands(ci):
    job = ci["jobs"]["test"]
    assert "!= 'closed'" in job["if"]
    assert uses(job)[:2] == ["actions/checkout", "actions/setup-python"] and python_version(job) == "3.11"
    commands = runs(job)
    assert commands[0] == "make install" and commands[-1] == "make test"
    assert any("chromium" in c for c in commands[1:-1])  # the browser test's browser (README)
    assert {"install", "test"} <= make_targets()


def _flow_command(job: dict) -> list[str]:
    [command] = [r for r in runs(job) if "flows.slim_ci" in r]
    argv = shlex.split(command.replace('"$PR_NUMBER"', "12"))
    assert argv[:3] == [".venv/bin/python", "-m", "flows.slim_ci"]
    return argv[3:]


def test_slim_ci_job_runs_after_tests_against_the_configured_prefect_api(ci):
    job = ci["jobs"]["slim-ci"]
    assert job["needs"] == "test" and "!= 'closed'" in job["if"]
    assert job["env"]["PREFECT_API_URL"] == "${{ secrets.PREFECT_API_URL }}"
    assert job["env"]["PREFECT_API_KEY"] == "${{ secrets.PREFECT_API_KEY }}"
    assert ci["env"]["PR_NUMBER"] == "${{ github.event.pull_request.number }}"
    assert "make install" in runs(job) and python_version(job) == "3.11"
    args = build_parser().parse_args(_flow_command(job))  # the workflow's command is one our CLI accepts
    assert (args.pr_number, args.environment, args.base_environment, args.drop) == (12, "staging", "prod", False)


def test_slim_ci_posts_its_report_file_as_a_pr_comment(ci):
    job = ci["jobs"]["slim-ci"]
    args = build_parser().parse_args(_flow_command(job))
    [post] = [s for s in job["steps"] if "gh pr comment" in s.get("run", "")]
    assert str(args.report_file) in post["run"] and "github.event_name == 'pull_request'" in post["if"]
    assert "always()" in post["if"] and job["permissions"]["pull-requests"] == "write"


def test_closing_a_pr_drops_its_schemas(ci):
    job = ci["jobs"]["drop-ci-schema"]
    assert "== 'closed'" in job["if"] and "needs" not in job
    assert job["env"]["PREFECT_API_KEY"] == "${{ secrets.PREFECT_API_KEY }}"
    args = build_parser().parse_args(_flow_command(job))
    assert (args.pr_number, args.environment, args.drop) == (12, "staging", True)


def test_no_secret_values_in_workflows():
    for path in WORKFLOWS.glob("*.yml"):
        for key, value in re.findall(r"^\s*([A-Z_]*(?:KEY|TOKEN|SECRET|URL)[A-Z_]*):\s*(.+)$", path.read_text(), re.M):
            assert value.strip().startswith("${{ secrets."), f"{path.name}: {key} must come from secrets"


def test_deploy_runs_on_main_and_applies_everything_in_order(deploy):
    assert deploy["on"] == {"push": {"branches": ["main"]}}
    assert deploy["concurrency"]["cancel-in-progress"] is False  # never stop a deploy half-way
    [job] = deploy["jobs"].values()
    assert uses(job)[:2] == ["actions/checkout", "actions/setup-python"] and python_version(job) == "3.11"
    assert runs(job) == [
        "make install",
        ".venv/bin/python -m deployments.config_check prefect.yaml",
        ".venv/bin/python -m blocks.register",
        ".venv/bin/python -m deployments.work_pools apply",
        ".venv/bin/python -m deployments.automations apply",
        ".venv/bin/prefect --no-prompt deploy --all",
    ]
    assert {"PREFECT_API_URL", "PREFECT_API_KEY"} <= set(job["env"])


def test_deploy_provides_every_secret_the_block_registry_names(deploy):
    [job] = deploy["jobs"].values()
    registry = yaml.safe_load((REPO / "blocks" / "environments.yaml").read_text())
    named = {value for section in registry.values() for spec in section.values()
             for key, value in spec.items() if key.endswith("_env")}
    assert named <= set(job["env"]), f"deploy.yml lacks {sorted(named - set(job['env']))}"


def test_slim_ci_caches_the_partial_parse_where_the_flow_keeps_it(ci, monkeypatch):
    from blocks.environment import DbtEnvironment
    from flows.core.slim_ci import PARSE_TARGET, PARTIAL_PARSE, ci_work_dir

    [cache] = [s for s in ci["jobs"]["slim-ci"]["steps"] if s.get("uses", "").startswith("actions/cache@")]
    staging = DbtEnvironment(adapter="databricks", schema_name="analytics")
    staging._block_document_name = "staging"
    monkeypatch.delenv("LAKEHOUSE_HOME", raising=False)  # CI runs with the default .lakehouse in the checkout
    monkeypatch.chdir(REPO)
    expected = (ci_work_dir(staging, 12) / PARSE_TARGET / PARTIAL_PARSE).relative_to(REPO)
    assert cache["with"]["path"].replace("${{ github.event.pull_request.number }}", "12") == str(expected)
    assert "pull_request.number" in cache["with"]["key"] and "github.sha" in cache["with"]["key"]
    # a first push starts from another PR's parse: it is of the same (staging) schema
    assert cache["with"]["restore-keys"].splitlines() == [
        "slim-ci-parse-pr-${{ github.event.pull_request.number }}-", "slim-ci-parse-pr-"]
