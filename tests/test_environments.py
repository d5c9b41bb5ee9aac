"""Environments as blocks: register from YAML, load, render profiles, parse with the real adapters.

Secrets are canaries: after everything ran, they must appear only inside the secret fields.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from dbt.cli.main import dbtRunner

from blocks.environment import (
    DbtEnvironment, EnvironmentConfigError, UnknownEnvironment, UnsafeIdentifier, load_environment,
)
from blocks.profile import rendered_profile
from blocks.register import DEFAULT_FILE, RegistrationError, read_spec, register

from conftest import BUNDLED_PROJECT, REPO, paths_holding, read_all, restored_block

PAT_CANARY = "dapi-CANARY-pat-7f3a9e"
OAUTH_CANARY = "CANARY-oauth-secret-51c2"
STAGING_CANARY = "CANARY-staging-secret-88d0"
SLACK_CANARY = "http://127.0.0.1:9/CANARY-slack-hook"
SECRETS = {
    "DATABRICKS_DEV_TOKEN": PAT_CANARY,
    "DATABRICKS_PROD_CLIENT_SECRET": OAUTH_CANARY,
    "DATABRICKS_STAGING_CLIENT_SECRET": STAGING_CANARY,
    "SLACK_WEBHOOK_URL": SLACK_CANARY,
}


@pytest.fixture(scope="module", autouse=True)
def registered_blocks_restored(prefect_server):
    """The tests here register the shipped file, overwriting the session server's environments,
    credentials, state stores and Slack webhook with canaries: after the module every one of those
    blocks is as other modules left it (or absent again)."""
    from prefect.filesystems import RemoteFileSystem
    from prefect_databricks import DatabricksCredentials
    from prefect_slack import SlackWebhook

    spec = read_spec(DEFAULT_FILE)
    # Environments last: on exit they are restored (or deleted) first, before the blocks they reference.
    blocks = [*((DatabricksCredentials, name) for name in spec.credentials),
              *((RemoteFileSystem, name) for name in spec.state_stores),
              *((SlackWebhook, name) for name in spec.slack_webhooks),
              *((DbtEnvironment, name) for name in spec.environments)]
    with ExitStack() as restores:
        for block_class, name in blocks:
            restores.enter_context(restored_block(block_class, name))
        yield


@pytest.fixture(scope="module")
def registered(prefect_server):
    saved = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)
    try:
        first = register(DEFAULT_FILE)
        second = register(DEFAULT_FILE)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return first, second


def _write_spec(tmp_path: Path, mutate) -> Path:
    spec = yaml.safe_load(DEFAULT_FILE.read_text())
    mutate(spec)
    path = tmp_path / "environments.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))  # the file's order is the dropdown's
    return path


def test_register_is_idempotent(registered):
    first, second = registered
    assert any(line.startswith("created") or line.startswith("updated") for line in first)
    assert second and all(line.startswith("unchanged") for line in second), second


@pytest.mark.parametrize("name, auth, retry_seconds", [
    ("dev", "pat", 900), ("staging", "oauth-m2m", 900), ("prod", "oauth-m2m", 1200)])
def test_databricks_profile_parses_with_real_adapter(registered, tmp_path, capfd, caplog, name, auth, retry_seconds):
    from dbt.adapters.databricks.utils import QueryTagsUtils

    environment = load_environment(name)
    assert environment.adapter == "databricks" and environment.name == name
    assert environment.require_databricks()[0].kind == auth  # the kind dbt, our SQL and the Jobs calls use
    caplog.set_level(logging.DEBUG)
    with rendered_profile(environment, BUNDLED_PROJECT, version="v20261202000000_abc123") as profile:
        profile_file = profile.profiles_dir / "profiles.yml"
        assert stat.S_IMODE(profile_file.stat().st_mode) == 0o600
        text = profile_file.read_text()
        assert "env_var(" in text and not any(c in text for c in (PAT_CANARY, OAUTH_CANARY, STAGING_CANARY))
        assert ("auth_type: oauth" in text) == (auth == "oauth-m2m")
        written = yaml.safe_load(text)[profile.profile_name]["outputs"][name]
        # connect_retry_seconds from environments.yaml: the connector's retry budget and socket timeout
        assert written["connection_parameters"]["_retry_stop_after_attempts_duration"] == retry_seconds
        assert written["connection_parameters"]["_socket_timeout"] == retry_seconds
        assert QueryTagsUtils.parse_query_tags(written["query_tags"]) == {
            "lakehouse_environment": name, "lakehouse_version": "v20261202000000_abc123"}  # no flow run here
        target = tmp_path / "target"
        result = dbtRunner().invoke([
            "parse", "--project-dir", str(BUNDLED_PROJECT), "--profiles-dir", str(profile.profiles_dir),
            "--target", name, "--target-path", str(target), "--log-path", str(target / "logs"),
        ])
        assert result.success, result.exception
        leftovers = [p for p in profile.profiles_dir.rglob("*") if p.is_file()]
    assert not profile.profiles_dir.exists(), "the rendered profile must be removed on exit"
    assert json.loads((target / "manifest.json").read_text())["metadata"]["adapter_type"] == "databricks"
    captured = capfd.readouterr()
    haystacks = [captured.out, captured.err, caplog.text] + [
        p.read_text(errors="ignore") for p in [*leftovers, *target.rglob("*")] if p.is_file()
    ]
    for canary in (PAT_CANARY, OAUTH_CANARY, STAGING_CANARY):
        assert not any(canary in h for h in haystacks), f"{canary} leaked"


def test_secrets_only_in_secret_fields(registered):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        documents = read_all(client.read_block_documents, include_secrets=True)
        hidden = read_all(client.read_block_documents, include_secrets=False)
    allowed = {"token", "client_secret", "url"}
    for document in documents:
        for path in paths_holding(document.data, (PAT_CANARY, OAUTH_CANARY, STAGING_CANARY, SLACK_CANARY)):
            assert path[-1] in allowed, f"secret found in {document.name}: {'.'.join(path)}"
    assert not any(
        c in json.dumps(d.data, default=str) for d in hidden for c in (PAT_CANARY, OAUTH_CANARY, SLACK_CANARY)
    )


def test_profile_removed_on_error(tmp_path):
    environment = DbtEnvironment(adapter="duckdb", schema_name="main", duckdb_path=str(tmp_path / "w.duckdb"))
    with pytest.raises(RuntimeError):
        with rendered_profile(environment, BUNDLED_PROJECT) as profile:
            raise RuntimeError("boom")
    assert not profile.profiles_dir.exists()


def test_unknown_environment_lists_known_ones(registered):
    with pytest.raises(UnknownEnvironment, match=r"unknown environment 'qa'; known environments: dev, local, prod, staging"):
        load_environment("qa")


@pytest.mark.parametrize("bad", ["", "a;b", "a b", "a.b", "a'b", 'a"b'])
def test_unsafe_identifiers_rejected(bad):
    with pytest.raises(Exception, match="unsafe schema"):
        DbtEnvironment(adapter="duckdb", schema_name=bad)
    with pytest.raises(Exception, match="unsafe catalog"):
        DbtEnvironment(adapter="databricks", schema_name="ok", catalog=bad or "x y")
    environment = DbtEnvironment(adapter="duckdb", schema_name="main")
    with pytest.raises(UnsafeIdentifier):
        with rendered_profile(environment, BUNDLED_PROJECT, schema=bad or "x;y"):
            pass


def _block_documents() -> dict:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {(d.name, d.block_type.slug if d.block_type else None): (d.updated, json.dumps(d.data, default=str))
                for d in read_all(client.read_block_documents, include_secrets=True)}


@pytest.fixture
def nothing_registered(prefect_server):
    """Registration that rejects its input writes nothing: every block document is as before."""
    before = _block_documents()
    yield
    assert _block_documents() == before, "a rejected registration wrote blocks"


def test_registration_rejects_unknown_keys(tmp_path, monkeypatch, nothing_registered):
    path = _write_spec(tmp_path, lambda s: s["environments"]["dev"].update(warehouse_size="XL"))
    with pytest.raises(RegistrationError, match=r"environments\.dev\.warehouse_size: Extra inputs are not permitted"):
        register(path)
    path = _write_spec(tmp_path, lambda s: s.update(extras={}))
    with pytest.raises(RegistrationError, match="extras"):
        register(path)


def test_registration_names_missing_variable(tmp_path, monkeypatch, nothing_registered):
    for key in SECRETS:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RegistrationError, match="environment variable DATABRICKS_DEV_TOKEN is not set"):
        register(DEFAULT_FILE)


def test_registration_names_missing_credentials_block(tmp_path, monkeypatch, prefect_server, nothing_registered):
    monkeypatch.setenv("DATABRICKS_DEV_TOKEN", "x")
    monkeypatch.setenv("DATABRICKS_PROD_CLIENT_SECRET", "x")
    monkeypatch.setenv("DATABRICKS_STAGING_CLIENT_SECRET", "x")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/x")
    path = _write_spec(tmp_path, lambda s: s["environments"]["dev"].update(credentials="nowhere-creds"))
    with pytest.raises(RegistrationError, match="credentials block 'nowhere-creds', which is neither in the file nor registered"):
        register(path)


def test_registration_rejects_unsafe_schema(tmp_path, monkeypatch, nothing_registered):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    path = _write_spec(tmp_path, lambda s: s["environments"]["dev"].update(schema="analytics; drop table x"))
    with pytest.raises(RegistrationError, match="unsafe schema"):
        register(path)


def test_registration_refuses_a_databricks_environment_without_a_catalog(tmp_path, monkeypatch, nothing_registered):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    path = _write_spec(tmp_path, lambda s: s["environments"]["staging"].pop("catalog"))
    with pytest.raises(RegistrationError, match="environment 'staging': a Databricks environment needs catalog"):
        register(path)


def test_registration_refuses_credentials_of_two_kinds(tmp_path, monkeypatch, nothing_registered):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    path = _write_spec(tmp_path, lambda s: s["credentials"]["databricks-dev"].update(tenant_id="tenant-guid"))
    with pytest.raises(RegistrationError, match="credentials 'databricks-dev'.*not both: it has token_env and tenant_id"):
        register(path)


def test_cli_exits_non_zero_with_message(tmp_path, capsys, monkeypatch):
    from blocks.register import main

    for key in SECRETS:
        monkeypatch.delenv(key, raising=False)
    assert main(["--file", str(DEFAULT_FILE)]) == 2
    assert "environment variable" in capsys.readouterr().err


def test_databricks_environment_without_credentials_is_clear():
    environment = DbtEnvironment(adapter="databricks", schema_name="analytics", catalog="main")
    with pytest.raises(EnvironmentConfigError, match="has no credentials block"):
        with rendered_profile(environment, BUNDLED_PROJECT):
            pass


def test_block_types_register_via_cli(prefect_server):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dbt Lakehouse Environment" in result.stdout


def test_azure_service_principal_profile_parses(tmp_path, capfd):
    from prefect_databricks import DatabricksCredentials

    environment = DbtEnvironment(
        adapter="databricks", schema_name="analytics", catalog="main", http_path="/sql/1.0/warehouses/abc",
        databricks_credentials=DatabricksCredentials(
            databricks_instance="adb-1.azuredatabricks.net", client_id="app-id", client_secret=OAUTH_CANARY,
            tenant_id="tenant-guid"),
    )
    assert environment.require_databricks()[0].sdk_config_kwargs()["auth_type"] == "azure-client-secret"
    with rendered_profile(environment, BUNDLED_PROJECT) as profile:
        text = (profile.profiles_dir / "profiles.yml").read_text()
        assert "azure_client_id: app-id" in text and OAUTH_CANARY not in text
        assert os.environ["ARM_TENANT_ID"] == "tenant-guid"
        result = dbtRunner().invoke([
            "parse", "--project-dir", str(BUNDLED_PROJECT), "--profiles-dir", str(profile.profiles_dir),
            "--target", profile.target, "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path),
        ])
        assert result.success, result.exception
    assert "ARM_TENANT_ID" not in os.environ
    assert OAUTH_CANARY not in capfd.readouterr().out


def test_an_environment_added_only_to_a_copy_of_the_file_is_a_choice_everywhere(tmp_path, monkeypatch, prefect_server):
    """`qa` is in a copy of environments.yaml alone (LAKEHOUSE_ENVIRONMENTS_FILE), with no code change:
    it registers, `prefect deploy` puts it in the form's dropdown, and the CLI accepts a run against it."""
    import subprocess
    import sys

    from prefect.client.orchestration import get_client

    from blocks.environment import ENVIRONMENTS_FILE_VAR, team_environment_names
    from deployments.work_pools import LAKEHOUSE_PROCESS, apply_pool

    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    spec_file = _write_spec(tmp_path, lambda s: s["environments"].update(
        qa={"adapter": "duckdb", "schema": "qa", "duckdb_path": str(tmp_path / "qa.duckdb")}))
    assert team_environment_names(spec_file) == ("local", "dev", "staging", "prod", "qa")
    env = {**os.environ, ENVIRONMENTS_FILE_VAR: str(spec_file), "PREFECT_CLI_WRAP_LINES": "false"}
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump({
        "name": "qa-check", "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}],
        "deployments": [{"name": "production-qa-check", "entrypoint": "flows/production.py:production_run",
                         "parameters": {"environment": "qa"}, "work_pool": {"name": LAKEHOUSE_PROCESS.name}}]}))
    try:
        assert any(line.endswith("dbt-lakehouse-environment/qa") for line in register(spec_file))
        assert load_environment("qa").schema_name == "qa"
        apply_pool(LAKEHOUSE_PROCESS)
        deployed = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file",
                                   str(prefect_file), "--name", "production-qa-check"],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("production-run/production-qa-check")
        assert deployment.parameter_openapi_schema["properties"]["environment"]["enum"] == [
            "local", "dev", "staging", "prod", "qa"]
        # The CLI takes `qa`; the run then stops at the missing project, before any dbt work.
        cli = subprocess.run([sys.executable, "-m", "flows.production", "--environment", "qa",
                              "--project-dir", str(tmp_path / "no-project")],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert "invalid choice" not in cli.stderr and "production_run: Failed" in cli.stdout, cli.stdout + cli.stderr
        assert "no-project" in cli.stdout + cli.stderr
    finally:
        with get_client(sync_client=True) as client:
            for name, delete in (("production-run/production-qa-check", None), ("qa", "block")):
                try:
                    if delete:
                        document = client.read_block_document_by_name(name, DbtEnvironment.get_block_type_slug())
                        client.delete_block_document(document.id)
                    else:
                        client.delete_deployment(client.read_deployment_by_name(name).id)
                except Exception:  # not created: nothing to remove
                    pass
