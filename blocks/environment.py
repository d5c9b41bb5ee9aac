"""The environment block: one saved document per environment (dev, staging, prod).

Flows take an environment *name*; credentials never travel as parameters.
The built-in `local` environment (DuckDB under `$LAKEHOUSE_HOME`) needs no registration.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

import yaml
from prefect.blocks.core import Block
from prefect.filesystems import RemoteFileSystem
from prefect_databricks import DatabricksCredentials
from pydantic import BaseModel, ConfigDict, Field, field_validator

from blocks.local import local_paths
from flows.errors import InputError

if TYPE_CHECKING:
    from blocks.auth import DatabricksAuth

LOCAL = "local"
DEFAULT_ENVIRONMENTS_FILE = Path(__file__).with_name("environments.yaml")
ENVIRONMENTS_FILE_VAR = "LAKEHOUSE_ENVIRONMENTS_FILE"
IDENTIFIER = re.compile(r"^[A-Za-z0-9_]+$")


class EnvironmentConfigError(InputError):
    """Bad environment input: raised before any dbt work starts."""


class UnknownEnvironment(EnvironmentConfigError):
    pass


class UnsafeIdentifier(EnvironmentConfigError):
    pass


def safe_identifier(value: str, what: str = "identifier") -> str:
    """Schema and catalog names end up inside SQL; only [A-Za-z0-9_] is allowed."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise UnsafeIdentifier(
            f"unsafe {what} {value!r}: use only letters, digits and underscores (and not empty)"
        )
    return value


def environments_file() -> Path:
    """The team's environments: $LAKEHOUSE_ENVIRONMENTS_FILE, else blocks/environments.yaml."""
    given = os.environ.get(ENVIRONMENTS_FILE_VAR)
    return Path(given) if given else DEFAULT_ENVIRONMENTS_FILE


def team_environment_names(path: Optional[Path] = None) -> tuple[str, ...]:
    """`local`, then the environments of the file, in its order: the operators' dropdown."""
    path = path or environments_file()
    try:
        spec = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise EnvironmentConfigError(f"the environments file {path} cannot be read ({error}); "
                                     f"set {ENVIRONMENTS_FILE_VAR} to the team's environments.yaml") from None
    names = [str(name) for name in (spec.get("environments") or {}) if str(name) != LOCAL]
    return (LOCAL, *names)


# Built when the module is imported, from the file the flows are deployed and run with: a flow's
# parameter schema (the deployment form's dropdown) and its validation then list exactly the
# team's environments, and adding one to environments.yaml needs no code change.
if TYPE_CHECKING:
    EnvironmentName = str
else:
    EnvironmentName = Literal[team_environment_names()]


class BlueGreenSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Build into a versioned schema and flip live views only after tests and audit pass.")
    keep_versions: int = Field(3, ge=2, description="How many versions prune_versions keeps (the live one and the one before it are always kept).")
    max_shrink: float = Field(0.5, ge=0, le=1, description="Refuse the flip when a published relation loses more than this fraction of its rows.")


