"""Query tags: every query dbt and our flows send to Databricks says which run sent it.

Databricks SQL keeps session-level query tags with each statement in the `query_tags` column
of `system.query.history` (docs.databricks.com/sql/user/queries/query-tags), so warehouse cost
can be attributed per flow run. dbt's queries carry them through dbt-databricks' `query_tags`
profile key (a JSON object of strings); our own statements through the connector's
`session_configuration` (`QUERY_TAGS`, `key:value` pairs joined by commas).
"""

from __future__ import annotations

from typing import Optional

RUN_TAG = "lakehouse_flow_run_id"  # the one to filter on: query_tags['lakehouse_flow_run_id'] = '<id>'
ENVIRONMENT_TAG = "lakehouse_environment"
VERSION_TAG = "lakehouse_version"  # the blue-green version the run builds, when it builds one


def run_query_tags(environment: str, version: Optional[str] = None,
                   flow_run_id: Optional[str] = None) -> dict[str, str]:
    """The tags of this flow run's queries (outside a flow run: the environment, and the version if any)."""
    if flow_run_id is None:
        from prefect.runtime import flow_run

        flow_run_id = flow_run.id
    tags = {ENVIRONMENT_TAG: environment}
    if flow_run_id:
        tags[RUN_TAG] = str(flow_run_id)
    if version:
        tags[VERSION_TAG] = version
    return tags


def session_query_tags(tags: dict[str, str]) -> str:
    """`tags` as the `QUERY_TAGS` session setting, validated and escaped as dbt-databricks does its own
    (reserved `@@` keys refused, at most 20 tags and 128 characters a value, `\\ , :` escaped)."""
    from dbt.adapters.databricks.utils import QueryTagsUtils

    tags = dict(tags)
    QueryTagsUtils.validate_query_tags(tags, "lakehouse flows")  # escapes the values in place
    return QueryTagsUtils.format_query_tags_for_databricks(tags)


def query_history_filter(flow_run_id: str) -> str:
    """The `system.query.history` condition that selects one flow run's queries, dbt's and ours."""
    return f"query_tags['{RUN_TAG}'] = '{flow_run_id}'"
