"""Render a dbt `profiles.yml` for one environment, without ever writing a secret to disk.

The file holds `env_var()` references; secret values go only into the process
environment that dbt reads, under `DBT_ENV_SECRET_*` names, which dbt also scrubs
from its own logs. The file lives in a private temp dir and is removed on exit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import yaml
from blocks.auth import DatabricksAuth
from blocks.environment import DbtEnvironment, safe_identifier
from blocks.query_tags import run_query_tags
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


def connection_retry_parameters(environment: DbtEnvironment) -> dict[str, int]:
    """databricks-sql-connector's retry budget and socket timeout, from `connect_retry_seconds`.

    The connector's own defaults (900 s, 30 attempts, 900 s sockets) would otherwise apply whatever
    the setting says; the attempt count is raised to its maximum so that the duration decides.
    """
    seconds = environment.connect_retry_seconds
    return {"_retry_stop_after_attempts_duration": seconds, "_retry_stop_after_attempts_count": 60,
            "_socket_timeout": seconds}


def _auth_target(auth: DatabricksAuth) -> tuple[dict, dict[str, str]]:
    """dbt-databricks' keys for the resolved kind (its credentials.py: token; auth_type oauth with
    client_id/client_secret; azure_client_id/azure_client_secret with the tenant from ARM_TENANT_ID)."""
    if auth.kind == "pat":
        return {"token": "{{ env_var('%s') }}" % TOKEN_VAR}, {TOKEN_VAR: auth.token or ""}
    secret = "{{ env_var('%s') }}" % CLIENT_SECRET_VAR
    secrets = {CLIENT_SECRET_VAR: auth.client_secret or ""}
    if auth.kind == "oauth-m2m":
        return {"auth_type": "oauth", "client_id": auth.client_id, "client_secret": secret}, secrets
    return ({"auth_type": "oauth", "azure_client_id": auth.client_id, "azure_client_secret": secret},
            secrets | {"ARM_TENANT_ID": auth.tenant_id or ""})


def target_config(environment: DbtEnvironment, schema: str,
                  query_tags: Optional[dict[str, str]] = None) -> tuple[dict, dict[str, str]]:
    """The profile target (with env_var references) and the secrets it needs in the environment."""
    if environment.adapter == "duckdb":
        path = environment.warehouse_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return {"type": "duckdb", "path": str(path), "schema": schema, "threads": environment.threads}, {}

    auth, http_path = environment.require_databricks()
    target = {
        "type": "databricks",
        "host": auth.host,
        "http_path": http_path,
        "catalog": environment.catalog,
        "schema": schema,
        "threads": environment.threads,
        # dbt-databricks passes these to databricks-sql-connector's connect()
        "connection_parameters": connection_retry_parameters(environment),
    }
    if query_tags:
        # dbt-databricks 1.12 reads `query_tags` as a JSON object of strings (QueryTagsUtils.parse_query_tags)
        target["query_tags"] = json.dumps(query_tags, sort_keys=True)
    auth_keys, secrets = _auth_target(auth)
    target.update(auth_keys)
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
    environment: DbtEnvironment, project_dir: Path, schema: Optional[str] = None, version: Optional[str] = None,
) -> Iterator[RenderedProfile]:
    """A private profiles.yml for `environment`, deleted on exit (also on error).

    `schema` overrides the environment's schema: blue-green versions and PR schemas use it.
    `version` (the blue-green version the run builds) goes into the query tags of dbt's queries.
    """
    schema = safe_identifier(schema or environment.schema_name, "schema")
    name = profile_name_of(project_dir)
    target, secrets = target_config(environment, schema, run_query_tags(environment.name, version))
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
