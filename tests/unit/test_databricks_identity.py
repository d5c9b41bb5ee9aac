"""blocks/auth.py, blocks/query_tags.py and what the profile and our SQL connection make of them.

One identity per environment: the dbt profile, the connector's databricks-sdk Config and the Jobs
credentials are all built from the same resolved kind. Query tags are checked with dbt-databricks'
own parser and validator (dbt/adapters/databricks/utils.py, QueryTagsUtils).
"""

from __future__ import annotations

import json
import uuid

import pytest
from dbt.adapters.databricks.utils import QueryTagsUtils
from prefect_databricks import DatabricksCredentials
from pydantic import SecretStr

from blocks.auth import AmbiguousCredentials, resolve_auth
from blocks.environment import DbtEnvironment, EnvironmentConfigError
from blocks.profile import CLIENT_SECRET_VAR, TOKEN_VAR, target_config
from blocks.query_tags import ENVIRONMENT_TAG, RUN_TAG, VERSION_TAG, query_history_filter, run_query_tags
from flows.core.warehouse import DatabricksWarehouse

HOST = "dbc-unit.cloud.databricks.com"
KINDS = {
    "pat": dict(token="dapi-unit"),
    "oauth-m2m": dict(client_id="sp-app", client_secret="sp-secret"),
    "azure-sp": dict(client_id="entra-app", client_secret="entra-secret", tenant_id="tenant-guid"),
}
SDK_AUTH_TYPE = {"pat": "pat", "oauth-m2m": "oauth-m2m", "azure-sp": "azure-client-secret"}


def environment(credentials: DatabricksCredentials, **overrides) -> DbtEnvironment:
    env = DbtEnvironment(**({"adapter": "databricks", "schema_name": "analytics", "catalog": "lake",
                             "http_path": "/sql/1.0/warehouses/abc", "databricks_credentials": credentials}
                            | overrides))
    env._block_document_name = "staging"
    return env


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_resolved_once_and_used_alike_by_profile_sql_and_jobs(kind, monkeypatch):
    # What a worker's shell might hold: the SDK would otherwise pick these up (unified auth).
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-from-the-worker-shell")
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", "someone-else")
    env = environment(DatabricksCredentials(databricks_instance=HOST, **KINDS[kind]))
    auth, _ = env.require_databricks()
    assert auth.kind == kind and "secret" not in repr(auth) and "dapi" not in repr(auth)

    config = auth.sdk_config_kwargs()
    assert config["auth_type"] == SDK_AUTH_TYPE[kind] and config["host"] == f"https://{HOST}"

    target, secrets = target_config(env, "analytics")
    if kind == "pat":
        assert target["token"] == "{{ env_var('%s') }}" % TOKEN_VAR and secrets == {TOKEN_VAR: "dapi-unit"}
        assert "auth_type" not in target and config["token"] == "dapi-unit"
    elif kind == "oauth-m2m":
        assert (target["auth_type"], target["client_id"]) == ("oauth", "sp-app") and "azure_client_id" not in target
        assert secrets == {CLIENT_SECRET_VAR: "sp-secret"} and config["client_id"] == "sp-app"
    else:
        assert (target["auth_type"], target["azure_client_id"]) == ("oauth", "entra-app")
        assert secrets == {CLIENT_SECRET_VAR: "entra-secret", "ARM_TENANT_ID": "tenant-guid"}
        assert config["azure_tenant_id"] == "tenant-guid"

    jobs = auth.jobs_credentials()  # the Jobs calls: only this kind's fields
    assert bool(jobs.token) == (kind == "pat") and (jobs.tenant_id is not None) == (kind == "azure-sp")


def test_the_sql_connection_builds_its_sdk_config_with_the_explicit_auth_type(monkeypatch):
    """The connector calls credentials_provider when it connects: that builds the databricks-sdk
    Config of the resolved kind. A real Config for a PAT (no network) ignores the worker's variables."""
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-from-the-worker-shell")
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", "someone-else")
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", "someone-elses-secret")
    import databricks.sdk.config

    def offline(host, *args, **kwargs):  # the SDK asks the host for its /.well-known/databricks-config
        raise ConnectionError("offline")

    monkeypatch.setattr(databricks.sdk.config, "get_host_metadata", offline)
    warehouse = DatabricksWarehouse(environment(DatabricksCredentials(databricks_instance=HOST, token="dapi-unit")))
    header_factory = warehouse.connect_options()["credentials_provider"]()
    assert header_factory() == {"Authorization": "Bearer dapi-unit"}
    config = warehouse.auth.sdk_config()
    assert (config.auth_type, config.token) == ("pat", "dapi-unit")

    built = []
    import databricks.sdk.core

    monkeypatch.setattr(databricks.sdk.core, "Config", lambda **kwargs: built.append(kwargs) or
                        type("Config", (), {"authenticate": staticmethod(lambda: {})})())
    for kind in ("oauth-m2m", "azure-sp"):  # these authenticate over the network: the arguments are checked
        warehouse = DatabricksWarehouse(environment(DatabricksCredentials(databricks_instance=HOST, **KINDS[kind])))
        warehouse.connect_options()["credentials_provider"]()
        assert built[-1]["auth_type"] == SDK_AUTH_TYPE[kind]
        assert "token" not in built[-1]


