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
from typing import Any, Optional

import yaml
from prefect.blocks.core import Block
from prefect.filesystems import RemoteFileSystem
from prefect_databricks import DatabricksCredentials
from prefect_slack import SlackWebhook
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from blocks.auth import resolve_auth
from blocks.environment import LOCAL, DbtEnvironment, EnvironmentConfigError, environments_file

DEFAULT_FILE = environments_file()  # $LAKEHOUSE_ENVIRONMENTS_FILE, else blocks/environments.yaml


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


# Fields of DbtEnvironment that hold a block; the file names the block instead.
BLOCK_REFERENCES = {"databricks_credentials": "credentials", "state_store": "state_store"}
FILE_KEYS = {"schema_name": "schema"}  # the file's shorter key for a field


def _environment_spec_fields() -> dict[str, Any]:
    """Each DbtEnvironment field, as the file spells it: the two cannot drift apart."""
    fields: dict[str, Any] = {}
    for name, info in DbtEnvironment.model_fields.items():
        if name in BLOCK_REFERENCES:
            fields[BLOCK_REFERENCES[name]] = (Optional[str], Field(None, description=f"Name of the block for {name}."))
        else:
            key = FILE_KEYS.get(name)
            fields[name] = (info.annotation, Field(... if info.is_required() else info.default, alias=key,
                                                       description=info.description) if key else info)
    return fields


EnvironmentSpec = create_model("EnvironmentSpec", __base__=_Strict, **_environment_spec_fields())


class EnvironmentsFile(_Strict):
    credentials: dict[str, CredentialsSpec] = {}
    state_stores: dict[str, StateStoreSpec] = {}
    slack_webhooks: dict[str, SlackWebhookSpec] = {}
    environments: dict[str, EnvironmentSpec]  # type: ignore[valid-type]  # built from DbtEnvironment above


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
    service_principal = [key for key in ("client_id", "client_secret_env", "tenant_id") if getattr(spec, key)]
    if spec.token_env and service_principal:
        raise RegistrationError(f"{owner}: give either token_env (pat) or client_id + client_secret_env "
                                f"[+ tenant_id] (a service principal), not both: it has token_env and "
                                f"{', '.join(service_principal)}")
    if spec.token_env:
        block = DatabricksCredentials(databricks_instance=spec.host, token=_env_secret(spec.token_env, owner))
    elif spec.client_id and spec.client_secret_env:
        block = DatabricksCredentials(
            databricks_instance=spec.host,
            client_id=spec.client_id,
            client_secret=_env_secret(spec.client_secret_env, owner),
            tenant_id=spec.tenant_id,
        )
    else:
        raise RegistrationError(f"{owner}: needs token_env, or client_id and client_secret_env")
    resolve_auth(block, owner)  # the one kind every consumer will use; raises if there is not exactly one
    return block


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
        values: dict[str, Any] = dict(env)
        named, store = values["credentials"], values["state_store"]
        if named and named not in credentials and _existing(DatabricksCredentials, named) is None:
            raise RegistrationError(
                f"{owner} references credentials block {named!r}, which is neither in the file nor registered"
            )
        if store and store not in stores:
            raise RegistrationError(f"{owner} references state store {store!r}, which is not in the file")
        if values["adapter"] == "databricks":
            missing = [key for key in ("credentials", "http_path", "catalog") if not values[key]]
            if missing:
                raise RegistrationError(f"{owner}: a Databricks environment needs {', '.join(missing)}")
        try:
            environments[name] = DbtEnvironment(**{key: value for key, value in values.items()
                                                   if key not in BLOCK_REFERENCES.values()})
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
        named, store = (getattr(spec.environments[name], key) for key in ("credentials", "state_store"))
        if named:
            environment.databricks_credentials = saved_credentials.get(named) or DatabricksCredentials.load(named)
        if store:
            environment.state_store = saved_stores[store]
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