class DbtEnvironment(Block):
    """Where and how dbt runs for one environment: adapter, target, credentials, state and publish settings."""

    _block_type_name = "dbt Lakehouse Environment"
    _block_type_slug = "dbt-lakehouse-environment"
    _description = "A dbt target for the lakehouse flows: DuckDB locally, Databricks in dev/staging/prod."

    adapter: Literal["duckdb", "databricks"] = Field(description="dbt adapter this environment runs on.")
    schema_name: str = Field(description="Target schema. Live views live here; blue-green versions are <schema>__<version>.")
    catalog: Optional[str] = Field(None, description="Unity Catalog name (Databricks only).")
    threads: int = Field(4, ge=1, le=64, description="dbt threads.")
    duckdb_path: Optional[str] = Field(None, description="DuckDB file (duckdb only). Default: $LAKEHOUSE_HOME/warehouse.duckdb.")
    databricks_credentials: Optional[DatabricksCredentials] = Field(
        None, description="prefect-databricks credentials block: a PAT token or an OAuth M2M service principal."
    )
    http_path: Optional[str] = Field(None, description="HTTP path of the Databricks SQL warehouse, e.g. /sql/1.0/warehouses/abc123.")
    state_store: Optional[RemoteFileSystem] = Field(
        None,
        description="Where manifests, sources.json, run results and docs are kept: any fsspec URL "
        "(s3://…, a Databricks volume, file://…). Default: a LocalFileSystem under $LAKEHOUSE_HOME/state.",
    )
    blue_green: BlueGreenSettings = Field(default_factory=BlueGreenSettings, description="Blue-green publish settings.")
    step_timeout_seconds: int = Field(3600, ge=1, description="Timeout of each dbt step of a run.")
    transient_retries: int = Field(
        2, ge=0, le=10, description="How many times a step re-runs its transiently failed nodes (a dropped connection, "
        "HTTP 429/503, a Delta concurrent-write conflict) with dbt retry, with backoff. 0: never.")
    connect_retry_seconds: int = Field(
        900, ge=1, le=86400,
        description="Databricks only: keep retrying to reach the SQL warehouse this long (it may be starting), then "
        "fail; also each socket's connect/read timeout. databricks-sql-connector allows 1 to 86400 s.")

    @field_validator("schema_name")
    @classmethod
    def _schema_is_safe(cls, value: str) -> str:
        return safe_identifier(value, "schema")

    @field_validator("catalog")
    @classmethod
    def _catalog_is_safe(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else safe_identifier(value, "catalog")

    @property
    def name(self) -> str:
        """The block document name; the built-in environment is `local`."""
        return self._block_document_name or LOCAL

    def warehouse_path(self) -> Path:
        return Path(self.duckdb_path) if self.duckdb_path else local_paths().warehouse

    def require_databricks(self) -> tuple["DatabricksAuth", str]:
        """The one identity this environment runs as (see blocks/auth.py) and its SQL warehouse."""
        from blocks.auth import resolve_auth

        if self.databricks_credentials is None:
            raise EnvironmentConfigError(f"environment {self.name!r} is on Databricks but has no credentials block")
        if not self.http_path:
            raise EnvironmentConfigError(f"environment {self.name!r} is on Databricks but has no SQL warehouse http_path")
        if not self.catalog:
            # Without one, dbt-databricks uses the workspace's default catalog and our SQL would have to
            # guess it: the two could disagree on where the live views are.
            raise EnvironmentConfigError(f"environment {self.name!r} is on Databricks but names no catalog")
        return resolve_auth(self.databricks_credentials, f"environment {self.name!r}: its credentials"), self.http_path


def builtin_local() -> DbtEnvironment:
    environment = DbtEnvironment(
        adapter="duckdb",
        schema_name="main",
        threads=4,
        blue_green=BlueGreenSettings(enabled=True),
        step_timeout_seconds=1800,
    )
    environment._block_document_name = LOCAL
    return environment


def known_environments() -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        with get_client(sync_client=True) as client:
            documents = client.read_block_documents_by_type(DbtEnvironment.get_block_type_slug())
    except (ObjectNotFound, PrefectHTTPStatusError) as error:
        if getattr(getattr(error, "response", None), "status_code", 404) != 404:
            raise
        documents = []  # the block type is not registered yet: only the built-in environment exists
    return sorted({LOCAL, *(d.name for d in documents if d.name)})  # an anonymous block document has no name


def load_environment(name: str) -> DbtEnvironment:
    """The environment named `name`, or a clear error listing the known ones."""
    if name == LOCAL:
        return builtin_local()
    try:
        return DbtEnvironment.load(name)  # type: ignore[return-value]  # sync_compatible: a block when called sync
    except ValueError as error:
        if "Unable to find block document" in str(error):
            raise UnknownEnvironment(
                f"unknown environment {name!r}; known environments: {', '.join(known_environments())}"
            ) from None
        raise EnvironmentConfigError(f"environment {name!r} could not be loaded: {error}") from None