def test_a_block_holding_two_kinds_is_refused_naming_the_fields():
    # prefect-databricks' validator refuses token + client_id/secret when the block is built in Python;
    # a document saved from the UI or the API is not built that way, and token + tenant_id passes it.
    both = DatabricksCredentials.model_construct(databricks_instance=HOST, token=SecretStr("dapi"),
                                                 client_id="sp", client_secret=SecretStr("s"), tenant_id=None)
    with pytest.raises(AmbiguousCredentials, match=r"two auth kinds: `token` \(pat\) and `client_id`, `client_secret`"):
        resolve_auth(both)
    with_tenant = DatabricksCredentials(databricks_instance=HOST, token="dapi", tenant_id="tenant-guid")
    with pytest.raises(AmbiguousCredentials, match=r"environment 'staging': its credentials hold two auth kinds.*`tenant_id`"):
        target_config(environment(with_tenant), "analytics")
    half = DatabricksCredentials.model_construct(databricks_instance=HOST, token=None, client_id="sp",
                                                 client_secret=None, tenant_id=None)
    with pytest.raises(AmbiguousCredentials, match="needs `client_secret`"):
        resolve_auth(half)
    assert issubclass(AmbiguousCredentials, EnvironmentConfigError)


def test_a_databricks_environment_without_a_catalog_is_refused_before_any_work():
    env = environment(DatabricksCredentials(databricks_instance=HOST, token="t"), catalog=None)
    with pytest.raises(EnvironmentConfigError, match="names no catalog"):
        target_config(env, "analytics")
    with pytest.raises(EnvironmentConfigError, match="names no catalog"):
        DatabricksWarehouse(env)


def test_connect_retry_seconds_is_the_connectors_retry_budget_and_socket_timeout_in_profile_and_connection():
    env = environment(DatabricksCredentials(databricks_instance=HOST, token="t"), connect_retry_seconds=120)
    expected = {"_retry_stop_after_attempts_duration": 120, "_retry_stop_after_attempts_count": 60,
                "_socket_timeout": 120}
    target, _ = target_config(env, "analytics")
    assert target["connection_parameters"] == expected
    options = DatabricksWarehouse(env).connect_options()
    assert {key: options[key] for key in expected} == expected and options["catalog"] == "lake"
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        environment(DatabricksCredentials(databricks_instance=HOST, token="t"), connect_retry_seconds=0)


def test_query_tags_are_what_dbt_databricks_parses_and_our_session_carries(monkeypatch):
    run_id = str(uuid.uuid4())
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", run_id)  # what prefect.runtime reads in a flow run's process
    tags = run_query_tags("staging", "v20261202_abc123")
    assert tags == {RUN_TAG: run_id, ENVIRONMENT_TAG: "staging", VERSION_TAG: "v20261202_abc123"}

    env = environment(DatabricksCredentials(databricks_instance=HOST, token="t"))
    target, _ = target_config(env, "analytics", tags)
    parsed = QueryTagsUtils.parse_query_tags(target["query_tags"])  # the profile's JSON, as dbt-databricks reads it
    assert parsed == tags
    QueryTagsUtils.merge_query_tags(dict(parsed), {}, {})  # reserved keys, limits: as dbt-databricks merges them

    session = DatabricksWarehouse(env, version="v20261202_abc123").connect_options()["session_configuration"]
    pairs = dict(pair.split(":", 1) for pair in session["QUERY_TAGS"].split(","))
    assert pairs == {RUN_TAG: run_id, ENVIRONMENT_TAG: "staging", VERSION_TAG: "v20261202_abc123"}
    assert query_history_filter(run_id) == f"query_tags['{RUN_TAG}'] = '{run_id}'"


def test_query_tags_outside_a_flow_run_name_the_environment_only(monkeypatch):
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    assert run_query_tags("local") == {ENVIRONMENT_TAG: "local"}
    assert json.loads(json.dumps(run_query_tags("dev", flow_run_id="abc"))) == {ENVIRONMENT_TAG: "dev", RUN_TAG: "abc"}


def test_the_files_environment_spec_is_derived_from_the_block():
    from blocks.register import BLOCK_REFERENCES, EnvironmentSpec

    assert set(EnvironmentSpec.model_fields) == {BLOCK_REFERENCES.get(name, name) for name in DbtEnvironment.model_fields}
    assert EnvironmentSpec.model_fields["schema_name"].alias == "schema"
    spec = EnvironmentSpec.model_validate({"adapter": "databricks", "schema": "a", "connect_retry_seconds": 60})
    assert spec.connect_retry_seconds == 60  # settable from the file


def test_the_run_summary_says_which_tag_selects_the_runs_queries():
    from flows.core.artifacts import RunReport, summary_markdown

    markdown = summary_markdown(RunReport("prod", query_history_filter=query_history_filter("run-42")))
    assert "system.query.history WHERE query_tags['lakehouse_flow_run_id'] = 'run-42'" in markdown
    assert "system.query.history" not in summary_markdown(RunReport("local"))
