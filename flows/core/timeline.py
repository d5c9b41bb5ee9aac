"""A timeline picture of a run: every node of every step on a time axis, one row per dbt thread.

Read from each step's own run_results (dbt records `thread_id` and compile/execute `timing` per
node), so it costs nothing while the run builds. Steps are shaded bands, the critical path (what
the run's end waited on, through dependencies and layer barriers) is drawn in red, and the slowest
models are labelled.

Drawn with leather (wireservice's SVG charting library): it already installs with dbt-core
(through agate), so the picture needs no new dependency, and it emits SVG, which an `<img>` in
the Prefect UI's markdown renders. matplotlib would need six more packages on every worker.
leather has scales, axes, legend and SVG output; a Gantt bar (a span from start to end) is the one
shape it lacks, added below as a leather Shape.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Optional

import leather
from leather.shapes.base import Shape

NODE_COLOR = "#4C78A8"
CRITICAL_COLOR = "#E45756"
FAILED_COLOR = "#222222"
BAND_COLORS = ("#F2F2F2", "#E4ECF5")
LABELLED = 5  # slowest models named on the picture
ROW_HEIGHT = 22
WIDTH = 1100


@dataclass(frozen=True)
class Span:
    step: str
    unique_id: str
    name: str
    thread: str
    start: float  # seconds since the run's first node started
    end: float
    status: str

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def spans(steps: Iterable[tuple[str, Optional[dict]]]) -> list[Span]:
    """Every node that ran, from (step name, that step's run_results.json) pairs. Nodes without
    timing (skipped ones) did not run, so they are not drawn."""
    raw = []
    for step, run_results in steps:
        for result in (run_results or {}).get("results", []):
            timing = [t for t in result.get("timing") or [] if t.get("started_at") and t.get("completed_at")]
            if not timing:
                continue
            start = min(_time(t["started_at"]) for t in timing)
            end = max(_time(t["completed_at"]) for t in timing)
            unique_id = result["unique_id"]
            raw.append((step, unique_id, unique_id.split(".")[-1], str(result.get("thread_id") or "main"),
                        start, end, str(result.get("status"))))
    if not raw:
        return []
    origin = min(r[4] for r in raw)
    # Each dbt command starts a thread pool of its own, numbered on from the last one's in this
    # process ("Thread-9 (worker)" in the third step): a row is a step's nth thread, "thread n".
    slots: dict[tuple[str, str], str] = {}
    for step in {r[0] for r in raw}:
        threads = sorted({r[3] for r in raw if r[0] == step}, key=_thread_order)
        slots.update({(step, thread): f"thread {index + 1}" for index, thread in enumerate(threads)})
    return [Span(step, uid, name, slots[step, thread], start - origin, end - origin, status)
            for step, uid, name, thread, start, end, status in raw]


def critical_path(drawn: list[Span], parents: dict[str, list[str]]) -> list[Span]:
    """What the run's end waited on, last node first: from the node that finished last, the parent
    that finished last; a node with no parent that ran waited on the step before it (layers are
    barriers), so the path goes on from that step's last node."""
    if not drawn:
        return []
    by_id = {span.unique_id: span for span in drawn}
    current = max(drawn, key=lambda span: span.end)
    path = [current]
    seen = {current.unique_id}
    while True:
        ran = [by_id[p] for p in parents.get(current.unique_id, []) if p in by_id and p not in seen]
        if not ran:
            ran = [span for span in drawn if span.step != current.step and span.end <= current.start + 1e-6
                   and span.unique_id not in seen]
        if not ran:
            return path
        current = max(ran, key=lambda span: span.end)
        path.append(current)
        seen.add(current.unique_id)


class _Spans(Shape):
    """Gantt bars: each datum's row is a Span, drawn from its start to its end on its thread's row."""

    def __init__(self, fill_color: str, labels: frozenset[str] = frozenset()):
        self._fill_color = fill_color  # leather's legend reads this attribute
        self.labels = labels

    def validate_series(self, series: Any) -> None:
        return None

    def to_svg(self, width, height, x_scale, y_scale, series, palette):
        group = ET.Element("g", {"class": "series spans"})
        for datum in series.data():
            span: Optional[Span] = datum.row[2]  # rows are (start, thread, span)
            if span is None:  # the placeholder of an empty series (leather needs one datum to scale)
                continue
            top, bottom = (float(v) for v in y_scale.project_interval(span.thread, height, 0))
            left = float(x_scale.project(span.start, 0, width))  # leather's scales compute in Decimal
            right = max(float(x_scale.project(span.end, 0, width)), left + 0.5)  # a 10 ms node stays visible
            inset = (top - bottom) * 0.15
            group.append(ET.Element("rect", x=f"{left:.1f}", y=f"{bottom + inset:.1f}", width=f"{right - left:.1f}",
                                    height=f"{top - bottom - 2 * inset:.1f}", fill=self._fill_color))
            if span.unique_id in self.labels:
                label = ET.Element("text", x=f"{left + 2:.1f}", y=f"{(top + bottom) / 2 + 3:.1f}", fill="#000000")
                label.set("font-size", "10")
                label.set("font-family", "sans-serif")
                label.text = f"{span.name} {span.seconds:.1f}s"
                group.append(label)
        return group


class _Bands(Shape):
    """One shaded band per step, the full height of the plot, named at its top."""

    def __init__(self, fill_color: str, bands: list[tuple[str, float, float]]):
        self._fill_color = fill_color
        self.bands = bands

    def validate_series(self, series: Any) -> None:
        return None

    def to_svg(self, width, height, x_scale, y_scale, series, palette):
        group = ET.Element("g", {"class": "series bands"})
        for index, (step, start, end) in enumerate(self.bands):
            left, right = float(x_scale.project(start, 0, width)), float(x_scale.project(end, 0, width))
            group.append(ET.Element("rect", x=f"{left:.1f}", y="0", width=f"{max(right - left, 0.5):.1f}",
                                    height=f"{height:.1f}", fill=BAND_COLORS[index % len(BAND_COLORS)]))
            label = ET.Element("text", x=f"{left + 2:.1f}", y="10", fill="#555555")
            label.set("font-size", "10")
            label.set("font-family", "sans-serif")
            label.text = step
            group.append(label)
        return group


def step_bands(drawn: list[Span]) -> list[tuple[str, float, float]]:
    bands: dict[str, tuple[float, float]] = {}
    for span in drawn:
        start, end = bands.get(span.step, (span.start, span.end))
        bands[span.step] = (min(start, span.start), max(end, span.end))
    return sorted(((step, start, end) for step, (start, end) in bands.items()), key=lambda band: band[1])


def timeline_svg(drawn: list[Span], parents: dict[str, list[str]], title: str = "Run timeline") -> str:
    """The picture as an SVG document (empty string when nothing ran)."""
    if not drawn:
        return ""
    critical = {span.unique_id for span in critical_path(drawn, parents)}
    models = [span for span in drawn if span.unique_id.startswith("model.")]
    slowest = frozenset(span.unique_id for span in sorted(models, key=lambda s: s.seconds, reverse=True)[:LABELLED])
    # leather draws an ordinal scale's first value at the bottom: reversed, thread 1 is the top row
    threads = sorted({span.thread for span in drawn}, key=_thread_order, reverse=True)
    chart = leather.Chart(title)
    chart.set_x_scale(leather.Linear(0, max(span.end for span in drawn)))
    chart.set_y_scale(leather.Ordinal(threads))
    chart.add_x_axis(name="seconds since the first node started")

    def series(rows: list[Span], name: str) -> leather.Series:
        points: list[tuple[float, str, Optional[Span]]] = [(span.start, span.thread, span) for span in rows]
        return leather.Series(points or [(0.0, threads[0], None)], x=0, y=1, name=name)

    def layer(rows: list[Span], name: str, shape: Shape) -> None:
        chart.add_series(series(rows, name), shape)

    chart.add_series(series([], "steps (bands)"), _Bands(BAND_COLORS[1], step_bands(drawn)))
    failed = [s for s in drawn if s.status in {"error", "fail", "runtime error"}]
    layer([s for s in drawn if s.unique_id not in critical and s not in failed], "node", _Spans(NODE_COLOR, slowest))
    layer([s for s in drawn if s.unique_id in critical], "critical path", _Spans(CRITICAL_COLOR, slowest))
    if failed:
        layer(failed, "failed", _Spans(FAILED_COLOR, slowest))
    return chart.to_svg(width=WIDTH, height=220 + ROW_HEIGHT * len(threads))


def _thread_order(thread: str) -> tuple[int, str]:
    digits = "".join(c for c in thread.split("(")[0] if c.isdigit())  # dbt names them "Thread-3 (worker)"
    return (int(digits) if digits else 0, thread)


def data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def timeline_markdown(steps: Iterable[tuple[str, Optional[dict]]], parents: dict[str, list[str]]) -> str:
    """The markdown artifact: the picture inline, and the critical path in words.

    The Prefect UI (3.8) turns a markdown image into an `<img>` with the token's href as its src,
    without a sanitizer on the way, so a data: URI renders (DOMPurify there only sees raw HTML)."""
    drawn = spans(steps)
    if not drawn:
        return "# Run timeline\n\nNo node ran."
    path = critical_path(drawn, parents)
    chain = " ← ".join(f"`{span.name}` ({span.seconds:.1f}s)" for span in path[:12])
    more = f" ← … {len(path) - 12} more" if len(path) > 12 else ""
    threads = len({span.thread for span in drawn})
    return (f"# Run timeline\n\n{timeline_image(steps, parents, drawn)}\n\n"
            f"{len(drawn)} nodes on {threads} threads over {max(s.end for s in drawn):.1f}s. "
            f"Critical path (red, last node first): {chain}{more}")


def timeline_image(steps: Iterable[tuple[str, Optional[dict]]], parents: dict[str, list[str]],
                   drawn: Optional[list[Span]] = None) -> str:
    """The picture as one line of markdown ("" when nothing ran). The flow run's Artifacts tab
    shows each artifact as a card rendering its description's first line as markdown: this line
    there puts the picture on the tab itself, not one click away."""
    drawn = spans(steps) if drawn is None else drawn
    return f"![run timeline]({data_uri(timeline_svg(drawn, parents))})" if drawn else ""
