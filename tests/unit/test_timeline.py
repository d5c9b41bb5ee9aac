"""flows/core/timeline.py: the run's picture, from the steps' run_results (no dbt, no server)."""

from __future__ import annotations

import base64
import re
from xml.etree import ElementTree

from flows.core.timeline import critical_path, spans, step_bands, timeline_markdown, timeline_svg


def result(unique_id: str, thread: str, start: float, end: float, status: str = "success") -> dict:
    def at(seconds: float) -> str:
        return f"2026-01-01T00:00:{seconds:06.3f}Z"
    return {"unique_id": unique_id, "thread_id": thread, "status": status, "timing": [
        {"name": "compile", "started_at": at(start), "completed_at": at(start + 0.1)},
        {"name": "execute", "started_at": at(start + 0.1), "completed_at": at(end)}]}


STEPS = [
    ("seeds", {"results": [result("seed.p.codes", "Thread-1 (worker)", 10, 11)]}),
    ("build staging", {"results": [
        result("model.p.stg_orders", "Thread-1 (worker)", 11.5, 15), result("model.p.stg_items", "Thread-2 (worker)", 11.5, 13),
        result("test.p.unique_stg_orders", "Thread-2 (worker)", 15, 15.2, "fail"),
        {"unique_id": "model.p.skipped", "status": "skipped", "timing": []}]}),
    ("build marts", {"results": [result("model.p.orders", "Thread-7 (worker)", 16, 19)]}),  # a new pool: row 1
]
PARENTS = {"model.p.stg_orders": ["seed.p.codes"], "model.p.stg_items": ["seed.p.codes"],
           "test.p.unique_stg_orders": ["model.p.stg_orders"], "model.p.orders": ["model.p.stg_items"]}


def test_spans_start_at_the_first_node_and_leave_out_nodes_that_did_not_run():
    drawn = spans(STEPS)
    assert [(s.name, s.thread, s.start, s.end) for s in drawn][:2] == [
        ("codes", "thread 1", 0.0, 1.0), ("stg_orders", "thread 1", 1.5, 5.0)]
    assert "skipped" not in {s.name for s in drawn} and spans([("x", None)]) == []
    assert [(step, round(start, 2), round(end, 2)) for step, start, end in step_bands(drawn)] == [
        ("seeds", 0.0, 1.0), ("build staging", 1.5, 5.2), ("build marts", 6.0, 9.0)]


def test_the_critical_path_follows_the_last_finished_parent_then_crosses_layer_barriers():
    path = critical_path(spans(STEPS), PARENTS)
    assert [s.name for s in path] == ["orders", "stg_items", "codes"]
    # no dependencies known (no manifest): each layer waited on the one before
    assert [s.name for s in critical_path(spans(STEPS), {})] == ["orders", "unique_stg_orders", "codes"]


def test_the_picture_has_a_row_per_thread_bands_per_step_and_labels_the_slowest_models():
    svg = timeline_svg(spans(STEPS), PARENTS)
    root = ElementTree.fromstring(svg)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    for expected in ("thread 1", "thread 2", "seeds", "build staging", "build marts",
                     "critical path", "failed", "orders 3.0s", "stg_orders 3.5s"):
        assert expected in texts, expected
    fills = [r.get("fill") for r in root.iter("{http://www.w3.org/2000/svg}rect")]
    assert fills.count("#E45756") == 3 + 1  # the three critical nodes, and the legend's swatch


def test_the_markdown_embeds_the_svg_as_a_data_uri_and_names_the_critical_path():
    text = timeline_markdown(STEPS, PARENTS)
    encoded = re.search(r"!\[run timeline\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", text).group(1)
    assert base64.b64decode(encoded).decode().startswith("<svg")
    assert "5 nodes on 2 threads over 9.0s" in text and "`orders` (3.0s) ← `stg_items` (1.5s) ← `codes` (1.0s)" in text
    assert timeline_markdown([], {}) == "# Run timeline\n\nNo node ran."
