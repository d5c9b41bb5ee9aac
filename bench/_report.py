"""Markdown for bench/RESULTS.md: one section per benchmark and project size, rewritten in place."""

from __future__ import annotations

import re
from pathlib import Path

PREAMBLE = """# Benchmark results

Written by `bench/overhead.py`, `bench/freshness_gate.py` and `bench/slim_ci.py`; each section is rewritten
by the run that produced it. Notes and analysis are at the end of the file.
"""


EXIT_STAGE = "flow end and process exit"  # the last row of a flow run's stages (_harness.stage_seconds)


def stage_table(columns: list[tuple[str, list[tuple[str, float]], float]]) -> str:
    """Stages as rows, one column per run: (title, [(stage, seconds)], wall seconds)."""
    names: list[str] = []
    for _, stages, _ in columns:
        names += [name for name, _ in stages if name not in names]
    names.sort(key=lambda name: name == EXIT_STAGE)  # stable: the exit row last
    rows: list[list[object]] = [[name, *(seconds(dict(stages).get(name)) for _, stages, _ in columns)] for name in names]
    rows.append(["**wall**", *(f"**{seconds(wall)}**" for _, _, wall in columns)])
    return table(["stage", *(f"{title} (s)" for title, _, _ in columns)], rows)


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def mib(size: int) -> str:
    return f"{size / 2**20:.0f}"


def seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def facts(machine: dict[str, str], versions: dict[str, str]) -> str:
    return (f"Machine: {machine['cpus']} CPUs ({machine['cpu']}), {machine['memory']} RAM, "
            f"Linux {machine['kernel']}; run {machine['date']}.  \n"
            "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + ".")


def write_section(out: Path, heading: str, body: str) -> None:
    """Replace the `## heading` section of `out` (up to the next `## `), or add it before the notes."""
    text = out.read_text() if out.exists() else PREAMBLE
    section = f"## {heading}\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    elif "\n## Notes" in text:
        index = text.index("\n## Notes") + 1
        text = text[:index] + section + text[index:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.rstrip("\n") + "\n")
