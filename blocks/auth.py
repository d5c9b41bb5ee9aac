"""The one Databricks identity an environment runs as: resolved once, used by everything we send.

A prefect-databricks `DatabricksCredentials` block can hold a token, client credentials and a
tenant; each consumer used to pick its own. Resolving here into one explicit kind means the dbt
profile, our SQL connection and the Jobs calls all log in as the same principal:

- `pat`: a personal access token;
- `oauth-m2m`: a Databricks-managed service principal (client id and secret);
- `azure-sp`: a Microsoft Entra ID service principal (client id, secret and tenant).

A block holding fields of two kinds is refused, naming the fields, rather than guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from prefect_databricks import DatabricksCredentials

from blocks.environment import EnvironmentConfigError

AuthKind = Literal["pat", "oauth-m2m", "azure-sp"]
# databricks-sdk's name of each kind's credentials strategy (databricks/sdk/credentials_provider.py:
# @credentials_strategy("pat"), @oauth_credentials_strategy("oauth-m2m"), ("azure-client-secret")).
SDK_AUTH_TYPE: dict[str, str] = {"pat": "pat", "oauth-m2m": "oauth-m2m", "azure-sp": "azure-client-secret"}


class AmbiguousCredentials(EnvironmentConfigError):
    """Credentials that hold fields of two auth kinds, or of none completely."""


def _given(value: Any) -> Optional[str]:
    if value is None:
        return None
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return text or None


@dataclass(frozen=True)
class DatabricksAuth:
    """One resolved identity. Secrets are plain strings here: never log or persist this object."""

    kind: AuthKind
    host: str
    token: Optional[str] = None
    client_id: Optional[str] = None
    client_secret: Optional[str] = None
    tenant_id: Optional[str] = None

    def __repr__(self) -> str:  # a traceback or log line must not show the secret
        return f"DatabricksAuth(kind={self.kind!r}, host={self.host!r}, client_id={self.client_id!r})"

    def sdk_config_kwargs(self) -> dict[str, Any]:
        """databricks-sdk `Config` arguments with an explicit `auth_type`: a DATABRICKS_TOKEN or
        ~/.databrickscfg on the worker cannot make the SDK pick another identity."""
        kwargs: dict[str, Any] = {"host": f"https://{self.host}", "auth_type": SDK_AUTH_TYPE[self.kind]}
        if self.kind == "pat":
            kwargs["token"] = self.token
        elif self.kind == "oauth-m2m":
            kwargs.update(client_id=self.client_id, client_secret=self.client_secret)
        else:
            kwargs.update(azure_client_id=self.client_id, azure_client_secret=self.client_secret,
                          azure_tenant_id=self.tenant_id)
        return kwargs

    def sdk_config(self):
        """The databricks-sdk `Config` (authenticates when built, so only at connect time)."""
        from databricks.sdk.core import Config

        return Config(**self.sdk_config_kwargs())

    def jobs_credentials(self) -> DatabricksCredentials:
        """A prefect-databricks block holding only this kind's fields, for the Jobs API calls."""
        if self.kind == "pat":
            return DatabricksCredentials(databricks_instance=self.host, token=self.token)
        return DatabricksCredentials(databricks_instance=self.host, client_id=self.client_id,
                                     client_secret=self.client_secret,
                                     tenant_id=self.tenant_id if self.kind == "azure-sp" else None)


def resolve_auth(credentials: DatabricksCredentials, owner: str = "the Databricks credentials") -> DatabricksAuth:
    """The single auth kind `credentials` holds, or an error naming the fields that disagree."""
    token = _given(credentials.token)
    client_id, client_secret = _given(credentials.client_id), _given(credentials.client_secret)
    tenant_id = _given(credentials.tenant_id)
    service_principal = [name for name, value in
                         (("client_id", client_id), ("client_secret", client_secret), ("tenant_id", tenant_id)) if value]
    if token and service_principal:
        raise AmbiguousCredentials(
            f"{owner} hold two auth kinds: `token` (pat) and {', '.join(f'`{n}`' for n in service_principal)} "
            "(a service principal); keep the fields of one kind only")
    host = credentials.databricks_instance
    if token:
        return DatabricksAuth("pat", host, token=token)
    if client_id and client_secret:
        if tenant_id:
            return DatabricksAuth("azure-sp", host, client_id=client_id, client_secret=client_secret, tenant_id=tenant_id)
        return DatabricksAuth("oauth-m2m", host, client_id=client_id, client_secret=client_secret)
    if service_principal:
        missing = [name for name in ("client_id", "client_secret") if name not in service_principal]
        raise AmbiguousCredentials(f"{owner}: a service principal needs {' and '.join(f'`{n}`' for n in missing)}")
    raise AmbiguousCredentials(f"{owner} hold neither a `token` nor a service principal's `client_id` and `client_secret`")
