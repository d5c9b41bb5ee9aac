"""flows/core/artifacts.py: the run report and its markdown (nothing is published)."""

from __future__ import annotations

import base64
import re
from xml.etree import ElementTree

from flows.core.artifacts import (
    Regression, RunReport, artifact_key, failures_markdown, find_regressions, markdown_table, model_timings,
    slowest_trends, sparkline, summary_markdown, timing_samples,
)
from flows.core.state_store import TIMING_HISTORY, ModelTimings, TimingSample
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
    history = {"model.shop.orders": ModelTimings("c1", [2.0, 3.0, 3.0], [None] * 3),
               "seed.shop.codes": ModelTimings(None, [0.01, 0.01, 0.01], [None] * 3)}
    found = find_regressions(report(), history, {"model.shop.orders": "c1"})
    assert found == [Regression("orders", 10.0, 3.0)] and round(found[0].factor, 2) == 3.33
    assert find_regressions(report(), {"model.shop.orders": ModelTimings(None, [2.0, 3.0])}) == []  # too little history
    assert Regression("x", 1.0, 0.0).factor == float("inf")
    # "More than 3x": a hair under 3x and exactly 3x are not flagged, just over is.
    median_3 = {"model.shop.orders": ModelTimings("c1", [2.0, 3.0, 3.0], [None] * 3)}
    assert find_regressions(_orders_run(8.99), median_3, {"model.shop.orders": "c1"}) == []
    assert find_regressions(_orders_run(9.0), median_3, {"model.shop.orders": "c1"}) == []
    assert find_regressions(_orders_run(9.01), median_3, {"model.shop.orders": "c1"}) == [Regression("orders", 9.01, 3.0)]


def _orders_run(seconds: float) -> RunReport:
    """A run that built one model, orders, in `seconds`."""
    run = RunReport("prod")
    run.record("build", StepResult("build", True, seconds, [result("orders", seconds=seconds)]))
    return run


def test_the_regression_baseline_is_the_median_of_the_last_ten_runs_only():
    # 20 slow runs, then 10 fast ones, recorded as the state store records each run's sample: the
    # slow ones have left the window, so 3.5 s is a regression of the fast median (1 s), though the
    # median over all 30 runs (10 s) would hide it.
    history = ModelTimings()
    for seconds in [10.0] * 20 + [1.0] * TIMING_HISTORY:
        history = history.with_sample(TimingSample(seconds, "c1"))
    assert TIMING_HISTORY == 10 and history.seconds == [1.0] * 10  # the README's "last 10 runs"
    found = find_regressions(_orders_run(3.5), {"model.shop.orders": history}, {"model.shop.orders": "c1"})
    assert found == [Regression("orders", 3.5, 1.0)]


def test_a_model_whose_code_changed_is_not_a_regression_of_the_old_code():
    history = {"model.shop.orders": ModelTimings("old", [2.0, 3.0, 3.0], [None] * 3)}
    assert find_regressions(report(), history, {"model.shop.orders": "new"}) == []
    assert find_regressions(report(), history, {"model.shop.orders": "old"}) != []


def test_a_regression_reports_the_rows_the_adapter_returned():
    run = RunReport("prod")
    run.record("build", StepResult("build", True, 9.0, [
        NodeResult("model.shop.orders", "model", "orders", "success", "", 9.0, None, None, rows=5_000)]))
    history = {"model.shop.orders": ModelTimings("c", [1.0, 1.0, 1.0], [100, None, 120])}
    (found,) = find_regressions(run, history, {"model.shop.orders": "c"})
    assert (found.rows, found.median_rows) == (5_000, 110)
    assert "| orders | 9.00 | 1.00 | 9.0× | 5,000 | 110 |" in summary_markdown(_with(run, regressions=[found]))


def test_timing_samples_keep_checksum_and_rows_of_successful_models_only():
    samples = timing_samples(report(), {"model.shop.orders": "c1"})
    assert samples == {"model.shop.orders": TimingSample(10.0, "c1", None)}


def test_trends_chart_the_slowest_models_over_their_runs_of_the_same_code():
    history = {"model.shop.orders": ModelTimings("c1", [4.0, 6.0], [None, None])}
    assert slowest_trends(report(), history, checksums={"model.shop.orders": "c1"}) == {"orders": [4.0, 6.0, 10.0]}
    assert slowest_trends(report(), history, checksums={"model.shop.orders": "c2"}) == {"orders": [10.0]}
    assert sparkline([1.0, 2.0, 4.0]) == "▂▄█"
    text = summary_markdown(_with(report(), trends={"orders": [4.0, 6.0, 10.0]}))
    assert "## Slowest 1 models over their last runs" in text and "| orders | 10.00 | 6.00 | 3 | ▃▅█ |" in text
    svg = _image(text, "slowest models over their last runs")
    assert svg.startswith("<svg") and "Slowest models" in svg and "<path" in svg  # leather: a legend from 2 lines
    ten = {f"model_{i}": [float(i), float(i + 1)] for i in range(10)}  # more lines than leather has colours
    svg = _image(summary_markdown(_with(report(), trends=ten)), "slowest models over their last runs")
    assert svg.count("<path") == 10 and "model_9" in svg


def _with(run: RunReport, **fields) -> RunReport:
    for name, value in fields.items():
        setattr(run, name, value)
    return run


def _image(markdown: str, alt: str) -> str:
    """The SVG a markdown image with this alt text embeds as a data: URI."""
    match = re.search(rf"!\[{re.escape(alt)}\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, markdown[:300]
    svg = base64.b64decode(match.group(1)).decode()
    ElementTree.fromstring(svg)  # well-formed: an <img> renders it
    return svg


def test_a_skipped_step_leaves_the_progress_total():
    run = RunReport("prod")
    run.progress.expect({"seeds": 2, "snapshots": 3})
    run.record("snapshots", StepResult.skipped("snapshots", "run_snapshots=False"))
    assert run.progress.run_to_run == 2
    run.note("seeds", "skipped", "done in an earlier attempt of this run")
    assert run.progress.run_to_run == 0
    assert run.step_results == []


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
