"""blocks/: identifiers, local paths, the built-in environment, profile rendering and the process identity."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from prefect_databricks import DatabricksCredentials

from blocks.environment import DbtEnvironment, EnvironmentConfigError, UnsafeIdentifier, builtin_local, safe_identifier
from blocks.host import host_identity, process_gone, process_start
from blocks.local import local_paths
from blocks.profile import TOKEN_VAR, profile_dir_prefix, profile_name_of, rendered_profile, target_config


@pytest.mark.parametrize("value", ["main", "Main_2", "a"])
def test_safe_identifiers_pass(value):
    assert safe_identifier(value) == value


@pytest.mark.parametrize("value", ["", "main-x", "main;drop", "a b", None, 3])
def test_unsafe_identifiers_are_refused_as_input_errors(value):
    with pytest.raises(UnsafeIdentifier, match="unsafe schema"):
        safe_identifier(value, "schema")
    assert issubclass(UnsafeIdentifier, EnvironmentConfigError)


def test_local_paths_follow_lakehouse_home(monkeypatch, tmp_path):
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path))
    paths = local_paths()
    assert (paths.warehouse, paths.state_store, paths.work) == (
        tmp_path / "warehouse.duckdb", tmp_path / "state", tmp_path / "work")


def test_the_builtin_local_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path))
    local = builtin_local()
    assert (local.name, local.adapter, local.schema_name, local.blue_green.enabled) == ("local", "duckdb", "main", True)
    assert local.warehouse_path() == tmp_path / "warehouse.duckdb"
    with pytest.raises(Exception, match="unsafe schema"):
        DbtEnvironment(adapter="duckdb", schema_name="main;drop")


def databricks(**credentials) -> DbtEnvironment:
    return DbtEnvironment(adapter="databricks", schema_name="analytics", catalog="lake", http_path="/sql/1.0/w/1",
                          databricks_credentials=DatabricksCredentials(databricks_instance="dbc.example.com",
                                                                       **credentials))


def test_a_databricks_token_is_referenced_from_the_environment_not_written():
    target, secrets = target_config(databricks(token="dapi-secret"), "analytics__v1")
    assert target["token"] == "{{ env_var('%s') }}" % TOKEN_VAR and secrets == {TOKEN_VAR: "dapi-secret"}
    assert (target["catalog"], target["schema"], target["host"]) == ("lake", "analytics__v1", "dbc.example.com")
    assert "dapi-secret" not in str(target)


def test_oauth_service_principals():
    target, secrets = target_config(databricks(client_id="sp", client_secret="s3cret"), "analytics")
    assert (target["auth_type"], target["client_id"]) == ("oauth", "sp") and "s3cret" in secrets.values()
    azure, azure_secrets = target_config(databricks(client_id="sp", client_secret="s3cret", tenant_id="t"), "analytics")
    assert azure["azure_client_id"] == "sp" and azure_secrets["ARM_TENANT_ID"] == "t"


def test_databricks_without_credentials_or_http_path_is_refused():
    with pytest.raises(EnvironmentConfigError, match="no credentials block"):
        target_config(DbtEnvironment(adapter="databricks", schema_name="a", http_path="/x"), "a")
    without_warehouse = databricks(token="t").model_copy(update={"http_path": None})
    with pytest.raises(EnvironmentConfigError, match="no SQL warehouse http_path"):
        target_config(without_warehouse, "analytics")


def test_a_rendered_profile_is_private_and_removed_after(monkeypatch, tmp_path):
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path / "home"))
    project = tmp_path / "project"
    project.mkdir()
    (project / "dbt_project.yml").write_text("name: shop\nprofile: shop_profile\n")
    assert profile_name_of(project) == "shop_profile"
    with rendered_profile(builtin_local(), project, schema="main__v1") as profile:
        written = yaml.safe_load((profile.profiles_dir / "profiles.yml").read_text())
        assert written["shop_profile"]["outputs"]["local"]["schema"] == "main__v1"
        assert oct((profile.profiles_dir / "profiles.yml").stat().st_mode & 0o777) == "0o600"
        assert profile.profiles_dir.name.startswith(profile_dir_prefix(os.getpid()))
    assert not profile.profiles_dir.exists()


def test_process_identity_tells_a_live_process_from_a_gone_one():
    assert host_identity().count("/") == 2
    started = process_start(os.getpid())
    assert started and not process_gone(os.getpid(), started)
    assert process_gone(os.getpid(), "1")  # the same pid, another process start: reused
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child_started = process_start(child.pid) or "alive"
    child.wait()
    assert process_gone(child.pid, child_started)
