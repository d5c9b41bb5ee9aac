"""blocks/naming.py: the one schema layout (version schemas, parsing one back, PR schemas, case folding)."""

from __future__ import annotations

import pytest

from blocks import naming
from flows.core.warehouse import DatabricksDialect, DuckDBDialect, Phase, Statement

V = "v20240101000000_abc123"


def test_a_version_schema_parses_back_to_its_live_schema_and_version():
    physical = naming.versioned_schema("main", V) + "_finance"
    assert naming.live_schema_of(physical, "main") == "main_finance" and naming.version_of_schema(physical, "main") == V
    assert naming.version_schema_prefix("main", V) == f"main__{V}" and naming.version_schema_prefix("main") == "main__v"


def test_pr_schemas_and_case_folding():
    assert naming.pr_schema("analytics", 7) == "analytics_pr_7"
    assert naming.is_pr_schema("ANALYTICS_PR_7_finance", "analytics", 7) and not naming.is_pr_schema("analytics_pr_71", "analytics", 7)
    with pytest.raises(ValueError):
        naming.pr_schema("analytics", 0)
    assert naming.fold("Main", "databricks") == "main" and naming.fold("Main", "duckdb") == "Main"
    assert DatabricksDialect("lake").fold("Main") == "main" and DuckDBDialect().fold("Main") == "Main"


def test_statements_carry_the_phase_their_dialect_gives_them():
    d = DatabricksDialect("lake")
    assert d.create_schema("main").phase == Phase.CREATE_SCHEMAS and d.drop_schema("old").phase == Phase.DROP_SCHEMAS
    statement = Statement("SELECT 1", Phase.FREE_NAMES)
    assert statement == "SELECT 1" and statement.phase == Phase.FREE_NAMES
