"""Create or update every block described in `blocks/environments.yaml`.

    python -m blocks.register [--file F]

Secrets are never in the file: each `*_env` key names the environment variable
that holds one. Everything is validated (unknown keys, unsafe identifiers, missing
variables, missing referenced blocks) before anything is written, and a block
whose content is unchanged is not saved again, so a second run changes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Literal, Optional

import yaml
from prefect.blocks.core import Block
from prefect.filesystems import RemoteFileSystem
from prefect_databricks import DatabricksCredentials
from prefect_slack import SlackWebhook
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blocks.environment import BlueGreenSettings, DbtEnvironment, EnvironmentConfigError, LOCAL

DEFAULT_FILE = Path(__file__).with_name("environments.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CredentialsSpec(_Strict):
    host: str = Field(description="Workspace host, e.g. adb-123.azuredatabricks.net")
    token_env: Optional[str] = None
    client_id: Optional[str] = None
    client_secret_env: Optional[str] = None
    tenant_id: Optional[str] = None


class StateStoreSpec(_Strict):
    basepath: str = Field(description="An fsspec URL such as s3://bucket/prefix, or a local folder")


class SlackWebhookSpec(_Strict):
    url_env: str


class EnvironmentSpec(_Strict):
    adapter: Literal["duckdb", "databricks"]
    schema_name: str = Field(alias="schema")
    catalog: Optional[str] = None
    threads: int = 4
    duckdb_path: Optional[str] = None
    credentials: Optional[str] = None
    http_path: Optional[str] = None
    state_store: Optional[str] = None
    slack_webhook: Optional[str] = None
    blue_green: BlueGreenSettings = Field(default_factory=BlueGreenSettings)
    step_timeout_seconds: int = 3600


class EnvironmentsFile(_Strict):
    credentials: dict[str, CredentialsSpec] = {}
    state_stores: dict[str, StateStoreSpec] = {}
    slack_webhooks: dict[str, SlackWebhookSpec] = {}
    environments: dict[str, EnvironmentSpec]


class RegistrationError(EnvironmentConfigError):
    pass


def read_spec(path: Path) -> EnvironmentsFile:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        return EnvironmentsFile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise RegistrationError(f"{path}: {problems}") from None


def _env_secret(variable: str, owner: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise RegistrationError(f"environment variable {variable} is not set (needed by {owner})")
    return value


def _credentials_block(name: str, spec: CredentialsSpec) -> DatabricksCredentials:
    owner = f"credentials {name!r}"
    if spec.token_env and (spec.client_id or spec.client_secret_env):
        raise RegistrationError(f"{owner}: give either token_env (PAT) or client_id + client_secret_env (OAuth), not both")
    if spec.token_env:
        return DatabricksCredentials(databricks_instance=spec.host, token=_env_secret(spec.token_env, owner))
    if spec.client_id and spec.client_secret_env:
        return DatabricksCredentials(
            databricks_instance=spec.host,
            client_id=spec.client_id,
            client_secret=_env_secret(spec.client_secret_env, owner),
            tenant_id=spec.tenant_id,
        )
    raise RegistrationError(f"{owner}: needs token_env, or client_id and client_secret_env")


def _state_store_block(spec: StateStoreSpec) -> RemoteFileSystem:
    url = spec.basepath if "://" in spec.basepath else Path(spec.basepath).resolve().as_uri()
    return RemoteFileSystem(basepath=url)


def _existing(block_class: type[Block], name: str) -> Optional[Block]:
    try:
        return block_class.load(name)  # type: ignore[return-value]  # sync_compatible: a block when called sync
    except ValueError:
        return None


def _content(block: Block) -> dict:
    return {field: getattr(block, field) for field in type(block).model_fields}


def _same(a: Block, b: Block) -> bool:
    """Equal content; nested blocks by content too, secrets by value."""
    def normalise(value):
        if isinstance(value, Block):
            return (type(value).__name__, normalise(_content(value)))
        if isinstance(value, BaseModel):
            return normalise(value.model_dump())
        if isinstance(value, dict):
            return {k: normalise(v) for k, v in value.items()}
        if hasattr(value, "get_secret_value"):
            return ("secret", value.get_secret_value())
        return value

    return type(a) is type(b) and normalise(_content(a)) == normalise(_content(b))


def _upsert(name: str, block: Block, report: list[str]) -> Block:
    existing = _existing(type(block), name)
    if existing is not None and _same(existing, block):
        report.append(f"unchanged  {block.get_block_type_slug()}/{name}")
        return existing
    block.save(name, overwrite=True)
    report.append(f"{'updated' if existing else 'created'}    {block.get_block_type_slug()}/{name}")
    return type(block).load(name)  # type: ignore[return-value]  # sync_compatible: a block when called sync


def plan(spec: EnvironmentsFile) -> tuple[dict, dict, dict, dict]:
    """Build every block in memory, or raise before anything is written."""
    if LOCAL in spec.environments:
        raise RegistrationError("'local' is built in and cannot be registered; pick another name")
    credentials = {name: _credentials_block(name, c) for name, c in spec.credentials.items()}
    stores = {name: _state_store_block(s) for name, s in spec.state_stores.items()}
    webhooks = {
        name: SlackWebhook(url=_env_secret(w.url_env, f"slack webhook {name!r}"))
        for name, w in spec.slack_webhooks.items()
    }
    environments = {}
    for name, env in spec.environments.items():
        owner = f"environment {name!r}"
        if env.credentials and env.credentials not in credentials and _existing(DatabricksCredentials, env.credentials) is None:
            raise RegistrationError(
                f"{owner} references credentials block {env.credentials!r}, which is neither in the file nor registered"
            )
        if env.state_store and env.state_store not in stores:
            raise RegistrationError(f"{owner} references state store {env.state_store!r}, which is not in the file")
        if env.slack_webhook and env.slack_webhook not in webhooks and _existing(SlackWebhook, env.slack_webhook) is None:
            raise RegistrationError(f"{owner} references slack webhook {env.slack_webhook!r}, which is neither in the file nor registered")
        if env.adapter == "databricks" and not (env.credentials and env.http_path):
            raise RegistrationError(f"{owner}: a Databricks environment needs credentials and http_path")
        try:
            environments[name] = DbtEnvironment(
                adapter=env.adapter, schema_name=env.schema_name, catalog=env.catalog, threads=env.threads,
                duckdb_path=env.duckdb_path, http_path=env.http_path, slack_webhook_block=env.slack_webhook,
                blue_green=env.blue_green, step_timeout_seconds=env.step_timeout_seconds,
            )
        except ValidationError as error:
            raise RegistrationError(f"{owner}: {error.errors()[0]['msg']}") from None
    return credentials, stores, webhooks, environments


def register(path: Path = DEFAULT_FILE) -> list[str]:
    """Upsert every block in `path`. Returns one report line per block."""
    spec = read_spec(path)
    credentials, stores, webhooks, environments = plan(spec)
    report: list[str] = []
    saved_credentials = {name: _upsert(name, block, report) for name, block in credentials.items()}
    saved_stores = {name: _upsert(name, block, report) for name, block in stores.items()}
    for name, block in webhooks.items():
        _upsert(name, block, report)
    for name, environment in environments.items():
        env = spec.environments[name]
        if env.credentials:
            environment.databricks_credentials = saved_credentials.get(env.credentials) or DatabricksCredentials.load(env.credentials)
        if env.state_store:
            environment.state_store = saved_stores[env.state_store]
        _upsert(name, environment, report)
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blocks.register", description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="environments YAML (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        report = register(args.file)
    except EnvironmentConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
