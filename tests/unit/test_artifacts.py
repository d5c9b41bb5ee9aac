"""flows/core/artifacts.py: the run report and its markdown (nothing is published)."""

from __future__ import annotations

from flows.core.artifacts import (
    Regression, RunReport, artifact_key, failures_markdown, find_regressions, markdown_table, model_timings,
    summary_markdown,
)
from flows.core.dbt import NodeResult, StepResult
from flows.core.freshness import SourceFreshness
from flows.core.versions import AuditRow


def result(name: str, status: str = "success", seconds: float = 1.0, kind: str = "model", message: str = "",
           compiled: str | None = None) -> NodeResult:
    return NodeResult(f"{kind}.shop.{name}", kind, name, status, message, seconds, compiled, None)


def report() -> RunReport:
    run = RunReport("prod", outcome="failed", version="v1")
    run.record("build", StepResult("build", False, 12.0, [
        result("orders", seconds=10.0), result("codes", kind="seed", seconds=0.5),
        result("not_null_x", "fail", kind="test", message="Runtime Error in test x (m.yml)\n  Got 3 results",
               compiled="target/x.sql")]))
    run.record("docs", StepResult.skipped("docs", "generate_docs is off"))
    run.note("publish", "skipped", "tests failed")
    return run


def test_record_keeps_step_rows_and_only_run_results():
    run = report()
    assert [(s.name, s.status) for s in run.steps] == [("build", "failed"), ("docs", "skipped"), ("publish", "skipped")]
    assert run.steps[1].note == "generate_docs is off"
    assert len(run.results) == 1 and [f.name for f in run.failures] == ["not_null_x"]


def test_model_timings_are_the_built_nodes_slowest_first():
    assert [row["node"] for row in model_timings(report())] == ["orders", "codes"]


def test_a_regression_is_three_times_the_median_of_enough_history():
    history = {"model.shop.orders": [2.0, 3.0, 3.0], "seed.shop.codes": [0.01, 0.01, 0.01]}
    found = find_regressions(report(), history)
    assert found == [Regression("orders", 10.0, 3.0)] and round(found[0].factor, 2) == 3.33
    assert find_regressions(report(), {"model.shop.orders": [2.0, 3.0]}) == []  # too little history
    assert Regression("x", 1.0, 0.0).factor == float("inf")


def test_markdown_table_escapes_pipes_and_newlines():
    assert markdown_table(["a", "b"], [["x|y", "1\n2"]]) == "| a | b |\n|---|---|\n| x\\|y | 1 2 |"


def test_summary_has_a_section_for_each_part_of_the_report():
    run = report()
    run.empty_layers = ["marts"]
    run.freshness = [SourceFreshness("raw.orders", "warn", 30 * 3600, "2024-01-01")]
    run.regressions = [Regression("orders", 10.0, 3.0)]
    run.audit = [AuditRow("main.orders", None, 5, "new")]
    run.versions = [{"version": "v1", "status": "published", "live": True, "created_at": "t", "rebuilt": 1}]
    text = summary_markdown(run)
    assert text.startswith("# dbt production run — `prod`: failed\n\nVersion: `v1`")
    for heading in ("## Steps", "## Source freshness", "## Failures", "## Runtime regressions", "## Publish audit",
                    "## Versions"):
        assert heading in text
    assert "Empty layers skipped: `marts`" in text and "| raw.orders | warn | 30.0 h | 2024-01-01 |" in text
    assert "| main.orders | — | 5 | new |" in text and "| v1 | published | ✔ | t | 1 |" in text


def test_failures_give_the_cause_line_and_the_compiled_sql():
    assert "| not_null_x | test | fail | Got 3 results | `target/x.sql` |" in failures_markdown(report())


def test_artifact_keys_are_slugs():
    assert artifact_key("Prod_EU", "summary") == "dbt-prod-eu-summary"
