"""Render a dbt `profiles.yml` for one environment, without ever writing a secret to disk.

The file holds `env_var()` references; secret values go only into the process
environment that dbt reads, under `DBT_ENV_SECRET_*` names, which dbt also scrubs
from its own logs. The file lives in a private temp dir and is removed on exit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import yaml
from pydantic import SecretStr

from blocks.environment import DbtEnvironment, EnvironmentConfigError, safe_identifier
from blocks.host import host_identity, process_gone, process_start

TOKEN_VAR = "DBT_ENV_SECRET_DATABRICKS_TOKEN"
CLIENT_SECRET_VAR = "DBT_ENV_SECRET_DATABRICKS_CLIENT_SECRET"


@dataclass(frozen=True)
class RenderedProfile:
    profiles_dir: Path
    profile_name: str
    target: str
    schema: str


def profile_name_of(project_dir: Path) -> str:
    with open(Path(project_dir) / "dbt_project.yml") as handle:
        project = yaml.safe_load(handle) or {}
    return project.get("profile") or project["name"]


def _secret(value: SecretStr) -> str:
    return value.get_secret_value()


def target_config(environment: DbtEnvironment, schema: str) -> tuple[dict, dict[str, str]]:
    """The profile target (with env_var references) and the secrets it needs in the environment."""
    if environment.adapter == "duckdb":
        path = environment.warehouse_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return {"type": "duckdb", "path": str(path), "schema": schema, "threads": environment.threads}, {}

    credentials, http_path = environment.require_databricks()
    target = {
        "type": "databricks",
        "host": credentials.databricks_instance,
        "http_path": http_path,
        "schema": schema,
        "threads": environment.threads,
        # databricks-sql-connector's own retry budget; dbt-databricks' default count alone allows ~30 min
        "connection_parameters": {"_retry_stop_after_attempts_duration": environment.connect_retry_seconds},
    }
    if environment.catalog:
        target["catalog"] = environment.catalog
    secrets: dict[str, str] = {}
    if credentials.client_id and credentials.client_secret and credentials.tenant_id:
        # An Azure Entra service principal: dbt-databricks' azure_* keys, tenant from ARM_TENANT_ID.
        target.update(auth_type="oauth", azure_client_id=credentials.client_id,
                      azure_client_secret="{{ env_var('%s') }}" % CLIENT_SECRET_VAR)
        secrets[CLIENT_SECRET_VAR] = _secret(credentials.client_secret)
        secrets["ARM_TENANT_ID"] = credentials.tenant_id
    elif credentials.client_id and credentials.client_secret:
        target.update(auth_type="oauth", client_id=credentials.client_id,
                      client_secret="{{ env_var('%s') }}" % CLIENT_SECRET_VAR)
        secrets[CLIENT_SECRET_VAR] = _secret(credentials.client_secret)
    elif credentials.token:
        target["token"] = "{{ env_var('%s') }}" % TOKEN_VAR
        secrets[TOKEN_VAR] = _secret(credentials.token)
    else:
        raise EnvironmentConfigError(
            f"environment {environment.name!r}: its Databricks credentials hold neither a token "
            "nor an OAuth client_id/client_secret"
        )
    return target, secrets


PROFILE_DIR_PREFIX = "lakehouse-profile-"


def _this_host() -> str:
    # PIDs in a temp dir shared with other containers or hosts cannot be checked from here
    return hashlib.sha1(host_identity().encode()).hexdigest()[:8]


def profile_dir_prefix(pid: int) -> str:
    """How the profile dirs of process `pid` start: `lakehouse-profile-<host>-<pid>-`, then when the
    process started, so that a later run can tell whether it is gone."""
    return f"{PROFILE_DIR_PREFIX}{_this_host()}-{pid}-"


def _remove_profiles_of_dead_processes() -> None:
    """A killed run (SIGKILL, OOM) cannot delete its profile dir: the next render does.

    They hold env_var() references, never secrets; this keeps temp from filling up.
    Only dirs of this host and user whose process is gone are removed, as the publish lock decides it.
    """
    prefix = f"{PROFILE_DIR_PREFIX}{_this_host()}-"
    for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        pid, _, rest = stale.name[len(prefix):].partition("-")
        started = rest.partition("-")[0]
        if not pid.isdigit() or not (started.isdigit() or started == "alive"):
            continue
        try:
            if stale.stat().st_uid == os.getuid() and process_gone(int(pid), started):
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:  # removed meanwhile
            pass


@contextmanager
def rendered_profile(
    environment: DbtEnvironment, project_dir: Path, schema: Optional[str] = None
) -> Iterator[RenderedProfile]:
    """A private profiles.yml for `environment`, deleted on exit (also on error).

    `schema` overrides the environment's schema: blue-green versions and PR schemas use it.
    """
    schema = safe_identifier(schema or environment.schema_name, "schema")
    name = profile_name_of(project_dir)
    target, secrets = target_config(environment, schema)
    _remove_profiles_of_dead_processes()
    pid = os.getpid()
    profiles_dir = Path(tempfile.mkdtemp(prefix=f"{profile_dir_prefix(pid)}{process_start(pid)}-"))  # mode 0700
    saved = {key: os.environ.get(key) for key in secrets}
    try:
        descriptor = os.open(profiles_dir / "profiles.yml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            yaml.safe_dump({name: {"target": environment.name, "outputs": {environment.name: target}}}, handle)
        os.environ.update(secrets)
        yield RenderedProfile(profiles_dir, name, environment.name, schema)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(profiles_dir, ignore_errors=True)
